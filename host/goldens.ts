import type { Redis } from 'ioredis';
import { loadDefinitions, type Golden } from '../golden-images/definitions.ts';
import type { Runtime } from './runtime.ts';
import { accountGoldenKey, type AccountGolden, type AccountGoldens } from '../core/account-goldens.ts';
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
  /** Account goldens only: the one host that holds the image. */
  hostId?: string;
}

/** An account golden as the create, fork and task paths see it (its `name` is its key). */
export function accountGoldenInfo(g: AccountGolden): GoldenInfo {
  const from = g.from.box ? `box ${g.from.box}` : `snapshot ${g.from.snapshot}`;
  return {
    name: g.key, tag: g.image, description: `promoted from ${from}`, ports: g.ports, poolSize: g.poolSize,
    cpus: g.cpus, memoryMb: g.memoryMb, idleTimeoutMs: g.idleTimeoutMs, built: g.ready, hostId: g.hostId,
    diskMb: g.diskMb, network: g.network,
  };
}

/**
 * The golden `name` as `account` sees it: the operator's of that name, else the account's own.
 * Another account's golden is never found.
 */
export async function findGolden(
  operator: Map<string, GoldenInfo>, own: AccountGoldens, account: string, name: string,
): Promise<GoldenInfo | undefined> {
  const op = operator.get(name);
  if (op) return op;
  const g = await own.get(accountGoldenKey(account, name));
  return g ? accountGoldenInfo(g) : undefined;
}

/** A golden by the key a box record carries (operator name or `<account>/<name>`). */
export async function goldenByKey(operator: Map<string, GoldenInfo>, own: AccountGoldens, key: string): Promise<GoldenInfo | undefined> {
  if (!key.includes('/')) return operator.get(key);
  const g = await own.get(key);
  return g ? accountGoldenInfo(g) : undefined;
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
