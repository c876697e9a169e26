/**
 * Issue 11 bench: how many suspended boxes one host holds. Creates `tiny` boxes (each serving
 * HTTP on 8080 with busybox httpd) and suspends them, in steps up to the maximum (default 1000);
 * at each step (10, 100, 300, 1,000, capped at the maximum) reports
 *  - memory per suspended box: growth of boxd's own RSS (gateway + host, in this process) plus the
 *    PSS of the boxes' containerd shims (and docker-proxies, when dockerd runs with the userland
 *    proxy) plus their cgroups' memory; the growth of dockerd + containerd is shown apart (shared
 *    daemons: other users of the engine move it);
 *  - create p50, resume p50 (API), preview wake p50/p99 (first byte through the gateway of a
 *    suspended box) and hot p50 (a request to a box already running: the data path alone), the
 *    same number of distinct randomly chosen boxes at every step, each suspended again after;
 *  - CPU boxd and the engine spend while nothing happens (O(boxes) background work);
 * then removes all but the first step's boxes and wakes those again (a baseline measured after
 * the last step, under the machine's load at that time).
 * Boxes live on a bridge network of their own (a Linux bridge holds at most 1,024 ports), removed
 * at the end with every box, also on Ctrl-C or failure. Creation stops early when the machine's
 * available memory falls under BENCH_MIN_FREE_GB (4).
 *
 *   npm run bench:density                     # up to 1,000
 *   BOXD_DENSITY_MAX=300 npm run bench:density   (or: tsx bench/density.ts 300)
 * Knobs: BENCH_PAR (creates in parallel, 4), BENCH_WAKES (wake samples per step, 40),
 * BENCH_RESUMES (20), BENCH_IDLE_S (seconds of idle CPU measurement, 10).
 */
import { readFileSync, readdirSync, existsSync, statfsSync } from 'node:fs';
import { DensityBoxes, docker, pick } from './density-boxes.ts';
import { median, pct, row, time } from './stats.ts';
import { firstByte } from './http.ts';

const MAX = Number(process.argv[2] ?? process.env.BOXD_DENSITY_MAX ?? process.env.BENCH_MAX ?? 1000);
const PAR = Number(process.env.BENCH_PAR ?? 4);
const WAKES = Number(process.env.BENCH_WAKES ?? 40);
const RESUMES = Number(process.env.BENCH_RESUMES ?? 20);
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
const MIN_FREE_GB = Number(process.env.BENCH_MIN_FREE_GB ?? 4);
if (!Number.isInteger(MAX) || MAX < 1) throw new Error(`the maximum must be a positive integer, not ${process.argv[2] ?? process.env.BOXD_DENSITY_MAX}`);
const STEPS = [10, 100, 300, 1000].filter((s) => s < MAX);
STEPS.push(MAX);

const boxes = new DensityBoxes('dens');

const kb = (text: string, field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
const pids = () => readdirSync('/proc').filter((p) => /^\d+$/.test(p));
const cmdline = (pid: string) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
};
/** PSS (RSS where unavailable) of one process, MiB: pages shared with other processes counted once, split among them. */
function pssOf(pid: string): number {
  try {
    const rollup = `/proc/${pid}/smaps_rollup`;
    return (existsSync(rollup) ? kb(readFileSync(rollup, 'utf8'), 'Pss') : kb(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS')) / 1024;
  } catch {
    return 0;
  }
}
/** Total PSS in MiB of the processes whose command line passes `test`, and their number. */
function pssWhere(test: (cmd: string) => boolean): { mb: number; count: number } {
  let mb = 0;
  let count = 0;
  for (const pid of pids()) {
    if (!test(cmdline(pid))) continue;
    mb += pssOf(pid);
    count++;
  }
  return { mb, count };
}
const comm = (pid: string) => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};
const daemonPids = () => pids().filter((p) => ['dockerd', 'containerd'].includes(comm(p)));
/** CPU seconds (user + system) a process has used. */
function cpuSeconds(pid: string): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}
/** Memory of a container's processes (cgroup v1 or v2), MiB: anonymous (rss) and everything charged (usage). */
function cgroupMb(id: string): { rss: number; usage: number } {
  const v1 = `/sys/fs/cgroup/memory/docker/${id}`;
  if (existsSync(`${v1}/memory.stat`)) {
    const s = readFileSync(`${v1}/memory.stat`, 'utf8');
    const rss = Number(/^total_rss (\d+)/m.exec(s)?.[1] ?? /^rss (\d+)/m.exec(s)?.[1] ?? 0);
    const usage = Number(readFileSync(`${v1}/memory.usage_in_bytes`, 'utf8'));
    return { rss: rss / 1048576, usage: usage / 1048576 };
  }
  for (const v2 of [`/sys/fs/cgroup/system.slice/docker-${id}.scope`, `/sys/fs/cgroup/docker/${id}`]) {
    if (!existsSync(`${v2}/memory.stat`)) continue;
    const anon = Number(/^anon (\d+)/m.exec(readFileSync(`${v2}/memory.stat`, 'utf8'))?.[1] ?? 0);
    return { rss: anon / 1048576, usage: Number(readFileSync(`${v2}/memory.current`, 'utf8')) / 1048576 };
  }
  return { rss: 0, usage: 0 };
}
const availableGb = () => kb(readFileSync('/proc/meminfo', 'utf8'), 'MemAvailable') / 1048576;
const diskFreeGb = () => {
  const s = statfsSync('/var/lib/docker');
  return (s.bavail * s.bsize) / 2 ** 30;
};


