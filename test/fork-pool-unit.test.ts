import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import type { Golden } from '../golden-images/definitions.ts';
import { Lifecycle } from '../host/lifecycle.ts';
import { BoxLocks } from '../host/locks.ts';
import { poolFor } from '../gateway/fork-api.ts';
import { claimPooled } from '../pool/claim.ts';
import { WarmPool } from '../pool/warm-pool.ts';
import { FakeRuntime } from './fake-runtime.ts';
import { log, purge, testConfig } from './helpers.ts';

/** The pool fork path's host side on a fake runtime and real Redis. */
describe('fork onto a pooled box (fake runtime)', () => {
  const config = testConfig();
  const prefix = config.BOXD_PREFIX;
  const redis = new Redis(config.REDIS_URL);
  after(async () => {
    await purge(prefix);
    await redis.quit();
  });
  const golden: Golden = {
    name: 'g', dir: '', baseTag: '', tag: 'fake/base:1',
    manifest: { description: '', base: 'busybox', poolSize: 1, ports: [80], cpus: 1, memoryMb: 64, idleTimeoutMs: 1000 },
  };
  const setup = async (hostId: string) => {
    const runtime = new FakeRuntime();
    const store = new BoxStore(redis, prefix);
    const lifecycle = new Lifecycle({ store, runtime, redis, locks: new BoxLocks(), prefix, hostId, pidsLimit: 64, log });
    const pool = new WarmPool({ redis, store, lifecycle, runtime, goldens: () => new Map([['g', golden]]), prefix, hostId, log });
    await pool.fill();
    const base = { account: 'a', golden: 'g', imageRef: 'fake/base:1', ports: [80], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 64, hostId };
    await store.create({ ...base, name: `${hostId}-parent` }, -1);
    await lifecycle.create(`${hostId}-parent`, true);
    await lifecycle.writeFile(`${hostId}-parent`, '/work/a.txt', Buffer.from('changed'));
    const claim = async (child: string) =>
      claimPooled(redis, prefix, { hostId, golden: 'g', name: child, account: 'a', limit: -1, fields: { parent: `${hostId}-parent`, origin: 'fork-pool' } });
    return { runtime, store, lifecycle, claim, parent: `${hostId}-parent` };
  };

  it('copies the parent into the claimed box, thaws both, and leaves a running parent running', async () => {
    const { runtime, store, lifecycle, claim, parent } = await setup('h1');
    assert.ok(await claim('h1-child'));
    runtime.calls = [];
    const child = await lifecycle.forkFromPool(parent, 'h1-child');
    assert.equal(child.state, 'running');
    assert.equal(child.origin, 'fork-pool');
    assert.equal(child.parent, parent);
    assert.equal((await lifecycle.openFile('h1-child', '/work/a.txt')).size, 7);
    const parentId = (await store.require(parent)).runtimeId!;
    assert.deepEqual(runtime.calls.filter((c) => c.includes(parentId)), [`suspend ${parentId}`, `resume ${parentId}`], 'frozen for the copy only');
    assert.equal(runtime.boxes.get(parentId)!.state, 'running');
  });

  it('falls back to the commit path when the runtime cannot copy, and the claimed box goes', async () => {
    const { runtime, store, lifecycle, claim, parent } = await setup('h2');
    assert.ok(await claim('h2-child'));
    const pooledId = (await store.require('h2-child')).runtimeId!;
    runtime.copyChanges = async () => {
      throw new BoxdError('NOT_SUPPORTED', 'no overlay here');
    };
    const child = await lifecycle.forkFromPool(parent, 'h2-child');
    assert.equal(child.state, 'running');
    assert.equal(child.origin, 'fork-commit');
    assert.match(child.imageRef, /^boxd-fork\//);
    assert.equal(runtime.boxes.has(pooledId), false, 'the claimed pool box was removed');
    assert.equal(runtime.boxes.get((await store.require(parent)).runtimeId!)!.state, 'running');
  });

  it('removes the child on any other failure', async () => {
    const { runtime, store, lifecycle, claim, parent } = await setup('h3');
    assert.ok(await claim('h3-child'));
    runtime.copyChanges = async () => {
      throw new BoxdError('RUNTIME_ERROR', 'disk full');
    };
    await assert.rejects(lifecycle.forkFromPool(parent, 'h3-child'), /disk full/);
    assert.equal(await store.get('h3-child'), undefined);
    assert.equal(runtime.boxes.get((await store.require(parent)).runtimeId!)!.state, 'running', 'the parent is thawed');
  });

  it('takes the pool path only for boxes of the golden’s image, ports and limits', () => {
    const g = { name: 'g', tag: 't:1', description: '', ports: [80], poolSize: 1, cpus: 1, memoryMb: 64, idleTimeoutMs: 0, built: true };
    const box = { imageRef: 't:1', ports: [80], cpus: 1, memoryMb: 64 } as Parameters<typeof poolFor>[0];
    assert.equal(poolFor(box, g), g);
    assert.equal(poolFor({ ...box, imageRef: 'boxd-fork/x:v1' }, g), undefined);
    assert.equal(poolFor({ ...box, ports: [80, 81] }, g), undefined);
    assert.equal(poolFor({ ...box, memoryMb: 128 }, g), undefined);
    assert.equal(poolFor(box, { ...g, poolSize: 0 }), undefined);
    assert.equal(poolFor(box, undefined), undefined);
  });
});
