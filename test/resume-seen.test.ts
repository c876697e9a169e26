import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import { Lifecycle } from '../host/lifecycle.ts';
import { BoxLocks } from '../host/locks.ts';
import { FakeRuntime } from './fake-runtime.ts';
import { log, purge, testConfig } from './helpers.ts';

/**
 * Lifecycle.resume with the record the gateway saw (fake runtime, real Redis): the record moves
 * only if it is still exactly that record; anything else takes the usual path, and the box ends
 * as its record says.
 */
describe('resume with the record the gateway saw', () => {
  const config = testConfig();
  const prefix = config.BOXD_PREFIX;
  const redis = new Redis(config.REDIS_URL);
  after(async () => {
    await purge(prefix);
    await redis.quit();
  });
  const runtime = new FakeRuntime();
  const store = new BoxStore(redis, prefix);
  const lifecycle = new Lifecycle({ store, runtime, redis, locks: new BoxLocks(), prefix, hostId: 'h', pidsLimit: 64, log });
  const suspended = async (name: string) => {
    await store.create({ name, account: 'a', imageRef: 'fake/base:1', ports: [], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 64, hostId: 'h' }, -1);
    await lifecycle.create(name, true);
    await lifecycle.suspend(name);
    const box = await store.require(name);
    assert.equal(runtime.boxes.get(box.runtimeId!)!.state, 'paused');
    return box;
  };

  it('thaws and moves the record in one step when it is still the record seen', async () => {
    const seen = await suspended('s1');
    const box = await lifecycle.resume('s1', { state: seen.state, version: seen.version, runtimeId: seen.runtimeId });
    assert.equal(box.state, 'running');
    assert.equal(box.version, seen.version + 1);
    assert.deepEqual(await store.require('s1'), box, 'the answer is the stored record');
    assert.equal(runtime.boxes.get(seen.runtimeId!)!.state, 'running');
  });

  it('takes the usual path when the record moved since (older version, or already resumed)', async () => {
    const seen = await suspended('s2');
    const stale = { state: seen.state, version: seen.version - 1, runtimeId: seen.runtimeId };
    const box = await lifecycle.resume('s2', stale);
    assert.equal(box.state, 'running');
    assert.equal((await store.require('s2')).state, 'running');
    assert.equal(runtime.boxes.get(seen.runtimeId!)!.state, 'running');
    // The same seen record again: the box already runs, nothing moves.
    const again = await lifecycle.resume('s2', { state: seen.state, version: seen.version, runtimeId: seen.runtimeId });
    assert.equal(again.state, 'running');
    assert.equal(again.version, box.version);
  });

  it('leaves a box marked lost while suspended frozen, as its record says, and refuses', async () => {
    const seen = await suspended('s3');
    assert.ok(await store.lose('s3', 'test: host thought dead'));
    await assert.rejects(
      lifecycle.resume('s3', { state: seen.state, version: seen.version, runtimeId: seen.runtimeId }),
      (e: unknown) => e instanceof BoxdError && e.code === 'BOX_STATE',
    );
    assert.equal(runtime.boxes.get(seen.runtimeId!)!.state, 'paused');
    assert.equal((await store.require('s3')).state, 'lost');
  });

  it('resumes the record’s own container when the seen one is gone', async () => {
    const seen = await suspended('s4');
    const box = await lifecycle.resume('s4', { state: 'suspended', version: seen.version, runtimeId: 'no-such-container' });
    assert.equal(box.state, 'running');
    assert.equal(runtime.boxes.get(seen.runtimeId!)!.state, 'running');
  });
});
