import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sleep, startStack, waitFor, type Stack } from '../helpers.ts';

/**
 * A Redis of our own (port 6391, AOF with fsync on every write) that the test stops and freezes.
 * Outages last OUTAGE_MS (10 s, not the 30 s): the behaviour under test — a bounded 503
 * while Redis does not answer, then recovery — is reached within the first reconnect cycle
 * (ioredis backs off to at most 2 s; the gateway bounds each command at BOXD_REDIS_TIMEOUT_MS),
 * and 10 s stays under the host's heartbeat window (15 s), so the box is not wrongly taken for
 * lost. Two 30 s outages would add a minute to every CI run without reaching new code.
 */
const PORT = 6391;
const OUTAGE_MS = 10_000;
const dir = mkdtempSync(join(tmpdir(), 'boxd-faults-redis-'));
const pidFile = join(dir, 'redis.pid');

function startRedis(): void {
  execFileSync('redis-server', [
    '--port', String(PORT), '--bind', '127.0.0.1', '--daemonize', 'yes', '--dir', dir, '--pidfile', pidFile,
    '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--maxmemory-policy', 'noeviction', '--logfile', join(dir, 'redis.log'),
  ]);
}
const redisPid = () => Number(readFileSync(pidFile, 'utf8').trim());
const redisUp = () => {
  try {
    return execFileSync('redis-cli', ['-p', String(PORT), 'ping'], { timeout: 2000 }).toString().trim() === 'PONG';
  } catch {
    return false;
  }
};

describe('Redis stopped and frozen (own Redis on 6391)', () => {
  let s: Stack;
  let pid = 0;
  before(async () => {
    if (redisUp()) throw new Error(`something already listens on ${PORT}; this test needs that port for its own Redis`);
    startRedis();
    await waitFor(async () => redisUp(), 10_000);
    pid = redisPid();
    s = await startStack({ REDIS_URL: `redis://127.0.0.1:${PORT}`, BOXD_REDIS_TIMEOUT_MS: '1500' });
  });
  after(async () => {
    try {
      if (pid) process.kill(pid, 'SIGCONT');
    } catch {
      /* gone */
    }
    if (!redisUp()) startRedis();
    await waitFor(async () => redisUp(), 10_000).catch(() => undefined);
    await s?.close().catch(() => undefined);
    try {
      process.kill(redisPid(), 'SIGKILL');
    } catch {
      /* gone */
    }
    rmSync(dir, { recursive: true, force: true });
  });

  /** Times an API call that must be refused with 503 while Redis does not answer. */
  const refusedFast = async (what: string) => {
    const t = Date.now();
    const res = await s.api.get('/v1/boxes/keep').set(s.auth).timeout(20_000);
    const ms = Date.now() - t;
    assert.equal(res.status, 503, `${what}: ${JSON.stringify(res.body)}`);
    assert.equal(res.body.error.code, 'UNAVAILABLE');
    assert.ok(ms < 5000, `${what}: answered in ${ms} ms`);
    return ms;
  };
  const recovered = async () => {
    await waitFor(async () => (await s.api.get('/v1/boxes/keep').set(s.auth)).status === 200, 60_000, 250);
    const out = await s.api.post('/v1/boxes/keep/exec').set(s.auth).send({ cmd: ['cat', '/tmp/mark'] }).expect(200);
    assert.equal(out.body.stdout, 'kept\n');
  };

  it('frozen (SIGSTOP): the API answers 503 fast, then everything works again', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'keep', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes/keep/exec').set(s.auth).send({ cmd: ['sh', '-c', 'echo kept > /tmp/mark'] }).expect(200);
    process.kill(pid, 'SIGSTOP');
    const until = Date.now() + OUTAGE_MS;
    try {
      await refusedFast('frozen Redis');
      while (Date.now() < until) await sleep(250);
      await refusedFast('still frozen');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await recovered();
  });

  it('killed (SIGKILL) and restarted: 503 fast meanwhile, and nothing written before is lost (AOF)', async () => {
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'late', golden: 'tiny' }).expect(201);
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => !redisUp(), 10_000);
    const until = Date.now() + OUTAGE_MS;
    await refusedFast('Redis down');
    while (Date.now() < until) await sleep(250);
    await refusedFast('still down');
    startRedis();
    await waitFor(async () => redisUp(), 10_000);
    pid = redisPid();
    await recovered();
    const late = await s.api.get('/v1/boxes/late').set(s.auth).expect(200);
    assert.equal(late.body.state, 'running', 'the box created just before the crash is still there');
    // Jobs flow again: a create and a delete go through the host.
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'after', golden: 'tiny' }).expect(201);
    await s.api.delete('/v1/boxes/after').set(s.auth).expect(204);
  });
});
