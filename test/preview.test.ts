import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { DockerRuntime } from '../host/docker-runtime.ts';
import { createGateway } from '../gateway/gateway.ts';
import { docker, log, sleep, startStack, waitFor, type Stack } from './helpers.ts';

class CountingRuntime extends DockerRuntime {
  resumes = 0;
  override async resume(id: string): Promise<void> {
    this.resumes++;
    return super.resume(id);
  }
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A request to the gateway with any Host header (fetch cannot set Host). */
function get(port: number, host: string, path = '/', headers: Record<string, string> = {}, method = 'GET', body?: Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers: { Host: host, ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Sends raw bytes and returns the status line of the answer. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(text));
    let got = '';
    sock.on('data', (c) => (got += c.toString()));
    sock.on('close', () => resolve(got.split('\r\n')[0] ?? ''));
    sock.on('error', () => resolve(got.split('\r\n')[0] ?? ''));
    setTimeout(() => sock.destroy(), 3000).unref();
  });
}

describe('preview URLs through the gateway (real Docker, real Redis)', () => {
  let s: Stack;
  let port: number;
  let runtime: CountingRuntime;
  const base = 'boxd.localhost';
  const app = readFileSync(new URL('./fixtures/app.py', import.meta.url));

  const startApp = async (name: string, opts: Record<string, unknown> = {}) => {
    const created = await s.api.post('/v1/boxes').set(s.auth).send({ name, golden: 'default', ...opts }).expect(201);
    await s.api.put(`/v1/boxes/${name}/files`).query({ path: '/opt/app.py' }).set(s.auth).set('Content-Type', 'application/octet-stream').send(app).expect(204);
    await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd: ['bash', '-c', 'nohup python3 /opt/app.py 3000 >/tmp/app.log 2>&1 &'] }).expect(200);
    const headers: Record<string, string> = created.body.previewToken ? { 'x-boxd-token': created.body.previewToken } : {};
    await waitFor(async () => (await get(port, `${name}.${base}`, '/', headers)).status === 200, 20_000);
    return created.body as { previewToken?: string };
  };
  const state = async (name: string) => (await s.api.get(`/v1/boxes/${name}`).set(s.auth).expect(200)).body.state as string;

  before(async () => {
    runtime = new CountingRuntime(docker, { network: 'boxd', ociRuntime: 'runc', maxFileBytes: 1 << 26, log });
    await runtime.prepare();
    s = await startStack(
      { BOXD_IDLE_CHECK_MS: '200', BOXD_ACTIVITY_FLUSH_MS: '200', BOXD_UPSTREAM_TIMEOUT_MS: '3000', BOXD_CONNECT_RETRY_MS: '500' },
      { runtime },
    );
    port = (s.gateway.server.address() as { port: number }).port;
  });
  after(async () => {
    await s?.close();
  });

  it('serves the app of a box on <name>.<base>, with our X-Forwarded-* and no secrets', async () => {
    await startApp('web', { idleTimeoutMs: 0 });
    const home = await get(port, `WEB.${base}.:${port}`, '/');
    assert.equal(home.status, 200);
    assert.match(home.body, /^hello from box/);
    const h = await get(port, `web.${base}`, '/headers', {
      'X-Forwarded-For': '6.6.6.6',
      Forwarded: 'for=6.6.6.6',
      Authorization: `Bearer ${s.config.BOXD_API_KEY}`,
      Cookie: 'boxd_token=secret; theme=dark',
    });
    const seen = JSON.parse(h.body) as Record<string, string>;
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen['x-forwarded-host'], `web.${base}`);
    assert.equal(seen.forwarded, undefined);
    assert.equal(seen.authorization, undefined, 'the API key never reaches the box');
    assert.equal(seen.cookie, 'theme=dark', 'the preview token cookie never reaches the box');
    const own = await get(port, `web.${base}`, '/headers', { Authorization: 'Bearer the-apps-own-token' });
    assert.equal((JSON.parse(own.body) as Record<string, string>).authorization, 'Bearer the-apps-own-token', 'the app’s own credentials pass');
  });

  it('reaches other declared ports as <port>.<name>.<base>, and explains what is not there', async () => {
    const other = await get(port, `8080.web.${base}`, '/');
    assert.equal(other.status, 502, 'port 8080 is declared but nothing listens');
    assert.equal(other.headers['x-boxd-error'], 'UPSTREAM_UNAVAILABLE');
    assert.equal((await get(port, `9999.web.${base}`, '/')).status, 404);
    const unknown = await get(port, `nobody-here.${base}`, '/');
    assert.equal(unknown.status, 404);
    assert.match(unknown.headers['content-type'] as string, /text\/html/);
    const slow = await get(port, `web.${base}`, '/slow');
    assert.equal(slow.status, 504);
  });

  it('proxies WebSockets both ways', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Host: `web.${base}` } });
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    const echoes: string[] = [];
    ws.on('message', (m) => echoes.push(m.toString()));
    for (const m of ['one', 'two', 'x'.repeat(5000)]) ws.send(m);
    await waitFor(async () => echoes.length === 3, 5000);
    assert.deepEqual(echoes.slice(0, 2), ['one', 'two']);
    assert.equal(echoes[2]!.length, 5000);
    // Closed on both ends before the next test suspends the box: a socket still held would wake it again.
    await new Promise((r) => (ws.once('close', r), ws.close()));
    await waitFor(async () => s.gateway.activity.busy('web') === 0, 10_000);
  });

  it('wakes a suspended box on the first request, with one resume for 100 concurrent requests', async () => {
    // The previous test's WebSocket must be released first: a box suspended while the gateway
    // still holds traffic for it is woken again at once (now a sub-millisecond freezer thaw).
    await waitFor(async () => s.gateway.activity.busy('web') === 0, 10_000);
    await s.api.post('/v1/boxes/web/suspend').set(s.auth).expect(200);
    assert.equal(await state('web'), 'suspended');
    const first = await get(port, `web.${base}`, '/');
    assert.equal(first.status, 200);
    assert.equal(await state('web'), 'running');

    await s.api.post('/v1/boxes/web/suspend').set(s.auth).expect(200);
    const before = runtime.resumes;
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => get(port, `web.${base}`, `/?i=${i}`)));
    assert.deepEqual([...new Set(replies.map((r) => r.status))], [200]);
    assert.equal(runtime.resumes - before, 1, 'exactly one resume ran');
    assert.equal(await state('web'), 'running');

    // Two gateways, 50 requests each, still one resume.
    const second = await createGateway(s.config, log);
    await new Promise<void>((r) => second.server.listen(0, '127.0.0.1', () => r()));
    const port2 = (second.server.address() as { port: number }).port;
    try {
      await s.api.post('/v1/boxes/web/suspend').set(s.auth).expect(200);
      const before2 = runtime.resumes;
      const both = await Promise.all(
        Array.from({ length: 100 }, (_, i) => get(i % 2 ? port : port2, `web.${base}`, `/?j=${i}`)),
      );
      assert.deepEqual([...new Set(both.map((r) => r.status))], [200]);
      assert.equal(runtime.resumes - before2, 1, 'exactly one resume across two gateways');
    } finally {
      await second.close();
    }
  });

  it('suspends an idle box by itself, but not one with an open WebSocket', async () => {
    await startApp('idle', { idleTimeoutMs: 1500 });
    await startApp('chatty', { idleTimeoutMs: 1500 });
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Host: `chatty.${base}` } });
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    await waitFor(async () => (await state('idle')) === 'suspended', 15_000);
    await sleep(2500);
    assert.equal(await state('chatty'), 'running', 'an open WebSocket keeps the box awake');
    ws.close();
    await waitFor(async () => (await state('chatty')) === 'suspended', 15_000);
    // And the page comes back on reload.
    assert.equal((await get(port, `idle.${base}`, '/')).status, 200);
    assert.equal(await state('idle'), 'running');
  });

  it('counts a running exec as activity, and drops cached routes the moment a box changes state', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'busy', golden: 'tiny', idleTimeoutMs: 1000 }).expect(201);
    const routes = s.gateway.routes;
    assert.equal((await routes.get('busy'))?.state, 'running', 'cached now');
    const long = s.api.post('/v1/boxes/busy/exec').set(s.auth).send({ cmd: ['sleep', '4'] }).then((r) => r);
    await sleep(2500); // well past the 1 s idle timeout
    assert.equal(await state('busy'), 'running', 'not suspended while an exec runs');
    assert.equal((await long).body.exitCode, 0);
    await waitFor(async () => (await state('busy')) === 'suspended', 15_000);
    await waitFor(async () => (await routes.get('busy'))?.state === 'suspended', 1000, 10);
  });

  it('needs a token for a private box: header, or a query parameter traded for a cookie', async () => {
    const { previewToken } = await startApp('secret', { public: false, idleTimeoutMs: 0 });
    assert.ok(previewToken);
    assert.equal((await get(port, `secret.${base}`, '/')).status, 401);
    assert.equal((await get(port, `secret.${base}`, '/', { 'x-boxd-token': 'wrong' })).status, 403);
    assert.equal((await get(port, `secret.${base}`, '/', { 'x-boxd-token': previewToken })).status, 200);
    const redirect = await get(port, `secret.${base}`, `/headers?a=1&boxd_token=${previewToken}`);
    assert.equal(redirect.status, 302);
    assert.equal(redirect.headers.location, '/headers?a=1');
    const cookie = (redirect.headers['set-cookie'] as string[])[0]!;
    assert.match(cookie, /HttpOnly/);
    assert.doesNotMatch(cookie, /Domain=/i, 'the cookie is for this host only');
    const withCookie = await get(port, `secret.${base}`, '/headers?a=1', { Cookie: cookie.split(';')[0]! });
    assert.equal(withCookie.status, 200);
    assert.doesNotMatch(withCookie.body, new RegExp(previewToken));
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Host: `secret.${base}` } });
    const refused = await new Promise<number>((r) => ws.once('unexpected-response', (_req, res) => r(res.statusCode ?? 0)));
    assert.equal(refused, 401);
  });

  it('survives malformed and hostile Host headers', async () => {
    const lines = [
      `GET / HTTP/1.1\r\nHost: ../../etc.${base}\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: a.b.c.web.${base}\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: web.${base}:notaport\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: ${'x'.repeat(5000)}.${base}\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: web.${base}\r\nHost: other.${base}\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: web_${base}\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: \u00e9.${base}\r\n\r\n`,
      `GET / HTTP/1.0\r\n\r\n`,
      `BREW /coffee HTCPCP/1.0\r\n\r\n`,
    ];
    for (const l of lines) {
      const status = await raw(port, l);
      assert.match(status, /^HTTP\/1\.[01] (4\d\d|200)/, `answered ${JSON.stringify(l.slice(0, 40))} with ${status}`);
    }
    assert.equal((await get(port, `web.${base}`, '/')).status, 200, 'still serving');
  });

  it('serves several requests on one kept-alive client connection, each one routed and sanitized', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const one = (path: string, headers: Record<string, string> = {}, method = 'GET', body?: Buffer) =>
      new Promise<Reply & { reused: boolean }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path, method, agent, headers: { Host: `web.${base}`, ...headers } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString(), reused: req.reusedSocket }));
        });
        req.on('error', reject);
        req.end(body);
      });
    try {
      assert.equal((await one('/')).status, 200);
      const posted = await one('/upload', { 'Content-Type': 'application/octet-stream' }, 'POST', Buffer.alloc(100_000, 3));
      assert.deepEqual(JSON.parse(posted.body), { bytes: 100_000 });
      assert.ok(posted.reused, 'the second request used the same client connection');
      const h = await one('/headers', { Authorization: `Bearer ${s.config.BOXD_API_KEY}`, 'X-Forwarded-For': '6.6.6.6', Cookie: 'boxd_token_web=x; a=b' });
      assert.ok(h.reused);
      const seen = JSON.parse(h.body) as Record<string, string>;
      assert.equal(seen.authorization, undefined, 'the API key is stripped on a later request of the connection too');
      assert.equal(seen['x-forwarded-for'], '127.0.0.1');
      assert.equal(seen.cookie, 'a=b');
      const head = await one('/', {}, 'HEAD');
      assert.ok(head.status >= 200, 'the app answers HEAD (501 from this app: it has no do_HEAD)');
      assert.equal(head.body, '');
      assert.equal((await one('/')).status, 200, 'a HEAD answer does not desynchronize the connection');
    } finally {
      agent.destroy();
    }
  });

  it('a client that aborts mid-body leaves no open upstream socket', async () => {
    const conns = async () => Number((await get(port, `web.${base}`, '/conns')).body);
    // The fast path keeps its own upstream pool next to the HTTP path's (used for its fallbacks).
    const limit = s.config.BOXD_PREVIEW_FASTPATH ? 2 : 1;
    await waitFor(async () => (await conns()) <= limit, 10_000);
    const baseline = await conns();
    await new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/upload', agent: false, headers: { Host: `web.${base}`, 'Content-Length': String(10 << 20) } });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(256 * 1024, 1));
      setTimeout(() => {
        req.destroy();
        resolve();
      }, 300);
    });
    await waitFor(async () => (await conns()) <= Math.max(baseline, 1), 10_000);
    const ok = await get(port, `web.${base}`, '/upload', { 'Content-Type': 'application/octet-stream' }, 'POST', Buffer.alloc(1 << 20, 2));
    assert.deepEqual(JSON.parse(ok.body), { bytes: 1 << 20 });
  });
});
