import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

  it('pins a box on the bridge: neighbour entries both ways and a static forwarding entry, the host one gone with the box', async () => {
    await runtime.prepare();
    const pinned = `${name}-pin`;
    const box = await runtime.create({
      name: pinned,
      image: goldenTag('tiny'),
      ports: [8080],
      env: {},
      labels: { 'boxd.managed': 'true', 'boxd.instance': name },
      cpus: 1,
      memoryMb: 256,
      pidsLimit: 64,
    });
    const info = await docker.getContainer(box.id).inspect();
    const { IPAddress: ip, MacAddress: mac } = info.NetworkSettings.Networks['boxd']!;
    const bridge = 'boxd0';
    const neigh = (args: string[]) => JSON.parse(execFileSync('ip', ['-j', ...args], { encoding: 'utf8' }) || '[]') as { dst: string; lladdr?: string; state?: string[] }[];
    // On the host: the box's address answers from a permanent entry (never an ARP broadcast).
    const host = neigh(['neigh', 'show', 'dev', bridge]).find((n) => n.dst === ip);
    assert.equal(host?.lladdr, mac);
    assert.deepEqual(host?.state, ['PERMANENT']);
    // On the bridge: the box's MAC is static on its own port (never flooded to every port).
    const peer = parseInt(readFileSync(`/proc/${info.State.Pid}/root/sys/class/net/eth0/iflink`, 'utf8'), 10);
    const fdb = JSON.parse(execFileSync('bridge', ['-j', 'fdb', 'show', 'br', bridge], { encoding: 'utf8' })) as { mac: string; ifname: string; state?: string }[];
    const entry = fdb.find((f) => f.mac === mac);
    assert.ok(entry, `no forwarding entry for ${mac}`);
    assert.equal(entry.state, 'static');
    assert.equal(parseInt(readFileSync(`/sys/class/net/${entry.ifname}/ifindex`, 'utf8'), 10), peer);
    // In the box: its gateway is permanent too, with the bridge's MAC.
    const gw = (await docker.getNetwork('boxd').inspect()).IPAM?.Config?.[0]?.Gateway as string;
    const inBox = execFileSync('nsenter', ['-t', String(info.State.Pid), '-n', 'ip', '-j', 'neigh', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
    const g = (JSON.parse(inBox) as { dst: string; lladdr?: string; state?: string[] }[]).find((n) => n.dst === gw);
    assert.equal(g?.lladdr, readFileSync(`/sys/class/net/${bridge}/address`, 'utf8').trim());
    assert.deepEqual(g?.state, ['PERMANENT']);
    // And the box is still reached through them: its published port answers.
    await runtime.exec(box.id, { cmd: ['sh', '-c', 'echo pinned > /tmp/index.html; httpd -p 8080 -h /tmp'] });
    let body = '';
    for (let i = 0; i < 50 && body !== 'pinned\n'; i++) {
      body = await fetch(`http://127.0.0.1:${box.ports[8080]}/`).then((r) => r.text()).catch(() => '');
      if (body !== 'pinned\n') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(body, 'pinned\n');
    await runtime.destroy(box.id);
    assert.equal(neigh(['neigh', 'show', 'dev', bridge]).find((n) => n.dst === ip && n.state?.includes('PERMANENT')), undefined);
  });
});
