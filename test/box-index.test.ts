import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore, type BoxRecord } from '../core/boxes.ts';
import { HostBoxIndex } from '../host/box-index.ts';
import { log, purge, testConfig, waitFor } from './helpers.ts';

const record = (name: string, hostId: string): Omit<BoxRecord, 'state' | 'version'> => ({
  name, account: 'a', imageRef: 'img', ports: [80], hostPorts: {}, public: true, env: {}, idleTimeoutMs: 1000,
  cpus: 1, memoryMb: 128, createdAt: 1, lastActivityAt: 1, hostId,
});

/** The host's in-memory copy of its boxes follows Redis through box events alone (no whole reread during the test). */
describe('HostBoxIndex on real Redis', () => {
  const config = testConfig();
  const redis = new Redis(config.REDIS_URL);
  const sub = new Redis(config.REDIS_URL);
  const store = new BoxStore(redis, config.BOXD_PREFIX);
  const index = new HostBoxIndex({ store, sub, hostId: 'me', fullMs: 3_600_000, log });
  const seen = (name: string) => index.list().find((b) => b.name === name);
  before(async () => {
    await store.create(record('early', 'me'), -1);
    await index.start();
  });
  after(async () => {
    index.stop();
    await purge(config.BOXD_PREFIX);
    await Promise.all([redis.quit(), sub.quit()]);
  });

  it('reads the boxes there were at start, then follows creates, transitions and removals of its own host only', async () => {
    assert.deepEqual(index.list().map((b) => [b.name, b.state]), [['early', 'creating']]);
    await store.create(record('mine', 'me'), -1);
    await store.create(record('theirs', 'other'), -1);
    await waitFor(async () => seen('mine'));
    await store.transition('mine', ['creating'], 'suspended');
    await waitFor(async () => seen('mine')?.state === 'suspended');
    await store.remove('early');
    await waitFor(async () => !seen('early'));
    assert.deepEqual(index.list().map((b) => [b.name, b.state]), [['mine', 'suspended']], 'the other host’s box is not in it');
  });

  it('gives running boxes with their activity read fresh (activity publishes no event)', async () => {
    await store.transition('mine', ['suspended'], 'running');
    await waitFor(async () => seen('mine')?.state === 'running');
    await store.touch('mine', 12345);
    assert.equal(seen('mine')?.lastActivityAt, 1, 'the copy does not see the touch');
    assert.deepEqual((await index.running()).map((b) => [b.name, b.lastActivityAt]), [['mine', 12345]]);
  });

  it('tells the heartbeat when a box of its host appears, changes state or goes; not on activity, nor for other hosts', async () => {
    // Not started (no events): only the reads made here, so each is counted exactly.
    let changes = 0;
    const quiet = new HostBoxIndex({ store, sub, hostId: 'me', fullMs: 3_600_000, onChange: () => changes++, log });
    await quiet.seen('mine');
    const before = changes;
    await store.create(record('theirs2', 'other'), -1);
    await quiet.seen('theirs2');
    await store.touch('mine', 999);
    await quiet.seen('mine');
    assert.equal(changes, before, 'activity and other hosts’ boxes are not changes');
    await store.create(record('late', 'me'), -1);
    await quiet.seen('late');
    assert.equal(changes, before + 1, 'a new box');
    await store.transition('late', ['creating'], 'running');
    await quiet.seen('late');
    assert.equal(changes, before + 2, 'a new state');
    await store.remove('late');
    await quiet.seen('late');
    assert.equal(changes, before + 3, 'a box gone');
    await quiet.seen('late');
    assert.equal(changes, before + 3, 'reading it again changes nothing');
  });

  it('starts on a connection that is still connecting without losing it (subscribes once it is ready)', async () => {
    // ioredis writes a SUBSCRIBE sent in this window before its ready check, whose INFO the
    // server then refuses: the connection errors, drops and comes back, losing events meanwhile.
    const fresh = new Redis(config.REDIS_URL);
    const errors: string[] = [];
    fresh.on('error', (e: Error) => errors.push(e.message));
    const early = new HostBoxIndex({ store, sub: fresh, hostId: 'me', fullMs: 3_600_000, log });
    try {
      await new Promise<void>((resolve, reject) => fresh.once('connect', () => early.start().then(resolve, reject)));
      await store.create(record('late', 'me'), -1);
      await waitFor(async () => early.list().some((b) => b.name === 'late'));
      assert.deepEqual(errors, []);
    } finally {
      early.stop();
      fresh.disconnect();
    }
  });
});
