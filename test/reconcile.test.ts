import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { BoxStore } from '../core/boxes.ts';
import { startHost } from '../host/host.ts';
import { docker, goldenTag, log, startStack, type Stack } from './helpers.ts';

describe('host start-up reconciles Docker with Redis', () => {
  let s: Stack | undefined;
  after(async () => {
    await s?.close();
  });

  it('removes unknown containers, errors vanished boxes, restarts stopped ones', async () => {
    s = await startStack();
    const { api, auth, config } = s;
    await api.post('/v1/boxes').set(auth).send({ name: 'keep', golden: 'tiny' }).expect(201);
    await api.post('/v1/boxes').set(auth).send({ name: 'vanish', golden: 'tiny' }).expect(201);
    await api.post('/v1/boxes').set(auth).send({ name: 'stopped', golden: 'tiny' }).expect(201);
    await api.post('/v1/boxes').set(auth).send({ name: 'sleepy', golden: 'tiny' }).expect(201);
    await api.post('/v1/boxes/sleepy/suspend').set(auth).expect(200);
    const prefix = config.BOXD_PREFIX;
    // A crash between the freeze and the record's transition: frozen, but the record says running.
    const oldRuntime = s.host.runtime;
    await oldRuntime.suspend(`${prefix}-keep`);
    await s.host.close();

    await docker.getContainer(`${prefix}-vanish`).remove({ force: true });
    await docker.getContainer(`${prefix}-stopped`).stop({ t: 0 });
    const orphan = await docker.createContainer({
      name: `${prefix}-orphan`,
      Image: goldenTag('tiny'),
      Cmd: ['sleep', '100'],
      Labels: { 'boxd.managed': 'true', 'boxd.instance': prefix, 'boxd.host': config.BOXD_HOST_ID, 'boxd.box': 'orphan' },
    });
    await orphan.start();

    s.host = await startHost(config, log);
    const store = new BoxStore(s.gateway.redis, prefix);
    assert.equal((await store.require('keep')).state, 'running');
    assert.equal((await store.require('vanish')).state, 'error');
    assert.match((await store.require('vanish')).error ?? '', /vanished/);
    assert.equal((await store.require('sleepy')).state, 'suspended');
    assert.equal((await s.host.runtime.inspect(`${prefix}-sleepy`))?.state, 'paused', 'a suspended box stays frozen');
    assert.equal((await s.host.runtime.inspect(`${prefix}-keep`))?.state, 'running', 'a running box left frozen is thawed');
    await assert.rejects(orphan.inspect(), (e) => (e as { statusCode?: number }).statusCode === 404);
    const restarted = await api.post('/v1/boxes/stopped/exec').set(auth).send({ cmd: ['echo', 'alive'] }).expect(200);
    assert.equal(restarted.body.stdout, 'alive\n');
    const woke = await api.post('/v1/boxes/sleepy/exec').set(auth).send({ cmd: ['echo', 'woke'] }).expect(200);
    assert.equal(woke.body.stdout, 'woke\n');
    await api.delete('/v1/boxes/vanish').set(auth).expect(204);
  });
});
