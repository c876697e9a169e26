import assert from 'node:assert/strict';
import vm from 'node:vm';
import { after, before, describe, it } from 'node:test';
import { docker, startStack, type Stack } from './helpers.ts';

describe('control API on the real stack (Redis + Docker + host worker)', () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ BOXD_MAX_BOXES: '3' });
  });
  after(async () => {
    await s?.close();
  });

  it('walks the README: create, exec, suspend, exec resumes, files, delete', async () => {
    const created = await s.api.post('/v1/boxes').set(s.auth).send({ name: 'readme', golden: 'default' }).expect(201);
    assert.equal(created.body.name, 'readme');
    assert.equal(created.body.state, 'running');
    assert.equal(created.body.golden, 'default');
    assert.match(created.body.url, /^http:\/\/readme\.boxd\.localhost:\d+\/$/);
    const containers = await docker.listContainers({ filters: { label: [`boxd.instance=${s.config.BOXD_PREFIX}`, 'boxd.box=readme'] } });
    assert.equal(containers.length, 1, 'one real container');

    const hi = await s.api.post('/v1/boxes/readme/exec').set(s.auth).send({ cmd: ['echo', 'hi'] }).expect(200);
    assert.deepEqual({ exitCode: hi.body.exitCode, stdout: hi.body.stdout, stderr: hi.body.stderr }, { exitCode: 0, stdout: 'hi\n', stderr: '' });
    assert.equal(typeof hi.body.durationMs, 'number');

    const py = await s.api.post('/v1/boxes/readme/exec').set(s.auth).send({ cmd: ['python3', '-c', 'import sys; print(sys.version_info[0]); sys.exit(5)'] }).expect(200);
    assert.equal(py.body.stdout, '3\n');
    assert.equal(py.body.exitCode, 5);

    const suspended = await s.api.post('/v1/boxes/readme/suspend').set(s.auth).expect(200);
    assert.equal(suspended.body.state, 'suspended');
    const info = await docker.getContainer(containers[0]!.Id).inspect();
    // Frozen through the cgroup freezer (or paused by Docker where the freezer is not writable).
    const frozen = info.State.Paused || (await s.host.runtime.inspect(containers[0]!.Names[0]!.slice(1)))?.state === 'paused';
    assert.equal(frozen, true, 'the container is really frozen');

    const again = await s.api.post('/v1/boxes/readme/exec').set(s.auth).send({ cmd: ['bash', '-c', 'echo back; echo oops >&2'] }).expect(200);
    assert.equal(again.body.stdout, 'back\n');
    assert.equal(again.body.stderr, 'oops\n');
    assert.equal((await s.api.get('/v1/boxes/readme').set(s.auth).expect(200)).body.state, 'running');

    const bytes = Buffer.from([0, 1, 2, 250, 255, 10, 13]);
    await s.api.put('/v1/boxes/readme/files').query({ path: '/workspace/data/blob.bin' }).set(s.auth).set('Content-Type', 'application/octet-stream').send(bytes).expect(204);
    const read = await s.api.get('/v1/boxes/readme/files').query({ path: '/workspace/data/blob.bin' }).set(s.auth).buffer(true).parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => cb(null, Buffer.concat(chunks)));
    }).expect(200);
    assert.ok((read.body as Buffer).equals(bytes));
    const ls = await s.api.post('/v1/boxes/readme/exec').set(s.auth).send({ cmd: ['wc', '-c', 'blob.bin'], cwd: '/workspace/data' }).expect(200);
    assert.equal(ls.body.stdout.trim(), '7 blob.bin');

    await s.api.delete('/v1/boxes/readme').set(s.auth).expect(204);
    await s.api.get('/v1/boxes/readme').set(s.auth).expect(404);
    assert.equal((await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${s.config.BOXD_PREFIX}`, 'boxd.box=readme'] } })).length, 0);
  });

  it('streams exec output as NDJSON, with stdin, env and timeouts', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'stream', golden: 'tiny' }).expect(201);
    const res = await s.api
      .post('/v1/boxes/stream/exec')
      .set(s.auth)
      .set('Accept', 'application/x-ndjson')
      .send({ cmd: ['sh', '-c', 'echo one; sleep 0.2; echo two >&2; echo $X; exit 7'], env: { X: 'from-env' } })
      .expect(200)
      .expect('Content-Type', /application\/x-ndjson/);
    const lines = res.text.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.at(-1), { exitCode: 7, durationMs: lines.at(-1).durationMs, timedOut: false });
    const out = lines.filter((l) => l.stream === 'stdout').map((l) => l.data).join('');
    const err = lines.filter((l) => l.stream === 'stderr').map((l) => l.data).join('');
    assert.equal(out, 'one\nfrom-env\n');
    assert.equal(err, 'two\n');

    const cat = await s.api.post('/v1/boxes/stream/exec').set(s.auth).send({ cmd: ['cat'], stdin: 'typed input' }).expect(200);
    assert.equal(cat.body.stdout, 'typed input');
    const slow = await s.api.post('/v1/boxes/stream/exec').set(s.auth).send({ cmd: ['sleep', '30'], timeoutMs: 300 }).expect(200);
    assert.equal(slow.body.timedOut, true);
    assert.notEqual(slow.body.exitCode, 0);
  });

  it('answers bad input with JSON 4xx and keeps running', async () => {
    const cases: [string, () => Promise<{ status: number; body: { error?: { code: string } } }>, number, string][] = [
      ['no key', () => s.api.get('/v1/boxes'), 401, 'UNAUTHORIZED'],
      ['wrong key', () => s.api.get('/v1/boxes').set('Authorization', 'Bearer nope'), 401, 'UNAUTHORIZED'],
      ['broken JSON', () => s.api.post('/v1/boxes').set(s.auth).set('Content-Type', 'application/json').send('{"name":'), 400, 'INVALID_JSON'],
      ['bad name', () => s.api.post('/v1/boxes').set(s.auth).send({ name: 'Not_A_Label' }), 400, 'INVALID_REQUEST'],
      ['name too long', () => s.api.post('/v1/boxes').set(s.auth).send({ name: 'a'.repeat(64) }), 400, 'INVALID_REQUEST'],
      ['wrong type', () => s.api.post('/v1/boxes').set(s.auth).send({ ports: 'eighty' }), 400, 'INVALID_REQUEST'],
      ['unknown field', () => s.api.post('/v1/boxes').set(s.auth).send({ nmae: 'x' }), 400, 'INVALID_REQUEST'],
      ['two sources', () => s.api.post('/v1/boxes').set(s.auth).send({ golden: 'tiny', image: 'x' }), 400, 'INVALID_REQUEST'],
      ['unknown golden', () => s.api.post('/v1/boxes').set(s.auth).send({ golden: 'nope' }), 400, 'GOLDEN_NOT_FOUND'],
      ['image not allowed', () => s.api.post('/v1/boxes').set(s.auth).send({ image: 'boxd-none/none:1' }), 403, 'IMAGE_NOT_ALLOWED'],
      ['unknown box', () => s.api.get('/v1/boxes/ghost').set(s.auth), 404, 'BOX_NOT_FOUND'],
      ['bad box name in path', () => s.api.get('/v1/boxes/Bad..Name').set(s.auth), 400, 'INVALID_REQUEST'],
      ['exec unknown box', () => s.api.post('/v1/boxes/ghost/exec').set(s.auth).send({ cmd: ['true'] }), 404, 'BOX_NOT_FOUND'],
      ['exec empty cmd', () => s.api.post('/v1/boxes/stream/exec').set(s.auth).send({ cmd: [] }), 400, 'INVALID_REQUEST'],
      ['exec cmd string', () => s.api.post('/v1/boxes/stream/exec').set(s.auth).send({ cmd: 'ls -la' }), 400, 'INVALID_REQUEST'],
      ['relative path', () => s.api.get('/v1/boxes/stream/files').query({ path: '../../etc/passwd' }).set(s.auth), 400, 'INVALID_REQUEST'],
      ['dot-dot path', () => s.api.get('/v1/boxes/stream/files').query({ path: '/tmp/../../etc/passwd' }).set(s.auth), 400, 'INVALID_REQUEST'],
      ['no path', () => s.api.get('/v1/boxes/stream/files').set(s.auth), 400, 'INVALID_REQUEST'],
      ['missing file', () => s.api.get('/v1/boxes/stream/files').query({ path: '/nope/nothing' }).set(s.auth), 404, 'FILE_NOT_FOUND'],
      ['folder', () => s.api.get('/v1/boxes/stream/files').query({ path: '/etc' }).set(s.auth), 400, 'INVALID_REQUEST'],
      ['duplicate name', () => s.api.post('/v1/boxes').set(s.auth).send({ name: 'stream', golden: 'tiny' }), 409, 'BOX_EXISTS'],
      ['unknown route', () => s.api.get('/v1/nothing').set(s.auth), 404, 'NOT_FOUND'],
    ];
    for (const [what, call, status, code] of cases) {
      const res = await call();
      assert.equal(res.status, status, `${what}: status`);
      assert.equal(res.body.error?.code, code, `${what}: code`);
    }
    await s.api.get('/healthz').expect(200);
  });

  it('serves the dashboard page on the bare host, whose script parses', async () => {
    const page = await s.api.get('/').expect(200).expect('Content-Type', /text\/html/);
    assert.match(page.text, /<title>boxd<\/title>/);
    const script = /<script>([\s\S]*)<\/script>/.exec(page.text)?.[1] ?? '';
    assert.ok(script.includes("api('GET', '/v1/boxes')"));
    assert.doesNotThrow(() => new vm.Script(script), 'the inline script is valid JavaScript');
  });

  it('keeps accounts apart and enforces the live-box limit with 429', async () => {
    const other = await s.gateway.accounts.createKey('other');
    await s.api.get('/v1/boxes/stream').set('Authorization', `Bearer ${other}`).expect(404);
    assert.deepEqual((await s.api.get('/v1/boxes').set('Authorization', `Bearer ${other}`).expect(200)).body.boxes, []);
    // limit is 3 in this stack; "stream" is one.
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'l1', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'l2', golden: 'tiny' }).expect(201);
    const over = await s.api.post('/v1/boxes').set(s.auth).send({ name: 'l3', golden: 'tiny' }).expect(429);
    assert.equal(over.body.error.code, 'LIMIT_EXCEEDED');
    const list = await s.api.get('/v1/boxes').set(s.auth).expect(200);
    assert.deepEqual(list.body.boxes.map((b: { name: string }) => b.name), ['l1', 'l2', 'stream']);
    await s.api.delete('/v1/boxes/l1').set(s.auth).expect(204);
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'l3', golden: 'tiny' }).expect(201);
  });
});
