/**
 * Issue 5 bench: latency from a signed webhook trigger to the start of the task's first step,
 * with a warm pool (and with the pool off, for comparison). `npm run bench:tasks` (BENCH_N).
 */
import { sign } from '../core/hooks.ts';
import { benchStack } from './stack.ts';
import { median, pct, row } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 10);
const golden = process.env.BENCH_GOLDEN ?? 'default';

async function measure(pool: boolean): Promise<{ latency: number[]; hits: number }> {
  const stack = await benchStack('bencht', { BOXD_POOL: String(pool), BOXD_POOL_FILL_MS: '200' });
  const base = `http://127.0.0.1:${stack.port}`;
  const api = stack.api;
  try {
    const hook = await api('POST', '/v1/hooks', { name: 'bench', golden, steps: [{ cmd: 'cat "$BOXD_PAYLOAD" > /dev/null' }] });
    const latency: number[] = [];
    let hits = 0;
    for (let i = 0; i < N; i++) {
      if (pool) for (let w = 0; w < 300; w++) {
        const p = (await api('GET', '/v1/pool')).pools.find((x: { golden: string }) => x.golden === golden);
        if (p.ready >= 1) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const payload = JSON.stringify({ i });
      const res = await fetch(`${base}/hooks/${hook.id}`, { method: 'POST', headers: { 'X-Boxd-Signature': sign(hook.secret, payload), 'X-Boxd-Delivery': `bench-${i}-${Math.random()}` }, body: payload });
      const { task } = (await res.json()) as { task: { id: string } };
      let t: any;
      for (let w = 0; w < 600; w++) {
        t = await api('GET', `/v1/tasks/${task.id}`);
        if (t.state === 'succeeded' || t.state === 'failed') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      if (t.state !== 'succeeded') throw new Error(`task ${task.id} ${t.state}: ${t.error}`);
      latency.push(Date.parse(t.steps[0].startedAt) - Date.parse(t.triggeredAt));
    }
    const stats = (await api('GET', '/v1/pool')).pools.find((x: { golden: string }) => x.golden === golden);
    hits = stats?.hits ?? 0;
    return { latency, hits };
  } finally {
    await stack.close();
  }
}

const warm = await measure(true);
const cold = await measure(false);
console.log(`\ntrigger → first step started, golden "${golden}", N=${N} (ms; clock: the task record's timestamps)\n`);
console.log(row(['path', 'p50', 'p95'], [26, 10, 10]));
console.log(row([`warm pool (${warm.hits}/${N} hits)`, median(warm.latency), pct(warm.latency, 95)], [26, 10, 10]));
console.log(row(['pool off (cold create)', median(cold.latency), pct(cold.latency, 95)], [26, 10, 10]));
