import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import WebSocket from 'ws';
import { loadConfig, type Config } from '../core/config.ts';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { startHost, type HostHandle } from '../host/host.ts';
import { docker, log, purge, testConfig, waitFor } from './helpers.ts';

/** A GET to the gateway with a box's Host header; the body as text. */
function get(port: number, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { Host: host }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The body at `url`, or the error's code when nothing answers. */
async function fetchText(url: string): Promise<string> {
  try {
    return await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
  } catch (e) {
    return `error: ${(e as Error).message}`;
  }
}

/**
 * Two host processes (distinct ids, addresses 127.0.0.2 and 127.0.0.3) on one Redis with one
 * gateway: every data-plane operation and preview reaches the box on the host that owns it.
 */
describe('many hosts behind one gateway (real Docker, real Redis)', () => {
  let config: Config;
  const hosts: HostHandle[] = [];
  let gateway: Gateway;
  let api: ReturnType<typeof supertest>;
  let auth: { Authorization: string };
  let port: number;
  const base = 'boxd.localhost';
  const app = readFileSync(new URL('./fixtures/app.py', import.meta.url));
  const boxes = new Map<string, string>(); // host id → box name

  before(async () => {
    config = testConfig({ BOXD_IDLE_TIMEOUT_MS: '0' });
    for (const [id, addr] of [['a', '127.0.0.2'], ['b', '127.0.0.3']] as const) {
      const c = loadConfig({ ...process.env, ...asEnv(config), BOXD_HOST_ID: `${config.BOXD_PREFIX}-${id}`, BOXD_HOST_ADDR: addr, LOG_LEVEL: 'silent' });
      hosts.push(await startHost(c, log));
    }
    gateway = await createGateway(config, log);
    await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
    port = (gateway.server.address() as AddressInfo).port;
    api = supertest(gateway.server);
    auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };
    // Placement picks the host with the fewest boxes: create until both hold one (bounded).
    for (let i = 0; i < 6 && boxes.size < 2; i++) {
      const r = await api.post('/v1/boxes').set(auth).send({ name: `mh-${i}`, golden: 'default' }).expect(201);
      const record = await gateway.store.require(r.body.name);
      if (!boxes.has(record.hostId)) boxes.set(record.hostId, record.name);
    }
  });
  after(async () => {
    await gateway?.close();
    for (const h of hosts) await h.close().catch(() => undefined);
    await purge(config.BOXD_PREFIX);
  });

  it('places boxes on both hosts and publishes their ports on the owning host address only', async () => {
    assert.equal(boxes.size, 2, 'both hosts hold a box');
    for (const [hostId, name] of boxes) {
      const record = await gateway.store.require(name);
      const addr = hostId.endsWith('-a') ? '127.0.0.2' : '127.0.0.3';
      const other = addr === '127.0.0.2' ? '127.0.0.3' : '127.0.0.2';
      const info = await docker.getContainer(record.runtimeId!).inspect();
      for (const binds of Object.values(info.NetworkSettings.Ports)) for (const b of binds ?? []) assert.equal(b.HostIp, addr);
      assert.ok(record.hostPorts[3000]);
      void other;
    }
  });

  it('exec and files reach the right box on each host', async () => {
    for (const [hostId, name] of boxes) {
      const r = await api.post(`/v1/boxes/${name}/exec`).set(auth).send({ cmd: ['hostname'] }).expect(200);
      assert.equal(r.body.stdout.trim(), name);
      await api.put(`/v1/boxes/${name}/files`).query({ path: '/tmp/who' }).set(auth).set('Content-Type', 'application/octet-stream').send(Buffer.from(hostId)).expect(204);
    }
    for (const [hostId, name] of boxes) {
      const r = await api.get(`/v1/boxes/${name}/files`).query({ path: '/tmp/who' }).set(auth).buffer(true).parse((res, cb) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => cb(null, Buffer.concat(chunks)));
      }).expect(200);
      assert.equal((r.body as Buffer).toString(), hostId);
    }
  });

  it('previews (HTTP and WebSocket) and wakes reach the right box on each host', async () => {
    for (const name of boxes.values()) {
      await api.put(`/v1/boxes/${name}/files`).query({ path: '/opt/app.py' }).set(auth).set('Content-Type', 'application/octet-stream').send(app).expect(204);
      await api.post(`/v1/boxes/${name}/exec`).set(auth).send({ cmd: ['bash', '-c', 'nohup python3 /opt/app.py 3000 >/tmp/app.log 2>&1 &'], detach: true }).expect(200);
    }
    for (const name of boxes.values()) {
      await waitFor(async () => (await get(port, `${name}.${base}`)).status === 200, 30_000);
      assert.equal((await get(port, `${name}.${base}`)).body, `hello from box ${name}\n`);
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers: { Host: `${name}.${base}` } });
      await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
      const echo = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
      ws.send(`to ${name}`);
      assert.equal(await echo, `to ${name}`);
      ws.close();
    }
    // The same port number on another host's address is not this box (the engine allocates
    // ports per address, so it may well be another box there): only the owner's address is.
    for (const [hostId, name] of boxes) {
      const record = await gateway.store.require(name);
      const addr = hostId.endsWith('-a') ? '127.0.0.2' : '127.0.0.3';
      const other = addr === '127.0.0.2' ? '127.0.0.3' : '127.0.0.2';
      const hostPort = record.hostPorts[3000]!;
      assert.equal(await fetchText(`http://${addr}:${hostPort}/`), `hello from box ${name}\n`);
      assert.notEqual(await fetchText(`http://${other}:${hostPort}/`), `hello from box ${name}\n`);
    }
    // Suspended on its own host, each box wakes on a preview request.
    for (const name of boxes.values()) await api.post(`/v1/boxes/${name}/suspend`).set(auth).expect(200);
    for (const name of boxes.values()) {
      const r = await get(port, `${name}.${base}`);
      assert.equal(r.status, 200);
      assert.equal(r.body, `hello from box ${name}\n`);
      assert.equal((await api.get(`/v1/boxes/${name}`).set(auth).expect(200)).body.state, 'running');
    }
  });
});

function asEnv(c: Config): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(c)) if (v !== undefined) out[k] = String(v);
  return out;
}
