import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startStack, type Stack } from './helpers.ts';

/**
 * 1 GiB through the files API, gateway → host agent → engine and back, streamed end to end: the
 * body is made and hashed as it is sent, the box's sha256sum and the download's hash must match,
 * and the RSS of this process (gateway and host run in it) must stay flat. Its own file so its
 * own time budget: on a quiet machine it takes about a minute and a half.
 */
describe('files: 1 GiB end to end', { timeout: 900_000 }, () => {
  let s: Stack;
  let port: number;
  const call = (method: string, path: string, opts: { headers?: Record<string, string> } = {}) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...s.auth, 'Content-Type': 'application/json', ...opts.headers } });
    const res = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.on('error', reject);
    });
    res.catch(() => undefined);
    return { req, res };
  };
  const text = async (res: IncomingMessage) => {
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  };
  const exec = (box: string, body: object) => s.api.post(`/v1/boxes/${box}/exec`).set(s.auth).send(body);

  before(async () => {
    s = await startStack({ BOXD_IDLE_TIMEOUT_MS: '0' });
    port = (s.gateway.server.address() as AddressInfo).port;
  });
  after(async () => {
    await s?.close();
  });

  it('streams 1 GiB in and out: same size and sha256 in the box and back, gateway + host RSS flat', { timeout: 900_000 }, async () => {
    const size = 1024 * 1024 * 1024;
    const chunk = 1 << 20;
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'gib', golden: 'tiny' }).expect(201);
    // Gateway and host run in this process: its RSS is theirs (plus this client's few MiB).
    global.gc?.();
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    // A path that buffers fails here, not by the machine's OOM killer: past 256 MiB the transfer stops.
    let transfer: { destroy(): void } | undefined;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
      if (peak - rss0 > 256 * 1048576) transfer?.destroy();
    }, 20);
    try {
      // Deterministic pseudo-random bytes (AES-CTR over zeros), made and hashed as they are sent:
      // never 1 GiB in memory or on this side's disk.
      const prng = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16, 0));
      const zeros = Buffer.alloc(chunk);
      const sent = createHash('sha256');
      const t0 = Date.now();
      const up = call('PUT', '/v1/boxes/gib/files?path=/root/gib.bin', { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) } });
      transfer = up.req;
      for (let i = 0; i < size / chunk; i++) {
        const block = prng.update(zeros);
        sent.update(block);
        if (up.req.destroyed) assert.fail(`the upload was stopped: RSS grew ${((peak - rss0) / 1048576).toFixed(0)} MiB`);
        if (!up.req.write(block)) await new Promise((r) => (up.req.once('drain', r), up.req.once('close', r)));
      }
      up.req.end();
      const upRes = await up.res;
      assert.equal(upRes.statusCode, 204, await text(upRes));
      const upMs = Date.now() - t0;
      const digest = sent.digest('hex');

      const inBox = await exec('gib', { cmd: ['sh', '-c', 'wc -c < /root/gib.bin; sha256sum /root/gib.bin'], timeoutMs: 120_000 }).expect(200);
      assert.equal(inBox.body.exitCode, 0, inBox.body.stderr);
      const [n, sum] = inBox.body.stdout.trim().split(/\s+/);
      assert.equal(Number(n), size, 'the size in the box');
      assert.equal(sum, digest, 'the sha256 in the box');

      const t1 = Date.now();
      const down = call('GET', '/v1/boxes/gib/files?path=/root/gib.bin');
      down.req.end();
      const res = await down.res;
      transfer = res;
      assert.equal(res.statusCode, 200);
      assert.equal(Number(res.headers['content-length']), size);
      const got = createHash('sha256');
      let bytes = 0;
      for await (const c of res) {
        got.update(c as Buffer);
        bytes += (c as Buffer).length;
      }
      const downMs = Date.now() - t1;
      assert.equal(bytes, size);
      assert.equal(got.digest('hex'), digest, 'the sha256 of what came back');
      const growth = (peak - rss0) / 1048576;
      console.log(`# 1 GiB: PUT ${(upMs / 1000).toFixed(1)} s, GET ${(downMs / 1000).toFixed(1)} s, gateway+host RSS growth ${growth.toFixed(1)} MiB`);
      assert.ok(growth < 64, `gateway + host RSS grew ${growth.toFixed(1)} MiB moving 1 GiB (peak ${(peak / 1048576).toFixed(0)} MiB)`);
    } finally {
      clearInterval(sampler);
      await exec('gib', { cmd: ['rm', '-f', '/root/gib.bin'] });
      await s.api.delete('/v1/boxes/gib').set(s.auth);
    }
    await s.api.get('/v1/boxes/gib').set(s.auth).expect(404);
  });
});
