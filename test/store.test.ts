import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore, type BoxEvent, type BoxRecord } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import { purge, testConfig } from './helpers.ts';

const record = (name: string, account = 'a'): Omit<BoxRecord, 'state' | 'version'> => ({
  name, account, imageRef: 'img', ports: [80], hostPorts: {}, public: true, env: {}, idleTimeoutMs: 1000,
  cpus: 1, memoryMb: 128, createdAt: 1, lastActivityAt: 1, hostId: 'h',
});

describe('BoxStore on real Redis', () => {
  const config = testConfig();
  const redis = new Redis(config.REDIS_URL);
  const sub = new Redis(config.REDIS_URL);
  const store = new BoxStore(redis, config.BOXD_PREFIX);
  const events: BoxEvent[] = [];
  before(async () => {
    await sub.subscribe(store.eventsChannel);
    sub.on('message', (_c, m) => events.push(JSON.parse(m)));
  });
  after(async () => {
    await purge(config.BOXD_PREFIX);
    await redis.quit();
    await sub.quit();
  });

  it('creates atomically: one winner per name, limit per account', async () => {
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => store.create(record('dup'), 10)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const limited = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => store.create(record(`l${i}`, 'lim'), 3)));
    assert.equal(limited.filter((r) => r.status === 'fulfilled').length, 3);
    assert.equal(await store.count('lim'), 3);
  });

  it('lets exactly one of two racing wakes win and publishes each change', async () => {
    await store.create(record('race'), 10);
    await store.transition('race', ['creating'], 'suspended');
    // Two gateways wake the same suspended box over two connections, 50 times.
    const other = new Redis(config.REDIS_URL);
    const store2 = new BoxStore(other, config.BOXD_PREFIX);
    let conflicts = 0;
    try {
      for (let i = 0; i < 50; i++) {
        const r = await Promise.allSettled([store.transition('race', ['suspended'], 'running'), store2.transition('race', ['suspended'], 'running')]);
        assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1, 'one wake of a pair wins');
        conflicts += r.filter((x) => x.status === 'rejected' && (x.reason as BoxdError).code === 'BOX_STATE').length;
        await store.transition('race', ['running'], 'suspended');
      }
    } finally {
      await other.quit();
    }
    assert.equal(conflicts, 50, 'the other wake of each pair lost with BOX_STATE');
    const box = await store.require('race');
    assert.equal(box.state, 'suspended');
    assert.equal(box.version, 1 + 1 + 100);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(events.some((e) => e.name === 'race' && e.state === 'running' && e.from === 'suspended'));
  });

  it('orders a wake and a suspend: each sees the state the other left', async () => {
    await store.create(record('ws'), 10);
    await store.transition('ws', ['creating'], 'suspended');
    for (let i = 0; i < 20; i++) {
      // Sent together on one connection, so Redis runs them in this order. A transition that
      // read the state before the other's write (check then set in two steps) would refuse the suspend.
      const wakeFirst = i % 2 === 0;
      const wake = () => store.transition('ws', ['suspended'], 'running');
      const suspend = () => store.transition('ws', ['running'], 'suspended');
      const [a, b] = await Promise.allSettled(wakeFirst ? [wake(), suspend()] : [suspend(), wake()]);
      const [w, s] = wakeFirst ? [a, b] : [b, a];
      assert.equal(w.status, 'fulfilled', 'the wake of a suspended box always wins');
      if (wakeFirst) {
        assert.equal(s.status, 'fulfilled', 'a suspend sent after the wake sees running');
        assert.equal((await store.require('ws')).state, 'suspended');
      } else {
        assert.equal(s.status, 'rejected', 'a suspend sent before the wake finds it suspended');
        assert.equal(((s as PromiseRejectedResult).reason as BoxdError).code, 'BOX_STATE');
        assert.equal((await store.require('ws')).state, 'running');
        await store.transition('ws', ['running'], 'suspended');
      }
    }
    assert.equal((await store.require('ws')).version, 1 + 1 + 20 * 2);
  });

  it('summarises a host\'s boxes with the same fields as their whole records', async () => {
    await store.create({ ...record('sum-a'), hostId: 'sum-host', runtimeId: 'rt-a', cpus: 0.5, memoryMb: 256, idleTimeoutMs: 0 }, 10);
    await store.create({ ...record('sum-b'), hostId: 'sum-host' }, 10);
    await store.transition('sum-b', ['creating'], 'suspended');
    const whole = await store.list({ hostId: 'sum-host' });
    const pickOf = (b: BoxRecord) => ({ name: b.name, state: b.state, cpus: b.cpus, memoryMb: b.memoryMb, idleTimeoutMs: b.idleTimeoutMs, lastActivityAt: b.lastActivityAt, hostId: b.hostId, runtimeId: b.runtimeId });
    assert.deepEqual(await store.summaries('sum-host'), whole.map(pickOf));
    assert.deepEqual((await store.summaries('sum-host')).map((b) => [b.name, b.state, b.runtimeId]), [['sum-a', 'creating', 'rt-a'], ['sum-b', 'suspended', undefined]]);
    assert.deepEqual(await store.summaries('nobody'), []);
  });

  it('never moves activity backwards and removes idempotently', async () => {
    await store.create(record('act'), 10);
    await store.touch('act', 500);
    await store.touch('act', 200);
    assert.equal((await store.require('act')).lastActivityAt, 500);
    await store.remove('act');
    await store.remove('act');
    assert.equal(await store.get('act'), undefined);
    await assert.rejects(store.transition('act', '*', 'running'), (e) => (e as BoxdError).code === 'BOX_NOT_FOUND');
  });
});
