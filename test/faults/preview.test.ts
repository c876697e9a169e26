import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { DockerRuntime } from '../../host/docker-runtime.ts';
import { docker, log, sleep, startStack, waitFor, type Stack } from '../helpers.ts';

class CountingRuntime extends DockerRuntime {
  resumes = 0;
  override async resume(id: string): Promise<void> {
    this.resumes++;
    return super.resume(id);
  }
}

const base = 'boxd.localhost';

function get(port: number, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { Host: host }, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends `text`, waits `afterMs`, and tears the connection down without reading an answer. */
function abort(port: number, text: string, afterMs: number): Promise<void> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(text);
      setTimeout(() => sock.destroy(), afterMs);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => resolve());
  });
}

const fds = () => readdirSync('/proc/self/fd').length;
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const rssMb = () => {
  gc();
  return process.memoryUsage().rss / 2 ** 20;
};

describe('preview path under load and abuse (real Docker, real Redis)', () => {
  let s: Stack;
  let port: number;
  let runtime: CountingRuntime;
  const app = readFileSync(new URL('../fixtures/app.py', import.meta.url));

  before(async () => {
    runtime = new CountingRuntime(docker, { network: 'boxd', ociRuntime: 'runc', maxFileBytes: 1 << 26, log });
    await runtime.prepare();
    s = await startStack({ BOXD_IDLE_TIMEOUT_MS: '0' }, { runtime });
    port = (s.gateway.server.address() as { port: number }).port;
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'web', golden: 'default', idleTimeoutMs: 0 }).expect(201);
    await s.api.put('/v1/boxes/web/files').query({ path: '/opt/app.py' }).set(s.auth).set('Content-Type', 'application/octet-stream').send(app).expect(204);
    await s.api.post('/v1/boxes/web/exec').set(s.auth).send({ cmd: ['bash', '-c', 'nohup python3 /opt/app.py 3000 >/tmp/app.log 2>&1 &'] }).expect(200);
    await waitFor(async () => (await get(port, `web.${base}`).catch(() => ({ status: 0 }))).status === 200, 30_000);
  });
  after(async () => {
    await s?.close();
  });

  it('300 concurrent requests to a suspended box: one resume, 300 × 200', async () => {
    await s.api.post('/v1/boxes/web/suspend').set(s.auth).expect(200);
    const before = runtime.resumes;
    const replies = await Promise.all(Array.from({ length: 300 }, () => get(port, `web.${base}`).catch((e: Error) => ({ status: 0, body: e.message }))));
    const bad = replies.filter((r) => r.status !== 200);
    assert.equal(bad.length, 0, `non-200 answers: ${JSON.stringify(bad.slice(0, 3))}`);
    assert.equal(runtime.resumes - before, 1, 'one resume for all of them');
    assert.equal((await s.api.get('/v1/boxes/web').set(s.auth).expect(200)).body.state, 'running');
  });

  it('2,000 aborted requests leave the gateway with its file descriptors and memory', async () => {
    const host = `web.${base}`;
    // Warm up (sockets pooled, code paths compiled) before the baseline.
    for (let i = 0; i < 50; i++) await get(port, host);
    await sleep(500);
    const fd0 = fds();
    const rss0 = rssMb();
    const kinds = [
      // Cut off mid-body: the upload to the box breaks off.
      () => abort(port, `POST / HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 1048576\r\n\r\n${'x'.repeat(4096)}`, 20),
      // Gone before the answer.
      () => abort(port, `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 0),
      // Half a request line and headers.
      () => abort(port, `GET / HTTP/1.1\r\nHost: ${host}\r\nX-Half: `, 10),
    ];
    for (let batch = 0; batch < 20; batch++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => kinds[(batch * 100 + i) % kinds.length]!()));
    }
    // 20 waiting on a slow answer, cut off while the box still works on them.
    await Promise.all(Array.from({ length: 20 }, () => abort(port, `GET /slow HTTP/1.1\r\nHost: ${host}\r\n\r\n`, 300)));
    // The gateway still serves.
    assert.equal((await get(port, host)).status, 200);
    const fdSlack = 40;
    await waitFor(async () => fds() <= fd0 + fdSlack, 60_000, 500).catch(() => assert.fail(`fds: ${fd0} before, ${fds()} after (slack ${fdSlack})`));
    const rss1 = rssMb();
    assert.ok(rss1 < rss0 + 80, `RSS ${rss0.toFixed(0)} MiB before, ${rss1.toFixed(0)} MiB after`);
    console.log(`# fds ${fd0} → ${fds()}, RSS ${rss0.toFixed(0)} → ${rss1.toFixed(0)} MiB`);
  });
});
