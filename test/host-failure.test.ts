/**
 * Several hosts on one Redis: two `host/main.ts` processes with their own ids and capacities, a
 * gateway in this process. Placement by free capacity, 503 NO_CAPACITY, one host killed with -9
 * (its boxes become lost, stop counting, delete at once, creates avoid it) and its return
 * (boxes taken back, the deleted one's container removed).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { docker, log, purge, testConfig, waitFor } from './helpers.ts';

describe('many hosts on one Redis (real Docker)', { timeout: 240_000 }, () => {
  const config = testConfig({ BOXD_HOST_DEAD_MS: '3000', BOXD_HEARTBEAT_MS: '500', BOXD_OVERCOMMIT: '1', BOXD_CPU_OVERCOMMIT: '1', BOXD_MAX_BOXES: '2', BOXD_IDLE_TIMEOUT_MS: '0' });
  const prefix = config.BOXD_PREFIX;
  const ids = { a: `${prefix}-a`, b: `${prefix}-b` };
  // Host a is small; host b is big, so placement prefers b while it lives.
  const sizes = { a: { BOXD_HOST_CPUS: '2', BOXD_HOST_MEMORY_MB: '1100' }, b: { BOXD_HOST_CPUS: '8', BOXD_HOST_MEMORY_MB: '4000' } };
  const procs: Partial<Record<'a' | 'b', ChildProcess>> = {};
  let gw: Gateway;
  let api: ReturnType<typeof supertest>;
  const auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };

  const startHostProc = (which: 'a' | 'b') => {
    const env = {
      ...process.env, BOXD_PREFIX: prefix, BOXD_HOST_ID: ids[which], BOXD_POOL: 'false', LOG_LEVEL: 'warn',
      BOXD_CLUSTER_SECRET: config.BOXD_CLUSTER_SECRET!,
      BOXD_HOST_DEAD_MS: '3000', BOXD_HEARTBEAT_MS: '500', BOXD_IDLE_TIMEOUT_MS: '0', ...sizes[which],
    };
    // node --import tsx: one process, so SIGKILL kills the host itself, not a wrapper.
    const child = spawn(process.execPath, ['--import', 'tsx', 'host/main.ts'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    procs[which] = child;
    return child;
  };
  const alive = async () => (await gw.hosts.aliveHosts()).map((h) => h.id).sort();
  const stopProc = async (c: ChildProcess | undefined, signal: NodeJS.Signals) => {
    if (!c || c.exitCode !== null || c.signalCode) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await gone;
  };

  before(async () => {
    startHostProc('a');
    startHostProc('b');
    gw = await createGateway(config, log);
    api = supertest(gw.server);
    // Both beat with their goldens (tiny is built by the test set-up).
    await waitFor(async () => (await gw.hosts.aliveHosts()).filter((h) => h.goldens?.includes('tiny')).length === 2, 90_000, 200);
  });

  after(async () => {
    await gw?.close();
    await Promise.all([stopProc(procs.a, 'SIGTERM'), stopProc(procs.b, 'SIGTERM')]);
    await purge(prefix);
  });

  it('advertises capacity, commitments and goldens in each heartbeat', async () => {
    const hosts = await gw.hosts.aliveHosts();
    const b = hosts.find((h) => h.id === ids.b)!;
    assert.deepEqual(b.capacity, { cpus: 8, memoryMb: 4000 });
    assert.deepEqual(b.committed, { cpus: 0, memoryMb: 0 });
    assert.ok(b.goldens?.includes('tiny'));
  });

  it('places boxes on the host with the most free capacity, and answers 503 NO_CAPACITY when none fits', async () => {
    for (const name of ['x1', 'y1']) {
      const r = await api.post('/v1/boxes').set(auth).send({ name, golden: 'tiny' });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal((await gw.store.require(name)).hostId, ids.b, `${name} went to the bigger host`);
    }
    await waitFor(async () => (await gw.hosts.aliveHosts()).find((h) => h.id === ids.b)?.committed?.cpus === 2, 10_000);
    // The default golden asks 2 cpus / 8 GiB: more than either host offers.
    const full = await api.post('/v1/boxes').set(auth).send({ name: 'huge', golden: 'default' });
    assert.equal(full.status, 503);
    assert.equal(full.body.error.code, 'NO_CAPACITY');
    assert.match(full.body.error.message, /no host has room/);
    assert.ok(Number(full.headers['retry-after']) >= 1);
    assert.equal(await gw.store.get('huge'), undefined, 'no record left behind');
  });

  it('loses a killed host’s boxes: state lost with a reason, not counted, deleted at once; creates avoid it', async () => {
    // At the limit (2): a third box is refused while both live.
    assert.equal((await api.post('/v1/boxes').set(auth).send({ name: 'z1', golden: 'tiny' })).status, 429);
    const killedAt = Date.now();
    await stopProc(procs.b, 'SIGKILL');
    await waitFor(async () => (await gw.store.require('x1')).state === 'lost', 30_000, 200);
    assert.ok(Date.now() - killedAt < 30_000);
    const x1 = (await api.get('/v1/boxes/x1').set(auth).expect(200)).body;
    assert.equal(x1.state, 'lost');
    assert.match(x1.error, new RegExp(`host ${ids.b} stopped answering`));
    assert.deepEqual(await alive(), [ids.a]);

    const t0 = Date.now();
    await api.delete('/v1/boxes/y1').set(auth).expect(204);
    assert.ok(Date.now() - t0 < 5_000, 'delete of a lost box does not wait for its host');
    await api.get('/v1/boxes/y1').set(auth).expect(404);

    // x1 is lost, y1 deleted: the account has room again, and the box goes to the live host.
    const z = await api.post('/v1/boxes').set(auth).send({ name: 'z1', golden: 'tiny' });
    assert.equal(z.status, 201, JSON.stringify(z.body));
    assert.equal((await gw.store.require('z1')).hostId, ids.a, 'never the dead host');
    const r = await api.post('/v1/boxes/z1/exec').set(auth).send({ cmd: ['echo', 'on-a'] }).expect(200);
    assert.equal(r.body.stdout, 'on-a\n');
  });

  it('takes its boxes back when the host returns and removes the container of a box deleted meanwhile', async () => {
    startHostProc('b');
    await waitFor(async () => (await gw.store.require('x1')).state === 'running' && (await alive()).includes(ids.b), 60_000, 200);
    const x1 = await gw.store.require('x1');
    assert.equal(x1.error, undefined);
    const r = await api.post('/v1/boxes/x1/exec').set(auth).send({ cmd: ['echo', 'back'] }).expect(200);
    assert.equal(r.body.stdout, 'back\n');
    const y1 = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${prefix}`, 'boxd.box=y1'] } });
    assert.equal(y1.length, 0, 'the deleted box’s container is gone');
    for (const n of ['x1', 'z1']) await api.delete(`/v1/boxes/${n}`).set(auth).expect(204);
  });
});
