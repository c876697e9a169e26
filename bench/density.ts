/**
 * Issue 11 bench: how many suspended boxes one host holds. Creates `tiny` boxes (each serving
 * HTTP on 8080 with busybox httpd) and suspends them, in steps up to BENCH_MAX (default 1000);
 * at 10, 100 and 1,000 reports memory per suspended box — growth of boxd's own RSS (gateway + host,
 * in this process) plus the PSS of the box's containerd shim and docker-proxy and its cgroup memory — and create, resume
 * and preview wake p50. `npm run bench:density` (BENCH_MAX, BENCH_PAR, BENCH_SAMPLES).
 */
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import Docker from 'dockerode';
import { benchStack } from './stack.ts';
import { median, row, time } from './stats.ts';

const MAX = Number(process.env.BENCH_MAX ?? 1000);
const PAR = Number(process.env.BENCH_PAR ?? 4);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 10);
const STEPS = [10, 100, 1000].filter((s) => s <= MAX);
if (!STEPS.includes(MAX)) STEPS.push(MAX);

const stack = await benchStack('benchd', { BOXD_POOL: 'false', BOXD_MAX_BOXES: String(MAX + 10), BOXD_IDLE_TIMEOUT_MS: '0', BOXD_HEARTBEAT_MS: '1000' });
const { api, port } = stack;
const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const base = stack.config.BOXD_BASE_DOMAIN;

const kb = (text: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
/** Proportional set size (PSS; RSS where unavailable) in MiB of every process whose command line matches `test`. */
function rssOf(test: (cmd: string) => boolean): number {
  let total = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (!test(cmd)) continue;
      // PSS: pages shared between processes (the shim binary) counted once, split among them.
      const rollup = `/proc/${pid}/smaps_rollup`;
      total += (existsSync(rollup) ? kb(readFileSync(rollup, 'utf8'), 'Pss') : kb(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS')) / 1024;
    } catch {
      /* gone */
    }
  }
  return total;
}
/** Resident memory of a container's processes (cgroup v1 or v2), MiB. */
function cgroupMb(id: string): number {
  const v1 = `/sys/fs/cgroup/memory/docker/${id}/memory.stat`;
  if (existsSync(v1)) {
    const s = readFileSync(v1, 'utf8');
    return (Number(/^total_rss (\d+)/m.exec(s)?.[1] ?? /^rss (\d+)/m.exec(s)?.[1] ?? 0)) / 1048576;
  }
  const v2 = `/sys/fs/cgroup/system.slice/docker-${id}.scope/memory.stat`;
  if (existsSync(v2)) return Number(/^anon (\d+)/m.exec(readFileSync(v2, 'utf8'))?.[1] ?? 0) / 1048576;
  return 0;
}

function firstByte(box: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { Host: `${box}.${base}` }, agent: false }, (res) => {
      res.once('data', () => resolve(performance.now() - t));
      res.once('end', () => resolve(performance.now() - t));
      res.resume();
    });
    req.on('error', reject);
    req.end();
  });
}

const pick = <T>(all: T[], n: number) => [...all].sort(() => Math.random() - 0.5).slice(0, n);

interface Step { n: number; perBoxMb: number; boxdMb: number; shimMb: number; proxyMb: number; cgroupMb: number; createP50: number; resumeP50: number; wakeP50: number; proxies: number }
const results: Step[] = [];
const created: string[] = [];
const createMs: number[] = [];
let failures = 0;
const boxdBefore = process.memoryUsage().rss / 1048576;

try {
  for (const step of STEPS) {
    const todo = Array.from({ length: step - created.length }, (_, i) => `d${created.length + i}`);
    const worker = async () => {
      for (let name = todo.shift(); name; name = todo.shift()) {
        try {
          createMs.push(await time(() => api('POST', '/v1/boxes', { name, golden: 'tiny', ports: [8080], idleTimeoutMs: 0 })));
          await api('POST', `/v1/boxes/${name}/exec`, { cmd: ['sh', '-c', 'echo ok > /tmp/index.html && httpd -p 8080 -h /tmp'] });
          await api('POST', `/v1/boxes/${name}/suspend`);
          created.push(name);
        } catch (e) {
          failures++;
          console.error(`  ${name}: ${(e as Error).message.slice(0, 200)}`);
          if (failures > 20) throw new Error('too many failures; stopping');
        }
      }
    };
    await Promise.all(Array.from({ length: PAR }, worker));
    const containers = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${stack.config.BOXD_PREFIX}`] } });
    const ids = new Set(containers.map((c) => c.Id));
    const ports = new Set(containers.flatMap((c) => c.Ports.map((p) => String(p.PublicPort)).filter((p) => p !== 'undefined')));
    const shimMb = rssOf((c) => c.includes('containerd-shim') && [...ids].some((id) => c.includes(id)));
    let proxies = 0;
    const proxyMb = rssOf((c) => {
      const m = /docker-proxy .*-host-port (\d+)/.exec(c);
      const mine = !!m && ports.has(m[1]!);
      if (mine) proxies++;
      return mine;
    });
    const cg = [...ids].reduce((s, id) => s + cgroupMb(id), 0);
    const boxdMb = process.memoryUsage().rss / 1048576;
    const n = created.length;
    const perBoxMb = (Math.max(0, boxdMb - boxdBefore) + shimMb + proxyMb + cg) / n;

    const resume: number[] = [];
    const wake: number[] = [];
    for (const name of pick(created, Math.min(SAMPLES, n))) {
      wake.push(await firstByte(name));
      await api('POST', `/v1/boxes/${name}/suspend`);
      resume.push(await time(() => api('POST', `/v1/boxes/${name}/resume`)));
      await api('POST', `/v1/boxes/${name}/suspend`);
    }
    results.push({ n, perBoxMb, boxdMb, shimMb, proxyMb, cgroupMb: cg, createP50: median(createMs.slice(-Math.min(step, 100))), resumeP50: median(resume), wakeP50: median(wake), proxies });
    console.log(`  ${n} suspended boxes: ${perBoxMb.toFixed(1)} MiB each; wake p50 ${median(wake).toFixed(0)} ms`);
  }

  const w = [8, 11, 10, 10, 9, 9, 10, 10, 10, 9];
  console.log(`\nsuspended tiny boxes on one host (this machine, shared and under load), parallelism ${PAR}, ${SAMPLES} samples per step\n`);
  console.log(row(['boxes', 'MiB/box', 'boxd RSS', 'shims', 'proxies', 'cgroups', 'create p50', 'resume p50', 'wake p50', '#proxy'], w));
  for (const r of results) console.log(row([r.n, r.perBoxMb, r.boxdMb, r.shimMb, r.proxyMb, r.cgroupMb, r.createP50, r.resumeP50, r.wakeP50, r.proxies], w));
  const first = results[0]!;
  const last = results[results.length - 1]!;
  console.log(`\n  wake p50 at ${last.n} / at ${first.n}: ${(last.wakeP50 / first.wakeP50).toFixed(2)}x (goal ≤ 1.2x at 1,000 vs 10)`);
  console.log(`  memory (MiB): boxd RSS grew ${(last.boxdMb - boxdBefore).toFixed(0)} from ${boxdBefore.toFixed(0)}; per box: shim ${(last.shimMb / last.n).toFixed(1)}, docker-proxy ${(last.proxyMb / last.n).toFixed(1)}, cgroup ${(last.cgroupMb / last.n).toFixed(1)}`);
  if (failures) console.log(`  ${failures} creates failed`);
} finally {
  await stack.close();
}
