/**
 * Issue 4 bench, in one run: time from `POST /v1/boxes` to a box that answers an exec — from the
 * warm pool vs a cold create of the same golden — and fork of a box carrying a 100 MB change.
 * `npm run bench:pool` (BENCH_N, BENCH_GOLDEN=default|tiny|node).
 */
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../core/config.ts';
import { silentLogger as log } from '../core/log.ts';
import { createGateway } from '../gateway/gateway.ts';
import { startHost } from '../host/host.ts';
import { median, pct, row, time } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 10);
const golden = process.env.BENCH_GOLDEN ?? 'default';
const prefix = `benchw-${randomBytes(3).toString('hex')}`;
const key = `bench-${randomBytes(12).toString('hex')}`;
const config = loadConfig({ ...process.env, BOXD_PREFIX: prefix, BOXD_HOST_ID: prefix, BOXD_API_KEY: key, BOXD_MAX_BOXES: '1000', LOG_LEVEL: 'silent', BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '200' });
const host = await startHost(config, log);
const gateway = await createGateway(config, log);
await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
const port = (gateway.server.address() as { port: number }).port;
const api = async (method: string, path: string, body?: unknown) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
};
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
  await gateway.close();
  await host.close();
  const { purge } = await import('../test/helpers.ts');
  await purge(prefix);
}
