import Docker from 'dockerode';
import { spawn, spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../core/config.ts';
import { silentLogger } from '../core/log.ts';
import { loadDefinitions } from '../golden-images/definitions.ts';
import { LoopDiskQuota } from '../host/disk-quota.ts';
import { Egress } from '../host/egress.ts';
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

export const docker = new Docker({ socketPath: '/var/run/docker.sock' });

/** The tag of a golden (built by `npm test`'s set-up). */
export function goldenTag(name: string): string {
  const g = loadDefinitions('golden-images').goldens.get(name);
  if (!g) throw new Error(`no golden ${name}`);
  return g.tag;
}

/** A config isolated from every other run: its own prefix (keys, queues, container labels). */
export function testConfig(over: Record<string, string> = {}): Config {
  const prefix = `t-${randomBytes(4).toString('hex')}`;
  return loadConfig({
    ...process.env,
    BOXD_PREFIX: prefix,
    BOXD_HOST_ID: `h-${prefix}`,
    BOXD_API_KEY: `key-${randomBytes(12).toString('hex')}`,
    BOXD_CLUSTER_SECRET: `cs-${randomBytes(16).toString('hex')}`,
    LOG_LEVEL: 'silent',
    BOXD_POOL: 'false',
    // The 1.5 s production bound answers 503 when a loaded CI machine stalls the event loop;
    // tests about Redis outages set their own.
    BOXD_REDIS_TIMEOUT_MS: '20000',
    ...over,
  });
}

/** Removes every container and Redis key of a test prefix. */
export async function purge(prefix: string): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${prefix}`] } });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
  const images = await docker.listImages({ filters: { reference: [`boxd-snap/${prefix}*`, `boxd-fork/${prefix}*`, `boxd-ugolden/${prefix}*`, `boxd-test/${prefix}*`] } }).catch(() => []);
  for (const i of images) await docker.getImage(i.Id).remove({ force: true }).catch(() => undefined);
  // Disk images and egress rules of the prefix's boxes, all gone now.
  const config = loadConfig();
  await new LoopDiskQuota(join(resolve(config.BOXD_STATE_DIR), 'disks'), silentLogger).sweep(prefix, new Set()).catch(() => undefined);
  await rm(join(resolve(config.BOXD_STATE_DIR), 'disks', prefix), { recursive: true, force: true }).catch(() => undefined);
  await new Egress({ bridge: '', deny: [], log: silentLogger }).sweep(prefix, new Set()).catch(() => undefined);
  const redis = new Redis(loadConfig().REDIS_URL);
  // Keys carry the hash tag `{prefix}` (core/keys.ts); the plain form is for keys of older code.
  for (const pattern of [`{${prefix}}:*`, `${prefix}:*`]) {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  }
  await redis.quit();
}

export const log = silentLogger;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A response body read whole, as UTF-8. */
export async function readText(res: AsyncIterable<unknown>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(fn: () => Promise<T>, timeoutMs = 20_000, everyMs = 100): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

import type { Config as _C } from '../core/config.ts';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { startHost, type HostHandle } from '../host/host.ts';
import supertest from 'supertest';

export interface Stack {
  config: _C;
  gateway: Gateway;
  host: HostHandle;
  /** supertest agent bound to the gateway server. */
  api: ReturnType<typeof supertest>;
  auth: { Authorization: string };
  close(): Promise<void>;
}

/** A gateway and a host in this process, on real Redis and real Docker, under a fresh prefix. */
export async function startStack(over: Record<string, string> = {}, hostOpts: Parameters<typeof startHost>[2] = {}): Promise<Stack> {
  const config = testConfig(over);
  const host = await startHost(config, log, hostOpts);
  const gateway = await createGateway(config, log);
  await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
  const stack: Stack = {
    config,
    gateway,
    host,
    api: supertest(gateway.server),
    auth: { Authorization: `Bearer ${config.BOXD_API_KEY}` },
    async close() {
      await stack.gateway.close();
      await stack.host.close();
      await purge(config.BOXD_PREFIX);
    },
  };
  return stack;
}

/** The python3 that has Debian's python3-httpx and python3-pytest (setup.sh installs them). */
export function debianPython(): string {
  for (const py of [process.env.BOXD_PYTHON, '/usr/bin/python3', 'python3']) {
    if (py && spawnSync(py, ['-c', 'import httpx, pytest'], { stdio: 'ignore' }).status === 0) return py;
  }
  throw new Error('no python3 with httpx and pytest: apt-get install python3-httpx python3-pytest (scripts/setup.sh does)');
}

/** Runs a command to its end without blocking the event loop (the stack lives in this process). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}) {
  return new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const p = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}
