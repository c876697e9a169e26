/**
 * Issue 2 bench: create, exec `true`, suspend and resume through the HTTP API (gateway → BullMQ →
 * host → Docker) next to the same operations done directly with dockerode, in one run.
 * Prints median and p95 in ms and the API/direct ratio. `npm run bench` (BENCH_N to change N).
 */
import Docker from 'dockerode';
import { loadDefinitions } from '../golden-images/definitions.ts';
import { benchStack } from './stack.ts';
import { median, pct, row, time } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 20);
const image = loadDefinitions('golden-images').goldens.get('tiny')!.tag;
const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const stack = await benchStack('bench', { BOXD_IDLE_TIMEOUT_MS: '0', BOXD_POOL: 'false' });
const { api, config } = stack;
const prefix = config.BOXD_PREFIX;

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
  console.log('\napi = HTTP to the gateway → (create: BullMQ job; exec, suspend, resume: the host agent) → dockerode → answer; direct = the same dockerode call in this process.');
} finally {
  await stack.close();
}
