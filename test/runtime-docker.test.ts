import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { DockerRuntime } from '../host/docker-runtime.ts';
import { docker, goldenTag, log, purge } from './helpers.ts';
import { runtimeContract } from './runtime-contract.ts';

const runtime = new DockerRuntime(docker, { network: 'boxd', ociRuntime: 'runc', maxFileBytes: 8 << 20, log });

runtimeContract('DockerRuntime', async () => {
  await runtime.prepare();
  return {
    runtime,
    image: goldenTag('tiny'),
    cleanup: async () => {
      const mine = await docker.listContainers({ all: true, filters: { label: ['boxd.managed=true'] } });
      for (const c of mine) if (c.Labels['boxd.instance']?.startsWith('ct-')) await runtime.destroy(c.Id);
      const images = await docker.listImages({ filters: { reference: ['boxd-test/ct-*'] } });
      for (const i of images) await docker.getImage(i.Id).remove({ force: true }).catch(() => undefined);
    },
  };
});

describe('DockerRuntime on real Docker', () => {
  const name = `dr-${Math.random().toString(36).slice(2, 8)}`;
  after(() => purge(name));

  it('applies limits and hardening, publishes on 127.0.0.1 only, keeps stdout and stderr apart', async () => {
    await runtime.prepare();
    const box = await runtime.create({
      name,
      image: goldenTag('tiny'),
      ports: [8080, 9000],
      env: { A: '1' },
      labels: { 'boxd.managed': 'true', 'boxd.instance': name },
      cpus: 2,
      memoryMb: 8192,
      pidsLimit: 512,
    });
    const info = await docker.getContainer(box.id).inspect();
    assert.equal(info.HostConfig.NanoCpus, 2e9);
    assert.equal(info.HostConfig.Memory, 8192 * 1024 * 1024);
    assert.equal(info.HostConfig.PidsLimit, 512);
    assert.deepEqual(info.HostConfig.SecurityOpt, ['no-new-privileges']);
    assert.equal(info.HostConfig.NetworkMode, 'boxd');
    for (const binds of Object.values(info.NetworkSettings.Ports)) for (const b of binds ?? []) assert.equal(b.HostIp, '127.0.0.1');
    const net = await docker.getNetwork('boxd').inspect();
    assert.equal(net.Options?.['com.docker.network.bridge.enable_icc'], 'false');
    const r = await runtime.exec(box.id, { cmd: ['sh', '-c', 'echo out; echo err >&2; echo $A; exit 4'], env: { B: '2' } });
    assert.equal(r.stdout.toString(), 'out\n1\n');
    assert.equal(r.stderr.toString(), 'err\n');
    assert.equal(r.exitCode, 4);
    const cwd = await runtime.exec(box.id, { cmd: ['pwd'], cwd: '/tmp' });
    assert.equal(cwd.stdout.toString(), '/tmp\n');
    await runtime.destroy(box.id);
  });
});
