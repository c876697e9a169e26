import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';
import type { BoxEvent, BoxRecord, BoxStore } from '../core/boxes.ts';

/**
 * Box look-ups for the preview path, cached per gateway and dropped the moment a box changes
 * state: every transition is published on `<prefix>:events` and this cache listens. The TTL is
 * only a safety net for a missed message (e.g. while Redis reconnects).
 */
export class RouteCache {
  private readonly cache: LRUCache<string, BoxRecord>;
  private readonly listeners = new Map<string, Set<(e: BoxEvent) => void>>();
  private readonly globalListeners = new Set<(e: BoxEvent) => void>();

  constructor(
    private readonly store: BoxStore,
    sub: Redis,
    opts: { max?: number; ttlMs?: number } = {},
  ) {
    this.cache = new LRUCache({ max: opts.max ?? 10_000, ttl: opts.ttlMs ?? 30_000 });
    sub.on('message', (channel: string, message: string) => {
      if (channel !== store.eventsChannel) return;
      let event: BoxEvent;
      try {
        event = JSON.parse(message) as BoxEvent;
      } catch {
        return;
      }
      this.cache.delete(event.name);
      for (const fn of this.listeners.get(event.name) ?? []) fn(event);
      for (const fn of this.globalListeners) fn(event);
    });
  }

  /** Subscribes to box events; call once before serving. */
  static async subscribe(sub: Redis, store: BoxStore): Promise<void> {
    await sub.subscribe(store.eventsChannel);
  }

  async get(name: string): Promise<BoxRecord | undefined> {
    const hit = this.cache.get(name);
    if (hit) return hit;
    const box = await this.store.get(name);
    if (box) this.cache.set(name, box);
    return box;
  }

  /** Drops an entry (e.g. after the proxy found its port dead). */
  drop(name: string): void {
    this.cache.delete(name);
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
