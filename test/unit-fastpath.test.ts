// The preview fast path on hostile bytes, with no Docker or Redis: the head parsers as tables, and
// FastPath itself between raw client sockets and a raw upstream server on 127.0.0.1, with the
// preview passes faked (one public box "app" whose port is the upstream's).
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../core/config.ts';
import type { BoxRecord } from '../core/boxes.ts';
import { ChunkedEnd, parseRequestHead, parseResponseHead } from '../gateway/fast-head.ts';
import { FastPath } from '../gateway/fastpath.ts';
import type { Preview, Routed } from '../gateway/preview.ts';
import { log, waitFor } from './helpers.ts';

const head = (s: string) => {
  const b = Buffer.from(s, 'latin1');
  const end = b.indexOf('\r\n\r\n');
  return parseRequestHead(b, end + 4);
};

describe('fast path head parsing', () => {
  it('reads framing, host and the lines to drop', () => {
    const h = head('POST /a?b=1 HTTP/1.1\r\nHost: app.x\r\nContent-Length: 5\r\nX-Forwarded-For: 6.6.6.6\r\nX-Boxd-Token: t\r\nConnection: keep-alive\r\n\r\n')!;
    assert.equal(h.method, 'POST');
    assert.equal(h.host, 'app.x');
    assert.equal(h.contentLength, 5);
    assert.equal(h.token, 't');
    assert.equal(h.drop!.length, 6); // X-Forwarded-For, X-Boxd-Token, Connection
  });
  it('refuses ambiguous framing and malformed heads (the HTTP server answers those)', () => {
    for (const bad of [
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', // smuggling: CL + TE
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
      'GET / HTTP/1.1\r\n\r\n', // no Host
      'GET / HTTP/1.1\r\nHost: a\r\nX: a\nB: c\r\n\r\n', // bare LF
      'GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n',
      'GET / HTTP/1.0\r\nHost: a\r\n\r\n',
      'GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n',
      'CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n',
      'get / HTTP/1.1\r\nHost: a\r\n\r\n',
      'GET /a b HTTP/1.1\r\nHost: a\r\n\r\n',
    ]) assert.equal(head(bad), null, JSON.stringify(bad));
  });
  it('leaves upgrades, Expect and a token in the query to the HTTP path', () => {
    assert.equal(head('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')!.unusual, true);
    assert.equal(head('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n')!.unusual, true);
    assert.equal(head('GET /?boxd_token=x HTTP/1.1\r\nHost: a\r\n\r\n')!.unusual, true);
    assert.equal(head('GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n\r\n')!.unusual, true);
    assert.equal(head('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')!.unusual, false);
  });
  it('frames responses', () => {
    const res = (s: string) => parseResponseHead(Buffer.from(s), Buffer.from(s).indexOf('\r\n\r\n') + 4);
    assert.deepEqual(res('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n'), { status: 200, contentLength: 3, chunked: false, close: false, untilClose: false, setCookie: false });
    assert.equal(res('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n')!.chunked, true);
    assert.equal(res('HTTP/1.1 200 OK\r\n\r\n')!.close, true); // until close
    assert.equal(res('HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n')!.close, true);
    assert.equal(res('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'), null);
    assert.equal(res('HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n\r\n')!.setCookie, true);
    assert.equal(res('HTTX/1.1 200 OK\r\n\r\n'), null);
  });
  it('finds the end of a chunked body split anywhere, and refuses bad chunks', () => {
    const body = Buffer.from('5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET /next');
    for (let cut = 1; cut < body.length; cut++) {
      const c = new ChunkedEnd();
      const a = c.push(body.subarray(0, cut));
      const b = c.done ? 0 : c.push(body.subarray(cut));
      assert.equal(a + b, body.length - 'GET /next'.length, `cut at ${cut}`);
      assert.ok(c.done && !c.bad);
    }
    for (const bad of ['zz\r\n', '5\r\nhelloXX', '5\nhello\r\n', '\r\n', '10000000000000000\r\n']) {
      const c = new ChunkedEnd();
      c.push(Buffer.from(bad));
      assert.ok(c.bad, bad);
    }
  });
});

