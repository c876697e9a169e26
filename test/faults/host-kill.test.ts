import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { loadConfig, type Config } from '../../core/config.ts';
import { Keys } from '../../core/keys.ts';
import { createGateway, type Gateway } from '../../gateway/gateway.ts';
import { docker, log, purge, waitFor } from '../helpers.ts';

/**
 * kill -9 of a host process (`node --import tsx host/main.ts`, a child with its own prefix) in the
 * middle of a create and of a fork: the caller gets an error (not a dropped connection), no
 * record is left stuck, and the restarted host leaves no orphan container.
 */
describe('host killed mid-operation', () => {
  const prefix = `t-${randomBytes(4).toString('hex')}`;
  const env: Record<string, string> = {
    BOXD_PREFIX: prefix,
    BOXD_HOST_ID: `h-${prefix}`,
    BOXD_API_KEY: `key-${randomBytes(12).toString('hex')}`,
    BOXD_CLUSTER_SECRET: randomBytes(24).toString('hex'),
    BOXD_POOL: 'false',
    BOXD_IDLE_TIMEOUT_MS: '0',
    LOG_LEVEL: 'silent',
  };
  const config: Config = loadConfig({ ...process.env, ...env });
  const keys = new Keys(prefix);
  let host: ChildProcess | undefined;
  let gateway: Gateway;
  let api: ReturnType<typeof supertest>;
  const auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };

  const alive = async () => !!(await gateway.redis.hget(keys.hosts, config.BOXD_HOST_ID));
  const startHostProcess = async () => {
    host = spawn(process.execPath, ['--import', 'tsx', 'host/main.ts'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
    const child = host;
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`host exited with ${child.exitCode}`);
      const raw = await gateway.redis.hget(keys.hosts, config.BOXD_HOST_ID);
      return raw && (JSON.parse(raw) as { startedAt: number }).startedAt > 0 && Date.now() - (JSON.parse(raw) as { heartbeatAt: number }).heartbeatAt < 2000;
    }, 60_000, 200);
  };
  const kill9 = async () => {
    const child = host!;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    host = undefined;
  };
  const containersOf = async (box: string) => docker.listContainers({ all: true, filters: { label: [`boxd.instance=${prefix}`, `boxd.box=${box}`] } });
  const state = async (box: string) => gateway.redis.hget(keys.box(box), 'state');

  before(async () => {
    gateway = await createGateway(config, log);
    await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
    api = supertest(gateway.server);
    // A heartbeat from an earlier host must not count: remove it before the first start.
    await gateway.redis.hdel(keys.hosts, config.BOXD_HOST_ID);
    await startHostProcess();
  });
  after(async () => {
    if (host && host.exitCode === null) await kill9();
    await gateway?.close();
    await purge(prefix);
  });

  /** Starts `call`, kills the host once `midway` holds, and returns the caller's answer. */
  const killDuring = async (call: () => Promise<supertest.Response>, midway: () => Promise<boolean>) => {
    let answered: supertest.Response | undefined;
    const answer = call().then((r) => (answered = r));
    await waitFor(async () => answered || (await midway()), 60_000, 10);
    if (answered) return answered; // finished (or refused) before the host could be killed
    await kill9();
    return answer;
  };

  it('mid-create: the caller gets an error, the name is free, no container is left', async () => {
    let name = '';
    let res: supertest.Response | undefined;
    // Killed after its container exists and before its record says running; a create that
    // finished first (a fast machine) is tried again under a new name.
    for (let attempt = 0; attempt < 3; attempt++) {
      name = `mid-create-${attempt}`;
      const n = name;
      res = await killDuring(
        () => api.post('/v1/boxes').set(auth).send({ name: n, golden: 'default' }),
        async () => (await containersOf(n)).length > 0 || (await state(n)) === 'running',
      );
      if (res.status !== 201) break;
      await startHostProcess();
    }
    assert.ok(res && res.status >= 500 && res.status < 600, `an error answer, got ${res?.status} ${JSON.stringify(res?.body)}`);
    assert.equal(res.body.error.code, 'HOST_LOST', JSON.stringify(res.body));
    await api.get(`/v1/boxes/${name}`).set(auth).expect(404);
    assert.equal(await alive(), true, 'the dead host still has a heartbeat entry until it restarts');
    await startHostProcess();
    await waitFor(async () => (await containersOf(name)).length === 0, 60_000, 250);
    // The name can be used again, and the new box works.
    await api.post('/v1/boxes').set(auth).send({ name, golden: 'tiny' }).expect(201);
    const out = await api.post(`/v1/boxes/${name}/exec`).set(auth).send({ cmd: ['echo', 'ok'] }).expect(200);
    assert.equal(out.body.stdout, 'ok\n');
  });

  it('mid-fork: the caller gets an error, the child is not left half-made, the parent lives on', async () => {
    await api.post('/v1/boxes').set(auth).send({ name: 'parent', golden: 'default' }).expect(201);
    await api.post('/v1/boxes/parent/exec').set(auth).send({ cmd: ['sh', '-c', 'echo mine > /tmp/f'] }).expect(200);
    const res = await killDuring(
      () => api.post('/v1/boxes/parent/fork').set(auth).send({ name: 'child' }),
      async () => (await state('child')) === 'creating',
    );
    assert.ok(res.status >= 500 && res.status < 600, `an error answer, got ${res.status} ${JSON.stringify(res.body)}`);
    await api.get('/v1/boxes/child').set(auth).expect(404);
    await startHostProcess();
    await waitFor(async () => (await containersOf('child')).length === 0, 60_000, 250);
    // The restarted host takes its boxes back (a sweeper may have marked them lost meanwhile).
    const out = await waitFor(async () => {
      const r = await api.post('/v1/boxes/parent/exec').set(auth).send({ cmd: ['cat', '/tmp/f'] });
      return r.status === 200 ? r : undefined;
    }, 60_000, 500);
    assert.equal(out.body.stdout, 'mine\n');
    // A new fork under the same name goes through.
    await api.post('/v1/boxes/parent/fork').set(auth).send({ name: 'child' }).expect(201);
  });
  it('mid-exec: the caller gets 502 EXEC_LOST and the command is not run again', async () => {
    await api.post('/v1/boxes').set(auth).send({ name: 'ex', golden: 'tiny' }).expect(201);
    const running = async () => {
      const top = await docker.getContainer(`${prefix}-ex`).top().catch(() => undefined);
      return !!(top?.Processes as string[][] | undefined)?.some((p) => p.join(' ').includes('sleep 31'));
    };
    const res = await killDuring(() => api.post('/v1/boxes/ex/exec').set(auth).send({ cmd: ['sh', '-c', 'echo ran >> /tmp/count; sleep 31'] }), running);
    assert.equal(res.status, 502, JSON.stringify(res.body));
    assert.equal(res.body.error.code, 'EXEC_LOST');
    await startHostProcess();
    const out = await waitFor(async () => {
      const r = await api.post('/v1/boxes/ex/exec').set(auth).send({ cmd: ['cat', '/tmp/count'] });
      return r.status === 200 ? r : undefined;
    }, 60_000, 500);
    assert.equal(out.body.stdout, 'ran\n', 'the command ran once');
  });
});
