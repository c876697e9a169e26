import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore } from '../core/boxes.ts';
import type { Golden } from '../golden-images/definitions.ts';
import { Lifecycle } from '../host/lifecycle.ts';
import { BoxLocks } from '../host/locks.ts';
import { claimPooled } from '../pool/claim.ts';
import { WarmPool } from '../pool/warm-pool.ts';
import { FakeRuntime } from './fake-runtime.ts';
import { log, purge, testConfig } from './helpers.ts';

/** Pool logic on a fake runtime (fast) and real Redis (the claims are Lua scripts). */
describe('WarmPool with a fake runtime', () => {
  const config = testConfig();
  const prefix = config.BOXD_PREFIX;
  const redis = new Redis(config.REDIS_URL);
  after(async () => {
    await purge(prefix);
    await redis.quit();
  });
  const golden = (size: number, tag = 'fake/base:1'): Golden => ({
    name: 'g', dir: '', baseTag: '', tag,
    manifest: { description: '', base: 'busybox', poolSize: size, ports: [80], cpus: 1, memoryMb: 64, idleTimeoutMs: 1000 },
  });
  const setup = (size: number, hostId = 'h1') => {
    const runtime = new FakeRuntime();
    const store = new BoxStore(redis, prefix);
    const lifecycle = new Lifecycle({ store, runtime, redis, locks: new BoxLocks(), prefix, hostId, pidsLimit: 64, log });
    let goldens = new Map([['g', golden(size)]]);
    const pool = new WarmPool({ redis, store, lifecycle, runtime, goldens: () => goldens, prefix, hostId, log });
    return { runtime, store, pool, setGolden: (g: Golden) => (goldens = new Map([['g', g]])) };
  };

  it('fills to size with suspended boxes, and 20 racing claims get distinct boxes', async () => {
    const { pool, runtime } = setup(5);
    await pool.fill();
    const ready = await pool.ready('g');
    assert.equal(ready.length, 5);
    assert.ok([...runtime.boxes.values()].every((b) => b.state === 'paused'));
    const claims = await Promise.all(
      Array.from({ length: 20 }, (_, i) => claimPooled(redis, prefix, { hostId: 'h1', golden: 'g', name: `c${i}`, account: 'acc', limit: 100, fields: {} })),
    );
    const got = claims.filter((c) => c).map((c) => c!.pooled);
    assert.equal(got.length, 5, 'five boxes, five winners');
    assert.equal(new Set(got).size, 5, 'never the same box twice');
    assert.deepEqual(await pool.ready('g'), []);
  });

  it('close waits for the fill in flight and leaves no half-made box', async () => {
    const { pool, runtime, store } = setup(3, 'h2');
    const filling = pool.fill();
    await pool.close();
    await filling;
    const listed = await pool.ready('g');
    const records = (await store.list({ hostId: 'h2' })).map((b) => b.name);
    assert.deepEqual(records.sort(), [...listed].sort(), 'every record is a listed, ready box');
    assert.equal(runtime.boxes.size, listed.length);
    await pool.fill();
    assert.deepEqual(await pool.ready('g'), listed, 'a closed pool does not fill');
  });

  it('drains boxes of an old build and trims to a smaller size', async () => {
    const { pool, setGolden, runtime } = setup(3, 'h3');
    await pool.fill();
    runtime.images.set('fake/base:2', new Map());
    setGolden(golden(2, 'fake/base:2'));
    await pool.fill();
    const ready = await pool.ready('g');
    assert.equal(ready.length, 2);
    assert.ok([...runtime.boxes.values()].every((b) => b.spec.image === 'fake/base:2'));
  });

  it('a refill never destroys a box claimed between its read of the pool and its removal', async () => {
    const runtime = new FakeRuntime();
    const hostId = 'h4';
    let claimDuringRead: string | undefined;
    // A claim lands exactly while the refill looks at the pooled box it is about to drain.
    class RacingStore extends BoxStore {
      override async get(name: string) {
        const box = await super.get(name);
        if (name === claimDuringRead) {
          claimDuringRead = undefined;
          assert.ok(await claimPooled(redis, prefix, { hostId, golden: 'g', name: 'claimed', account: 'acc', limit: 100, fields: {} }));
        }
        return box;
      }
    }
    const store = new RacingStore(redis, prefix);
    const lifecycle = new Lifecycle({ store, runtime, redis, locks: new BoxLocks(), prefix, hostId, pidsLimit: 64, log });
    let goldens = new Map([['g', golden(1)]]);
    const pool = new WarmPool({ redis, store, lifecycle, runtime, goldens: () => goldens, prefix, hostId, log });
    await pool.fill();
    const [pooled] = await pool.ready('g');
    assert.ok(pooled);
    // A new build of the golden: the refill drains the old box, which is claimed meanwhile.
    runtime.images.set('fake/base:2', new Map());
    goldens = new Map([['g', golden(1, 'fake/base:2')]]);
    claimDuringRead = pooled;
    await pool.fill();
    assert.equal(claimDuringRead, undefined, 'the claim ran inside the refill');
    const claimed = await store.require('claimed');
    assert.equal(claimed.account, 'acc');
    assert.ok(runtime.boxes.has(lifecycle.idOf(claimed)), 'the claimed box keeps its container');
    assert.equal((await pool.ready('g')).length, 1, 'the pool was refilled with a new box');
  });
});
