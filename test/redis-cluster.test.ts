/**
 * The store, pool-claim and lock scripts against a real 3-master Redis Cluster, started here in
 * a temp dir on 127.0.0.1:7101-7103 (Debian's redis-server) and torn down after. Every script
 * declares its keys and they share the `{prefix}` hash tag, so none of them may hit CROSSSLOT
 * or touch a key of another node.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue, QueueEvents, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { BoxStore, type BoxEvent, type NewBox } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import { queuePrefix } from '../core/keys.ts';
import { RedisLock } from '../core/lock.ts';
import { connectRedis, parseClusterUrl } from '../core/redis.ts';
import { claimPooled } from '../pool/claim.ts';
import { POOL_ACCOUNT, poolListKey } from '../pool/keys.ts';
import { waitFor } from './helpers.ts';

const PORTS = [7101, 7102, 7103];
const URL = `redis+cluster://${PORTS.map((p) => `127.0.0.1:${p}`).join(',')}`;
const record = (name: string, account = 'a', hostId = 'h1'): NewBox => ({
  name, account, imageRef: 'img', ports: [80], public: true, env: {}, idleTimeoutMs: 1000, cpus: 1, memoryMb: 128, hostId,
});

/** Whether key `k`'s slot is served by the node serving slot `slot` (read from CLUSTER SLOTS). */
function sameNode(k: string, slot: number): boolean {
  const ks = Number(spawnSync('redis-cli', ['-p', '7101', 'cluster', 'keyslot', k], { encoding: 'utf8' }).stdout);
  const ranges = spawnSync('redis-cli', ['-p', '7101', '--json', 'cluster', 'slots'], { encoding: 'utf8' }).stdout;
  const parsed = JSON.parse(ranges) as [number, number, [string, number]][];
  const owner = (s: number) => parsed.find(([lo, hi]) => s >= lo && s <= hi)?.[2][1];
  return owner(ks) === owner(slot);
}

describe('REDIS_URL forms', () => {
  it('parses a cluster URL into seed nodes and leaves plain URLs alone', () => {
    assert.deepEqual(parseClusterUrl('redis+cluster://10.0.0.1:7000,10.0.0.2:7001/'), { nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }], username: undefined, password: undefined });
    assert.equal(parseClusterUrl('redis+cluster://:s%40cret@h:1')?.password, 's@cret');
    assert.equal(parseClusterUrl('redis://127.0.0.1:6379'), undefined);
    assert.throws(() => parseClusterUrl('redis+cluster://h:99999'), /bad cluster node/);
  });
});

