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

  it('lets exactly one of two racing transitions win and publishes each change', async () => {
    await store.create(record('race'), 10);
    await store.transition('race', ['creating'], 'running');
    // A wake (suspended→running) and an auto-suspend (running→suspended) race 50 times.
    let conflicts = 0;
    for (let i = 0; i < 50; i++) {
      const r = await Promise.allSettled([store.transition('race', ['running'], 'suspended'), store.transition('race', ['running'], 'suspended')]);
      conflicts += r.filter((x) => x.status === 'rejected' && (x.reason as BoxdError).code === 'BOX_STATE').length;
      await store.transition('race', ['suspended'], 'running');
    }
    assert.equal(conflicts, 50, 'every second suspend of a pair lost');
    const box = await store.require('race');
    assert.equal(box.state, 'running');
    assert.equal(box.version, 1 + 1 + 100);
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(events.some((e) => e.name === 'race' && e.state === 'suspended' && e.from === 'running'));
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
