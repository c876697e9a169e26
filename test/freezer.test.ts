import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { BoxdError } from '../core/errors.ts';
import { DockerRuntime } from '../host/docker-runtime.ts';
import { docker, goldenTag, log, purge, sleep, waitFor } from './helpers.ts';

/** Suspend/resume through the cgroup freezer on real Docker (skipped where it is not writable). */
describe('cgroup freezer suspend/resume', () => {
  const prefix = `fz-${Math.random().toString(36).slice(2, 8)}`;
  const runtime = new DockerRuntime(docker, { network: 'boxd', ociRuntime: 'runc', maxFileBytes: 8 << 20, log });
  const spec = (name: string) => ({
    name: `${prefix}-${name}`,
    image: goldenTag('tiny'),
    ports: [],
    env: {},
    labels: { 'boxd.managed': 'true', 'boxd.instance': prefix },
    cpus: 1,
    memoryMb: 256,
    pidsLimit: 256,
  });
  const counter = async (id: string): Promise<number> => {
    const root = await runtime.procs.root(id);
    return Number(readFileSync(`${root}/tmp/count`, 'utf8').trim() || '0');
  };

  before(async () => {
    await runtime.prepare();
  });
  after(async () => {
    // Never leave a frozen cgroup behind (destroy thaws first).
    const mine = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${prefix}`] } });
    for (const c of mine) await runtime.destroy(c.Names[0]!.slice(1)).catch(() => undefined);
    await purge(prefix);
  });

  it('freezes processes without Docker seeing a pause, and thaws them', { skip: !runtime.freezer && 'freezer not writable here' }, async () => {
    assert.match(runtime.suspendMechanism, /^freezer-v[12]$/);
    const box = await runtime.create(spec('count'));
    // A background counter: the exec answers at once although the loop keeps running.
    const started = Date.now();
    const bg = await runtime.exec(box.id, { cmd: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.02; done &'] });
    assert.equal(bg.exitCode, 0);
    assert.ok(Date.now() - started < 1500, 'a background child does not hold the answer');
    await waitFor(async () => (await counter(box.id).catch(() => 0)) > 3);

    await runtime.suspend(box.id);
    const info = await docker.getContainer(box.id).inspect();
    assert.equal(info.State.Paused, false, 'Docker does not see a pause');
    assert.equal(info.State.Running, true);
    assert.equal((await runtime.inspect(box.id))?.state, 'paused', 'boxd sees the box frozen');
    const frozenAt = await counter(box.id);
    await sleep(400);
    assert.equal(await counter(box.id), frozenAt, 'the counter does not advance while frozen');
    // An exec never starts in a frozen box (it would wedge the engine): refused with BOX_STATE.
    await assert.rejects(runtime.exec(box.id, { cmd: ['true'] }), (e) => e instanceof BoxdError && e.code === 'BOX_STATE');
    await runtime.suspend(box.id); // idempotent

    await runtime.resume(box.id);
    await runtime.resume(box.id); // idempotent
    assert.equal((await runtime.inspect(box.id))?.state, 'running');
    await waitFor(async () => (await counter(box.id)) > frozenAt + 3);
    assert.equal((await runtime.exec(box.id, { cmd: ['echo', 'ok'] })).stdout.toString(), 'ok\n');
  });

  it('never freezes a starting exec: suspends racing exec starts leave the engine usable', { skip: !runtime.freezer && 'freezer not writable here' }, async () => {
    const box = await runtime.create(spec('race'));
    for (let round = 0; round < 6; round++) {
      const execs = Array.from({ length: 4 }, () => runtime.exec(box.id, { cmd: ['true'] }).then((r) => r.exitCode, (e: BoxdError) => e.code));
      await sleep(round * 3);
      const suspended = await runtime.suspend(box.id).then(() => true, (e: BoxdError) => (e.code === 'BOX_BUSY' ? false : Promise.reject(e)));
      if (suspended) await runtime.resume(box.id);
      for (const r of await Promise.all(execs)) assert.ok(r === 0 || r === 'BOX_STATE', `exec ended with ${r}`);
    }
    // The engine still answers for this container: inspect, exec and a forced removal.
    assert.equal((await runtime.exec(box.id, { cmd: ['echo', 'alive'] })).stdout.toString(), 'alive\n');
    await runtime.suspend(box.id);
    await runtime.destroy(box.id); // thaws first, then removes
    assert.equal(await runtime.inspect(box.id), undefined);
  });
});
