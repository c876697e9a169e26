/**
 * The dead-host sweeper on a Redis of its own (127.0.0.1:7104, started and killed here), with a
 * fake clock: hosts are judged only after Redis has answered for a whole dead-host window, and
 * judging marks their boxes lost exactly once.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { BoxStore, type NewBox } from '../core/boxes.ts';
import { Keys } from '../core/keys.ts';
import { silentLogger } from '../core/log.ts';
import { HostSweeper } from '../core/sweeper.ts';
import { waitFor } from './helpers.ts';

const PORT = 7104;
const box = (name: string, hostId: string): NewBox => ({
  name, account: 'acc', imageRef: 'img', ports: [], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 128, hostId,
});

describe('HostSweeper', { timeout: 60_000 }, () => {
  let server: ChildProcess | undefined;
  const start = async () => {
    server = spawn('redis-server', ['--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitFor(async () => spawnSync('redis-cli', ['-p', String(PORT), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG', 20_000);
  };
  const stop = async () => {
    const s = server;
    server = undefined;
    if (!s || s.exitCode !== null) return;
    const gone = new Promise((r) => s.once('exit', r));
    s.kill('SIGKILL');
    await gone;
  };
  after(stop);

  it('waits a dead-host window after Redis answers before judging, then loses the dead hosts’ boxes once', async () => {
    await start();
    const redis = new Redis(PORT, '127.0.0.1', { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50 });
    redis.on('error', () => undefined);
    await waitFor(() => redis.ping().then(() => true, () => false), 20_000);
    const prefix = 'sweep';
    const keys = new Keys(prefix);
    const store = new BoxStore(redis, prefix);
    let now = 1_000_000;
    const sweeper = new HostSweeper({ redis, store, prefix, deadMs: 10_000, log: silentLogger, now: () => now });
    const seed = async () => {
      await redis.hset(keys.hosts, 'alive', JSON.stringify({ id: 'alive', startedAt: 0, heartbeatAt: now }));
      await redis.hset(keys.hosts, 'gone', JSON.stringify({ id: 'gone', startedAt: 0, heartbeatAt: now - 60_000 }));
      for (const [n, h] of [['b1', 'gone'], ['b2', 'gone'], ['b3', 'alive']] as const) {
        await store.create(box(n, h), -1).catch(() => undefined);
        await store.transition(n, ['creating'], 'running').catch(() => undefined);
      }
    };
    try {
      await seed();
      assert.deepEqual(await sweeper.sweep(), [], 'Redis only just answered: no judgement yet');
      now += 5_000;
      assert.deepEqual(await sweeper.sweep(), []);
      now += 5_000;
      await redis.hset(keys.hosts, 'alive', JSON.stringify({ id: 'alive', startedAt: 0, heartbeatAt: now }));
      assert.deepEqual(await sweeper.sweep(), ['gone']);
      for (const n of ['b1', 'b2']) {
        const b = await store.require(n);
        assert.equal(b.state, 'lost');
        assert.equal(b.lostFrom, 'running');
        assert.match(b.error ?? '', /host gone stopped answering/);
      }
      assert.equal((await store.require('b3')).state, 'running');
      assert.equal(await store.count('acc'), 1, 'lost boxes do not count against the limit');

      // Redis goes away: every host's heartbeat is now "old", but nobody may be judged.
      await stop();
      assert.deepEqual(await sweeper.sweep(), []);
      await start();
      // Reconnecting takes ioredis a few tries: write once it answers.
      await waitFor(() => redis.ping().then(() => true, () => false), 20_000);
      now += 60_000; // the heartbeats written before the outage are long stale
      await waitFor(() => seed().then(() => true, () => false), 20_000);
      await redis.hset(keys.hosts, 'alive', JSON.stringify({ id: 'alive', startedAt: 0, heartbeatAt: now - 30_000 }));
      assert.deepEqual(await sweeper.sweep(), [], 'back from an outage: wait before judging');
      assert.equal((await store.require('b3')).state, 'running');
      now += 5_000;
      await redis.hset(keys.hosts, 'alive', JSON.stringify({ id: 'alive', startedAt: 0, heartbeatAt: now }));
      now += 5_000;
      assert.deepEqual(await sweeper.sweep(), ['gone'], 'the host that beat again after the outage is alive');
      assert.equal((await store.require('b3')).state, 'running');
      assert.equal((await store.require('b1')).state, 'lost');
      await sweeper.stop();
    } finally {
      redis.disconnect();
    }
  });
});
