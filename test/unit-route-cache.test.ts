import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import { RouteCache } from '../gateway/route-cache.ts';

const record = (version: number, state: BoxRecord['state']): BoxRecord => ({
  name: 'b', account: 'a', state, imageRef: 'i', ports: [80], hostPorts: { 80: 1 }, public: true, env: {},
  idleTimeoutMs: 0, cpus: 1, memoryMb: 1, createdAt: 0, lastActivityAt: 0, hostId: 'h', version,
});

describe('RouteCache', () => {
  it('caches reads and drops them on an event; never keeps a read an event overtook', async () => {
    const sub = new EventEmitter();
    let reads = 0;
    let current = record(4, 'running');
    let gate: Promise<void> | undefined;
    const store = {
      eventsChannel: 'p:events',
      get: async () => {
        reads++;
        const seen = current; // what Redis answered
        if (gate) await gate; // ...delivered late
        return seen;
      },
    } as unknown as BoxStore;
    const routes = new RouteCache(store, sub as unknown as Redis);
    const event = (version: number, state: BoxRecord['state']) =>
      sub.emit('message', 'p:events', JSON.stringify({ name: 'b', state, from: 'running', version }));

    assert.equal((await routes.get('b'))?.state, 'running');
    await routes.get('b');
    assert.equal(reads, 1, 'the second look-up is a cache hit');
    current = record(5, 'suspended');
    event(5, 'suspended');
    assert.equal((await routes.get('b'))?.state, 'suspended', 'the event dropped the entry');

    // A transition lands while a read of the old record is on its way back.
    event(5, 'suspended'); // (drop the entry so the next look-up reads)
    let open!: () => void;
    gate = new Promise((r) => (open = r));
    const racing = routes.get('b');
    await new Promise((r) => setImmediate(r));
    current = record(6, 'running');
    event(6, 'running');
    open();
    assert.equal((await racing)?.version, 5, 'the late read answers what it saw');
    gate = undefined;
    assert.equal((await routes.get('b'))?.version, 6, 'but it was not cached over the newer event');
  });
});
