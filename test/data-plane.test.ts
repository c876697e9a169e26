import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { DockerRuntime } from '../host/docker-runtime.ts';
import { startHost } from '../host/host.ts';
import { docker, log, startStack, waitFor, type Stack, readText } from './helpers.ts';
import { ExecSlots } from '../core/exec-slots.ts';
import { Keys } from '../core/keys.ts';

/** Exec, files and suspend/resume going gateway → host agent, on real Redis and Docker. */
describe('direct host data plane', () => {
  let s: Stack;
  let port: number;
  const procs = () => (s.host.runtime as DockerRuntime).procs;

  /** A raw request to the gateway (supertest cannot abort mid-stream). */
  const call = (method: string, path: string, opts: { body?: string; headers?: Record<string, string> } = {}) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...s.auth, 'Content-Type': 'application/json', ...opts.headers } });
    const res = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', (r) => {
        r.on('error', () => undefined); // a destroyed request also ends its response
        resolve(r);
      });
      req.on('error', reject);
    });
    res.catch(() => undefined);
    return { req, res };
  };
  const exec = (box: string, body: object) => s.api.post(`/v1/boxes/${box}/exec`).set(s.auth).send(body);
  /** Processes of a box whose command line is exactly `needle`, seen from the host. */
  const running = async (box: string, needle: string): Promise<number> => {
    const id = (await s.gateway.store.require(box)).runtimeId!;
    let n = 0;
    for (const pid of await procs().pids(id)) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim() === needle) n++;
      } catch {
        /* exited */
      }
    }
    return n;
  };

  before(async () => {
    s = await startStack({ BOXD_MAX_EXECS: '20', BOXD_IDLE_TIMEOUT_MS: '0' });
    port = (s.gateway.server.address() as AddressInfo).port;
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'dp', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'dp2', golden: 'tiny' }).expect(201);
  });
  after(async () => {
    await s?.close();
  });

  it('host agent refuses requests without the cluster secret', async () => {
    const agentPort = s.host.agent.port;
    for (const auth of [undefined, 'Bearer wrong-secret-0123456789', `Bearer ${s.config.BOXD_API_KEY}`]) {
      const r = await fetch(`http://127.0.0.1:${agentPort}/v1/boxes/dp/exec`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(auth ? { Authorization: auth } : {}) },
        body: JSON.stringify({ execId: 'abcdefgh1', cmd: ['true'], timeoutMs: 1000 }),
      });
      assert.equal(r.status, 401);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'UNAUTHORIZED');
    }
    const ok = await fetch(`http://127.0.0.1:${agentPort}/healthz`, { headers: { Authorization: `Bearer ${s.config.BOXD_CLUSTER_SECRET}` } });
    assert.equal(ok.status, 200);
    const hosts = await s.gateway.redis.hget(new Keys(s.config.BOXD_PREFIX).hosts, s.config.BOXD_HOST_ID);
    assert.equal(JSON.parse(hosts!).agentPort, agentPort, 'the agent is advertised with the heartbeat');
    assert.equal(JSON.parse(hosts!).addr, '127.0.0.1');
  });

  it('a box cannot connect to the host agent', async () => {
    const net = await import('./helpers.ts').then((h) => h.docker.getNetwork(s.config.BOXD_NETWORK).inspect());
    const gw = net.IPAM?.Config?.[0]?.Gateway;
    assert.ok(gw, 'the bridge has a gateway address');
    const r = await exec('dp', { cmd: ['sh', '-c', `nc -w 2 ${gw} ${s.host.agent.port} </dev/null && echo connected || echo refused`] }).expect(200);
    assert.equal(r.body.stdout.trim(), 'refused');
  });

  it('runs commands as JSON, as an NDJSON stream, with stdin; a missing binary is 127', async () => {
    const r = await exec('dp', { cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'] }).expect(200);
    assert.deepEqual([r.body.stdout, r.body.stderr, r.body.exitCode], ['out\n', 'err\n', 3]);
    const cat = await exec('dp', { cmd: ['cat'], stdin: 'typed ✓' }).expect(200);
    assert.equal(cat.body.stdout, 'typed ✓');
    const missing = await exec('dp', { cmd: ['no-such-binary-x'] }).expect(200);
    assert.equal(missing.body.exitCode, 127);
    assert.match(missing.body.stderr, /no-such-binary-x/);
    const { req, res } = call('POST', '/v1/boxes/dp/exec', { headers: { Accept: 'application/x-ndjson' } });
    req.end(JSON.stringify({ cmd: ['sh', '-c', 'for i in 1 2 3; do echo line$i; done; echo bad >&2; exit 2'] }));
    const lines = (await readText(await res)).trim().split('\n').map((l) => JSON.parse(l));
    const out = lines.filter((l) => l.stream === 'stdout').map((l) => l.data).join('');
    assert.equal(out, 'line1\nline2\nline3\n');
    assert.equal(lines.filter((l) => l.stream === 'stderr').map((l) => l.data).join(''), 'bad\n');
    assert.equal(lines.at(-1).exitCode, 2);
  });

  it('answers when the command exits, even if a background child keeps stdout open', async () => {
    const r = await exec('dp', { cmd: ['sh', '-c', 'echo first; (sleep 4; echo late) & exit 0'] }).expect(200);
    assert.equal(r.body.exitCode, 0);
    assert.equal(r.body.stdout, 'first\n', 'answered before the child printed (the engine alone would wait)');
  });

  it('exec output never passes through Redis', async () => {
    const before = await s.gateway.redis.dbsize();
    const r = await exec('dp', { cmd: ['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x'] }).expect(200);
    assert.equal(r.body.stdout.length, 3_000_000);
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await s.gateway.redis.scan(cursor, 'MATCH', `${new Keys(s.config.BOXD_PREFIX).root}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    for (const k of keys) {
      const type = await s.gateway.redis.type(k);
      if (type === 'string') assert.ok((await s.gateway.redis.strlen(k)) < 100_000, `${k} holds no output`);
    }
    assert.ok((await s.gateway.redis.dbsize()) - before < 50);
  });

  it('kills the command tree when a streaming client disconnects, unless detached', async () => {
    const { req, res } = call('POST', '/v1/boxes/dp/exec', { headers: { Accept: 'application/x-ndjson' } });
    req.end(JSON.stringify({ cmd: ['sh', '-c', 'sleep 311 & sleep 312 & echo started; wait'] }));
    const r = await res;
    await new Promise<void>((resolve) => r.once('data', () => resolve()));
    await waitFor(async () => (await running('dp', 'sleep 311')) + (await running('dp', 'sleep 312')) === 2);
    req.destroy();
    await waitFor(async () => (await running('dp', 'sleep 311')) + (await running('dp', 'sleep 312')) === 0, 20_000);

    const d = call('POST', '/v1/boxes/dp/exec', { headers: { Accept: 'application/x-ndjson' } });
    d.req.end(JSON.stringify({ cmd: ['sh', '-c', 'echo started; sleep 321'], detach: true }));
    const dr = await d.res;
    await new Promise<void>((resolve) => dr.once('data', () => resolve()));
    d.req.destroy();
    await waitFor(async () => (await running('dp', 'sleep 321')) === 1);
    // Still there a while later: detached commands outlive their client.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await running('dp', 'sleep 321'), 1);
  });

  it('a timeout kills the whole command tree', async () => {
    const r = await exec('dp', { cmd: ['sh', '-c', 'sleep 331 & sleep 332 & wait'], timeoutMs: 800 }).expect(200);
    assert.equal(r.body.timedOut, true);
    await waitFor(async () => (await running('dp', 'sleep 331')) + (await running('dp', 'sleep 332')) === 0, 20_000);
  });

  it('finds a restarted host at its new agent port', async () => {
    await s.host.close();
    s.host = await startHost(s.config, log);
    const r = await exec('dp', { cmd: ['echo', 'still here'] }).expect(200);
    assert.equal(r.body.stdout, 'still here\n');
  });

  it('caps concurrent execs per account with 429', async () => {
    const held = Array.from({ length: 20 }, () => {
      const c = call('POST', '/v1/boxes/dp2/exec');
      c.req.end(JSON.stringify({ cmd: ['sleep', '3600'] }));
      c.res.catch(() => undefined);
      return c;
    });
    try {
      await waitFor(async () => (await running('dp2', 'sleep 3600')) === 20, 60_000);
      const over = await exec('dp2', { cmd: ['true'] }).expect(429);
      assert.equal(over.body.error.code, 'LIMIT_EXCEEDED');
    } finally {
      for (const c of held) c.req.destroy();
    }
    await waitFor(async () => (await running('dp2', 'sleep 3600')) === 0, 30_000);
    await waitFor(async () => (await exec('dp2', { cmd: ['true'] })).status === 200);
  });

  it('a host creates, suspends, resumes and runs short commands while 64 `sleep 3600` run; DELETE kills them all', { timeout: 240_000 }, async () => {
    // An account whose own cap (65) lets 64 commands run on this one host, plus the short one.
    const acct = await s.api.post('/v1/accounts').set(s.auth).send({ name: 'wide', maxExecs: 65 }).expect(201);
    const key = (await s.api.post(`/v1/accounts/${acct.body.id}/keys`).set(s.auth).send({}).expect(201)).body.key as string;
    const auth = { Authorization: `Bearer ${key}` };
    const boxes = ['w1', 'w2'];
    for (const name of boxes) await s.api.post('/v1/boxes').set(auth).send({ name, golden: 'tiny' }).expect(201);
    const fds = () => readdirSync('/proc/self/fd').length;
    const fds0 = fds();
    const held = Array.from({ length: 64 }, (_, i) => {
      const c = call('POST', `/v1/boxes/${boxes[i % 2]}/exec`, { headers: auth });
      c.req.end(JSON.stringify({ cmd: ['sleep', '3600'] }));
      return c.res.then(async (r) => ({ status: r.statusCode, body: await readText(r) }), (e: Error) => ({ status: 0, body: e.message }));
    });
    const sleeps = async () => (await running('w1', 'sleep 3600')) + (await running('w2', 'sleep 3600'));
    await waitFor(async () => (await sleeps()) === 64, 120_000, 250);
    assert.ok(fds() - fds0 >= 128, `the 64 commands hold connections (${fds() - fds0} more fds)`);
    const pids = new Set<number>();
    for (const name of boxes) for (const pid of await procs().pids((await s.gateway.store.require(name)).runtimeId!)) pids.add(pid);

    // Each answer must come while all 64 run: a host that queued lifecycle behind execs would
    // not answer for an hour. Generous bounds, a loaded CI machine is slow.
    const answered = <T>(what: string, p: PromiseLike<T>, ms = 60_000) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms while 64 commands ran`)), ms)));
      return Promise.race([Promise.resolve(p), late]).finally(() => clearTimeout(timer));
    };
    const made = await answered('create', s.api.post('/v1/boxes').set(auth).send({ name: 'w3', golden: 'tiny' }));
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const susp = await answered('suspend', s.api.post('/v1/boxes/w3/suspend').set(auth));
    assert.equal(susp.body.state, 'suspended', JSON.stringify(susp.body));
    const res = await answered('resume', s.api.post('/v1/boxes/w3/resume').set(auth));
    assert.equal(res.body.state, 'running', JSON.stringify(res.body));
    for (const box of ['w1', 'w3']) {
      const short = await answered(`exec in ${box}`, s.api.post(`/v1/boxes/${box}/exec`).set(auth).send({ cmd: ['echo', 'answered'] }));
      assert.equal(short.status, 200, JSON.stringify(short.body));
      assert.equal(short.body.stdout, 'answered\n');
    }
    assert.equal(await sleeps(), 64, 'the long commands run on, untouched');

    for (const name of [...boxes, 'w3']) await answered(`delete ${name}`, s.api.delete(`/v1/boxes/${name}`).set(auth).expect(204));
    // Every held request is answered (the box went), no sleep is left, nothing leaks.
    const ends = await answered('the held execs', Promise.all(held));
    for (const e of ends) assert.equal(e.status, 404, e.body);
    const left = [...pids].filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim() === 'sleep 3600';
      } catch {
        return false;
      }
    });
    assert.deepEqual(left, [], 'no `sleep 3600` left of the boxes');
    for (const name of boxes) assert.equal(await s.gateway.store.get(name), undefined);
    const containers = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${s.config.BOXD_PREFIX}`] } });
    assert.deepEqual(containers.map((c) => c.Names[0]).filter((n) => /-w[123]$/.test(n ?? '')), [], 'the containers are gone');
    assert.equal(await new ExecSlots(s.gateway.redis, s.config.BOXD_PREFIX).running(acct.body.id), 0, 'every exec slot is released');
    // Sockets of the 64 chains (client, gateway, agent, engine) close; kept-alive idle ones (at
    // most 32 gateway → agent, both ends here) may stay.
    await waitFor(async () => fds() - fds0 <= 72, 30_000, 250).catch(() => assert.fail(`${fds() - fds0} more fds than before the commands: sockets leak`));
  });

  it('DELETE during an exec kills it and answers promptly', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'doomed', golden: 'tiny' }).expect(201);
    const pending = exec('doomed', { cmd: ['sleep', '600'] }).then((r) => r);
    await waitFor(async () => (await running('doomed', 'sleep 600')) === 1);
    const t0 = Date.now();
    await s.api.delete('/v1/boxes/doomed').set(s.auth).expect(204);
    assert.ok(Date.now() - t0 < 30_000);
    const r = await pending;
    assert.equal(r.status, 404);
    assert.match(r.body.error.message, /destroyed while the command ran/);
  });

  it('exec on a suspended box resumes it first', async () => {
    await s.api.post('/v1/boxes/dp/suspend').set(s.auth).expect(200);
    const r = await exec('dp', { cmd: ['echo', 'awake'] }).expect(200);
    assert.equal(r.body.stdout, 'awake\n');
    assert.equal((await s.api.get('/v1/boxes/dp').set(s.auth).expect(200)).body.state, 'running');
  });

  it('streams a 300 MiB file in and out with its checksum', { timeout: 240_000 }, async () => {
    const size = 300 * 1024 * 1024;
    const block = randomBytes(1 << 20);
    const sent = createHash('sha256');
    const up = call('PUT', '/v1/boxes/dp/files?path=/root/big/blob.bin', { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) } });
    for (let i = 0; i < size / block.length; i++) {
      block[0] = i & 0xff;
      sent.update(block);
      if (!up.req.write(block)) await new Promise((r) => up.req.once('drain', r));
    }
    up.req.end();
    const upRes = await up.res;
    assert.equal(upRes.statusCode, 204, await readText(upRes));
    const down = call('GET', '/v1/boxes/dp/files?path=/root/big/blob.bin');
    down.req.end();
    const res = await down.res;
    assert.equal(res.statusCode, 200);
    assert.equal(Number(res.headers['content-length']), size);
    const got = createHash('sha256');
    let n = 0;
    for await (const c of res) {
      got.update(c as Buffer);
      n += (c as Buffer).length;
    }
    assert.equal(n, size);
    assert.equal(got.digest('hex'), sent.digest('hex'));
    await exec('dp', { cmd: ['rm', '-rf', '/root/big'] }).expect(200);
  });

  it('an aborted upload leaves no partial file; a chunked upload works', async () => {
    const up = call('PUT', '/v1/boxes/dp/files?path=/root/part.bin', { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(8 << 20) } });
    up.res.catch(() => undefined);
    up.req.write(Buffer.alloc(1 << 20, 7));
    await new Promise((r) => setTimeout(r, 500));
    up.req.destroy();
    await waitFor(async () => {
      const ls = await exec('dp', { cmd: ['ls', '-a', '/root'] }).expect(200);
      return !ls.body.stdout.includes('.boxd-upload-');
    }, 20_000);
    const ls = await exec('dp', { cmd: ['ls', '-a', '/root'] }).expect(200);
    assert.ok(!ls.body.stdout.includes('part.bin'), 'no partial file');
    await s.api.get('/v1/boxes/dp/files').query({ path: '/root/part.bin' }).set(s.auth).expect(404);

    const chunked = call('PUT', '/v1/boxes/dp/files?path=/root/chunked.txt', { headers: { 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' } });
    chunked.req.write('hello ');
    chunked.req.end('chunks');
    assert.equal((await chunked.res).statusCode, 204);
    const back = await s.api.get('/v1/boxes/dp/files').query({ path: '/root/chunked.txt' }).set(s.auth).buffer(true).expect(200);
    assert.equal(back.text ?? back.body.toString(), 'hello chunks');
  });
});
