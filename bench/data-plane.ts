/**
 * Issue 8 bench: the direct data plane (gateway → host agent) against Docker's own paths, in one
 * run. `npm run bench:data-plane` (BENCH_N to change N). Prints medians, p99 where asked, ratios.
 */
import Docker from 'dockerode';
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { DockerRuntime } from '../host/docker-runtime.ts';
import { benchStack } from './stack.ts';
import { median, pct, row, time } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 30);
/** BENCH_PARTS=1,2 runs only those sections (1 suspend/resume, 2 exec, 3 preview, 4 files, 5 Redis memory). */
const parts = new Set((process.env.BENCH_PARTS ?? '1,2,3,4,5').split(',').map((p) => Number(p.trim())));
const run = promisify(execFile);
const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const stack = await benchStack('bdp', { BOXD_IDLE_TIMEOUT_MS: '0', BOXD_POOL: 'false', BOXD_MAX_EXECS: '64' });
const { api, port, config } = stack;
const runtime = stack.host.runtime as DockerRuntime;
const auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };
const out: string[] = [];
const say = (s: string) => {
  out.push(s);
  console.log(s);
};

/**
 * A timed API call: node:http with a keep-alive agent, the client the baselines use too (dockerode
 * talks to the engine through node:http); `fetch` (undici) adds ~0.7 ms per call on this machine.
 */
