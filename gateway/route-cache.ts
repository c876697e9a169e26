import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';
import type { BoxEvent, BoxRecord, BoxStore } from '../core/boxes.ts';
import { whenReady } from '../core/redis.ts';

/**
 * Box look-ups for the preview path, cached per gateway and dropped the moment a box changes
 * state: every transition is published on `<prefix>:events` and this cache listens. A read that
 * raced an event is not cached when its record is older than the event (records and events carry
 * the same `version`). The TTL is only a safety net for a missed message (e.g. while Redis reconnects).
 */
export class RouteCache {
  private readonly cache: LRUCache<string, BoxRecord>;
  /** Newest version announced per box, to refuse caching a read that an event overtook. */
  private readonly announced: LRUCache<string, number>;
  private readonly listeners = new Map<string, Set<(e: BoxEvent) => void>>();
  private readonly globalListeners = new Set<(e: BoxEvent) => void>();
  /**
   * Bumped whenever an entry is added or dropped (not when one ages out: see the TTL). While it
   * has not moved, peek() answers what it answered last time, so a caller may skip the call.
   */
  generation = 0;

  constructor(
    private readonly store: BoxStore,
    private readonly sub: Redis,
    opts: { max?: number; ttlMs?: number } = {},
  ) {
    this.cache = new LRUCache({ max: opts.max ?? 10_000, ttl: opts.ttlMs ?? 30_000 });
    this.announced = new LRUCache({ max: opts.max ?? 10_000, ttl: opts.ttlMs ?? 30_000 });
    sub.on('message', (channel: string, message: string) => {
      if (channel !== store.eventsChannel) return;
      let event: BoxEvent;
      try {
        event = JSON.parse(message) as BoxEvent;
      } catch {
        return;
      }
      this.cache.delete(event.name);
      this.generation++;
      this.announced.set(event.name, Math.max(event.version, this.announced.get(event.name) ?? 0));
      for (const fn of this.listeners.get(event.name) ?? []) fn(event);
      for (const fn of this.globalListeners) fn(event);
    });
  }

  /** Subscribes to box events; call once before serving. */
  async start(): Promise<void> {
    await whenReady(this.sub);
    await this.sub.subscribe(this.store.eventsChannel);
  }

  /** The cached record, without reading Redis on a miss. The same object until the box changes (or the TTL). */
  peek(name: string): BoxRecord | undefined {
    return this.cache.get(name);
  }

  async get(name: string): Promise<BoxRecord | undefined> {
    const hit = this.cache.get(name);
    if (hit) return hit;
    const box = await this.store.get(name);
    if (box && box.version >= (this.announced.get(name) ?? 0)) {
      this.cache.set(name, box);
      this.generation++;
    }
    return box;
  }

  /** Calls `fn` for every event of `name` until the returned function is called. */
  on(name: string, fn: (e: BoxEvent) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
      if (!set.size) this.listeners.delete(name);
    };
  }

  onAny(fn: (e: BoxEvent) => void): void {
    this.globalListeners.add(fn);
  }
}
