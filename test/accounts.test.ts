import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { hashSecret } from '../core/accounts.ts';
import { accountAnswer, accountListAnswer, keyAnswer } from '../gateway/accounts-api.ts';
import { docker, goldenTag, startStack, type Stack } from './helpers.ts';

/** Accounts, keys and the ownership of every resource, through the HTTP API on real Redis and Docker. */
describe('accounts and keys', () => {
  let s: Stack;
  let allowed: string;
  const bearer = (key: string) => ({ Authorization: `Bearer ${key}` });
  let a: { id: string; key: string; keyId: string };
  let b: { id: string; key: string; keyId: string };

  before(async () => {
    const prefix = `t-acct${Math.floor(Math.random() * 1e6)}`;
    allowed = `boxd-test/${prefix}-allowed:1`;
    await docker.getImage(goldenTag('tiny')).tag({ repo: allowed.split(':')[0]!, tag: '1' });
    s = await startStack({ BOXD_PREFIX: prefix, BOXD_HOST_ID: `h-${prefix}`, BOXD_ALLOWED_IMAGES: `nothing/here:1, ${allowed}` });
    const make = async (name: string, limits: object) => {
      const acct = await s.api.post('/v1/accounts').set(s.auth).send({ name, ...limits }).expect(201);
      const key = await s.api.post(`/v1/accounts/${acct.body.id}/keys`).set(s.auth).send({}).expect(201);
      return { id: acct.body.id as string, key: key.body.key as string, keyId: key.body.id as string };
    };
    a = await make('team-a', { maxBoxes: 3, maxSnapshots: 1, maxHooks: 1, maxExecs: 2 });
    b = await make('team-b', { maxBoxes: 3 });
  });
  after(async () => {
    await s?.close();
    await docker.getImage(allowed).remove({ force: true }).catch(() => undefined);
  });

  it('creates accounts and keys with the admin key only; keys are shown once and stored hashed', async () => {
    assert.match(a.id, /^acct-[0-9a-f]{12}$/);
    assert.notEqual(a.id, b.id);
    assert.match(a.key, /^bxd_/);
    const list = await s.api.get('/v1/accounts').set(s.auth).expect(200);
    accountListAnswer.parse(list.body); // the answers are what the OpenAPI document says
    keyAnswer.parse((await s.api.post(`/v1/accounts/${b.id}/keys`).set(s.auth).send({}).expect(201)).body);
    accountAnswer.parse((await s.api.post('/v1/accounts').set(s.auth).send({ name: 'shape' }).expect(201)).body);
    const row = list.body.accounts.find((x: { id: string }) => x.id === a.id);
    assert.deepEqual(row.limits, { maxBoxes: 3, maxExecs: 2, maxSnapshots: 1, maxHooks: 1 });
    assert.equal(row.keys, 1);
    assert.ok(list.body.accounts.some((x: { id: string }) => x.id === 'default'), 'the bootstrap account is listed');
    assert.ok(!JSON.stringify(list.body).includes(a.key), 'a key is never answered again');
    assert.deepEqual(await s.gateway.accounts.accountLimits(b.id), { maxBoxes: 3, maxExecs: undefined, maxSnapshots: 50, maxHooks: 50 });

    // Redis holds the sha256 of the key, never the key itself.
    const redis = new Redis(s.config.REDIS_URL);
    try {
      const keys = await redis.keys(`{${s.config.BOXD_PREFIX}}:*`);
      assert.ok(keys.includes(`{${s.config.BOXD_PREFIX}}:apikey:${hashSecret(a.key)}`));
      for (const k of keys) {
        const type = await redis.type(k);
        const dump = type === 'string' ? await redis.get(k) : type === 'hash' ? JSON.stringify(await redis.hgetall(k)) : type === 'set' ? JSON.stringify(await redis.smembers(k)) : '';
        assert.ok(!k.includes(a.key) && !dump?.includes(a.key), `${k} holds the raw key`);
      }
    } finally {
      await redis.quit();
    }

    // A member key manages nothing of accounts and keys.
    for (const call of [
      () => s.api.post('/v1/accounts').set(bearer(a.key)).send({ name: 'x' }),
      () => s.api.get('/v1/accounts').set(bearer(a.key)),
      () => s.api.post(`/v1/accounts/${a.id}/keys`).set(bearer(a.key)).send({}),
      () => s.api.delete(`/v1/keys/${b.keyId}`).set(bearer(a.key)),
      () => s.api.get('/metrics').set(bearer(a.key)),
    ]) {
      const res = await call();
      assert.equal(res.status, 403, res.text);
      assert.equal(res.body.error.code, 'FORBIDDEN');
    }
    await s.api.post('/v1/accounts/acct-nope/keys').set(s.auth).send({}).expect(404);
    await s.api.post(`/v1/accounts/${a.id}/keys`).set(s.auth).send({ role: 'admin' }).expect(400);
    const admin2 = await s.api.post('/v1/accounts/default/keys').set(s.auth).send({ role: 'admin' }).expect(201);
    await s.api.get('/v1/accounts').set(bearer(admin2.body.key)).expect(200);
    await s.api.delete(`/v1/keys/${admin2.body.id}`).set(s.auth).expect(204);
    const bad = await s.api.post('/v1/accounts').set(s.auth).send({ name: '', maxBoxes: -1 }).expect(400);
    assert.equal(bad.body.error.code, 'INVALID_REQUEST');

    // A deleted key stops working at once.
    const extra = await s.api.post(`/v1/accounts/${b.id}/keys`).set(s.auth).send({}).expect(201);
    await s.api.get('/v1/boxes').set(bearer(extra.body.key)).expect(200);
    await s.api.delete(`/v1/keys/${extra.body.id}`).set(s.auth).expect(204);
    await s.api.get('/v1/boxes').set(bearer(extra.body.key)).expect(401);
    await s.api.delete(`/v1/keys/${extra.body.id}`).set(s.auth).expect(404);
  });

  it('keeps every box, snapshot, image, hook and task of an account away from the others', async () => {
    await s.api.post('/v1/boxes').set(bearer(a.key)).send({ name: 'a-box', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes/a-box/exec').set(bearer(a.key)).send({ cmd: ['sh', '-c', 'echo from-a > /tmp/who'] }).expect(200);
    await s.api.post('/v1/boxes/a-box/snapshot').set(bearer(a.key)).send({ snapshot: 'same' }).expect(201);
    await s.api.post('/v1/boxes/a-box/fork').set(bearer(a.key)).send({ name: 'a-fork' }).expect(201);
    const aBox = (await s.gateway.store.get('a-fork'))!;
    const aSnapImage = `boxd-snap/${s.config.BOXD_PREFIX}-${a.id}:same`;
    assert.equal(aBox.imageRef, `boxd-fork/${s.config.BOXD_PREFIX}-${a.id}:a-fork`, 'fork images carry the account id');
    assert.ok(await docker.getImage(aSnapImage).inspect(), 'snapshot images carry the account id');

    const asB = bearer(b.key);
    for (const [what, call, status, code] of [
      ['get', () => s.api.get('/v1/boxes/a-box').set(asB), 404, 'BOX_NOT_FOUND'],
      ['exec', () => s.api.post('/v1/boxes/a-box/exec').set(asB).send({ cmd: ['true'] }), 404, 'BOX_NOT_FOUND'],
      ['files', () => s.api.get('/v1/boxes/a-box/files').query({ path: '/tmp/who' }).set(asB), 404, 'BOX_NOT_FOUND'],
      ['fork', () => s.api.post('/v1/boxes/a-box/fork').set(asB).send({}), 404, 'BOX_NOT_FOUND'],
      ['snapshot', () => s.api.post('/v1/boxes/a-box/snapshot').set(asB).send({ snapshot: 'steal' }), 404, 'BOX_NOT_FOUND'],
      ['delete', () => s.api.delete('/v1/boxes/a-box').set(asB), 404, 'BOX_NOT_FOUND'],
      ['from snapshot name', () => s.api.post('/v1/boxes').set(asB).send({ snapshot: 'same' }), 404, 'SNAPSHOT_NOT_FOUND'],
      ['from snapshot image', () => s.api.post('/v1/boxes').set(asB).send({ image: aSnapImage }), 403, 'IMAGE_NOT_ALLOWED'],
      ['from fork image', () => s.api.post('/v1/boxes').set(asB).send({ image: aBox.imageRef }), 403, 'IMAGE_NOT_ALLOWED'],
      ['any local image', () => s.api.post('/v1/boxes').set(asB).send({ image: 'redis:7' }), 403, 'IMAGE_NOT_ALLOWED'],
      ['delete snapshot', () => s.api.delete('/v1/snapshots/same').set(asB), 404, 'SNAPSHOT_NOT_FOUND'],
    ] as const) {
      const res = await call();
      assert.equal(res.status, status, `${what}: ${res.text}`);
      assert.equal(res.body.error.code, code, what);
    }
    assert.deepEqual((await s.api.get('/v1/boxes').set(asB).expect(200)).body.boxes, []);
    assert.deepEqual((await s.api.get('/v1/snapshots').set(asB).expect(200)).body.snapshots, []);

    // The same snapshot name in two accounts: two images, each account gets its own.
    await s.api.post('/v1/boxes').set(asB).send({ name: 'b-box', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes/b-box/exec').set(asB).send({ cmd: ['sh', '-c', 'echo from-b > /tmp/who'] }).expect(200);
    await s.api.post('/v1/boxes/b-box/snapshot').set(asB).send({ snapshot: 'same' }).expect(201);
    await s.api.post('/v1/boxes').set(asB).send({ name: 'b-from-snap', snapshot: 'same' }).expect(201);
    const who = await s.api.post('/v1/boxes/b-from-snap/exec').set(asB).send({ cmd: ['cat', '/tmp/who'] }).expect(200);
    assert.equal(who.body.stdout, 'from-b\n');
    // A's own snapshot image is accepted as `image` for A.
    await s.api.post('/v1/boxes').set(bearer(a.key)).send({ name: 'a-from-image', image: aSnapImage }).expect(201);
    const whoA = await s.api.post('/v1/boxes/a-from-image/exec').set(bearer(a.key)).send({ cmd: ['cat', '/tmp/who'] }).expect(200);
    assert.equal(whoA.body.stdout, 'from-a\n');

    // Goldens by tag and images on the operator's allowlist are accepted.
    await s.api.delete('/v1/boxes/b-from-snap').set(asB).expect(204);
    await s.api.post('/v1/boxes').set(asB).send({ name: 'b-golden-tag', image: goldenTag('tiny') }).expect(201);
    const allowedBox = await s.api.post('/v1/boxes').set(asB).send({ name: 'b-allowed', image: allowed }).expect(201);
    assert.equal(allowedBox.body.state, 'running');

    // Hooks and tasks.
    const hook = await s.api.post('/v1/hooks').set(bearer(a.key)).send({ name: 'h', golden: 'tiny', steps: [{ cmd: 'true' }] }).expect(201);
    assert.deepEqual((await s.api.get('/v1/hooks').set(asB).expect(200)).body.hooks, []);
    await s.api.delete(`/v1/hooks/${hook.body.id}`).set(asB).expect(404);
    const fired = await fetch(`http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}/hooks/${hook.body.id}`, {
      method: 'POST',
      body: '{}',
      headers: { 'X-Boxd-Signature': (await import('../core/hooks.ts')).signTimestamped(hook.body.secret, '{}'), 'X-Boxd-Delivery': 'acct-1' },
    });
    assert.equal(fired.status, 202);
    const task = ((await fired.json()) as { task: { id: string } }).task.id;
    await s.api.get(`/v1/tasks/${task}`).set(bearer(a.key)).expect(200);
    await s.api.get(`/v1/tasks/${task}`).set(asB).expect(404);
    assert.deepEqual((await s.api.get('/v1/tasks').set(asB).expect(200)).body.tasks, []);
  });

  it('never removes another account’s image when a box is deleted', async () => {
    // A record of account B pointing at A's snapshot image (what a guessed `image` used to make).
    const aSnapImage = `boxd-snap/${s.config.BOXD_PREFIX}-${a.id}:same`;
    const aForkImage = `boxd-fork/${s.config.BOXD_PREFIX}-${a.id}:a-fork`;
    // A stops using its snapshot image, so only B's box holds it when B deletes that box.
    await s.api.delete('/v1/boxes/a-from-image').set(bearer(a.key)).expect(204);
    for (const [name, imageRef] of [['b-steal-snap', aSnapImage], ['b-steal-fork', aForkImage]] as const) {
      await s.gateway.store.create({ name, account: b.id, imageRef, ports: [], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 256, hostId: s.config.BOXD_HOST_ID }, -1);
      await s.gateway.hosts.call(s.config.BOXD_HOST_ID, { op: 'create', name });
      await s.api.delete(`/v1/boxes/${name}`).set(bearer(b.key)).expect(204);
    }
    assert.ok(await docker.getImage(aSnapImage).inspect(), 'A’s snapshot image survives');
    assert.ok(await docker.getImage(aForkImage).inspect(), 'A’s fork image survives');
    // A's own fork image goes with A's fork box.
    await s.api.delete('/v1/boxes/a-fork').set(bearer(a.key)).expect(204);
    await assert.rejects(docker.getImage(aForkImage).inspect());
  });

  it('enforces per-account limits on boxes, snapshots and hooks with 429', async () => {
    // A has a-box (and nothing else live) with maxBoxes 3.
    const live = (await s.api.get('/v1/boxes').set(bearer(a.key)).expect(200)).body.boxes.length;
    for (let i = live; i < 3; i++) await s.api.post('/v1/boxes').set(bearer(a.key)).send({ name: `a-fill-${i}`, golden: 'tiny' }).expect(201);
    const boxes = await s.api.post('/v1/boxes').set(bearer(a.key)).send({ name: 'a-over', golden: 'tiny' }).expect(429);
    assert.equal(boxes.body.error.code, 'LIMIT_EXCEEDED');
    const snaps = await s.api.post('/v1/boxes/a-box/snapshot').set(bearer(a.key)).send({ snapshot: 'second' }).expect(429);
    assert.match(snaps.body.error.message, /1 snapshots/);
    const hooks = await s.api.post('/v1/hooks').set(bearer(a.key)).send({ name: 'h2', golden: 'tiny', steps: [{ cmd: 'true' }] }).expect(429);
    assert.match(hooks.body.error.message, /1 hooks/);
    // maxExecs 2: a third concurrent exec is refused while two run.
    const running = [1, 2].map(() => s.api.post('/v1/boxes/a-box/exec').set(bearer(a.key)).send({ cmd: ['sleep', '6'] }));
    const execs = await Promise.all(running.map((r) => r.then((x) => x)).concat([
      new Promise((r) => setTimeout(r, 1500)).then(() => s.api.post('/v1/boxes/a-box/exec').set(bearer(a.key)).send({ cmd: ['true'] })),
    ]));
    assert.deepEqual(execs.map((x) => x.status), [200, 200, 429]);
    assert.match(execs[2]!.body.error.message, /already runs 2 commands/);
    // B's limits are its own.
    await s.api.post('/v1/hooks').set(bearer(b.key)).send({ name: 'h2', golden: 'tiny', steps: [{ cmd: 'true' }] }).expect(201);
    for (let i = live; i < 3; i++) await s.api.delete(`/v1/boxes/a-fill-${i}`).set(bearer(a.key)).expect(204);
  });

  it('box-scoped keys reach boxes of their account only, and die with their box', async () => {
    const key = await s.gateway.accounts.issueBoxKey(a.id, 'a-box');
    const asBox = bearer(key);
    const ran = await s.api.post('/v1/boxes/a-box/exec').set(asBox).send({ cmd: ['cat', '/tmp/who'] }).expect(200);
    assert.equal(ran.body.stdout, 'from-a\n');
    await s.api.post('/v1/boxes').set(asBox).send({ name: 'a-agent-child', golden: 'tiny' }).expect(201);
    await s.api.put('/v1/boxes/a-agent-child/files').query({ path: '/tmp/x' }).set(asBox).send('hi').expect(204);
    await s.api.delete('/v1/boxes/a-agent-child').set(asBox).expect(204);
    await s.api.get('/v1/boxes/b-box').set(asBox).expect(404);
    for (const call of [
      () => s.api.post('/v1/hooks').set(asBox).send({ name: 'x', golden: 'tiny', steps: [{ cmd: 'true' }] }),
      () => s.api.get('/v1/hooks').set(asBox),
      () => s.api.get('/v1/tasks').set(asBox),
      () => s.api.get('/v1/accounts').set(asBox),
      () => s.api.post(`/v1/accounts/${a.id}/keys`).set(asBox).send({}),
      () => s.api.delete(`/v1/keys/${a.keyId}`).set(asBox),
    ]) {
      const res = await call();
      assert.equal(res.status, 403, res.text);
    }
    await s.api.delete('/v1/boxes/a-box').set(bearer(a.key)).expect(204);
    const gone = await s.api.get('/v1/boxes').set(asBox).expect(401);
    assert.equal(gone.body.error.code, 'UNAUTHORIZED');
    assert.equal(await s.gateway.accounts.lookup(key), undefined);
    // The account's own key is untouched.
    await s.api.get('/v1/boxes').set(bearer(a.key)).expect(200);
  });
});
