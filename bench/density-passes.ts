/**
 * Issue 11 probe: what each periodic pass of a host costs as suspended boxes pile up, and how long
 * the event loop stalls meanwhile. At each step (10, 100, 300 by default: argv[2] is the maximum)
 * times the idle sweep, the records read of heartbeat and drift, a drift check and the engine's
 * labeled list, then the event-loop delay (p99/max) over BENCH_IDLE_S idle seconds, then
 * BENCH_WAKES preview wakes of distinct random suspended boxes (p50/p99) with the loop delay
 * during them. Gateway and host run in this process, like bench/density.ts.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { DensityBoxes, pick } from './density-boxes.ts';
import { median, pct, time } from './stats.ts';
import { firstByte } from './http.ts';

const MAX = Number(process.argv[2] ?? process.env.BOXD_DENSITY_MAX ?? 300);
const PAR = Number(process.env.BENCH_PAR ?? 4);
const WAKES = Number(process.env.BENCH_WAKES ?? 40);
const IDLE_S = Number(process.env.BENCH_IDLE_S ?? 10);
const STEPS = [10, 100, 300, 1000].filter((s) => s < MAX).concat(MAX);
const boxes = new DensityBoxes('dnsp');

const ms = (ns: number) => ns / 1e6;
const f = (x: number) => x.toFixed(1);
/** Median wall time and CPU time (this process) of `n` runs of `fn`, as "wall/cpu" ms. */
async function cost(fn: () => Promise<unknown>, n = 5): Promise<string> {
  const t: number[] = [];
  const c: number[] = [];
  for (let i = 0; i < n; i++) {
    const c0 = process.cpuUsage();
    t.push(await time(fn));
    const d = process.cpuUsage(c0);
    c.push((d.user + d.system) / 1000);
  }
  return `${f(median(t))}/${f(median(c))}`;
}

const created: string[] = [];
try {
  const stack = await boxes.start('density2', MAX);
  const { api, port, host, config } = stack;
  const hostId = config.BOXD_HOST_ID;
  const labels = { 'boxd.managed': 'true', 'boxd.instance': config.BOXD_PREFIX, 'boxd.host': hostId };
  const store = (host.lifecycle as unknown as { d: { store: import('../core/boxes.ts').BoxStore } }).d.store;
  console.log(`density passes: up to ${MAX} boxes; prefix ${config.BOXD_PREFIX}`);
  console.log('boxes | idle sweep wall/cpu | summaries | drift check | engine list | idle loop p99/max | wake p50/p99 | wake loop p99/max | idle cpu');
  for (const step of STEPS) {
    const todo = Array.from({ length: step - created.length }, (_, i) => `d${created.length + i}`);
    await Promise.all(Array.from({ length: PAR }, async () => {
      for (let name = todo.shift(); name; name = todo.shift()) {
        await boxes.suspendedBox(name);
        created.push(name);
      }
    }));
    const sweep = await cost(() => host.idle.sweep());
    const sums = await cost(() => store.summaries(hostId));
    const drift = await cost(() => host.drift.check());
    const list = await cost(() => host.runtime.list(labels));
    const h = monitorEventLoopDelay({ resolution: 5 });
    const cpu0 = process.cpuUsage();
    h.enable();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    h.disable();
    const c = process.cpuUsage(cpu0);
    const idleCpu = ((c.user + c.system) / 1e6 / IDLE_S) * 100;
    const idleLoop = [ms(h.percentile(99)), ms(h.max)];
    const w = monitorEventLoopDelay({ resolution: 5 });
    w.enable();
    const wake: number[] = [];
    for (const name of pick(created, Math.min(WAKES, created.length))) {
      wake.push(await firstByte(port, `${name}.${config.BOXD_BASE_DOMAIN}`));
      await api('POST', `/v1/boxes/${name}/suspend`);
    }
    w.disable();
    console.log(`${created.length} | ${sweep} | ${sums} | ${drift} | ${list} | ${f(idleLoop[0]!)}/${f(idleLoop[1]!)} | ${f(median(wake))}/${f(pct(wake, 99))} | ${f(ms(w.percentile(99)))}/${f(ms(w.max))} | ${f(idleCpu)}%`);
  }
} finally {
  await boxes.cleanup();
}
process.exit(0);
