import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { Accounts, hashSecret } from '../core/accounts.ts';
import { KeyCache } from '../gateway/key-cache.ts';
import { purge, testConfig, waitFor } from './helpers.ts';

/**
 * The gateway's key cache on real Redis: a key deleted by another process (a host revoking a
 * destroyed box's keys, another gateway) stops working here through the pub/sub message alone.
 * The TTL is set far out so only the message can drop the entry.
 */
describe('key cache', () => {
  const config = testConfig();
  const prefix = config.BOXD_PREFIX;
  let redis: Redis, other: Redis, sub: Redis;
  let cache: KeyCache;
  let here: Accounts;

  before(async () => {
    redis = new Redis(config.REDIS_URL);
    other = new Redis(config.REDIS_URL);
    sub = new Redis(config.REDIS_URL);
    here = new Accounts(redis, prefix, 10);
    cache = new KeyCache(here, sub, prefix, 60_000);
    await cache.start();
  });
  after(async () => {
    await Promise.all([redis.quit(), other.quit(), sub.quit()]);
    await purge(prefix);
  });

  it('serves a known key from memory and drops it when another process deletes it', async () => {
    const there = new Accounts(other, prefix, 10);
    const { key, record } = await there.createKeyRecord('acct-x');
    assert.equal((await cache.lookup(key))?.account, 'acct-x');
    // Cached: the record is gone from Redis behind the cache's back (no message), still served.
    const hash = `{${prefix}}:apikey:${hashSecret(key)}`;
    const raw = await redis.get(hash);
    await redis.del(hash);
    assert.equal((await cache.lookup(key))?.account, 'acct-x', 'served from the cache');
    await redis.set(hash, raw!);
    await there.deleteKey(record.id);
    await waitFor(async () => ((await cache.lookup(key)) === undefined ? true : undefined), 2000, 5);
  });

  it('never remembers an unknown key: a key created after a miss works at once', async () => {
    const key = `bxd_${Math.random().toString(36).slice(2)}xyz`;
    assert.equal(await cache.lookup(key), undefined);
    await new Accounts(other, prefix, 10).addKey(key, 'acct-y');
    assert.equal((await cache.lookup(key))?.account, 'acct-y');
  });
});
