import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import { Lifecycle } from '../host/lifecycle.ts';
import { BoxLocks } from '../host/locks.ts';
import { FakeRuntime } from './fake-runtime.ts';
import { log, purge, testConfig } from './helpers.ts';

/** Retried host jobs on real Redis (a fake runtime injects the failures): all or nothing. */
describe('retried host jobs', () => {
  const config = testConfig();
  const prefix = config.BOXD_PREFIX;
  const redis = new Redis(config.REDIS_URL);
  after(async () => {
    await purge(prefix);
    await redis.quit();
  });
  const newBox = (store: BoxStore, name: string, imageRef = 'fake/base:1') =>
    store.create({ name, account: 'a', imageRef, ports: [80], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 64, hostId: 'h' }, -1);

  class FlakyCommit extends FakeRuntime {
    failures = 0;
    override async commit(id: string, ref: string): Promise<void> {
      if (this.failures > 0) {
        this.failures--;
        throw new BoxdError('RUNTIME_ERROR', 'engine hiccup during commit');
      }
      return super.commit(id, ref);
    }
  }

  const setup = () => {
    const runtime = new FlakyCommit();
    const store = new BoxStore(redis, prefix);
    const lifecycle = new Lifecycle({ store, runtime, redis, locks: new BoxLocks(), prefix, hostId: 'h', pidsLimit: 64, log });
    return { runtime, store, lifecycle };
  };

  it('a fork whose first attempt fails is finished whole by its retry', async () => {
    const { runtime, store, lifecycle } = setup();
    await newBox(store, 'p1');
    await lifecycle.create('p1', true);
    await newBox(store, 'c1', '');
    runtime.failures = 1;
    await assert.rejects(lifecycle.fork('p1', 'c1', false), (e) => (e as BoxdError).code === 'RUNTIME_ERROR');
    const child = await lifecycle.fork('p1', 'c1', true);
    assert.equal(child.state, 'running');
    assert.equal(child.name, 'c1');
    assert.ok(runtime.boxes.has(lifecycle.idOf(child)));
  });

  it('a fork that fails for good leaves no record at all, and a late retry writes none', async () => {
    const { runtime, store, lifecycle } = setup();
    await newBox(store, 'p2');
    await lifecycle.create('p2', true);
    await newBox(store, 'c2', '');
    runtime.failures = 2;
    await assert.rejects(lifecycle.fork('p2', 'c2', true), (e) => (e as BoxdError).code === 'RUNTIME_ERROR');
    assert.equal(await redis.exists(store.key('c2')), 0, 'the failed fork left nothing');
    // The gateway gave up and removed the record; the job's retry runs after that.
    await newBox(store, 'c3', '');
    runtime.failures = 1;
    await assert.rejects(lifecycle.fork('p2', 'c3', false));
    await store.remove('c3');
    await assert.rejects(lifecycle.fork('p2', 'c3', true), (e) => (e as BoxdError).code === 'BOX_NOT_FOUND');
    assert.equal(await redis.exists(store.key('c3')), 0, 'no half record answering 409 to create and 404 to GET');
    await newBox(store, 'c3', ''); // the name is free again
    assert.equal((await lifecycle.fork('p2', 'c3', true)).state, 'running');
    assert.ok(!runtime.images.has(`boxd-fork/${prefix}-c2:v1`), 'the failed fork left no image');
  });
});
