/**
 * Images across hosts: a snapshot made on host A starts a box on host B when A is full, and
 * again when A is dead (from B's copy); a box on the full host A forks onto B. Host A is a `host/main.ts` child process (so it can be killed with -9);
 * host B runs in this process. Both use this machine's one dockerd, so B is given a view of it
 * that hides snapshot images B did not load itself, as a second machine's Docker would: the
 * image really travels A's agent → gateway → B's agent (`docker save` streamed into
 * `docker load`). Account goldens made on A move the same way. The test runs on a Redis of its own so that its memory can be compared.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { Transform, type Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import supertest from 'supertest';
import { loadConfig, type Config } from '../core/config.ts';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { DockerRuntime } from '../host/docker-runtime.ts';
import { startHost, type HostHandle } from '../host/host.ts';
import type { Runtime } from '../host/runtime.ts';
import { docker, goldenTag, log, purge, testConfig, waitFor } from './helpers.ts';

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });

describe('images across hosts (real Docker, own Redis)', { timeout: 240_000 }, () => {
  let redisProc: ChildProcess | undefined;
  let redis: Redis;
  let config: Config;
  let prefix = '';
  const ids = { a: '', b: '' };
  let hostA: ChildProcess | undefined;
  let hostB: HostHandle | undefined;
  let gw: Gateway;
  let api: ReturnType<typeof supertest>;
  let auth: { Authorization: string };
  const seenByB = new Set<string>();
  let loadedBytes = 0;
  let snapImage = '';
  let goldenImage = '';
  /** Image names B's Docker hides until B loads them (this run's snapshots, forks, account goldens). */
  const refs = ['snap', 'fork', 'ugolden'].map((k) => `boxd-${k}/${prefix}`);
  const has = (ref: string) => docker.getImage(ref).inspect().then(() => true, () => false);

  const stopProc = async (c: ChildProcess | undefined, signal: NodeJS.Signals) => {
    if (!c || c.exitCode !== null || c.signalCode) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await gone;
  };
  const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);

  before(async () => {
    const redisPort = await freePort();
    redisProc = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    process.env.REDIS_URL = `redis://127.0.0.1:${redisPort}`;
    redis = new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    redis.on('error', () => undefined);
    await waitFor(async () => (await redis.ping().catch(() => '')) === 'PONG', 20_000, 200);

    const timing = { BOXD_HOST_DEAD_MS: '3000', BOXD_HEARTBEAT_MS: '500', BOXD_IDLE_TIMEOUT_MS: '0' };
    config = testConfig({ ...timing, BOXD_OVERCOMMIT: '1', BOXD_CPU_OVERCOMMIT: '1', BOXD_BOX_CPUS: '1', BOXD_BOX_MEMORY_MB: '512' });
    prefix = config.BOXD_PREFIX;
    ids.a = `${prefix}-a`;
    ids.b = `${prefix}-b`;
    auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };
    // Host A fits exactly one tiny box (1 cpu / 512 MiB).
    hostA = spawn(process.execPath, ['--import', 'tsx', 'host/main.ts'], {
      env: {
        ...process.env, ...timing, BOXD_PREFIX: prefix, BOXD_HOST_ID: ids.a, BOXD_HOST_ADDR: '127.0.0.6', BOXD_POOL: 'false', LOG_LEVEL: 'warn',
        BOXD_CLUSTER_SECRET: config.BOXD_CLUSTER_SECRET!, BOXD_HOST_CPUS: '1', BOXD_HOST_MEMORY_MB: '600',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    gw = await createGateway(config, log);
    api = supertest(gw.server);
    await waitFor(async () => (await gw.hosts.aliveHosts()).some((h) => h.id === ids.a && h.goldens?.includes('tiny') && h.agentPort), 90_000, 200);
  });

  after(async () => {
    await gw?.close().catch(() => undefined);
    await hostB?.close().catch(() => undefined);
    await stopProc(hostA, 'SIGTERM');
    if (config) await purge(prefix).catch(() => undefined);
    redis?.disconnect();
    await stopProc(redisProc, 'SIGTERM');
  });

  it('refuses to move images boxd does not own, and anyone without the cluster secret', async () => {
    const golden = await gw.agents.request(ids.a, { method: 'GET', path: `/v1/images/${encodeURIComponent(goldenTag('tiny'))}` });
    golden.resume();
    assert.equal(golden.statusCode, 403);
    const other = await gw.agents.request(ids.a, { method: 'POST', path: `/v1/images?ref=${encodeURIComponent('busybox:latest')}`, body: Buffer.from('x') });
    other.resume();
    assert.equal(other.statusCode, 403);
    const t = await gw.agents.target(ids.a);
    const anon = await fetch(`http://${t.addr}:${t.port}/v1/images/${encodeURIComponent(`boxd-snap/${prefix}-default:x`)}`);
    assert.equal(anon.status, 401);
  });

  it('starts a box from a snapshot on another host when the snapshot’s host is full, copying the image agent to agent', async () => {
    const made = await api.post('/v1/boxes').set(auth).send({ name: 'src', golden: 'tiny' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal((await gw.store.require('src')).hostId, ids.a);
    const w = await api.post('/v1/boxes/src/exec').set(auth).send({ cmd: ['sh', '-c', 'head -c 16777216 /dev/urandom > /root/big && echo kept > /root/note'] });
    assert.equal(w.status, 200, JSON.stringify(w.body));
    assert.equal(w.body.exitCode, 0, w.body.stderr);
    const snap = await api.post('/v1/boxes/src/snapshot').set(auth).send({ snapshot: 'snap1' });
    assert.equal(snap.status, 201, JSON.stringify(snap.body));
    const [key] = await redis.keys(`{${prefix}}:snap:*`);
    snapImage = (JSON.parse((await redis.hget(key!, 'snap1'))!) as { image: string }).image;
    const imageSize = (await docker.getImage(snapImage).inspect()).Size;
    assert.ok(imageSize > 16 * 1024 * 1024, `the snapshot holds the 16 MiB file (${imageSize})`);

    // Host B: a second machine's Docker holds only what it loaded (see the top of this file).
    const dr = new DockerRuntime(docker, {
      network: config.BOXD_NETWORK, ociRuntime: config.BOXD_OCI_RUNTIME, maxFileBytes: config.BOXD_MAX_FILE_BYTES, hostAddr: '127.0.0.7',
      freezer: config.BOXD_FREEZER, prefix, stateDir: config.BOXD_STATE_DIR, egressDeny: config.BOXD_EGRESS_DENY, log,
    });
    await dr.prepare();
    const ours = (ref: string) => refs.some((r) => ref.startsWith(r));
    const view = new Proxy(dr, {
      get(target, key) {
        if (key === 'hasImage') return async (ref: string) => (ours(ref) ? seenByB.has(ref) && target.hasImage(ref) : target.hasImage(ref));
        if (key === 'loadImage') {
          return async (tar: Readable) => {
            const count = new Transform({ transform: (c: Buffer, _e, cb) => ((loadedBytes += c.length), cb(null, c)) });
            tar.pipe(count);
            await target.loadImage(count);
            for (const i of await docker.listImages({ filters: { reference: refs.map((r) => `${r}*`) } })) for (const t of i.RepoTags ?? []) seenByB.add(t);
          };
        }
        const v = Reflect.get(target, key, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Runtime;
    const cB = loadConfig({ ...process.env, ...asEnv(config), BOXD_HOST_ID: ids.b, BOXD_HOST_ADDR: '127.0.0.7', BOXD_HOST_CPUS: '4', BOXD_HOST_MEMORY_MB: '4000' });
    hostB = await startHost(cB, log, { runtime: view });
    await waitFor(async () => (await gw.hosts.aliveHosts()).some((h) => h.id === ids.b && h.agentPort), 30_000, 200);
    // A's box commits all of A.
    await waitFor(async () => (await gw.hosts.aliveHosts()).find((h) => h.id === ids.a)?.committed?.cpus === 1, 10_000, 200);
    assert.equal(await gw.agents.hasImage(ids.b, snapImage), false, 'B does not hold the image yet');

    const before = await usedMemory();
    const c1 = await api.post('/v1/boxes').set(auth).send({ name: 'c1', snapshot: 'snap1' });
    assert.equal(c1.status, 201, JSON.stringify(c1.body));
    const growth = (await usedMemory()) - before;
    assert.equal((await gw.store.require('c1')).hostId, ids.b, 'placed on the host with room');
    assert.ok(loadedBytes >= imageSize * 0.9, `the image's bytes reached B's docker load (${loadedBytes} of ${imageSize})`);
    assert.ok(growth < imageSize / 4, `no image bytes went through Redis (used_memory grew ${growth} bytes; image ${imageSize})`);
    assert.equal(await gw.agents.hasImage(ids.b, snapImage), true);
    const r = await api.post('/v1/boxes/c1/exec').set(auth).send({ cmd: ['sh', '-c', 'cat /root/note; wc -c < /root/big'] }).expect(200);
    assert.equal(r.body.stdout.replace(/\s+/g, ' ').trim(), 'kept 16777216');
  });

  it('forks a box of a full host onto another host: committed there, moved, run here', async () => {
    assert.ok(snapImage, 'the previous test started host B');
    const bytes = loadedBytes;
    const f = await api.post('/v1/boxes/src/fork').set(auth).send({ name: 'kid' });
    assert.equal(f.status, 201, JSON.stringify(f.body));
    const kid = await gw.store.require('kid');
    assert.equal(kid.hostId, ids.b, 'the parent’s host is full');
    assert.equal(kid.parent, 'src');
    assert.ok(loadedBytes - bytes > 16 * 1024 * 1024, `the fork's image went to B (${loadedBytes - bytes} bytes)`);
    const r = await api.post('/v1/boxes/kid/exec').set(auth).send({ cmd: ['sh', '-c', 'cat /root/note; wc -c < /root/big'] }).expect(200);
    assert.equal(r.body.stdout.replace(/\s+/g, ' ').trim(), 'kept 16777216');
    // The parent runs on, untouched, on its own host.
    const p = await api.post('/v1/boxes/src/exec').set(auth).send({ cmd: ['cat', '/root/note'] }).expect(200);
    assert.equal(p.body.stdout, 'kept\n');
    await api.delete('/v1/boxes/kid').set(auth).expect(204);
  });

  it('starts a box from an account golden on another host when the golden’s host is full, and prefers hosts holding it', async () => {
    assert.ok(snapImage, 'the previous tests started host B');
    const g = await api.post('/v1/goldens').set(auth).send({ name: 'g1', fromBox: 'src', poolSize: 0 });
    assert.equal(g.status, 201, JSON.stringify(g.body));
    goldenImage = g.body.tag;
    assert.ok(goldenImage.startsWith(`boxd-ugolden/${prefix}`), goldenImage);
    assert.equal(await gw.agents.hasImage(ids.b, goldenImage), false, 'B does not hold the golden yet');
    // A (the golden's host) is full with src: the box goes to B, which gets the image first.
    const bytes = loadedBytes;
    const g1 = await api.post('/v1/boxes').set(auth).send({ name: 'gb1', golden: 'g1' });
    assert.equal(g1.status, 201, JSON.stringify(g1.body));
    assert.equal((await gw.store.require('gb1')).hostId, ids.b, 'placed on the host with room');
    assert.ok(loadedBytes - bytes > 16 * 1024 * 1024, `the golden's image went to B (${loadedBytes - bytes} bytes)`);
    const r = await api.post('/v1/boxes/gb1/exec').set(auth).send({ cmd: ['sh', '-c', 'cat /root/note; wc -c < /root/big'] }).expect(200);
    assert.equal(r.body.stdout.replace(/\s+/g, ' ').trim(), 'kept 16777216');
    // With room on A again, A (which holds the image) wins over B although B has more room.
    await api.delete('/v1/boxes/src').set(auth).expect(204);
    const copied = loadedBytes;
    const g2 = await api.post('/v1/boxes').set(auth).send({ name: 'gb2', golden: 'g1' });
    assert.equal(g2.status, 201, JSON.stringify(g2.body));
    assert.equal((await gw.store.require('gb2')).hostId, ids.a, 'the golden’s own host, while it has room');
    assert.equal(loadedBytes, copied, 'nothing copied');
    await api.delete('/v1/boxes/gb2').set(auth).expect(204);
  });

  it('starts a box from the snapshot when its host is dead, from the copy another host holds', async () => {
    assert.ok(snapImage, 'the previous test made the snapshot');
    await stopProc(hostA, 'SIGKILL');
    await waitFor(async () => !(await gw.hosts.aliveHosts()).some((h) => h.id === ids.a), 30_000, 200);
    const bytes = loadedBytes;
    const c2 = await api.post('/v1/boxes').set(auth).send({ name: 'c2', snapshot: 'snap1' });
    assert.equal(c2.status, 201, JSON.stringify(c2.body));
    assert.equal((await gw.store.require('c2')).hostId, ids.b);
    assert.equal(loadedBytes, bytes, 'B already held it: nothing copied again');
    const r = await api.post('/v1/boxes/c2/exec').set(auth).send({ cmd: ['cat', '/root/note'] }).expect(200);
    assert.equal(r.body.stdout, 'kept\n');
    for (const n of ['c1', 'c2']) await api.delete(`/v1/boxes/${n}`).set(auth).expect(204);
    // Deleting the snapshot removes the copy on B as well (A is dead).
    await api.delete('/v1/snapshots/snap1').set(auth).expect(204);
    await waitFor(async () => !(await has(snapImage)), 30_000, 200);
  });

  it('starts a box from the account golden when its host is dead, from B’s copy; deleting the golden removes the copy', async () => {
    assert.ok(goldenImage, 'the golden test ran');
    const bytes = loadedBytes;
    // B beat the deletes of c1 and c2 before answering them: it has room now (gb1 stays).
    const g3 = await api.post('/v1/boxes').set(auth).send({ name: 'gb3', golden: 'g1' });
    assert.equal(g3.status, 201, JSON.stringify(g3.body));
    assert.equal((await gw.store.require('gb3')).hostId, ids.b);
    assert.equal(loadedBytes, bytes, 'B already held it: nothing copied again');
    const r = await api.post('/v1/boxes/gb3/exec').set(auth).send({ cmd: ['cat', '/root/note'] }).expect(200);
    assert.equal(r.body.stdout, 'kept\n');
    for (const n of ['gb1', 'gb3']) await api.delete(`/v1/boxes/${n}`).set(auth).expect(204);
    assert.equal(await has(goldenImage), true, 'the golden still holds its image');
    await api.delete('/v1/goldens/g1').set(auth).expect(204);
    await waitFor(async () => !(await has(goldenImage)), 30_000, 200);
  });
});

function asEnv(c: Config): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(c)) if (v !== undefined) out[k] = String(v);
  return out;
}
