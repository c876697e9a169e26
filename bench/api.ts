/**
 * Issue 2 bench: create, exec `true`, suspend and resume through the HTTP API (gateway → BullMQ →
 * host → Docker) next to the same operations done directly with dockerode, in one run.
 * Prints median and p95 in ms and the API/direct ratio. `npm run bench` (BENCH_N to change N).
 */
import Docker from 'dockerode';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../core/config.ts';
import { silentLogger as log } from '../core/log.ts';
import { createGateway } from '../gateway/gateway.ts';
import { loadDefinitions } from '../golden-images/definitions.ts';
import { startHost } from '../host/host.ts';
import { median, pct, row, time } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 20);
const prefix = `bench-${randomBytes(3).toString('hex')}`;
const key = `bench-${randomBytes(12).toString('hex')}`;
const config = loadConfig({ ...process.env, BOXD_PREFIX: prefix, BOXD_HOST_ID: prefix, BOXD_API_KEY: key, BOXD_MAX_BOXES: '1000', LOG_LEVEL: 'silent', BOXD_IDLE_TIMEOUT_MS: '0' });
const image = loadDefinitions('golden-images').goldens.get('tiny')!.tag;
const docker = new Docker({ socketPath: '/var/run/docker.sock' });

const host = await startHost(config, log);
const gateway = await createGateway(config, log);
await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
const port = (gateway.server.address() as { port: number }).port;
const base = `http://127.0.0.1:${port}`;
const api = async (method: string, path: string, body?: unknown) => {
  const res = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
};

const results: Record<string, { api: number[]; direct: number[] }> = {};
const record = (op: string, kind: 'api' | 'direct', ms: number) => ((results[op] ??= { api: [], direct: [] })[kind].push(ms));

try {
  // Warm both paths once.
  await api('POST', '/v1/boxes', { name: 'warm', golden: 'tiny', idleTimeoutMs: 0 });
  await api('POST', '/v1/boxes/warm/exec', { cmd: ['true'] });
  for (let i = 0; i < N; i++) {
    const name = `b${i}`;
    record('create', 'api', await time(() => api('POST', '/v1/boxes', { name, golden: 'tiny', idleTimeoutMs: 0 })));
    record('exec true', 'api', await time(() => api('POST', `/v1/boxes/${name}/exec`, { cmd: ['true'] })));
    record('suspend', 'api', await time(() => api('POST', `/v1/boxes/${name}/suspend`)));
    record('resume', 'api', await time(() => api('POST', `/v1/boxes/${name}/resume`)));
    await api('DELETE', `/v1/boxes/${name}`);

    let c!: Docker.Container;
    record('create', 'direct', await time(async () => {
      c = await docker.createContainer({
        name: `${prefix}-direct-${i}`, Image: image, Entrypoint: ['sleep', 'infinity'],
        Labels: { 'boxd.managed': 'true', 'boxd.instance': prefix },
        ExposedPorts: { '8080/tcp': {} },
        HostConfig: { Init: true, NetworkMode: config.BOXD_NETWORK, PortBindings: { '8080/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }] } },
      });
      await c.start();
    }));
    record('exec true', 'direct', await time(async () => {
      const ex = await c.exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
      const stream = await ex.start({ hijack: true, stdin: false });
      await new Promise((r) => { stream.on('end', r); stream.on('close', r); stream.resume(); });
      await ex.inspect();
    }));
    record('suspend', 'direct', await time(() => c.pause()));
    record('resume', 'direct', await time(() => c.unpause()));
    await c.remove({ force: true });
  }
  await api('DELETE', '/v1/boxes/warm');

  const w = [12, 10, 10, 12, 12, 8];
  console.log(`\nboxd API vs dockerode direct, tiny golden, N=${N} each (ms)\n`);
  console.log(row(['operation', 'api p50', 'api p95', 'direct p50', 'direct p95', 'p50 x'], w));
  for (const [op, r] of Object.entries(results)) {
    console.log(row([op, median(r.api), pct(r.api, 95), median(r.direct), pct(r.direct, 95), median(r.api) / median(r.direct)], w));
  }
  console.log('\napi = HTTP to the gateway → BullMQ job on the host queue → dockerode → answer; direct = the same dockerode call in this process.');
} finally {
  await gateway.close();
  await host.close();
  const left = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${prefix}`] } });
  for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
}
