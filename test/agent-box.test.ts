import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startStack, type Stack } from './helpers.ts';

const run = promisify(execFile);

async function freePort(): Promise<number> {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * An agent inside a box: `"agent": true` gives the box BOXD_URL (the host's one API door on the
 * box bridge), a box-scoped key and `boxd` on PATH; from inside, it forks its own box twice,
 * runs a command in each fork and deletes them.
 */
describe('agent inside the box', () => {
  let s: Stack;
  let port: number;
  let other: Server;
  let otherPort: number;
  before(async () => {
    port = await freePort();
    s = await startStack({ BOXD_PORT: String(port), BOXD_MAX_BOXES: '3' });
    // The host's door relays to 127.0.0.1:BOXD_PORT: serve the gateway there.
    await new Promise((r) => s.gateway.server.close(r));
    s.gateway.server.listen(port, '127.0.0.1');
    await once(s.gateway.server, 'listening');
    // A host service of our own on every address: boxes must not reach it.
    other = createServer((c) => c.end('secret\n')).listen(0, '0.0.0.0');
    await once(other, 'listening');
    otherPort = (other.address() as AddressInfo).port;
  });
  after(async () => {
    other?.close();
    await s?.close();
  });

  const exec = async (box: string, cmd: string[], timeoutMs = 120_000) =>
    (await s.api.post(`/v1/boxes/${box}/exec`).set(s.auth).send({ cmd, timeoutMs }).expect(200)).body as { exitCode: number; stdout: string; stderr: string };

  it('forks its own box twice from inside, runs a command in each fork and deletes them', async () => {
    const made = await s.api.post('/v1/boxes').set(s.auth).send({ name: 'agent-home', golden: 'default', agent: true }).expect(201);
    assert.equal(made.body.env, undefined, 'the key is not shown in box answers');
    const env = await exec('agent-home', ['sh', '-c', 'echo "$BOXD_URL|$BOXD_BOX|${#BOXD_API_KEY}"; command -v boxd']);
    const [url, self, keyLen] = env.stdout.split('\n')[0]!.split('|');
    assert.match(url!, new RegExp(`^http://\\d+\\.\\d+\\.\\d+\\.\\d+:${port}$`), 'BOXD_URL is the door on the box bridge');
    assert.equal(self, 'agent-home');
    assert.ok(Number(keyLen) > 20, 'a key is there');
    assert.match(env.stdout, /^\/usr\/local\/bin\/boxd$/m, 'boxd is on PATH');

    const script = [
      'set -e',
      'boxd fork "$BOXD_BOX" agent-f1 >/dev/null',
      'boxd fork "$BOXD_BOX" agent-f2 >/dev/null',
      'for f in agent-f1 agent-f2; do boxd exec $f -- sh -c \'echo "ran in $(hostname) as $BOXD_BOX"\'; done',
      'boxd --json list',
      'boxd rm agent-f1 agent-f2',
    ].join('\n');
    const r = await exec('agent-home', ['bash', '-c', script]);
    assert.equal(r.exitCode, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /ran in agent-f1 as agent-f1\nran in agent-f2 as agent-f2\n/, 'each fork ran the command, with its own BOXD_BOX');
    const listed = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('['))!) as { name: string }[];
    assert.deepEqual(listed.map((b) => b.name).sort(), ['agent-f1', 'agent-f2', 'agent-home'], 'the forks were there, in the same account');
    const left = (await s.api.get('/v1/boxes').set(s.auth).expect(200)).body.boxes.map((b: { name: string }) => b.name);
    assert.deepEqual(left, ['agent-home'], 'the forks are gone');
  });

  it('the scoped key: same account and limit, no keys or hooks, a fork gets its own, it dies with its box', async () => {
    const key = (await exec('agent-home', ['printenv', 'BOXD_API_KEY'])).stdout.trim();
    const as = { Authorization: `Bearer ${key}` };
    assert.equal((await s.api.get('/v1/boxes').set(as).expect(200)).body.boxes.length, 1);
    await s.api.get('/v1/hooks').set(as).expect(403);
    await s.api.post('/v1/hooks').set(as).send({ name: 'x', golden: 'tiny', steps: [{ cmd: 'true' }] }).expect(403);
    await s.api.get('/v1/accounts').set(as).expect(403);
    await s.api.post('/v1/accounts/default/keys').set(as).send({}).expect(403);

    // Counted against the account's limit of 3 live boxes.
    await s.api.post('/v1/boxes/agent-home/fork').set(as).send({ name: 'agent-k1' }).expect(201);
    await s.api.post('/v1/boxes').set(as).send({ name: 'agent-k2', golden: 'tiny' }).expect(201);
    const over = await s.api.post('/v1/boxes').set(as).send({ name: 'agent-k3', golden: 'tiny' }).expect(429);
    assert.equal(over.body.error.code, 'LIMIT_EXCEEDED');

    const childKey = (await exec('agent-k1', ['printenv', 'BOXD_API_KEY'])).stdout.trim();
    assert.notEqual(childKey, key, 'a fork of an agent box gets its own key');
    await s.api.delete('/v1/boxes/agent-k1').set(as).expect(204);
    await s.api.get('/v1/boxes').set({ Authorization: `Bearer ${childKey}` }).expect(401);
    await s.api.delete('/v1/boxes/agent-k2').set(as).expect(204);

    await s.api.delete('/v1/boxes/agent-home').set(s.auth).expect(204);
    const dead = await s.api.get('/v1/boxes').set(as).expect(401);
    assert.equal(dead.body.error.code, 'UNAUTHORIZED', 'the key died with its box');
  });

  it('opens only the API port to boxes: another host service stays unreachable', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'agent-net', golden: 'default', agent: true }).expect(201);
    const probe = (p: number) =>
      exec('agent-net', ['python3', '-c', `import os,socket,urllib.parse as u
h=u.urlparse(os.environ["BOXD_URL"]).hostname
try:
  socket.create_connection((h, ${p}), timeout=3).close(); print("open")
except OSError as e: print("closed", type(e).__name__)`]);
    assert.equal((await probe(port)).stdout.trim(), 'open', 'the API door answers');
    assert.match((await probe(otherPort)).stdout, /^closed/, 'a host service of the test is not reachable from the box');
    const rules = (await run('iptables', ['-w', '-S', 'INPUT'])).stdout;
    const ours = rules.split('\n').filter((l) => l.includes(`boxd-api ${s.config.BOXD_PREFIX}`));
    assert.equal(ours.length, 1, rules);
    assert.match(ours[0]!, new RegExp(`-p tcp -m tcp --dport ${port} .*-j ACCEPT`), 'one port, TCP only');
    await s.api.delete('/v1/boxes/agent-net').set(s.auth).expect(204);
  });
});
