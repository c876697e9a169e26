import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sign } from '../core/hooks.ts';
import { BoxdApiError, Compute } from '../sdk/index.ts';
import { startStack, waitFor, type Stack } from './helpers.ts';

describe('webhook task runs (real stack)', () => {
  let s: Stack;
  let base: string;
  before(async () => {
    s = await startStack({ BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '300' });
    base = `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}`;
  });
  after(async () => {
    await s?.close();
  });

  const trigger = (id: string, secret: string, payload: string, headers: Record<string, string> = {}) =>
    fetch(`${base}/hooks/${id}`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-Boxd-Signature': sign(secret, payload), ...(Object.keys(headers).some((h) => /delivery/i.test(h)) ? {} : { 'X-Boxd-Delivery': `d-${Math.random()}` }), ...headers }, body: payload });
  const task = async (id: string) => (await s.api.get(`/v1/tasks/${id}`).set(s.auth).expect(200)).body;
  const settled = (id: string) => waitFor(async () => {
    const t = await task(id);
    return t.state === 'succeeded' || t.state === 'failed' ? t : undefined;
  }, 60_000);

  it('runs the steps of a signed trigger with the payload, records outputs, destroys the box', async () => {
    const hook = await s.api.post('/v1/hooks').set(s.auth).send({ name: 'ci', golden: 'tiny', steps: [{ cmd: 'cat "$BOXD_PAYLOAD"' }, { cmd: ['sh', '-c', 'echo second; echo warn >&2'] }] }).expect(201);
    assert.match(hook.body.url, /\/hooks\/hk_/);
    assert.match(hook.body.secret, /^[0-9a-f]{64}$/, 'a strong secret is generated');
    const payload = JSON.stringify({ ref: 'refs/heads/main', after: 'abc123' });
    const res = await trigger(hook.body.id, hook.body.secret, payload, { 'X-GitHub-Delivery': 'd-1' });
    assert.equal(res.status, 202);
    const { task: queued } = (await res.json()) as { task: { id: string; state: string } };
    assert.equal(queued.state, 'queued');
    const done = await settled(queued.id);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.steps.length, 2);
    assert.equal(done.steps[0].stdout, payload);
    assert.equal(done.steps[1].stdout, 'second\n');
    assert.equal(done.steps[1].stderr, 'warn\n');
    assert.equal(typeof done.steps[0].durationMs, 'number');
    await waitFor(async () => (await s.api.get(`/v1/boxes/${done.box.name}`).set(s.auth)).status === 404, 10_000);

    // A repeated delivery is ignored: same task, nothing new queued.
    const before = (await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks.length;
    const replay = await trigger(hook.body.id, hook.body.secret, payload, { 'X-GitHub-Delivery': 'd-1' });
    assert.equal(replay.status, 200);
    assert.deepEqual(await replay.json(), { task: queued.id, duplicate: true });
    assert.equal((await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks.length, before);
  });

  it('stops at the first failing step', async () => {
    const hook = await s.api.post('/v1/hooks').set(s.auth).send({ name: 'fail', golden: 'tiny', steps: [{ cmd: 'echo one' }, { cmd: 'exit 3' }, { cmd: 'echo never' }] }).expect(201);
    const res = await trigger(hook.body.id, hook.body.secret, '{}');
    const done = await settled(((await res.json()) as { task: { id: string } }).task.id);
    assert.equal(done.state, 'failed');
    assert.deepEqual(done.steps.map((x: { exitCode: number }) => x.exitCode), [0, 3]);
  });

  it('rejects bad, missing and malformed signatures and oversized bodies, enqueuing nothing', async () => {
    const hook = await s.api.post('/v1/hooks').set(s.auth).send({ name: 'sec', golden: 'tiny', steps: [{ cmd: 'true' }], secret: 'a-shared-secret-of-length' }).expect(201);
    const count = async () => (await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks.length;
    const before = await count();
    const url = `${base}/hooks/${hook.body.id}`;
    const statuses = await Promise.all([
      fetch(url, { method: 'POST', body: '{}' }).then((r) => r.status),
      fetch(url, { method: 'POST', body: '{}', headers: { 'X-Boxd-Signature': sign('wrong-secret-entirely', '{}') } }).then((r) => r.status),
      fetch(url, { method: 'POST', body: '{}', headers: { 'X-Boxd-Signature': 'sha256=zz' } }).then((r) => r.status),
      fetch(url, { method: 'POST', body: '{"x":1}', headers: { 'X-Boxd-Signature': sign('a-shared-secret-of-length', '{}') } }).then((r) => r.status),
      fetch(url, { method: 'POST', body: 'x'.repeat(1024 * 1024 + 1), headers: { 'X-Boxd-Signature': sign('a-shared-secret-of-length', 'x'.repeat(1024 * 1024 + 1)) } }).then((r) => r.status),
      fetch(`${base}/hooks/hk_nope`, { method: 'POST', body: '{}', headers: { 'X-Boxd-Signature': sign('x', '{}') } }).then((r) => r.status),
    ]);
    assert.deepEqual(statuses, [401, 401, 401, 401, 413, 404]);
    assert.equal(await count(), before);
  });

  it('keeps the box for a look when the hook asks, with its preview URL in the task', async () => {
    const hook = await s.api.post('/v1/hooks').set(s.auth).send({ name: 'keep', golden: 'tiny', keepMs: 60_000, steps: [{ cmd: 'echo kept > /tmp/out' }] }).expect(201);
    const res = await trigger(hook.body.id, hook.body.secret, '{}');
    const done = await settled(((await res.json()) as { task: { id: string } }).task.id);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.box.kept, true);
    assert.match(done.box.url, new RegExp(`^http://${done.box.name}\\.boxd\\.localhost`));
    const out = await s.api.post(`/v1/boxes/${done.box.name}/exec`).set(s.auth).send({ cmd: ['cat', '/tmp/out'] }).expect(200);
    assert.equal(out.body.stdout, 'kept\n');
    const hooks = await s.api.get('/v1/hooks').set(s.auth).expect(200);
    assert.ok(hooks.body.hooks.every((h: Record<string, unknown>) => !('secret' in h)), 'secrets are not listed');
    await s.api.delete(`/v1/hooks/${hook.body.id}`).set(s.auth).expect(204);
    await s.api.delete(`/v1/hooks/${hook.body.id}`).set(s.auth).expect(404);
  });
});

describe('TypeScript SDK against the real stack', () => {
  let s: Stack;
  let c: Compute;
  before(async () => {
    s = await startStack();
    c = new Compute({ apiKey: s.config.BOXD_API_KEY, baseUrl: `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}` });
  });
  after(async () => {
    await s?.close();
  });

  it('runs the product page example and the rest of a box’s life', async () => {
    const id = 'sdk1';
    const box = await c.box.create({ name: `task-${id}` });
    assert.equal(box.state, 'running');
    assert.match(box.url ?? '', /^http:\/\/task-sdk1\.boxd\.localhost/);
    const r = await box.exec(['bash', '-lc', 'echo $((6*7))']);
    assert.deepEqual([r.exitCode, r.stdout], [0, '42\n']);
    await box.suspend();
    assert.equal(box.state, 'suspended');
    await box.resume();
    assert.equal(box.state, 'running');

    const events = [];
    for await (const e of box.stream(['bash', '-c', 'echo a; echo b >&2; exit 2'])) events.push(e);
    assert.deepEqual(events.at(-1), { exitCode: 2, durationMs: (events.at(-1) as { durationMs: number }).durationMs, timedOut: false });
    assert.equal(events.filter((e) => 'stream' in e && e.stream === 'stderr').map((e) => (e as { data: string }).data).join(''), 'b\n');

    await box.files.write('/workspace/hello.txt', 'hello sdk');
    assert.equal(await box.files.readText('/workspace/hello.txt'), 'hello sdk');
    await box.snapshot('sdk-snap');
    const child = await box.fork({ name: 'sdk-child' });
    assert.equal(child.info.parent, `task-${id}`);
    assert.equal(await child.files.readText('/workspace/hello.txt'), 'hello sdk');
    assert.deepEqual((await c.box.list()).map((b) => b.name).sort(), ['sdk-child', 'task-sdk1']);
    await child.destroy();
    await box.destroy();
    await c.snapshots.delete('sdk-snap');

    await assert.rejects(c.box.get('task-sdk1'), (e) => e instanceof BoxdApiError && e.code === 'BOX_NOT_FOUND' && e.status === 404);
    await assert.rejects(c.box.create({ name: 'Bad Name' }), (e) => e instanceof BoxdApiError && e.code === 'INVALID_REQUEST');
    const wrong = new Compute({ apiKey: 'nope-nope', baseUrl: c.baseUrl });
    await assert.rejects(wrong.box.list(), (e) => e instanceof BoxdApiError && e.code === 'UNAUTHORIZED');
  });
});
