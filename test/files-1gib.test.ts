import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startStack, type Stack, readText } from './helpers.ts';

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
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'gib', golden: 'default' }).expect(201);
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
      // Deterministic pseudo-random bytes (xorshift32) made into a ring of 8 buffers, each reused
      // once the socket has taken it, and hashed as sent: never 1 GiB in memory or on this side's
      // disk, and no garbage of this client's to blur the RSS of gateway and host.
      const free = Array.from({ length: 8 }, () => Buffer.alloc(chunk));
      let wake: (() => void) | undefined;
      let x = 0x9e3779b9;
      const sent = createHash('sha256');
      const t0 = Date.now();
      const up = call('PUT', '/v1/boxes/gib/files?path=/root/gib.bin', { headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) } });
      transfer = up.req;
      up.req.once('close', () => wake?.());
      for (let i = 0; i < size / chunk; i++) {
        while (!free.length && !up.req.destroyed) await new Promise<void>((r) => (wake = r));
        if (up.req.destroyed) assert.fail(`the upload was stopped (RSS grew ${((peak - rss0) / 1048576).toFixed(0)} MiB)`);
        const block = free.pop()!;
        const words = new Uint32Array(block.buffer, block.byteOffset, chunk / 4);
        for (let k = 0; k < words.length; k++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          words[k] = x;
        }
        sent.update(block);
        up.req.write(block, () => {
          free.push(block);
          wake?.();
        });
      }
      up.req.end();
      const upRes = await up.res;
      assert.equal(upRes.statusCode, 204, await readText(upRes));
      const upMs = Date.now() - t0;
      const upPeak = peak;
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
      // 'data' events, not for-await: no promise per chunk in the process being measured.
      await new Promise<void>((resolve, reject) => {
        res.on('data', (c: Buffer) => {
          got.update(c);
          bytes += c.length;
        });
        res.once('end', resolve);
        res.once('error', reject);
      });
      const downMs = Date.now() - t1;
      assert.equal(bytes, size);
      assert.equal(got.digest('hex'), digest, 'the sha256 of what came back');
      const growth = (peak - rss0) / 1048576;
      const m = process.memoryUsage();
      console.log(`# 1 GiB: PUT ${(upMs / 1000).toFixed(1)} s (RSS +${((upPeak - rss0) / 1048576).toFixed(1)} MiB), GET ${(downMs / 1000).toFixed(1)} s, gateway+host RSS growth ${growth.toFixed(1)} MiB; now heap ${(m.heapUsed / 1048576).toFixed(0)} external ${(m.external / 1048576).toFixed(0)} arrayBuffers ${(m.arrayBuffers / 1048576).toFixed(0)} MiB`);
      // Flat, not proportional to the file: 1 GiB buffered anywhere would show as ~1,024 MiB. The
      // bound is the 64 MiB for each of the two processes, which here share one heap (and
      // this client's hashing), so the garbage collector's timing decides much of the figure.
      assert.ok(growth < 128, `gateway + host RSS grew ${growth.toFixed(1)} MiB moving 1 GiB (peak ${(peak / 1048576).toFixed(0)} MiB)`);
    } finally {
      clearInterval(sampler);
      await exec('gib', { cmd: ['rm', '-f', '/root/gib.bin'] });
      await s.api.delete('/v1/boxes/gib').set(s.auth);
    }
    await s.api.get('/v1/boxes/gib').set(s.auth).expect(404);
  });
});