interface Step {
  n: number;
  perBoxMb: number;
  boxdMb: number;
  shimMb: number;
  shims: number;
  proxyMb: number;
  proxies: number;
  cgRss: number;
  cgUsage: number;
  daemonsMb: number;
  createP50: number;
  resumeP50: number;
  wakeP50: number;
  wakeP99: number;
  hotP50: number;
  boxdCpu: number;
  daemonCpu: number;
}

const results: Step[] = [];
const created: string[] = [];
let failures = 0;
let stoppedEarly = '';

try {
  const boxdBefore = process.memoryUsage().rss / 1048576;
  const daemonsBefore = daemonPids().reduce((s, p) => s + pssOf(p), 0);
  const stack = await boxes.start('densd', MAX);
  const { api, port } = stack;
  const base = stack.config.BOXD_BASE_DOMAIN;
  /** Wakes each box by a request, times a second one (the data path alone), suspends it again. */
  const wakes = async (names: string[]) => {
    const wake: number[] = [];
    const hot: number[] = [];
    for (const name of names) {
      const host = `${name}.${base}`;
      wake.push(await firstByte(port, host));
      hot.push(await firstByte(port, host));
      await api('POST', `/v1/boxes/${name}/suspend`);
    }
    return { wake, hot };
  };
  const prefix = stack.config.BOXD_PREFIX;
  console.log(`density bench: up to ${MAX} suspended tiny boxes, parallelism ${PAR}, ${WAKES} wakes per step; prefix ${prefix}, network ${boxes.network}`);
  console.log(`  start: ${availableGb().toFixed(1)} GiB available, ${diskFreeGb().toFixed(0)} GiB disk free`);

  for (const step of STEPS) {
    const createMs: number[] = [];
    const todo = Array.from({ length: step - created.length }, (_, i) => `d${created.length + i}`);
    const t0 = Date.now();
    const worker = async () => {
      for (let name = todo.shift(); name; name = todo.shift()) {
        if (stoppedEarly) return;
        if (availableGb() < MIN_FREE_GB) {
          stoppedEarly = `available memory fell under ${MIN_FREE_GB} GiB at ${created.length} boxes`;
          return;
        }
        try {
          createMs.push(await boxes.suspendedBox(name));
          created.push(name);
          if (created.length % 50 === 0) console.log(`    ${created.length} boxes (${((Date.now() - t0) / 1000).toFixed(0)} s this step; ${availableGb().toFixed(1)} GiB available)`);
        } catch (e) {
          failures++;
          console.error(`  ${name}: ${(e as Error).message.slice(0, 300)}`);
          if (failures > 20) throw new Error('too many failures; stopping');
        }
      }
    };
    await Promise.all(Array.from({ length: PAR }, worker));
    const n = created.length;
    if (!n) break;

    // Idle: what boxd and the engine spend per second with n suspended boxes and no traffic.
    const daemons = daemonPids();
    const cpu0 = process.cpuUsage();
    const d0 = daemons.reduce((s, p) => s + cpuSeconds(p), 0);
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const c = process.cpuUsage(cpu0);
    const boxdCpu = ((c.user + c.system) / 1e6 / IDLE_S) * 100;
    const daemonCpu = ((daemons.reduce((s, p) => s + cpuSeconds(p), 0) - d0) / IDLE_S) * 100;

    // Memory.
    const containers = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${prefix}`] } });
    const ids = containers.map((x) => x.Id);
    const idSet = new Set(ids);
    const ports = new Set(containers.flatMap((x) => x.Ports.map((p) => String(p.PublicPort)).filter((p) => p !== 'undefined')));
    const shim = pssWhere((cmd) => cmd.includes('containerd-shim') && (/-id ([0-9a-f]{64})/.exec(cmd)?.[1] ?? '') !== '' && idSet.has(/-id ([0-9a-f]{64})/.exec(cmd)![1]!));
    const proxy = pssWhere((cmd) => {
      const m = /docker-proxy .*-host-port (\d+)/.exec(cmd);
      return !!m && ports.has(m[1]!);
    });
    const cg = ids.map(cgroupMb).reduce((s, x) => ({ rss: s.rss + x.rss, usage: s.usage + x.usage }), { rss: 0, usage: 0 });
    const boxdMb = process.memoryUsage().rss / 1048576;
    const daemonsMb = daemonPids().reduce((s, p) => s + pssOf(p), 0) - daemonsBefore;
    const perBoxMb = (Math.max(0, boxdMb - boxdBefore) + shim.mb + proxy.mb + cg.rss) / n;

    // Wakes: distinct random suspended boxes; the first request wakes the box, a second one
    // measures the data path to a running box; then it is suspended again.
    const { wake, hot } = await wakes(pick(created, Math.min(WAKES, n)));
    const resume: number[] = [];
    for (const name of pick(created, Math.min(RESUMES, n))) {
      resume.push(await time(() => api('POST', `/v1/boxes/${name}/resume`)));
      await api('POST', `/v1/boxes/${name}/suspend`);
    }
    const r: Step = {
      n, perBoxMb, boxdMb, shimMb: shim.mb, shims: shim.count, proxyMb: proxy.mb, proxies: proxy.count, cgRss: cg.rss, cgUsage: cg.usage, daemonsMb,
      createP50: median(createMs), resumeP50: median(resume), wakeP50: median(wake), wakeP99: pct(wake, 99), hotP50: median(hot), boxdCpu, daemonCpu,
    };
    results.push(r);
    console.log(
      `  ${n} suspended boxes: ${perBoxMb.toFixed(2)} MiB each; wake p50 ${r.wakeP50.toFixed(1)} ms (${(r.wakeP50 / results[0]!.wakeP50).toFixed(2)}x the first step), p99 ${r.wakeP99.toFixed(1)} ms, hot p50 ${r.hotP50.toFixed(1)} ms; idle CPU boxd ${boxdCpu.toFixed(1)}%, engine ${daemonCpu.toFixed(1)}%; ${availableGb().toFixed(1)} GiB available`,
    );
    if (stoppedEarly) break;
  }

  // Back to the first step's boxes alone, and their wakes again: the first step was measured
  // many minutes before the last, and the machine's load may have moved meanwhile.
  let again: { wake: number[]; hot: number[] } | undefined;
  const firstN = results[0]?.n ?? 0;
  if (results.length > 1) {
    console.log(`  removing all but the first ${firstN} boxes, then waking those again…`);
    await boxes.remove(created.slice(firstN).map((b) => `${prefix}-${b}`));
    await new Promise((r) => setTimeout(r, 5000)); // the host's drift check notices the removals meanwhile
    again = await wakes(created.slice(0, firstN));
  }

  const w = [6, 8, 9, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 7, 8, 9, 9, 10];
  const first = results[0]!;
  console.log(`\nsuspended tiny boxes on one host (indicative: this machine is shared), parallelism ${PAR}, ${WAKES} wakes per step; ms and MiB`);
  console.log(row(['boxes', 'MiB/box', 'boxd RSS', 'shims', 'proxies', 'cg rss', 'cg usage', 'engine Δ', 'create50', 'resume50', 'wake p50', 'wake p99', 'ratio', 'hot p50', 'adj ratio', 'cpu boxd', 'cpu engine'], w));
  for (const r of results) {
    console.log(row([String(r.n), r.perBoxMb, r.boxdMb, r.shimMb, r.proxyMb, r.cgRss, r.cgUsage, r.daemonsMb, r.createP50, r.resumeP50, r.wakeP50, r.wakeP99, `${(r.wakeP50 / first.wakeP50).toFixed(2)}x`, r.hotP50, `${(r.wakeP50 / r.hotP50 / (first.wakeP50 / first.hotP50)).toFixed(2)}x`, `${r.boxdCpu.toFixed(1)}%`, `${r.daemonCpu.toFixed(1)}%`], w));
  }
  const last = results[results.length - 1]!;
  if (again) console.log(row([`${firstN}*`, '', '', '', '', '', '', '', '', '', median(again.wake), pct(again.wake, 99), `${(median(again.wake) / first.wakeP50).toFixed(2)}x`, median(again.hot), '', '', ''], w));
  console.log(`\n  wake p50 at ${last.n} / at ${first.n}: ${(last.wakeP50 / first.wakeP50).toFixed(2)}x (goal ≤ 1.2x at 1,000 vs 10)`);
  if (again) {
    const base10 = (first.wakeP50 + median(again.wake)) / 2;
    console.log(`  *: the first ${firstN} boxes again, after the others were removed; wake p50 at ${last.n} / mean of the two at ${firstN}: ${(last.wakeP50 / base10).toFixed(2)}x`);
  }
  // The machine's load moves both the wake and a plain request to a running box: their quotient
  // over the first step's is the wake's own growth, less the load (indicative only).
  console.log(`  adjusted for load (wake/hot over the first step's): ${(last.wakeP50 / last.hotP50 / (first.wakeP50 / first.hotP50)).toFixed(2)}x`);
  console.log(
    `  per box at ${last.n}: shim ${(last.shimMb / last.n).toFixed(2)} MiB PSS (${last.shims} shims), docker-proxy ${(last.proxyMb / last.n).toFixed(2)} (${last.proxies}), cgroup rss ${(last.cgRss / last.n).toFixed(2)} / charged ${(last.cgUsage / last.n).toFixed(2)}, boxd ${((last.boxdMb - boxdBefore) / last.n).toFixed(2)}; dockerd+containerd grew ${(last.daemonsMb / last.n).toFixed(2)} per box (not in MiB/box)`,
  );
  if (failures) console.log(`  ${failures} creates failed`);
  if (stoppedEarly) console.log(`  stopped early: ${stoppedEarly}`);
} finally {
  await boxes.cleanup();
}
process.exit(0);
