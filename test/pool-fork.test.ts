import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startHost } from '../host/host.ts';
import type { DockerRuntime } from '../host/docker-runtime.ts';
import { docker, log, startStack, waitFor, type Stack } from './helpers.ts';

interface Pool { golden: string; target: number; ready: number; hits: number; misses: number; hitRate: number | null }

describe('warm pool (real Docker, real Redis)', () => {
  let s: Stack;
  const pool = async (golden: string): Promise<Pool> =>
    ((await s.api.get('/v1/pool').set(s.auth).expect(200)).body.pools as Pool[]).find((p) => p.golden === golden)!;
  before(async () => {
    // Drift checks run when a test asks (the rename test looks at what one pass does).
    s = await startStack({ BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '300', BOXD_DRIFT_CHECK_MS: '0' });
  });
  after(async () => {
    await s?.close();
  });

  it('hands out ready boxes, never the same one twice, and refills', async () => {
    await waitFor(async () => (await pool('tiny')).ready === 2, 60_000);
    const [a, b] = await Promise.all([
      s.api.post('/v1/boxes').set(s.auth).send({ name: 'pa', golden: 'tiny', env: { FOO: 'from-a' } }),
      s.api.post('/v1/boxes').set(s.auth).send({ name: 'pb', golden: 'tiny', env: { FOO: 'from-b' } }),
    ]);
    assert.equal(a.status, 201);
    assert.equal(b.status, 201);
    assert.equal(a.body.pooled, true);
    assert.equal(b.body.pooled, true);
    assert.equal(a.body.state, 'running');
    const ra = await s.gateway.store.require('pa');
    const rb = await s.gateway.store.require('pb');
    assert.notEqual(ra.runtimeId, rb.runtimeId, 'two claims, two different boxes');
    assert.equal(ra.account, 'default');
    for (const [name, want] of [['pa', 'from-a'], ['pb', 'from-b']]) {
      const r = await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd: ['sh', '-c', 'echo $FOO'] }).expect(200);
      assert.equal(r.body.stdout, `${want}\n`, 'the claimed box got the caller’s env');
    }
    const stats = await pool('tiny');
    assert.equal(stats.hits, 2);
    await waitFor(async () => (await pool('tiny')).ready === 2, 30_000);
    // An empty pool falls back to a cold create, never an error.
    const burst = await Promise.all(['pc', 'pd', 'pe'].map((name) => s.api.post('/v1/boxes').set(s.auth).send({ name, golden: 'tiny' })));
    assert.deepEqual(burst.map((r) => r.status), [201, 201, 201]);
    assert.equal(burst.filter((r) => !r.body.pooled).length, 1, 'the third create was cold');
    assert.ok((await pool('tiny')).misses >= 1);
    for (const n of ['pa', 'pb', 'pc', 'pd', 'pe']) await s.api.delete(`/v1/boxes/${n}`).set(s.auth).expect(204);
  });

  it('renames a claimed pool container to its box: docker ps names the box, labels name no other box, drift and reconcile keep it, delete removes it', async () => {
    const prefix = s.config.BOXD_PREFIX;
    const runtime = s.host.runtime as DockerRuntime;
    await waitFor(async () => (await pool('tiny')).ready === 2, 60_000);
    const slot = (await s.host.pool.ready('tiny'))[0]!;
    const slotName = (await s.gateway.store.require(slot)).runtimeId!;
    assert.equal(slotName, `${prefix}-${slot}`);
    const made = await docker.getContainer(slotName).inspect();
    assert.equal(made.Config.Labels['boxd.slot'], slot, 'a pool container names its slot');
    assert.equal(made.Config.Labels['boxd.pool'], 'tiny');
    assert.equal(made.Config.Labels['boxd.box'], undefined, 'and no box: it has none yet');
    assert.equal(made.Config.Labels['boxd.account'], undefined);

    const r = await s.api.post('/v1/boxes').set(s.auth).send({ name: 'named', golden: 'tiny' }).expect(201);
    assert.equal(r.body.pooled, true);
    // Renamed right after the answer; meanwhile (and after) the box serves.
    const exec = async () => (await s.api.post('/v1/boxes/named/exec').set(s.auth).send({ cmd: ['echo', 'hi'] }).expect(200)).body.stdout;
    assert.equal(await exec(), 'hi\n');
    const want = `${prefix}-named`;
    await waitFor(async () => (await s.gateway.store.require('named')).runtimeId === want, 10_000, 50);
    const ps = await docker.listContainers({ filters: { label: [`boxd.instance=${prefix}`] } });
    const mine = ps.filter((c) => c.Names.includes(`/${want}`));
    assert.equal(mine.length, 1, 'docker ps shows the box under its own name');
    assert.equal(mine[0]!.Id, made.Id, 'the pool container, renamed');
    assert.ok(!ps.some((c) => c.Names.includes(`/${slotName}`)), 'nothing goes by the pool name any more');
    await assert.rejects(docker.getContainer(slotName).inspect());
    const labels = mine[0]!.Labels;
    assert.equal(labels['boxd.box'], undefined, 'no label names a box it is not');
    assert.equal(labels['boxd.account'], undefined);
    assert.equal(labels['boxd.slot'], slot);
    assert.equal(await exec(), 'hi\n');
    // Inside, the box goes by its name too: the kernel's hostname, /etc/hostname and /etc/hosts.
    const names = (await s.api.post('/v1/boxes/named/exec').set(s.auth).send({ cmd: ['sh', '-c', 'hostname; cat /etc/hostname; grep -c named /etc/hosts; grep -c "' + slot + '" /etc/hosts || true'] }).expect(200)).body.stdout;
    assert.equal(names, 'named\nnamed\n1\n0\n');
    // What the host keys by container name moved along: egress rules and the disk image.
    const rules = await runtime.egress.listed();
    assert.ok(rules.some((x) => x.container === want), 'egress rules under the box name');
    assert.ok(!rules.some((x) => x.container === slotName), 'none left under the pool name');
    if (s.config.BOXD_BOX_DISK_MB > 0) {
      assert.equal(await runtime.quota.hasImage(prefix, want), true, 'the disk image follows');
      assert.equal(await runtime.quota.hasImage(prefix, slotName), false);
    }

    // A drift pass and a restart's reconcile see nothing wrong with it.
    assert.deepEqual((await s.host.drift.check()).filter((f) => f.box === 'named'), []);
    assert.equal((await s.gateway.store.require('named')).state, 'running');

    // A claim whose rename did not happen (the host stopped first): the drift check renames it.
    await docker.getContainer(want).rename({ name: slotName });
    await s.gateway.store.update('named', { runtimeId: slotName });
    assert.deepEqual((await s.host.drift.check()).filter((f) => f.box === 'named'), [{ box: 'named', kind: 'renamed', state: 'running' }]);
    assert.equal((await s.gateway.store.require('named')).runtimeId, want);
    assert.equal((await docker.getContainer(want).inspect()).Id, made.Id);
    // Renamed but not recorded: a restart neither removes it nor calls it vanished.
    await s.gateway.store.update('named', { runtimeId: slotName });
    await s.host.close();
    s.host = await startHost(s.config, log);
    const back = await s.gateway.store.require('named');
    assert.equal(back.state, 'running', 'the restart kept the box');
    assert.equal(back.runtimeId, want, 'and recorded its container');
    assert.equal((await docker.getContainer(want).inspect()).Id, made.Id, 'the same container');
    assert.equal(await exec(), 'hi\n');

    await s.api.delete('/v1/boxes/named').set(s.auth).expect(204);
    await assert.rejects(docker.getContainer(want).inspect(), 'delete removes the renamed container');
    assert.ok(!(await (s.host.runtime as DockerRuntime).egress.listed()).some((x) => x.container === want || x.container === slotName), 'and its egress rules');
  });

  it('keeps a full pool across a host restart and drains boxes of an old golden build', async () => {
    await waitFor(async () => (await pool('tiny')).ready === 2, 30_000);
    const before = await s.host.pool.ready('tiny');
    await s.host.close();
    s.host = await startHost(s.config, log);
    assert.deepEqual(await s.host.pool.ready('tiny'), before, 'the same boxes are still ready');
    for (const name of before) {
      const id = (await s.gateway.store.require(name)).runtimeId!;
      assert.equal((await s.host.runtime.inspect(id))?.state, 'paused', 'still frozen (cgroup freezer or docker pause)');
    }
    // Pretend the first one was made from an older build of the golden.
    await s.gateway.store.update(before[0]!, { imageRef: 'boxd-golden/tiny:old' });
    await s.host.pool.fill();
    const after = await s.host.pool.ready('tiny');
    assert.ok(!after.includes(before[0]!), 'the stale box was drained');
    assert.equal(await s.gateway.store.get(before[0]!), undefined);
    const claimed = await s.api.post('/v1/boxes').set(s.auth).send({ name: 'after-restart', golden: 'tiny' }).expect(201);
    assert.equal(claimed.body.pooled, true);
    await s.api.delete('/v1/boxes/after-restart').set(s.auth).expect(204);
  });
});

