import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../core/config.ts';
import { DockerRuntime } from '../host/docker-runtime.ts';
import { docker, goldenTag, log, startStack, waitFor, type Stack } from './helpers.ts';

const QUOTA_MB = 64;

/** Loop devices backed by `file` (empty when none). */
const loopsOf = (file: string): string[] =>
  execFileSync('losetup', ['-j', file], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(':')[0]!.trim())
    .filter(Boolean);

describe('box limits: disk quota, pids limit, exec timeouts (real Docker)', () => {
  let s: Stack;
  const exec = async (name: string, cmd: string[], timeoutMs?: number) =>
    (await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd, ...(timeoutMs ? { timeoutMs } : {}) }).expect(200)).body as {
      exitCode: number;
      stdout: string;
      stderr: string;
      timedOut: boolean;
    };
  const create = async (body: object) => (await s.api.post('/v1/boxes').set(s.auth).send({ golden: 'tiny', ...body }).expect(201)).body;
  const imageOf = (box: string) => join(resolve(s.config.BOXD_STATE_DIR), 'disks', s.config.BOXD_PREFIX, `${s.config.BOXD_PREFIX}-${box}.ext4`);
  const containerOf = async (box: string) => {
    const [c] = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${s.config.BOXD_PREFIX}`, `boxd.box=${box}`] } });
    assert.ok(c, `container of ${box}`);
    return docker.getContainer(c.Id);
  };

  before(async () => {
    // Host maximum 256 MiB; the quota box asks for less. A small pids limit keeps the bomb short.
    s = await startStack({ BOXD_BOX_DISK_MB: '256', BOXD_BOX_PIDS: '128', BOXD_MAX_BOXES: '20' });
  });
  after(async () => {
    await s?.close();
  });

  it('defaults: 100 GiB disk and 1024 processes per box', () => {
    const c = loadConfig({});
    assert.equal(c.BOXD_BOX_DISK_MB, 100 * 1024);
    assert.equal(c.BOXD_BOX_PIDS, 1024);
  });

  it('a box writing past its quota gets ENOSPC, df shows the quota, other boxes are untouched', async () => {
    const box = await create({ name: 'quota', diskMb: QUOTA_MB });
    assert.equal(box.diskMb, QUOTA_MB);
    await create({ name: 'roomy' }); // host default: 256 MiB

    const df = await exec('quota', ['sh', '-c', "df -m / | tail -1 | awk '{print $2}'"]);
    const sizeMb = Number(df.stdout.trim());
    assert.ok(sizeMb > QUOTA_MB * 0.75 && sizeMb <= QUOTA_MB, `df / shows about ${QUOTA_MB} MiB, got ${df.stdout}`);

    const dd = await exec('quota', ['sh', '-c', 'dd if=/dev/zero of=/fill bs=1M count=100']);
    assert.notEqual(dd.exitCode, 0, 'writing 100 MiB into 64 MiB fails');
    assert.match(dd.stderr, /No space left/);
    const fa = await exec('quota', ['fallocate', '-l', '80M', '/root/more']);
    assert.notEqual(fa.exitCode, 0);
    assert.match(fa.stderr, /No space left/);
    // What landed on the host is bounded by the quota (the image is a sparse file).
    const image = imageOf('quota');
    assert.ok(statSync(image).blocks * 512 <= (QUOTA_MB + 1) * 1024 * 1024, 'the image holds at most the quota');

    // Space comes back when files go.
    const again = await exec('quota', ['sh', '-c', 'rm -f /fill && dd if=/dev/zero of=/fill bs=1M count=20 2>&1 && sync']);
    assert.equal(again.exitCode, 0, again.stdout);

    // Another box is not affected: it writes more than the first box's quota.
    const other = await exec('roomy', ['sh', '-c', 'dd if=/dev/zero of=/big bs=1M count=100 2>&1 && df -m / | tail -1']);
    assert.equal(other.exitCode, 0, other.stdout);
  });

  it('fork and snapshot work on a box with a quota; the child has the same quota', async () => {
    assert.equal((await exec('quota', ['sh', '-c', 'echo kept > /root/kept.txt'])).exitCode, 0);
    const child = (await s.api.post('/v1/boxes/quota/fork').set(s.auth).send({ name: 'quota-child' }).expect(201)).body;
    assert.equal(child.diskMb, QUOTA_MB);
    assert.equal((await exec('quota-child', ['cat', '/root/kept.txt'])).stdout, 'kept\n');
    const dd = await exec('quota-child', ['sh', '-c', 'dd if=/dev/zero of=/root/fill bs=1M count=100']);
    assert.match(dd.stderr, /No space left/, 'the child is limited too');
    assert.equal((await exec('quota', ['cat', '/root/kept.txt'])).stdout, 'kept\n', 'the parent is untouched');

    await s.api.post('/v1/boxes/quota/snapshot').set(s.auth).send({ snapshot: 'q-snap' }).expect(201);
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'from-snap', snapshot: 'q-snap', diskMb: QUOTA_MB }).expect(201);
    assert.equal((await exec('from-snap', ['cat', '/root/kept.txt'])).stdout, 'kept\n');
  });

  it('destroy frees the loop device and deletes the image', async () => {
    const image = imageOf('quota-child');
    assert.ok(existsSync(image), 'the image exists while the box lives');
    const loops = loopsOf(image);
    assert.equal(loops.length, 1, 'one loop device');
    await s.api.delete('/v1/boxes/quota-child').set(s.auth).expect(204);
    assert.equal(existsSync(image), false, 'image deleted');
    const backing = execFileSync('losetup', ['-l', '-n', '-O', 'BACK-FILE'], { encoding: 'utf8' });
    assert.ok(!backing.includes(image), 'no loop device left on the image');
  });

  it('rejects a quota above the host maximum or of the wrong type', async () => {
    const big = await s.api.post('/v1/boxes').set(s.auth).send({ golden: 'tiny', diskMb: 1024 }).expect(400);
    assert.equal(big.body.error.code, 'INVALID_REQUEST');
    assert.match(big.body.error.message, /maximum of 256/);
    await s.api.post('/v1/boxes').set(s.auth).send({ golden: 'tiny', diskMb: '64' }).expect(400);
    await s.api.post('/v1/boxes').set(s.auth).send({ golden: 'tiny', diskMb: 1 }).expect(400);
  });

  it('a fork bomb stops at the pids limit; the host keeps answering and the box can be deleted', async () => {
    await create({ name: 'bomb' });
    await create({ name: 'calm' });
    const container = await containerOf('bomb');
    const id = (await container.inspect()).Id;
    // cgroup v1 (cgroupfs driver, this machine) or v2 (cgroupfs or systemd driver).
    const cgroup = [`/sys/fs/cgroup/pids/docker/${id}`, `/sys/fs/cgroup/docker/${id}`, `/sys/fs/cgroup/system.slice/docker-${id}.scope`].find((d) =>
      existsSync(join(d, 'pids.max')),
    );
    assert.ok(cgroup, 'the box has a pids cgroup');
    assert.equal(readFileSync(join(cgroup, 'pids.max'), 'utf8').trim(), '128');

    // Bounded: 400 background sleeps, far past the limit; forks beyond it fail.
    const bomb = await exec('bomb', ['sh', '-c', 'i=0; while [ $i -lt 400 ]; do sleep 120 >/dev/null 2>&1 & i=$((i+1)); done; echo done'], 60_000);
    assert.match(bomb.stderr + bomb.stdout, /fork|Resource temporarily unavailable|done/);
    const current = Number(readFileSync(join(cgroup, 'pids.current'), 'utf8'));
    assert.ok(current <= 128, `at most 128 processes, got ${current}`);
    const events = readFileSync(join(cgroup, 'pids.events'), 'utf8');
    assert.ok(Number(/max (\d+)/.exec(events)?.[1] ?? 0) > 0, `forks were refused at the limit: ${events}`);

    const started = Date.now();
    assert.equal((await exec('calm', ['echo', 'still here'])).stdout, 'still here\n');
    assert.ok(Date.now() - started < 15_000, 'another box answers while the bomb holds its limit');
    await s.api.delete('/v1/boxes/bomb').set(s.auth).expect(204);
    await assert.rejects(container.inspect(), 'the bomb box is gone');
  });

  it('a stopped box restarts on its disk, also after the disk was unmounted (a reboot)', async () => {
    const runtime = new DockerRuntime(docker, { network: s.config.BOXD_NETWORK, ociRuntime: 'runc', maxFileBytes: 1 << 20, log });
    const name = `${s.config.BOXD_PREFIX}-restart`;
    const spec = {
      name,
      image: goldenTag('tiny'),
      ports: [],
      env: {},
      labels: { 'boxd.managed': 'true', 'boxd.instance': s.config.BOXD_PREFIX },
      cpus: 1,
      memoryMb: 256,
      pidsLimit: 64,
      diskMb: QUOTA_MB,
    };
    await runtime.create(spec);
    const run = async (cmd: string) => (await runtime.exec(name, { cmd: ['sh', '-c', cmd] })).stdout.toString();
    await run('echo survived > /root/state');
    const layer = dirname(((await docker.getContainer(name).inspect()).GraphDriver.Data as unknown as { UpperDir: string }).UpperDir);
    await docker.getContainer(name).stop({ t: 1 });
    // What reconcile does with a stopped box: create again (idempotent), which starts it.
    await runtime.create(spec);
    assert.equal(await run('cat /root/state'), 'survived\n');
    // A reboot loses the loop mount; the image is mounted again, not reformatted.
    await docker.getContainer(name).stop({ t: 1 });
    execFileSync('umount', [layer]);
    await runtime.create(spec);
    assert.equal(await run('cat /root/state'), 'survived\n');
    assert.match(await run('dd if=/dev/zero of=/fill bs=1M count=100 2>&1'), /No space left/);
    await runtime.destroy(name);
    assert.equal(existsSync(imageOf('restart')), false);
  });

  it('a starting host releases disk images of its prefix whose box is gone, and only those', async () => {
    const dir = dirname(imageOf('x'));
    const otherDir = join(dirname(dir), `${s.config.BOXD_PREFIX}x`);
    mkdirSync(dir, { recursive: true });
    mkdirSync(otherDir, { recursive: true });
    writeFileSync(join(dir, `${s.config.BOXD_PREFIX}-ghost.ext4`), '');
    writeFileSync(join(otherDir, `${s.config.BOXD_PREFIX}x-ghost.ext4`), '');
    try {
      const runtime = new DockerRuntime(docker, { network: s.config.BOXD_NETWORK, ociRuntime: 'runc', maxFileBytes: 1 << 20, prefix: s.config.BOXD_PREFIX, log });
      await runtime.prepare();
      assert.equal(existsSync(join(dir, `${s.config.BOXD_PREFIX}-ghost.ext4`)), false, 'the stale image is gone');
      assert.ok(existsSync(imageOf('calm')), 'a live box keeps its image');
      assert.ok(existsSync(join(otherDir, `${s.config.BOXD_PREFIX}x-ghost.ext4`)), 'another prefix is left alone');
    } finally {
      rmSync(otherDir, { recursive: true, force: true });
    }
  });

  it('an exec timeout kills the whole process tree', async () => {
    const out = await exec('calm', ['sh', '-c', 'sleep 1000 & sleep 1000'], 1500);
    assert.equal(out.timedOut, true);
    const left = await waitFor(async () => {
      const ps = await exec('calm', ['ps', '-o', 'args']);
      return ps.stdout.includes('sleep 1000') ? undefined : ps.stdout;
    }, 10_000);
    assert.doesNotMatch(left, /sleep 1000/);
  });
});
