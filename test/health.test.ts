import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { startHost, type HostHandle } from '../host/host.ts';
import { log, purge, testConfig, waitFor } from './helpers.ts';

/**
 * Liveness, readiness and the API while Redis is frozen (SIGSTOP) or gone — against a
 * redis-server of this test's own on port 6392, never the shared one.
 */
const PORT = 6392;

describe('health and readiness with a frozen or missing Redis', () => {
  let redis: ChildProcess | undefined;
  let gateway: Gateway;
  let host: HostHandle | undefined;
  let base: string;
  const config = testConfig({ REDIS_URL: `redis://127.0.0.1:${PORT}`, BOXD_REDIS_TIMEOUT_MS: '1500' });
  const auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };

  const startRedis = async () => {
    redis = spawn('redis-server', ['--port', String(PORT), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    const probe = new Redis(PORT, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await waitFor(async () => {
        await probe.connect().catch(() => undefined);
        return probe.ping().then(() => true, () => false);
      }, 20_000, 100);
    } finally {
      probe.disconnect();
    }
  };
  /** A request that gives up after 15 s, so a hang fails the test instead of stalling it. */
  const call = async (path: string, init: RequestInit = {}) => {
    const t0 = performance.now();
    const res = await fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(15_000) });
    const body = (await res.json()) as Record<string, unknown> & { error?: { code: string } };
    return { status: res.status, body, ms: performance.now() - t0, retryAfter: res.headers.get('retry-after') };
  };

  before(async () => {
    await startRedis();
    gateway = await createGateway(config, log);
    await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(gateway.server.address() as { port: number }).port}`;
  });
  after(async () => {
    if (redis?.exitCode === null && !redis.killed) redis.kill('SIGCONT');
    else await startRedis();
    // Bounded: a close stuck on a reconnecting connection must not keep the file from ending.
    const bounded = (p: Promise<unknown> | undefined) => Promise.race([p?.catch(() => undefined), new Promise((r) => setTimeout(r, 30_000).unref())]);
    await bounded(gateway?.close());
    await bounded(host?.close());
    await bounded(purge(config.BOXD_PREFIX));
    redis?.kill('SIGKILL');
  });

  it('is live at once but ready only once a host is registered', async () => {
    const live = await call('/healthz');
    assert.equal(live.status, 200);
    assert.equal(live.body.redis, true);
    const notReady = await call('/readyz');
    assert.equal(notReady.status, 503);
    assert.match(String(notReady.body.reason), /no host/);
    host = await startHost(config, log);
    const ready = await waitFor(async () => {
      const r = await call('/readyz');
      return r.status === 200 ? r : undefined;
    }, 20_000);
    assert.equal(ready.body.hosts, 1);
    assert.equal((await call('/v1/boxes', { headers: auth })).status, 200);
  });

  it('with Redis frozen: /healthz answers within a second, /readyz and the API answer 503 within about two', async () => {
    redis!.kill('SIGSTOP');
    try {
      const live = await call('/healthz');
      assert.equal(live.status, 200);
      assert.equal(live.body.redis, false);
      assert.ok(live.ms < 1500, `healthz took ${Math.round(live.ms)} ms`);
      const ready = await call('/readyz');
      assert.equal(ready.status, 503);
      assert.ok(ready.ms < 1500, `readyz took ${Math.round(ready.ms)} ms`);
      const [list, create] = await Promise.all([
        call('/v1/boxes', { headers: auth }),
        call('/v1/boxes', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'frozen', golden: 'tiny' }) }),
      ]);
      for (const r of [list, create]) {
        assert.equal(r.status, 503);
        assert.equal(r.body.error?.code, 'UNAVAILABLE');
        assert.equal(r.retryAfter, '1');
        // Generous on a loaded machine; without command timeouts these hang for as long as Redis does.
        assert.ok(r.ms < 6000, `API took ${Math.round(r.ms)} ms`);
      }
    } finally {
      redis!.kill('SIGCONT');
    }
    // Everything recovers once Redis thaws.
    await waitFor(async () => (await call('/readyz')).status === 200, 20_000, 200);
    const made = await call('/v1/boxes', { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'thawed', golden: 'tiny' }) });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    assert.equal((await call('/v1/boxes/thawed', { method: 'DELETE', headers: auth }).catch(() => ({ status: 204 }))).status, 204);
  });

  it('with Redis gone: the API answers 503 quickly and /healthz stays live', async () => {
    redis!.kill('SIGKILL');
    await new Promise((r) => redis!.once('exit', r));
    const live = await call('/healthz');
    assert.equal(live.status, 200);
    assert.equal(live.body.redis, false);
    const list = await call('/v1/boxes', { headers: auth });
    assert.equal(list.status, 503);
    assert.equal(list.body.error?.code, 'UNAVAILABLE');
    assert.ok(list.ms < 6000, `API took ${Math.round(list.ms)} ms`);
    assert.equal((await call('/readyz')).status, 503);
    // Back up (empty): every connection reconnects and the host registers again, so the stack
    // closes cleanly afterwards instead of leaving connections retrying a dead port.
    await startRedis();
    await waitFor(async () => (await call('/readyz')).status === 200, 30_000, 200);
  });
});