describe('scripts on a 3-master Redis Cluster', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'boxd-cluster-'));
  const servers: ChildProcess[] = [];
  const prefix = `t-cl${process.pid}`;
  let redis: Redis;
  let sub: Redis;

  before(async () => {
    for (const port of PORTS) {
      const child = spawn('redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`,
        '--cluster-node-timeout', '5000', '--appendonly', 'no', '--save', '', '--dir', dir, '--daemonize', 'no',
      ], { stdio: 'ignore' });
      servers.push(child);
    }
    for (const port of PORTS) {
      await waitFor(async () => spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG', 20_000);
    }
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...PORTS.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    assert.equal(created.status, 0, created.stdout + created.stderr);
    await waitFor(async () => PORTS.every((p) => spawnSync('redis-cli', ['-p', String(p), 'cluster', 'info'], { encoding: 'utf8' }).stdout.includes('cluster_state:ok')), 30_000);
    redis = connectRedis(URL);
    sub = connectRedis(URL);
  });

  after(async () => {
    await Promise.all([redis, sub].map((c) => c?.quit().catch(() => undefined)));
    for (const s of servers) s.kill('SIGKILL');
    await Promise.all(servers.map((s) => new Promise((r) => (s.exitCode !== null || s.signalCode ? r(null) : s.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('really is a cluster: the hash tag pins every key to one slot', async () => {
    const slots = (await redis.call('CLUSTER', 'SLOTS')) as unknown[];
    assert.equal(slots.length, 3, 'three masters share the slots');
    const store = new BoxStore(redis, prefix);
    const a = Number(await redis.call('CLUSTER', 'KEYSLOT', store.key('x')));
    const b = Number(await redis.call('CLUSTER', 'KEYSLOT', store.keys.accountBoxes('someone')));
    assert.equal(a, b);
    // A script touching a key it did not declare, on another node, is refused: what the tag avoids.
    const far = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((k) => `other-${k}`).find((k) => Number(spawnSync('redis-cli', ['-p', '7101', 'cluster', 'keyslot', k], { encoding: 'utf8' }).stdout) !== a && !sameNode(k, a));
    if (far) await assert.rejects(redis.eval(`return redis.call('GET', '${far}')`, 1, store.key('x')));
  });

  it('runs the store scripts: create with limit, transition, touch, lose/found, remove, events', async () => {
    const store = new BoxStore(redis, prefix);
    const events: BoxEvent[] = [];
    await sub.subscribe(store.eventsChannel);
    sub.on('message', (_c, m) => events.push(JSON.parse(m) as BoxEvent));

    const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => store.create(record(`b${i}`), 3)));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
    assert.equal(results.filter((r) => r.status === 'rejected' && (r.reason as BoxdError).code === 'LIMIT_EXCEEDED').length, 2);
    await assert.rejects(store.create(record('b0'), 10), (e: BoxdError) => e.code === 'BOX_EXISTS');
    const names = (await store.list({ account: 'a' })).map((b) => b.name);
    assert.equal(names.length, 3);

    const [x, y] = names as [string, string];
    await store.transition(x, ['creating'], 'running', { hostPorts: { 80: 1234 } });
    await assert.rejects(store.transition(x, ['creating'], 'running'), (e: BoxdError) => e.code === 'BOX_STATE');
    await store.touch(x, 5_000_000_000_000);
    assert.equal((await store.require(x)).lastActivityAt, 5_000_000_000_000);

    // A lost box stops counting against the limit, and comes back in the state it had.
    assert.equal(await store.lose(x, 'host h1 died'), true);
    assert.equal(await store.lose(x, 'again'), false);
    assert.equal((await store.require(x)).state, 'lost');
    assert.equal(await store.count('a'), 2);
    await store.create(record('b-extra'), 3);
    assert.equal(await store.found(x, 'running'), true);
    const back = await store.require(x);
    assert.equal(back.state, 'running');
    assert.equal(back.error, undefined);

    await store.remove(y);
    await store.remove(y);
    assert.equal(await store.get(y), undefined);
    assert.equal(await store.count('a'), 3);
    await waitFor(async () => events.some((e) => e.name === y && e.state === 'destroyed') && events.some((e) => e.name === x && e.state === 'lost'), 10_000);
  });

  it('runs the pool claim script: one winner per pooled box, limit and name checked', async () => {
    const store = new BoxStore(redis, prefix);
    const list = poolListKey(prefix, 'h1', 'tiny');
    for (const n of ['p1', 'p2']) {
      await store.create({ ...record(n, POOL_ACCOUNT), golden: 'tiny' }, -1);
      await store.transition(n, ['creating'], 'suspended');
      await redis.rpush(list, n);
    }
    const claims = await Promise.all(
      ['c1', 'c2', 'c3'].map((name) => claimPooled(redis, prefix, { hostId: 'h1', golden: 'tiny', name, account: 'pool-user', limit: 5, fields: { env: { A: '1' } } })),
    );
    const got = claims.filter(Boolean).map((c) => c!.pooled).sort();
    assert.deepEqual(got, ['p1', 'p2'], 'each pooled box claimed once, the third claim finds the pool empty');
    const mine = await store.list({ account: 'pool-user' });
    assert.equal(mine.length, 2);
    assert.ok(mine.every((b) => b.state === 'suspended' && b.env.A === '1' && b.hostId === 'h1'));
    assert.equal(await store.get('p1'), undefined);
    assert.equal(await redis.llen(list), 0);
  });

  it('runs the lock script: one holder, renewal, release by the holder only', async () => {
    const key = `{${prefix}}:lock:test`;
    const a = new RedisLock(redis, key, 10_000);
    const b = new RedisLock(redis, key, 10_000);
    assert.equal(await a.acquire(), true);
    assert.equal(await b.acquire(), false);
    assert.equal(await a.acquire(), true, 'the holder renews');
    await b.release();
    assert.equal(await b.acquire(), false, 'a non-holder cannot release');
    await a.release();
    assert.equal(await b.acquire(), true);
    await b.release();
  });

  it('runs a BullMQ queue under the hash-tag prefix', async () => {
    const connection = connectRedis(URL, { maxRetriesPerRequest: null });
    const eventsConn = connectRedis(URL, { maxRetriesPerRequest: null });
    const q = new Queue('host-h1', { connection, prefix: queuePrefix(prefix) });
    const events = new QueueEvents('host-h1', { connection: eventsConn, prefix: queuePrefix(prefix) });
    const w = new Worker('host-h1', async (job) => ({ doubled: (job.data as { n: number }).n * 2 }), { connection, prefix: queuePrefix(prefix) });
    try {
      await events.waitUntilReady();
      const job = await q.add('x', { n: 21 });
      // Polled rather than waitUntilFinished: a completion can land before QueueEvents' first read.
      const done = await waitFor(async () => {
        const j = await q.getJob(job.id!);
        return j?.finishedOn ? j : undefined;
      }, 30_000);
      assert.deepEqual(done.returnvalue, { doubled: 42 });
    } finally {
      await w.close();
      await events.close();
      await q.close();
      await Promise.all([connection.quit(), eventsConn.quit()].map((p) => p.catch(() => undefined)));
    }
  });
});
