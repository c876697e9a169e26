/**
 * Issue 4 bench, in one run: time from `POST /v1/boxes` to a box that answers an exec — from the
 * warm pool vs a cold create of the same golden — and fork of a box carrying a 100 MB change.
 * `npm run bench:pool` (BENCH_N, BENCH_GOLDEN=default|tiny|node).
 */
import { benchStack } from './stack.ts';
import { median, pct, row, time } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 10);
const golden = process.env.BENCH_GOLDEN ?? 'default';
const stack = await benchStack('benchw', { BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '200' });
const { api } = stack;
const ready = async () => ((await api('GET', '/v1/pool')) as { pools: { golden: string; ready: number; target: number }[] }).pools.find((p) => p.golden === golden)!;

try {
  const pooled: number[] = [];
  const cold: number[] = [];
  let misses = 0;
  for (let i = 0; i < N; i++) {
    for (let w = 0; w < 300 && (await ready()).ready < 1; w++) await new Promise((r) => setTimeout(r, 100));
    let wasPooled = false;
    pooled.push(await time(async () => {
      const b = (await api('POST', '/v1/boxes', { name: `w${i}`, golden })) as { pooled?: boolean };
      wasPooled = !!b.pooled;
      await api('POST', `/v1/boxes/w${i}/exec`, { cmd: ['true'] });
    }));
    if (!wasPooled) misses++;
    // Declaring ports skips the pool: a cold create of the same golden and image.
    cold.push(await time(async () => {
      await api('POST', '/v1/boxes', { name: `c${i}`, golden, ports: [3000, 8080] });
      await api('POST', `/v1/boxes/c${i}/exec`, { cmd: ['true'] });
    }));
    await api('DELETE', `/v1/boxes/w${i}`);
    await api('DELETE', `/v1/boxes/c${i}`);
  }

  await api('POST', '/v1/boxes', { name: 'big', golden: 'default', idleTimeoutMs: 0 });
  await api('POST', '/v1/boxes/big/exec', { cmd: ['bash', '-c', 'head -c 100M /dev/urandom > /workspace/blob.bin'] });
  const forks: number[] = [];
  for (let i = 0; i < Math.min(N, 5); i++) {
    forks.push(await time(() => api('POST', '/v1/boxes/big/fork', { name: `f${i}` })));
    await api('DELETE', `/v1/boxes/f${i}`);
  }
  await api('DELETE', '/v1/boxes/big');

  const w = [28, 10, 10];
  console.log(`\ncreate → first exec answered, golden "${golden}", N=${N} (ms)\n`);
  console.log(row(['path', 'p50', 'p95'], w));
  console.log(row([`warm pool (${N - misses}/${N} hits)`, median(pooled), pct(pooled, 95)], w));
  console.log(row(['cold create', median(cold), pct(cold, 95)], w));
  console.log(`\n  pool/cold p50 ratio ${(median(pooled) / median(cold)).toFixed(2)}x (${(median(cold) / median(pooled)).toFixed(1)}x faster)`);
  console.log(`\nfork of a running box with a 100 MB change (commit + create), N=${forks.length}: p50 ${median(forks).toFixed(0)} ms, max ${Math.max(...forks).toFixed(0)} ms`);
} finally {
  await stack.close();
}
