import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { FrameBoundary } from '../gateway/ws-keepalive.ts';
import { sleep, startStack, waitFor, type Stack } from './helpers.ts';

const base = 'boxd.localhost';

function status(port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { Host: host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A WebSocket client that completes the handshake and then goes silent: no pong, no close frame. */
function silentClient(port: number, host: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.write(`GET /ws HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    let head = '';
    const onData = (c: Buffer) => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      sock.off('data', onData);
      if (!head.startsWith('HTTP/1.1 101')) reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`));
      else resolve(sock);
    };
    sock.on('data', onData);
    sock.on('error', reject);
  });
}

describe('frame boundaries of a proxied WebSocket', () => {
  it('follows headers of every length form, split anywhere', () => {
    const frame = (len: number, masked = false) => {
      const hdr = len < 126 ? Buffer.from([0x82, len]) : len < 65536 ? Buffer.from([0x82, 126, len >> 8, len & 255]) : Buffer.concat([Buffer.from([0x82, 127]), Buffer.from(new BigUint64Array([BigInt(len)]).buffer).reverse()]);
      if (masked) hdr[1]! |= 0x80;
      return Buffer.concat([hdr, masked ? Buffer.alloc(4) : Buffer.alloc(0), Buffer.alloc(len, 1)]);
    };
    const stream = Buffer.concat([frame(5), frame(300), frame(70_000), frame(0), frame(126, true)]);
    const ends = new Set<number>();
    let at = 0;
    for (const f of [frame(5), frame(300), frame(70_000), frame(0), frame(126, true)]) ends.add((at += f.length));
    for (const step of [1, 3, 7, 1000]) {
      const ops: number[] = [];
      const fb = new FrameBoundary((op) => ops.push(op));
      for (let i = 0; i < stream.length; i += step) {
        const chunk = stream.subarray(i, i + step);
        fb.push(chunk);
        assert.equal(fb.atBoundary, ends.has(i + chunk.length), `boundary after byte ${i + chunk.length} (step ${step})`);
      }
      assert.equal(ops.length, 5);
    }
  });
});

describe('WebSocket peers through the gateway (real Docker, real Redis)', () => {
  let s: Stack;
  let port: number;
  const app = readFileSync(new URL('./fixtures/app.py', import.meta.url));
  const state = async (name: string) => (await s.api.get(`/v1/boxes/${name}`).set(s.auth).expect(200)).body.state as string;
  const startApp = async (name: string, idleTimeoutMs: number) => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name, golden: 'default', idleTimeoutMs }).expect(201);
    await s.api.put(`/v1/boxes/${name}/files`).query({ path: '/opt/app.py' }).set(s.auth).set('Content-Type', 'application/octet-stream').send(app).expect(204);
    await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd: ['bash', '-c', 'nohup python3 /opt/app.py 3000 >/tmp/app.log 2>&1 &'] }).expect(200);
    await waitFor(async () => (await status(port, `${name}.${base}`).catch(() => 0)) === 200, 30_000);
  };
  const open = async (name: string) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Host: `${name}.${base}` } });
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    return ws;
  };

  before(async () => {
    s = await startStack({ BOXD_WS_PING_MS: '300', BOXD_IDLE_CHECK_MS: '200', BOXD_ACTIVITY_FLUSH_MS: '200' });
    port = (s.gateway.server.address() as { port: number }).port;
  });
  after(async () => {
    await s?.close();
  });

  it('drops a client gone without a close frame, and its box then suspends when idle', async () => {
    await startApp('halfopen', 1500);
    const sock = await silentClient(port, `halfopen.${base}`);
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => undefined);
    try {
      await waitFor(async () => s.gateway.activity.busy('halfopen') === 1, 10_000);
      await Promise.race([closed, sleep(30_000).then(() => assert.fail('the gateway kept a silent WebSocket open'))]);
    } finally {
      sock.destroy();
    }
    await waitFor(async () => s.gateway.activity.busy('halfopen') === 0, 10_000);
    await waitFor(async () => (await state('halfopen')) === 'suspended', 30_000);
  });

  it('keeps a live client (it answers pings) and never splits its frames with a ping', async () => {
    await startApp('live', 0);
    const ws = await open('live');
    let pings = 0;
    ws.on('ping', () => pings++);
    const echoes: Buffer[] = [];
    ws.on('message', (m) => echoes.push(m as Buffer));
    const sent: Buffer[] = [];
    // Large messages take several TCP chunks each way: pings must fall between frames.
    for (let i = 0; i < 30; i++) {
      const m = randomBytes(60_000);
      sent.push(m);
      ws.send(m);
      await sleep(50);
    }
    try {
      await waitFor(async () => echoes.length === sent.length, 30_000);
      for (let i = 0; i < sent.length; i++) assert.ok(echoes[i]!.equals(sent[i]!), `message ${i} came back intact`);
      await waitFor(async () => pings >= 5, 30_000);
      assert.equal(ws.readyState, WebSocket.OPEN, 'a client that answers pings is kept');
    } finally {
      ws.terminate();
    }
  });

  it('a manual suspend sticks while a WebSocket stays open, until the client sends a message', async () => {
    await startApp('manual', 0);
    const ws = await open('manual');
    const echoes: string[] = [];
    ws.on('message', (m) => echoes.push(m.toString()));
    after(() => ws.terminate());
    await s.api.post('/v1/boxes/manual/suspend').set(s.auth).expect(200);
    // Several ping rounds (and their pongs) pass: none of them is traffic.
    await sleep(3000);
    assert.equal(await state('manual'), 'suspended', 'the open WebSocket did not bounce the box back to running');
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.send('hello again');
    await waitFor(async () => echoes.includes('hello again'), 30_000);
    assert.equal(await state('manual'), 'running');
    ws.close();
  });
});
