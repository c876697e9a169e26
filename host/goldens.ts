import type { Redis } from 'ioredis';
import { loadDefinitions, type Golden } from '../golden-images/definitions.ts';
import type { Runtime } from './runtime.ts';
import type { NetworkPolicy } from '../core/network-policy.ts';

/** What the API needs to know of a golden, published by hosts in `<prefix>:goldens`. */
export interface GoldenInfo {
  name: string;
  tag: string;
  description: string;
  ports: number[];
  poolSize: number;
  cpus: number;
  memoryMb: number;
  idleTimeoutMs: number;
  diskMb?: number;
  network?: NetworkPolicy;
  /** Boxes from it are agent boxes by default (manifest `agent: true`). */
  agent?: boolean;
  /** Whether the image is built on the host that published this. */
  built: boolean;
}

/** The record settings of a box made from a golden. */
export function boxSettings(g: GoldenInfo) {
  return { golden: g.name, imageRef: g.tag, ports: g.ports, idleTimeoutMs: g.idleTimeoutMs, cpus: g.cpus, memoryMb: g.memoryMb, diskMb: g.diskMb, network: g.network, agent: g.agent };
}

/** Reads the definitions, checks which images exist, and publishes them for gateways. */
export async function publishGoldens(
  redis: Redis,
  prefix: string,
  dir: string,
  runtime: Pick<Runtime, 'hasImage'>,
): Promise<Map<string, Golden>> {
  const { goldens } = loadDefinitions(dir);
  const key = `{${prefix}}:goldens`;
  const pipe = redis.multi().del(key);
  for (const g of goldens.values()) {
    const info: GoldenInfo = {
      name: g.name,
      tag: g.tag,
      description: g.manifest.description,
      ports: g.manifest.ports,
      poolSize: g.manifest.poolSize,
      cpus: g.manifest.cpus,
      memoryMb: g.manifest.memoryMb,
      idleTimeoutMs: g.manifest.idleTimeoutMs,
      diskMb: g.manifest.diskMb,
      network: g.manifest.network,
      agent: g.manifest.agent,
      built: await runtime.hasImage(g.tag),
    };
    pipe.hset(key, g.name, JSON.stringify(info));
  }
  await pipe.exec();
  return goldens;
}

export async function readGoldens(redis: Redis, prefix: string): Promise<Map<string, GoldenInfo>> {
  const all = await redis.hgetall(`{${prefix}}:goldens`);
  return new Map(Object.entries(all).map(([k, v]) => [k, JSON.parse(v) as GoldenInfo]));
}
