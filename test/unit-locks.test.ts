import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoxLocks } from '../host/locks.ts';

const tick = () => new Promise((r) => setImmediate(r));

describe('BoxLocks', () => {
  it('lets shared holders overlap and keeps exclusive ones apart', async () => {
    const locks = new BoxLocks();
    const events: string[] = [];
    let release1!: () => void;
    const s1 = locks.shared('a', () => new Promise<void>((r) => (release1 = () => (events.push('s1 end'), r()))));
    const s2 = locks.shared('a', async () => void events.push('s2'));
    await tick();
    assert.equal(locks.busy('a'), 1, 's2 already finished while s1 still holds');
    const ex = locks.exclusive('a', async () => void events.push('ex'));
    const s3 = locks.shared('a', async () => void events.push('s3'));
    await tick();
    assert.deepEqual(events, ['s2'], 'exclusive waits for s1; s3 queues behind the exclusive');
    release1();
    await Promise.all([s1, s2, ex, s3]);
    assert.deepEqual(events, ['s2', 's1 end', 'ex', 's3']);
    assert.equal(locks.active('a'), false);
  });

  it('releases the lock when the holder throws', async () => {
    const locks = new BoxLocks();
    await assert.rejects(locks.exclusive('b', async () => { throw new Error('boom'); }));
    assert.equal(await locks.exclusive('b', async () => 42), 42);
  });

  it('keeps boxes independent', async () => {
    const locks = new BoxLocks();
    let release!: () => void;
    const held = locks.exclusive('x', () => new Promise<void>((r) => (release = r)));
    assert.equal(await locks.exclusive('y', async () => 'free'), 'free');
    release();
    await held;
  });
});
