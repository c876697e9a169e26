/**
 * Issue 9 bench: what the per-box disk quota costs. In one run, cold creates and deletes through
 * the API on two stacks, interleaved: one with quotas (BOXD_BOX_DISK_MB=102400, the default: a
 * 100 GiB sparse ext4 per box, loop-mounted under its writable layer) and one without
 * (BOXD_BOX_DISK_MB=0). Both install egress rules. Prints medians, p95 and the ratio.
 * `npm run bench:limits` (BENCH_N, BENCH_GOLDEN=tiny|default).
 */
import { benchStack } from './stack.ts';
import { median, pct, row, time } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 10);
const golden = process.env.BENCH_GOLDEN ?? 'tiny';
const quota = await benchStack('benchq', { BOXD_POOL: 'false', BOXD_IDLE_TIMEOUT_MS: '0', BOXD_BOX_DISK_MB: '102400' });
const plain = await benchStack('benchp', { BOXD_POOL: 'false', BOXD_IDLE_TIMEOUT_MS: '0', BOXD_BOX_DISK_MB: '0' });
const r = { quota: { create: [] as number[], destroy: [] as number[] }, plain: { create: [] as number[], destroy: [] as number[] } };

try {
  for (const s of [quota, plain]) {
    await s.api('POST', '/v1/boxes', { name: 'warm', golden });
    await s.api('DELETE', '/v1/boxes/warm');
  }
  for (let i = 0; i < N; i++) {
    for (const [kind, s] of [['quota', quota], ['plain', plain]] as const) {
      const name = `b${i}`;
      r[kind].create.push(await time(() => s.api('POST', '/v1/boxes', { name, golden })));
      r[kind].destroy.push(await time(() => s.api('DELETE', `/v1/boxes/${name}`)));
    }
  }
  const w = [10, 12, 12, 12, 12, 8];
  console.log(`\ncold create/delete through the API, golden ${golden}, N=${N} each (ms)\n`);
  console.log(row(['operation', 'quota p50', 'quota p95', 'none p50', 'none p95', 'p50 x'], w));
  for (const op of ['create', 'destroy'] as const) {
    console.log(row([op, median(r.quota[op]), pct(r.quota[op], 95), median(r.plain[op]), pct(r.plain[op], 95), median(r.quota[op]) / median(r.plain[op])], w));
  }
  console.log('\nquota = 100 GiB loop ext4 under the writable layer (mkfs + mount before start); none = BOXD_BOX_DISK_MB=0.');
} finally {
  await quota.close();
  await plain.close();
}
