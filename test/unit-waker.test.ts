import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { BoxRecord } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import type { HostJob } from '../core/jobs.ts';
import { Activity } from '../gateway/activity.ts';
import type { RouteCache } from '../gateway/route-cache.ts';
import { Waker } from '../gateway/waker.ts';

const box = (state: BoxRecord['state']): BoxRecord => ({
  name: 'b', account: 'a', state, imageRef: 'i', ports: [80], hostPorts: { 80: 1 }, public: true, env: {},
  idleTimeoutMs: 0, cpus: 1, memoryMb: 1, createdAt: 0, lastActivityAt: 0, hostId: 'h', version: 1,
});

/** A route cache over one mutable record, with events. */
function routesOver(record: { current: BoxRecord }): RouteCache {
  const events = new EventEmitter();
  return {
    get: async () => record.current,
    on: (_n: string, fn: () => void) => (events.on('e', fn), () => events.off('e', fn)),
  } as unknown as RouteCache;
}

describe('Waker', () => {
  it('shares one resume among concurrent waiters', async () => {
    const record = { current: box('suspended') };
    const calls: HostJob[] = [];
    const waker = new Waker({
      routes: routesOver(record),
      resume: async (_h: string, name: string) => { calls.push({ op: 'resume', name } as never); await new Promise((r) => setTimeout(r, 30)); record.current = box('running'); },
      timeoutMs: 2000,
      maxWaiters: 100,
    });
    const got = await Promise.all(Array.from({ length: 50 }, () => waker.ensureRunning(box('suspended'))));
    assert.equal(calls.length, 1);
    assert.ok(got.every((b) => b.state === 'running'));
  });

  it('refuses waiters past the bound at once, while those within it are served', async () => {
    const record = { current: box('suspended') };
    let release!: () => void;
    const resumed = new Promise<void>((r) => (release = r));
    const waker = new Waker({
      routes: routesOver(record),
      // A resume that finishes only when the test says so: no waiter can time out meanwhile.
      resume: async () => { await resumed; record.current = box('running'); },
      timeoutMs: 60_000,
      maxWaiters: 3,
    });
    const pending = Array.from({ length: 5 }, () => waker.ensureRunning(box('suspended')).then(() => 'ok', (e: BoxdError) => e));
    // The two beyond the bound are refused before the resume finishes, with the bound's message.
    const refused = await Promise.race([Promise.all(pending.slice(3)), new Promise((r) => setTimeout(() => r('still waiting'), 30_000))]);
    assert.ok(Array.isArray(refused), 'waiters past the bound are answered without waiting for the wake');
    for (const e of refused as BoxdError[]) {
      assert.equal(e.code, 'UNAVAILABLE');
      assert.match(e.message, /too many requests are waiting/);
    }
    release();
    assert.deepEqual(await Promise.all(pending.slice(0, 3)), ['ok', 'ok', 'ok'], 'the three within the bound are served');
  });

  it('answers 503 (UNAVAILABLE) past the wait bound', async () => {
    const record = { current: box('suspended') };
    const waker = new Waker({
      routes: routesOver(record),
      resume: () => new Promise(() => undefined), // a host that never answers
      timeoutMs: 200,
      maxWaiters: 10,
    });
    await assert.rejects(waker.ensureRunning(box('suspended')), (e) => (e as BoxdError).code === 'UNAVAILABLE' && /did not wake/.test((e as Error).message));
  });
});

describe('Activity', () => {
  it('writes once per busy box per flush, not once per request', async () => {
    const touched: string[] = [];
    const a = new Activity({ touch: async (n: string) => void touched.push(n) });
    for (let i = 0; i < 1000; i++) {
      a.begin('x');
      a.end('x');
    }
    a.begin('ws'); // an open WebSocket
    await a.flush();
    assert.deepEqual(touched.sort(), ['ws', 'x']);
    touched.length = 0;
    await a.flush();
    assert.deepEqual(touched, ['ws'], 'the open WebSocket keeps its box active; the finished requests do not');
  });
});