/** Reads everything the socket sends until it closes (or `ms` pass). */
function exchange(port: number, bytes: string | string[], ms = 3000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('connect', async () => {
      for (const b of [bytes].flat()) {
        s.write(b);
        await new Promise((r) => setTimeout(r, 20));
      }
    });
    s.on('data', (c) => (got += c.toString('latin1')));
    s.on('close', () => resolve(got));
    s.on('error', () => undefined);
    setTimeout(() => s.destroy(), ms).unref();
  });
}
const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

describe('fast path between raw sockets', () => {
  let upstream: Server;
  let gateway: Server;
  let port = 0;
  let fast: FastPath;
  const seen: string[] = []; // request heads as the box received them
  let mode: 'echo' | 'cut' | 'cutMid' = 'echo';
  /** A large body whose every byte depends on its offset: corruption anywhere shows. */
  const big = Buffer.alloc(8 << 20);
  for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
  const active = new Map<string, number>();

  before(async () => {
    // The box: a Node HTTP server that echoes method, URL, headers and body length.
    const app = createHttpServer((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => {
        seen.push(`${req.method} ${req.url} ${JSON.stringify(req.headers)}`);
        if (mode === 'cut') return req.socket.destroy();
        if (req.url === '/big') {
          // In pieces smaller than a read, one per turn of the loop: the gateway reads a piece at a
          // time, and once the client stops reading its writes wait with less than a high-water
          // mark queued, so it keeps reading (the case where a reused read buffer would be overwritten).
          res.writeHead(200, req.headers['x-chunked'] ? {} : { 'Content-Length': String(big.length) });
          let o = 0;
          const next = () => {
            if (o >= big.length) return void res.end();
            res.write(big.subarray(o, (o += 7919)));
            setImmediate(next);
          };
          return next();
        }
        if (mode === 'cutMid') {
          res.writeHead(200, { 'Content-Length': '100' });
          res.write('partial');
          setTimeout(() => req.socket.destroy(), 50);
          return;
        }
        res.setHeader('Set-Cookie', ['own=1', 'evil=1; Domain=x.test', 'host=1; Domain=app.x.test']);
        res.end(`${req.method} ${req.url} body=${n}`);
      });
    });
    upstream = app as unknown as Server;
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    const upPort = (app.address() as { port: number }).port;
    const record = { name: 'app', public: true, state: 'running', ports: [3000], hostPorts: { 3000: upPort } } as unknown as BoxRecord;
    const routed: Routed = { box: record, port: 3000, hostAddr: '127.0.0.1', hostPort: upPort };
    const preview = {
      fastRoute: async (name: string) => (name === 'app' ? routed : null),
      knownApiKey: (auth: string) => auth.includes('boxd-key'),
      isApiKey: async (auth: string) => auth.includes('boxd-key'),
      tokenOpens: () => false,
    } as unknown as Preview;
    const config = loadConfig({ ...process.env, BOXD_BASE_DOMAIN: 'x.test', BOXD_HEADERS_TIMEOUT_MS: '400', BOXD_UPSTREAM_TIMEOUT_MS: '2000' });
    const fallback = createHttpServer((_req, res) => res.writeHead(299).end('fallback'));
    fallback.on('clientError', (_e, s) => s.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'));
    gateway = fallback as unknown as Server;
    fast = FastPath.attach(fallback, {
      config, preview, log,
      routes: { peek: (n: string) => (n === 'app' ? record : undefined), generation: 0 },
      activity: { begin: (n: string) => void active.set(n, (active.get(n) ?? 0) + 1), end: (n: string) => void active.set(n, (active.get(n) ?? 0) - 1) },
      metrics: { inc: () => undefined },
    });
    await new Promise<void>((r) => fallback.listen(0, '127.0.0.1', () => r()));
    port = (fallback.address() as { port: number }).port;
  });
  after(async () => {
    fast.close();
    gateway.close();
    upstream.close();
    (upstream as unknown as { closeAllConnections(): void }).closeAllConnections();
  });

  it('serves pipelined requests in order, with bodies of both framings, and leaves no request held', async () => {
    seen.length = 0;
    mode = 'echo';
    const out = await exchange(port, [
      'GET /one HTTP/1.1\r\nHost: app.x.test\r\n\r\nPOST /two HTTP/1.1\r\nHost: app.x.test\r\nContent-Length: 5\r\n\r\nhelloPOST /three HTTP/1.1\r\nHost: app.x.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n',
      '2\r\nde\r\n0\r\n\r\nGET /four HTTP/1.1\r\nHost: app.x.test\r\nConnection: close\r\n\r\n',
    ]);
    assert.deepEqual(statuses(out), [200, 200, 200, 200]);
    assert.match(out, /GET \/one body=0[\s\S]*POST \/two body=5[\s\S]*POST \/three body=5[\s\S]*GET \/four body=0/);
    assert.equal(active.get('app'), 0);
  });

  it('rewrites the head: our X-Forwarded-*, no token, no boxd key, hop-by-hop lines gone; cookies for the base domain dropped', async () => {
    seen.length = 0;
    const out = await exchange(port, 'GET /h HTTP/1.1\r\nHost: app.x.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Boxd-Token: secret\r\nCookie: a=1; boxd_token_app=secret; b=2\r\nAuthorization: Bearer boxd-key-123\r\nProxy-Authorization: Basic app-own\r\nKeep-Alive: 5\r\nConnection: close\r\n\r\n');
    const h = JSON.parse(seen[0]!.slice(seen[0]!.indexOf('{'))) as Record<string, string>;
    assert.equal(h['x-forwarded-for'], '127.0.0.1');
    assert.equal(h['x-forwarded-host'], 'app.x.test');
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h['x-real-ip'], undefined);
    assert.equal(h['x-boxd-token'], undefined);
    assert.equal(h.cookie, 'a=1; b=2');
    assert.equal(h.authorization, undefined);
    assert.equal(h['proxy-authorization'], 'Basic app-own');
    assert.equal(h['keep-alive'], undefined);
    assert.match(out, /Set-Cookie: own=1/);
    assert.match(out, /Set-Cookie: host=1; Domain=app.x.test/);
    assert.doesNotMatch(out, /evil/);
  });

  it('passes large responses to a slow reader intact (the upstream read buffer is not reused under a pending write)', async () => {
    for (const chunked of [false, true]) {
      const s = connect(port, '127.0.0.1');
      s.pause(); // let the gateway's writes back up before reading anything
      s.write(`GET /big HTTP/1.1\r\nHost: app.x.test\r\n${chunked ? 'X-Chunked: 1\r\n' : ''}Connection: close\r\n\r\n`);
      await new Promise((r) => setTimeout(r, 1000));
      const parts: Buffer[] = [];
      s.on('data', (c: Buffer) => {
        parts.push(c);
        s.pause();
        setTimeout(() => s.resume(), 1); // a slow reader all along
      });
      s.resume();
      await new Promise((r) => s.on('close', r));
      const all = Buffer.concat(parts);
      const bodyAt = all.indexOf('\r\n\r\n') + 4;
      assert.match(all.toString('latin1', 0, bodyAt), /^HTTP\/1\.1 200/);
      let body = all.subarray(bodyAt);
      if (chunked) {
        const out: Buffer[] = [];
        for (let at = 0; ;) {
          const lf = body.indexOf('\r\n', at);
          const n = parseInt(body.toString('latin1', at, lf), 16);
          if (n === 0) break;
          out.push(body.subarray(lf + 2, lf + 2 + n));
          at = lf + 2 + n + 2;
        }
        body = Buffer.concat(out);
      }
      assert.equal(body.length, big.length, `chunked=${chunked}`);
      assert.ok(body.equals(big), `chunked=${chunked}: the body arrived altered`);
    }
    assert.equal(active.get('app'), 0);
  });

  it('hands smuggling attempts and garbage to the HTTP server (400), and answers oversized heads with 431', async () => {
    seen.length = 0;
    const smuggle = await exchange(port, 'POST / HTTP/1.1\r\nHost: app.x.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.x.test\r\n\r\n');
    assert.deepEqual(statuses(smuggle), [400]);
    assert.deepEqual(statuses(await exchange(port, 'hello there\r\n\r\n')), [400]);
    assert.deepEqual(statuses(await exchange(port, `GET / HTTP/1.1\r\nHost: app.x.test\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)), [431]);
    assert.deepEqual(statuses(await exchange(port, 'POST / HTTP/1.1\r\nHost: app.x.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n')), [400]);
    assert.ok(!seen.some((s) => s.includes('smuggled')));
  });

  it('closes a connection whose head does not arrive in time (408)', async () => {
    assert.deepEqual(statuses(await exchange(port, 'GET / HTTP/1.1\r\nHost: app', 3000)), [408]);
  });

  it('an upstream closing mid-response: the client sees the connection closed; before any byte with a body: 502', async () => {
    mode = 'cutMid';
    const mid = await exchange(port, 'GET /mid HTTP/1.1\r\nHost: app.x.test\r\n\r\n');
    assert.match(mid, /^HTTP\/1\.1 200[\s\S]*partial$/);
    assert.equal(active.get('app'), 0, 'after mid');
    mode = 'cut';
    const cut = await exchange(port, 'POST /cut HTTP/1.1\r\nHost: app.x.test\r\nContent-Length: 2\r\n\r\nhi');
    assert.deepEqual(statuses(cut), [502]);
    assert.match(cut, /X-Boxd-Error: UPSTREAM_UNAVAILABLE/);
    assert.equal(active.get('app'), 0, 'after cut');
    // A body-less request that got nothing goes to the HTTP path (which retries, then shows its page).
    assert.deepEqual(statuses(await exchange(port, 'GET /cut HTTP/1.1\r\nHost: app.x.test\r\n\r\n')), [299]);
    mode = 'echo';
    assert.equal(active.get('app'), 0);
  });

  it('a client that aborts mid-body leaves no upstream connection open', async () => {
    const open = () => new Promise<number>((r) => upstream.getConnections((_e, n) => r(n)));
    await waitFor(async () => (await open()) === 0, 5000);
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.write(`POST /big HTTP/1.1\r\nHost: app.x.test\r\nContent-Length: ${10 << 20}\r\n\r\n`);
    s.write(Buffer.alloc(1 << 20, 1));
    await waitFor(async () => (await open()) === 1, 5000);
    s.destroy();
    await waitFor(async () => (await open()) === 0, 5000);
    assert.equal(active.get('app'), 0);
  });

  it('gives other hosts and upgrades to the HTTP server', async () => {
    assert.deepEqual(statuses(await exchange(port, 'GET / HTTP/1.1\r\nHost: api.x.test\r\nConnection: close\r\n\r\n')), [299]);
    assert.deepEqual(statuses(await exchange(port, 'GET / HTTP/1.1\r\nHost: other.x.test\r\nConnection: close\r\n\r\n')), [299]);
    assert.deepEqual(statuses(await exchange(port, 'GET / HTTP/1.1\r\nHost: app.x.test\r\n\r\nGET / HTTP/1.1\r\nHost: app.x.test\r\nUpgrade: websocket\r\nConnection: close, Upgrade\r\n\r\n')), [200, 299]);
  });
});