describe('fork and snapshots (real Docker, real Redis)', () => {
  let s: Stack;
  before(async () => {
    s = await startStack();
  });
  after(async () => {
    await s?.close();
  });
  const run = async (box: string, script: string) =>
    (await s.api.post(`/v1/boxes/${box}/exec`).set(s.auth).send({ cmd: ['bash', '-c', script] }).expect(200)).body as { exitCode: number; stdout: string };

  it('forks a running parent; the child cannot touch the parent', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'parent', golden: 'default' }).expect(201);
    await run('parent', 'mkdir -p /workspace/repo && echo v1 > /workspace/repo/file.txt');
    const child = await s.api.post('/v1/boxes/parent/fork').set(s.auth).send({ name: 'try-1' }).expect(201);
    assert.equal(child.body.parent, 'parent');
    assert.equal(child.body.state, 'running');
    assert.match(child.body.url, /^http:\/\/try-1\./);
    assert.equal((await run('try-1', 'cat /workspace/repo/file.txt')).stdout, 'v1\n');
    await run('try-1', 'rm -rf /workspace/repo && echo child > /workspace/child-only');
    assert.equal((await run('parent', 'cat /workspace/repo/file.txt')).stdout, 'v1\n', 'the parent still has its files');
    assert.equal((await run('parent', 'test -e /workspace/child-only; echo $?')).stdout, '1\n');
    assert.equal((await s.api.get('/v1/boxes/parent').set(s.auth).expect(200)).body.state, 'running');
  });

  it('forks a suspended parent, which stays suspended', async () => {
    await s.api.post('/v1/boxes/parent/suspend').set(s.auth).expect(200);
    const child = await s.api.post('/v1/boxes/parent/fork').set(s.auth).send({ name: 'try-2' }).expect(201);
    assert.equal(child.body.state, 'running');
    assert.equal((await run('try-2', 'cat /workspace/repo/file.txt')).stdout, 'v1\n');
    assert.equal((await s.api.get('/v1/boxes/parent').set(s.auth).expect(200)).body.state, 'suspended');
    await s.api.delete('/v1/boxes/try-1').set(s.auth).expect(204);
    await s.api.delete('/v1/boxes/try-2').set(s.auth).expect(204);
    const forks = await docker.listImages({ filters: { reference: [`boxd-fork/${s.config.BOXD_PREFIX}-*`] } });
    assert.equal(forks.length, 0, 'fork images go with their boxes');
  });

  it('snapshots a box, creates any number of boxes from it, lists and deletes it', async () => {
    await s.api.post('/v1/boxes/parent/snapshot').set(s.auth).send({ snapshot: 'before-step' }).expect(201);
    await s.api.post('/v1/boxes/parent/snapshot').set(s.auth).send({ snapshot: 'before-step' }).expect(409);
    await run('parent', 'echo v2 > /workspace/repo/file.txt');
    for (const name of ['s1', 's2']) {
      const b = await s.api.post('/v1/boxes').set(s.auth).send({ name, snapshot: 'before-step' }).expect(201);
      assert.equal(b.body.snapshot, 'before-step');
      assert.deepEqual(b.body.ports, [3000, 8080]);
      assert.equal((await run(name, 'cat /workspace/repo/file.txt')).stdout, 'v1\n');
    }
    const list = await s.api.get('/v1/snapshots').set(s.auth).expect(200);
    assert.deepEqual(list.body.snapshots.map((x: { name: string }) => x.name), ['before-step']);
    const other = await s.gateway.accounts.createKey('someone-else');
    await s.api.post('/v1/boxes').set('Authorization', `Bearer ${other}`).send({ snapshot: 'before-step' }).expect(404);
    await s.api.delete('/v1/snapshots/before-step').set(s.auth).expect(204);
    await s.api.post('/v1/boxes').set(s.auth).send({ snapshot: 'before-step' }).expect(404);
    const image = `boxd-snap/${s.config.BOXD_PREFIX}-default:before-step`;
    assert.ok(await docker.getImage(image).inspect(), 'still used by s1 and s2');
    await s.api.delete('/v1/boxes/s1').set(s.auth).expect(204);
    await s.api.delete('/v1/boxes/s2').set(s.auth).expect(204);
    await assert.rejects(docker.getImage(image).inspect(), 'removed with the last box using it');
  });
});
