import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { docker, startStack, waitFor, type Stack } from './helpers.ts';

/**
 * Drift on the real stack: Docker is changed behind boxd's back and the records follow. Once with
 * frequent whole passes, once with none during the test: the engine's events alone must do.
 */
for (const [how, every] of [['with frequent passes', '300'], ['from engine events alone', '3600000']] as const)
describe(`drift: the host notices containers changed outside boxd (${how})`, () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ BOXD_DRIFT_CHECK_MS: every, BOXD_IDLE_TIMEOUT_MS: '0' });
  });
  after(async () => {
    await s?.close();
  });
  const container = (box: string) => docker.getContainer(`${s.config.BOXD_PREFIX}-${box}`);
  const state = async (box: string) => (await s.api.get(`/v1/boxes/${box}`).set(s.auth)).body.state as string;

  it('a removed container turns its box to error with the reason', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'gone', golden: 'tiny' }).expect(201);
    await container('gone').remove({ force: true });
    await waitFor(async () => (await state('gone')) === 'error', 60_000);
    const got = await s.api.get('/v1/boxes/gone').set(s.auth).expect(200);
    assert.match(JSON.stringify(got.body), /removed outside boxd/);
    // A preview of it answers with the reason instead of hanging.
    const page = await s.api.get('/').set('Host', `gone.${s.config.BOXD_BASE_DOMAIN}`);
    assert.equal(page.status, 503);
    assert.match(page.text, /removed outside boxd/);
    await s.api.delete('/v1/boxes/gone').set(s.auth).expect(204);
  });

  it('a box paused by hand becomes suspended, unpaused by hand becomes running, and still serves', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'hand', golden: 'tiny' }).expect(201);
    await container('hand').pause();
    await waitFor(async () => (await state('hand')) === 'suspended', 60_000);
    await container('hand').unpause();
    await waitFor(async () => (await state('hand')) === 'running', 60_000);
    await container('hand').pause();
    await waitFor(async () => (await state('hand')) === 'suspended', 60_000);
    // The record is true again, so an exec wakes it the ordinary way.
    const out = await s.api.post('/v1/boxes/hand/exec').set(s.auth).send({ cmd: ['echo', 'back'] });
    assert.equal(out.status, 200, JSON.stringify(out.body));
    assert.equal(out.body.stdout, 'back\n');
    assert.equal((await container('hand').inspect()).State.Paused, false);
  });

  it('a box whose processes died is started again and keeps its files', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'died', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes/died/exec').set(s.auth).send({ cmd: ['sh', '-c', 'echo kept > /tmp/f'] }).expect(200);
    await container('died').stop({ t: 0 });
    await waitFor(async () => (await container('died').inspect()).State.Running, 60_000);
    assert.equal(await state('died'), 'running');
    const out = await s.api.post('/v1/boxes/died/exec').set(s.auth).send({ cmd: ['cat', '/tmp/f'] }).expect(200);
    assert.equal(out.body.stdout, 'kept\n');
  });

  it('a suspend in flight is not taken for drift', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'busy', golden: 'tiny' }).expect(201);
    for (let i = 0; i < 5; i++) {
      await s.api.post('/v1/boxes/busy/suspend').set(s.auth).expect(200);
      await s.api.post('/v1/boxes/busy/resume').set(s.auth).expect(200);
    }
    assert.equal(await state('busy'), 'running');
  });
});
