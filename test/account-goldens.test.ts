import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { sign } from '../core/hooks.ts';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Compute } from '../sdk/index.ts';
import { docker, startStack, waitFor, type Stack } from './helpers.ts';

interface Pool { golden: string; ready: number; hits: number; owner?: string }

describe('goldens of an account (real Docker, real Redis)', () => {
  let s: Stack;
  let other: string;
  const pool = async (golden: string): Promise<Pool | undefined> =>
    ((await s.api.get('/v1/pool').set(s.auth).expect(200)).body.pools as Pool[]).find((p) => p.golden === golden && p.owner === 'account');
  const run = async (box: string, script: string, auth = s.auth) =>
    (await s.api.post(`/v1/boxes/${box}/exec`).set(auth).send({ cmd: ['sh', '-c', script] }).expect(200)).body as { exitCode: number; stdout: string };

  before(async () => {
    // Operator pools off: this file looks at the account's own pool only.
    s = await startStack({ BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '300' });
    other = await s.gateway.accounts.createKey('other');
  });
  after(async () => {
    await s?.close();
  });

  it('promotes a prepared box to a golden whose warm pool hands out boxes that have its files', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'prep', golden: 'tiny', ports: [8080] }).expect(201);
    await run('prep', "mkdir -p /usr/local/bin /opt && printf '#!/bin/sh\\necho tool-ok\\n' > /usr/local/bin/mytool && chmod 755 /usr/local/bin/mytool && echo v1 > /opt/marker");
    const g = await s.api.post('/v1/goldens').set(s.auth).send({ name: 'mygold', fromBox: 'prep', poolSize: 5 }).expect(201);
    assert.equal(g.body.name, 'mygold');
    assert.equal(g.body.owner, 'account');
    assert.deepEqual(g.body.ports, [8080]);
    await s.api.post('/v1/goldens').set(s.auth).send({ name: 'mygold', fromBox: 'prep', poolSize: 0 }).expect(409);
    await s.api.post('/v1/goldens').set(s.auth).send({ name: 'tiny', fromBox: 'prep', poolSize: 0 }).expect(409);
    const over = await s.api.post('/v1/goldens').set(s.auth).send({ name: 'more', fromBox: 'prep', poolSize: 1 }).expect(429);
    assert.equal(over.body.error.code, 'LIMIT_EXCEEDED', 'BOXD_ACCOUNT_POOL_MAX (5) is used up');

    const list = (await s.api.get('/v1/goldens').set(s.auth).expect(200)).body.goldens as { name: string; owner: string }[];
    assert.ok(list.some((x) => x.name === 'tiny' && x.owner === 'operator'));
    assert.ok(list.some((x) => x.name === 'mygold' && x.owner === 'account'));

    await waitFor(async () => (await pool('mygold'))?.ready === 5, 90_000, 200);
    // Changing the source box afterwards does not change the golden.
    await run('prep', 'echo v2 > /opt/marker');
    const made = await Promise.all([1, 2, 3, 4, 5].map((i) => s.api.post('/v1/boxes').set(s.auth).send({ name: `g${i}`, golden: 'mygold' })));
    assert.deepEqual(made.map((r) => r.status), [201, 201, 201, 201, 201]);
    for (const r of made) {
      assert.equal(r.body.pooled, true);
      assert.equal(r.body.origin, 'pool');
      assert.equal(r.body.golden, 'mygold');
      assert.equal(r.body.state, 'running');
    }
    for (let i = 1; i <= 5; i++) {
      assert.equal((await run(`g${i}`, 'mytool && cat /opt/marker')).stdout, 'tool-ok\nv1\n');
      const id = `${s.config.BOXD_PREFIX}-g${i}`;
      await waitFor(async () => (await s.gateway.store.require(`g${i}`)).runtimeId === id, 10_000, 50);
      const labels = (await docker.getContainer(id).inspect()).Config.Labels;
      assert.match(labels['boxd.slot'] ?? '', /^pool-default-mygold-/, 'the container is a pool box of the golden, renamed to its box');
      assert.equal(labels['boxd.pool'], 'default/mygold');
    }
    assert.equal((await pool('mygold'))?.hits, 5);
  });

  it('keeps goldens per account: others neither see nor use it, and may have their own of that name', async () => {
    const auth = { Authorization: `Bearer ${other}` };
    const theirs = (await s.api.get('/v1/goldens').set(auth).expect(200)).body.goldens as { name: string }[];
    assert.ok(!theirs.some((x) => x.name === 'mygold'));
    const refused = await s.api.post('/v1/boxes').set(auth).send({ golden: 'mygold' }).expect(400);
    assert.equal(refused.body.error.code, 'GOLDEN_NOT_FOUND');
    await s.api.post('/v1/hooks').set(auth).send({ name: 'h', golden: 'mygold', steps: [{ cmd: 'true' }] }).expect(400);
    const hook = await s.api.post('/v1/hooks').set(s.auth).send({ name: 'h', golden: 'mygold', steps: [{ cmd: 'mytool' }] }).expect(201);
    // A webhook task runs in a box of the account's golden.
    const body = '{"ref":"main"}';
    const queued = await s.api.post(`/hooks/${hook.body.id}`).set('X-Boxd-Signature', sign(hook.body.secret, body))
      .set('X-Boxd-Delivery', 'd-1').set('Content-Type', 'application/json').send(body).expect(202);
    const task = await waitFor(async () => {
      const t = (await s.api.get(`/v1/tasks/${queued.body.task.id}`).set(s.auth).expect(200)).body;
      return t.state === 'succeeded' || t.state === 'failed' ? t : undefined;
    }, 90_000, 200);
    assert.equal(task.state, 'succeeded', JSON.stringify(task));
    assert.equal(task.steps[0].stdout, 'tool-ok\n');

    // The other account promotes a snapshot of its own under the same name (no pool: cold creates).
    await s.api.post('/v1/boxes').set(auth).send({ name: 'o-prep', golden: 'tiny' }).expect(201);
    await run('o-prep', 'echo theirs > /opt-marker', auth);
    await s.api.post('/v1/boxes/o-prep/snapshot').set(auth).send({ snapshot: 'base' }).expect(201);
    await s.api.post('/v1/goldens').set(auth).send({ name: 'mygold', fromSnapshot: 'base', poolSize: 0 }).expect(201);
    const b = await s.api.post('/v1/boxes').set(auth).send({ name: 'o-box', golden: 'mygold' }).expect(201);
    assert.equal(b.body.pooled, undefined);
    assert.equal((await run('o-box', 'cat /opt-marker', auth)).stdout, 'theirs\n');
    assert.equal((await run('g1', 'test -e /opt-marker; echo $?')).stdout, '1\n', 'the first account’s boxes are untouched');
  });

  it('deletes a golden: its pool drains, boxes made from it live on', async () => {
    await waitFor(async () => (await pool('mygold'))?.ready === 5, 90_000, 200);
    const pooled = await s.host.pool.ready('default/mygold');
    assert.equal(pooled.length, 5);
    const containers = await Promise.all(pooled.map(async (n) => (await s.gateway.store.require(n)).runtimeId!));
    await s.api.delete('/v1/goldens/tiny').set(s.auth).expect(403);
    await s.api.delete('/v1/goldens/nope').set(s.auth).expect(404);
    await s.api.delete('/v1/goldens/mygold').set(s.auth).expect(204);
    assert.equal(await pool('mygold'), undefined);
    for (const name of pooled) assert.equal(await s.gateway.store.get(name), undefined, 'pool box removed');
    for (const id of containers) await assert.rejects(docker.getContainer(id).inspect(), 'the pooled container is gone');
    assert.equal((await run('g2', 'mytool')).stdout, 'tool-ok\n');
    await s.api.post('/v1/boxes').set(s.auth).send({ golden: 'mygold' }).expect(400);
    // The other account's golden of the same name is still there.
    const auth = { Authorization: `Bearer ${other}` };
    assert.ok(((await s.api.get('/v1/goldens').set(auth).expect(200)).body.goldens as { name: string }[]).some((x) => x.name === 'mygold'));
  });

  it('is driven from the SDK (c.golden) and the CLI (boxd golden)', async () => {
    const baseUrl = `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}`;
    const c = new Compute({ apiKey: s.config.BOXD_API_KEY, baseUrl });
    const g = await c.golden.create({ name: 'from-sdk', fromBox: 'g3', poolSize: 0 });
    assert.equal(g.owner, 'account');
    assert.ok((await c.golden.list()).some((x) => x.name === 'from-sdk' && x.owner === 'account'));
    const env = { ...process.env, BOXD_URL: baseUrl, BOXD_API_KEY: s.config.BOXD_API_KEY };
    const cli = (...args: string[]) => promisify(execFile)('node', ['cli/boxd.js', ...args], { env, timeout: 120_000 });
    const made = await cli('golden', 'create', 'from-cli', '--from-box', 'g3', '--pool-size', '0', '--json');
    assert.equal(JSON.parse(made.stdout).name, 'from-cli');
    const listed = JSON.parse((await cli('golden', 'ls', '--json')).stdout) as { name: string; owner: string }[];
    assert.deepEqual(listed.filter((x) => x.owner === 'account').map((x) => x.name).sort(), ['from-cli', 'from-sdk']);
    await cli('golden', 'rm', 'from-cli');
    await c.golden.delete('from-sdk');
    assert.ok(!(await c.golden.list()).some((x) => x.owner === 'account'));
  });
});
