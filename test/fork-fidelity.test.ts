import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { docker, startStack, waitFor, type Stack } from './helpers.ts';

const LISTING = readFileSync(new URL('./fixtures/tree-listing.py', import.meta.url), 'utf8');

/**
 * A mixed change: new, changed and deleted files, chmod, chown, a symlink, a hard link, an
 * xattr, a deleted folder, a folder deleted and made again with other content, a folder
 * replaced by a file.
 */
const CHANGE = `set -e
echo new > /workspace/new.txt
echo changed >> /etc/debian_version
rm /etc/issue
chmod 600 /etc/shells
chown 1234:2345 /etc/profile
ln -s /etc/os-release /workspace/link
ln /workspace/new.txt /workspace/hard
python3 -B -c "import os; os.setxattr('/workspace/new.txt', 'user.boxd', b'v1')" || echo no xattrs here
rm -rf /usr/share/man
rm -rf /usr/share/doc && mkdir -p /usr/share/doc/again && echo other > /usr/share/doc/again/f
rm -rf /usr/share/common-licenses && echo now-a-file > /usr/share/common-licenses
head -c 3M /dev/urandom > /workspace/big.bin && chown 1234:2345 /workspace/big.bin && chmod 640 /workspace/big.bin
python3 -B -c "import os; os.setxattr('/workspace/big.bin', 'user.big', b'1')" || echo no xattrs here
touch /usr/bin/python3.11
mkdir -p /opt/deep/er && printf '#!/bin/sh\\necho hi\\n' > /opt/deep/er/run && chmod 4755 /opt/deep/er/run
`;

describe('fork fidelity: the child’s filesystem is the parent’s, on both fork paths', () => {
  let s: Stack;
  const exec = async (box: string, cmd: string[], stdin?: string) => {
    const r = await s.api.post(`/v1/boxes/${box}/exec`).set(s.auth).send({ cmd, stdin }).expect(200);
    assert.equal(r.body.exitCode, 0, r.body.stderr);
    assert.equal(r.body.truncated, false);
    return r.body.stdout as string;
  };
  const listing = async (box: string) => (await exec(box, ['python3', '-B', '-'], LISTING)).split('\n');

  before(async () => {
    s = await startStack({ BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '300' });
  });
  after(async () => {
    await s?.close();
  });

  const compare = async (parent: string, child: string, opts: { userXattrs: boolean }) => {
    // docker commit keeps only security.capability of the xattrs (the engine's archive code):
    // the commit path is compared without user.* xattrs, the pool path with them.
    const strip = (l: string) => (opts.userXattrs ? l : l.replace(/(^| |,)user\.[^,]*/g, '$1'));
    const [p, c] = (await Promise.all([listing(parent), listing(child)])).map((x) => x.map(strip)) as [string[], string[]];
    assert.ok(p.length > 1000, `a whole Debian tree is listed (${p.length} entries)`);
    const onlyP = p.filter((l) => !c.includes(l));
    const onlyC = c.filter((l) => !p.includes(l));
    assert.deepEqual({ onlyParent: onlyP.slice(0, 20), onlyChild: onlyC.slice(0, 20) }, { onlyParent: [], onlyChild: [] });
    // The change is really in both (a listing that ignored it would compare equal too).
    assert.ok(c.some((l) => l.startsWith('/workspace/hard f 644 0 0 4 2 ')), 'hard link with 2 names');
    assert.ok(c.some((l) => l.startsWith('/etc/profile f ') && l.includes(' 1234 2345 ')), 'chown');
    assert.ok(c.some((l) => l.startsWith('/etc/shells f 600 ')), 'chmod');
    assert.ok(c.some((l) => l.startsWith('/workspace/link l ') && l.includes(' /etc/os-release ')), 'symlink');
    assert.ok(c.some((l) => l.startsWith('/usr/share/common-licenses f ')), 'folder replaced by a file');
    assert.ok(c.some((l) => l.startsWith('/opt/deep/er/run f 4755 ')), 'setuid mode');
    assert.ok(c.some((l) => l.startsWith('/workspace/big.bin f 640 1234 2345 3145728 1 ')), 'a big file keeps mode and owner');
    assert.ok(!c.some((l) => l.startsWith('/usr/share/man')), 'deleted folder');
    assert.ok(!c.some((l) => l.startsWith('/etc/issue ')), 'deleted file');
    assert.deepEqual(c.filter((l) => l.startsWith('/usr/share/doc/')).map((l) => l.split(' ')[0]), ['/usr/share/doc/again', '/usr/share/doc/again/f']);
  };

  it('pool path: a box from a golden with a warm pool forks onto a pooled box', async () => {
    await waitFor(async () => (await s.host.pool.ready('default')).length >= 1, 120_000, 200);
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'pp', golden: 'default', idleTimeoutMs: 0 }).expect(201);
    await exec('pp', ['bash', '-c', CHANGE]);
    await waitFor(async () => (await s.host.pool.ready('default')).length >= 1, 120_000, 200);
    const child = await s.api.post('/v1/boxes/pp/fork').set(s.auth).send({ name: 'pp-child' }).expect(201);
    assert.equal(child.body.origin, 'fork-pool');
    assert.equal(child.body.state, 'running');
    assert.equal(child.body.parent, 'pp');
    // A pool container (its slot label says so), renamed to the child once it runs.
    const childId = `${s.config.BOXD_PREFIX}-pp-child`;
    await waitFor(async () => (await s.gateway.store.require('pp-child')).runtimeId === childId, 10_000, 50);
    assert.match((await docker.getContainer(childId).inspect()).Config.Labels['boxd.slot'] ?? '', /^pool-default-/);
    assert.equal((await s.api.get('/v1/boxes/pp').set(s.auth).expect(200)).body.state, 'running', 'the parent was thawed');
    await compare('pp', 'pp-child', { userXattrs: true });
    // And the two are independent afterwards.
    await exec('pp-child', ['bash', '-c', 'echo child > /workspace/new.txt']);
    assert.equal(await exec('pp', ['cat', '/workspace/new.txt']), 'new\n');
  });

  it('commit path: a box with ports of its own (no pool box fits it) forks by commit', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'cp', golden: 'default', ports: [3000], idleTimeoutMs: 0 }).expect(201);
    await exec('cp', ['bash', '-c', CHANGE]);
    const child = await s.api.post('/v1/boxes/cp/fork').set(s.auth).send({ name: 'cp-child' }).expect(201);
    assert.equal(child.body.origin, 'fork-commit');
    await compare('cp', 'cp-child', { userXattrs: false });
  });

  it('a suspended parent forks from the pool and stays suspended', async () => {
    await s.api.post('/v1/boxes/pp/suspend').set(s.auth).expect(200);
    await waitFor(async () => (await s.host.pool.ready('default')).length >= 1, 120_000, 200);
    const child = await s.api.post('/v1/boxes/pp/fork').set(s.auth).send({ name: 'pp-child2' }).expect(201);
    assert.equal(child.body.origin, 'fork-pool');
    assert.equal((await s.api.get('/v1/boxes/pp').set(s.auth).expect(200)).body.state, 'suspended');
    assert.equal(await exec('pp-child2', ['cat', '/usr/share/doc/again/f']), 'other\n');
  });
});
