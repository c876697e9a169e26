import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import type { BoxSummary } from '../core/boxes.ts';
import { HostClient } from '../core/host-client.ts';
import type { HostInfo } from '../core/jobs.ts';
import { Heartbeat } from '../host/heartbeat.ts';
import { log, sleep } from './helpers.ts';

const box = (name: string, state: BoxSummary['state'] = 'running'): BoxSummary => ({
  name, state, cpus: 1, memoryMb: 100, idleTimeoutMs: 0, lastActivityAt: 0, hostId: 'h', runtimeId: undefined,
});

/** A heartbeat over an in-memory box list and a fake Redis whose writes take `writeMs`. */
function rig(debounceMs: number, writeMs = 20) {
  const boxes: BoxSummary[] = [];
  const writes: HostInfo[] = [];
  const dockerAsks = { n: 0 };
  let busy = 0;
  let maxBusy = 0;
  let deleted = false;
  const redis = {
    hset: async (_k: string, _f: string, v: string) => {
      busy++;
      maxBusy = Math.max(maxBusy, busy);
      await sleep(writeMs);
      writes.push(JSON.parse(v) as HostInfo);
      busy--;
      return 1;
    },
    hdel: async () => ((deleted = true), 1),
  } as unknown as Pick<Redis, 'hset' | 'hdel'>;
  const hb = new Heartbeat({
    redis, store: { summaries: async () => [...boxes] }, runtime: { hasImage: async () => ((dockerAsks.n++), true) },
    prefix: 'unit-hb', hostId: 'h', capacity: { cpus: 1000, memoryMb: 1_000_000 }, suspendedWeight: 0.1, deadMs: 60_000,
    debounceMs, goldens: () => new Map([['tiny', { tag: 'boxd-golden/tiny' }]]), log,
  });
  return { hb, boxes, writes, dockerAsks, maxBusy: () => maxBusy, deleted: () => deleted };
}

describe('Heartbeat change beats', () => {
  it('a burst of 100 creates over ~1 s makes a bounded number of writes, never two at once, the last one counting every box', async () => {
    const r = rig(100);
    await r.hb.beat();
    const asked: Promise<void>[] = [];
    const countAt: number[] = [];
    const t0 = Date.now();
    for (let i = 0; i < 100; i++) {
      r.boxes.push(box(`b${i}`, 'creating'));
      const n = i + 1;
      // Resolves only after a beat that started after this change: it counts this box.
      asked.push(r.hb.soon().then(() => void countAt.push(r.writes.at(-1)!.boxes!.running - n)));
      await sleep(10);
    }
    await Promise.all(asked);
    const elapsed = Date.now() - t0;
    const changeBeats = r.writes.length - 1;
    // Without the debounce this is 100; with it, change beats start at least 100 ms apart.
    assert.ok(changeBeats >= 1 && changeBeats <= Math.floor(elapsed / 100) + 1, `${changeBeats} change beats for 100 changes in ${elapsed} ms`);
    assert.equal(r.maxBusy(), 1, 'beats never overlap');
    assert.ok(countAt.every((d) => d >= 0), 'each caller was answered by a beat that counted its box');
    const last = r.writes.at(-1)!;
    assert.equal(last.boxes!.running, 100);
    assert.equal(last.committed!.cpus, 100);
    assert.equal(last.creating!.length, 100);
    assert.equal(r.dockerAsks.n, 1, 'change beats reuse the goldens of the last full beat');
  });

  it('a lone change is written at once (leading edge), then changes meanwhile after the debounce (trailing edge)', async () => {
    const r = rig(1000, 5);
    await r.hb.beat();
    await sleep(1050);
    r.boxes.push(box('a'));
    const t0 = Date.now();
    await r.hb.soon();
    assert.equal(r.writes.at(-1)!.boxes!.running, 1);
    const first = Date.now() - t0;
    r.boxes.push(box('b'));
    const t1 = Date.now();
    await r.hb.soon();
    assert.equal(r.writes.at(-1)!.boxes!.running, 2);
    assert.ok(Date.now() - t1 >= 950, 'the second change beat waited for the debounce');
    assert.ok(first < 950, `the first did not wait for it (${first} ms)`);
    assert.equal(r.writes.length, 3);
  });

  it('stop waits for a beat in flight, then removes the record; no beat after', async () => {
    const r = rig(10, 50);
    await r.hb.beat();
    r.boxes.push(box('a'));
    const inFlight = r.hb.soon();
    await sleep(20);
    await r.hb.stop();
    assert.ok(r.deleted());
    await inFlight;
    const n = r.writes.length;
    r.boxes.push(box('b'));
    await r.hb.soon();
    await sleep(50);
    assert.equal(r.writes.length, n, 'nothing written after stop');
  });
});

describe('HostClient placements', () => {
  it('counts its own placements until the host’s heartbeat lists them as creating or their create answers, never twice', async () => {
    const now = Date.now();
    let record: HostInfo = {
      id: 'h', startedAt: 0, heartbeatAt: now, capacity: { cpus: 3, memoryMb: 3000 }, committed: { cpus: 1, memoryMb: 1000 },
      boxes: { running: 1, suspended: 0, other: 0 }, creating: [], goldens: ['tiny'],
    };
    const redis = { hgetall: async () => ({ h: JSON.stringify(record) }) } as unknown as Redis;
    const hosts = new HostClient(redis, 'redis://unused', 'unit-hc', 1000, { deadMs: 15_000, overcommit: 1, cpuOvercommit: 1 });
    const need = { cpus: 1, memoryMb: 1000 };
    assert.equal(await hosts.pickHost(need, { box: 'a' }), 'h');
    assert.equal(await hosts.pickHost(need, { box: 'b' }), 'h');
    // a and b fill it: the heartbeat does not know them yet, this gateway does.
    await assert.rejects(hosts.pickHost(need, { box: 'c' }), { code: 'NO_CAPACITY' });
    // A beat right after lists a as creating: counted once, not by both.
    record = { ...record, heartbeatAt: now + 100, committed: { cpus: 2, memoryMb: 2000 }, creating: ['a'] };
    await assert.rejects(hosts.pickHost(need, { box: 'c' }), { code: 'NO_CAPACITY' });
    // b's create answered (its host beat first): the heartbeat alone counts it from now.
    record = { ...record, heartbeatAt: now + 200, committed: { cpus: 3, memoryMb: 3000 }, creating: [] };
    hosts.unplace('h', 'b');
    await assert.rejects(hosts.pickHost(need, { box: 'c' }), { code: 'NO_CAPACITY' });
    // A delete: the next beat frees a box's share, and a create fits at once.
    record = { ...record, heartbeatAt: now + 300, committed: { cpus: 2, memoryMb: 2000 } };
    assert.equal(await hosts.pickHost(need, { box: 'c' }), 'h');
    // A probe places nothing.
    hosts.unplace('h', 'c');
    assert.equal(await hosts.pickHost(need, { probe: true }), 'h');
    assert.equal(await hosts.pickHost(need, { box: 'd' }), 'h');
    await hosts.close();
  });
});