const keepAlive = new Agent({ keepAlive: true });
function call(method: string, path: string, body?: unknown): Promise<void> {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Authorization: `Bearer ${config.BOXD_API_KEY}` };
    if (data) headers['Content-Type'] = 'application/json';
    const req = request({ host: '127.0.0.1', port, path, method, agent: keepAlive, headers }, (res) => {
      res.resume();
      res.on('end', () => ((res.statusCode ?? 0) < 300 ? resolve() : reject(new Error(`${method} ${path}: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** GET through the gateway with a Host header; resolves when the body is read. */
function preview(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { Host: host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

try {
  say(`suspend mechanism: ${runtime.suspendMechanism}`);
  await api('POST', '/v1/boxes', { name: 'b', golden: 'tiny', idleTimeoutMs: 0 });
  const id = (await stack.gateway.store.require('b')).runtimeId!;
  const direct = await docker.createContainer({
    name: `${config.BOXD_PREFIX}-direct`, Image: (await stack.gateway.store.require('b')).imageRef, Entrypoint: ['sleep', 'infinity'],
    Labels: { 'boxd.managed': 'true', 'boxd.instance': config.BOXD_PREFIX }, HostConfig: { Init: true, NetworkMode: config.BOXD_NETWORK },
  });
  await direct.start();

  const w = [34, 10, 10, 12];
  // 1. Suspend / resume.
  say(`\nN=${N} each, ms\n${row(['operation', 'p50', 'p99', 'x baseline'], w)}`);
  if (parts.has(1)) {
    const thaw: number[] = [], freeze: number[] = [], apiResume: number[] = [], apiSuspend: number[] = [], unpause: number[] = [], pause: number[] = [];
    for (let i = 0; i < N; i++) {
      freeze.push(await time(() => runtime.suspend(id)));
      thaw.push(await time(() => runtime.resume(id)));
      apiSuspend.push(await time(() => call('POST', '/v1/boxes/b/suspend')));
      apiResume.push(await time(() => call('POST', '/v1/boxes/b/resume')));
      pause.push(await time(() => direct.pause()));
      unpause.push(await time(() => direct.unpause()));
    }
    say(row(['host-side freezer resume (thaw)', median(thaw), pct(thaw, 99), median(thaw) / median(unpause)], w));
    say(row(['host-side freezer suspend', median(freeze), pct(freeze, 99), median(freeze) / median(pause)], w));
    say(row(['API resume', median(apiResume), pct(apiResume, 99), median(apiResume) / median(unpause)], w));
    say(row(['API suspend', median(apiSuspend), pct(apiSuspend, 99), median(apiSuspend) / median(pause)], w));
    say(row(['baseline docker unpause', median(unpause), pct(unpause, 99), 1], w));
    say(row(['baseline docker pause', median(pause), pct(pause, 99), 1], w));
  }


  // 2. exec `true`: API vs the same exec made directly with dockerode on the host.
  if (parts.has(2)) {
    const execApi: number[] = [], execDirect: number[] = [];
    for (let i = 0; i < 5; i++) await api('POST', '/v1/boxes/b/exec', { cmd: ['true'] });
    for (let i = 0; i < N; i++) {
      execApi.push(await time(() => call('POST', '/v1/boxes/b/exec', { cmd: ['true'] })));
      execDirect.push(await time(async () => {
        const ex = await docker.getContainer(id).exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
        const stream = await ex.start({ hijack: true, stdin: false });
        await new Promise((r) => { stream.on('end', r); stream.on('close', r); stream.resume(); });
        await ex.inspect();
      }));
    }
    say(row(['exec true via API', median(execApi), pct(execApi, 99), median(execApi) / median(execDirect)], w));
    say(row(['baseline exec true via dockerode', median(execDirect), pct(execDirect, 99), 1], w));
  }


  // 3. Preview wake: a request to a suspended box vs the same request to a running one.
  if (parts.has(3)) {
    await api('POST', '/v1/boxes/b/exec', { cmd: ['sh', '-c', 'mkdir -p /www && echo hi > /www/index.html && httpd -p 8080 -h /www'] });
    const host = `b.${config.BOXD_BASE_DOMAIN}`;
    for (let i = 0; i < 50 && (await preview(host).catch(() => 0)) !== 200; i++) await new Promise((r) => setTimeout(r, 100));
    const warm: number[] = [], woke: number[] = [];
    for (let i = 0; i < N * 2; i++) {
      warm.push(await time(() => preview(host)));
      await api('POST', '/v1/boxes/b/suspend');
      await new Promise((r) => setTimeout(r, 20)); // let the suspended state reach the route cache
      woke.push(await time(() => preview(host)));
    }
    const added = woke.map((v) => v - median(warm));
    say(row(['preview to running box', median(warm), pct(warm, 99), 1], w));
    say(row(['preview to suspended box (wake)', median(woke), pct(woke, 99), median(woke) / median(warm)], w));
    say(row(['  wake adds', median(added), pct(added, 99), NaN], w));
  }


  // 4. Files: 256 MiB PUT and GET through the API vs docker cp, RSS of this process (gateway + host).
  if (parts.has(4)) {
    const dir = await mkdtemp(`${tmpdir()}/bdp-`);
    const file = `${dir}/in.bin`;
    const size = 256 * 1024 * 1024;
    await run('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', 'count=256'], { maxBuffer: 1 << 20 });
    let peak = process.memoryUsage().rss;
    const rss0 = peak;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    const put = await time(async () => {
      const req = request({ host: '127.0.0.1', port, method: 'PUT', path: '/v1/boxes/b/files?path=/root/big.bin', headers: { ...auth, 'Content-Length': size } });
      const res = new Promise<number>((r, j) => (req.once('response', (x) => (x.resume(), r(x.statusCode ?? 0))), req.once('error', j)));
      await pipeline(createReadStream(file), req);
      if ((await res) !== 204) throw new Error('PUT failed');
    });
    const get = await time(async () => {
      const res = await fetch(`http://127.0.0.1:${port}/v1/boxes/b/files?path=/root/big.bin`, { headers: auth });
      await pipeline(res.body as unknown as NodeJS.ReadableStream, createWriteStream(`${dir}/out.bin`));
    });
    clearInterval(sampler);
    if (statSync(`${dir}/out.bin`).size !== size) throw new Error('GET size mismatch');
    const cpIn = await time(() => run('docker', ['cp', file, `${id}:/root/cp.bin`]));
    const cpOut = await time(() => run('docker', ['cp', `${id}:/root/cp.bin`, `${dir}/cp-out.bin`]));
    const mibs = (ms: number) => 256 / (ms / 1000);
    const w2 = [34, 10, 12];
    say(`\n256 MiB files, MiB/s\n${row(['operation', 'MiB/s', 'x docker cp'], w2)}`);
    say(row(['PUT /files', mibs(put), cpIn / put], w2));
    say(row(['GET /files', mibs(get), cpOut / get], w2));
    say(row(['baseline docker cp in', mibs(cpIn), 1], w2));
    say(row(['baseline docker cp out', mibs(cpOut), 1], w2));
    say(`gateway+host RSS growth during the transfers: ${((peak - rss0) / 1048576).toFixed(1)} MiB (peak ${(peak / 1048576).toFixed(0)} MiB)`);
    await rm(dir, { recursive: true, force: true });
  }


  // 5. Redis used_memory over 100 execs printing 4 MiB each.
  if (parts.has(5)) {
    const used = async () => Number(/used_memory:(\d+)/.exec(await stack.gateway.redis.info('memory'))![1]);
    const before = await used();
    for (let i = 0; i < 100; i += 4) {
      await Promise.all([0, 1, 2, 3].map(() => api('POST', '/v1/boxes/b/exec', { cmd: ['head', '-c', '4194304', '/dev/zero'] })));
    }
    const after = await used();
    say(`\nRedis used_memory over 100 execs printing 4 MiB: ${(before / 1048576).toFixed(1)} → ${(after / 1048576).toFixed(1)} MiB (growth ${((after - before) / 1048576).toFixed(2)} MiB; shared Redis, others write too)`);
  }

  await direct.remove({ force: true });
} finally {
  await stack.close();
}
