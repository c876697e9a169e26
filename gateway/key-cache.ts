import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { hashSecret, type Accounts, type KeyRecord } from '../core/accounts.ts';
import { Keys } from '../core/keys.ts';
import { whenReady } from '../core/redis.ts';

/**
 * The API keys requests came with, remembered for at most `ttlMs` (1 s) so a burst of calls
 * does not ask Redis for the same key each time. Only known keys are kept: a new key works at
 * once. A deleted or rewritten key stops working at once on every gateway: Accounts publishes
 * its hash on `<prefix>:keys:changed` (in the same MULTI as the write), which drops it here. The
 * TTL bounds what a message lost while the subscriber reconnects can cost; a reconnect also
 * empties the cache.
 */
export class KeyCache implements Pick<Accounts, 'lookup'> {
  private readonly cache: LRUCache<string, KeyRecord>;
  private readonly channel: string;

  constructor(
    private readonly accounts: Pick<Accounts, 'lookup'>,
    private readonly sub: Redis,
    prefix: string,
    ttlMs = 1000,
  ) {
    this.cache = new LRUCache({ max: 10_000, ttl: ttlMs });
    this.channel = new Keys(prefix).keysChanged;
    sub.on('message', (channel: string, hash: string) => {
      if (channel === this.channel) this.cache.delete(hash);
    });
    sub.on('ready', () => this.cache.clear());
  }

  /** Subscribes to key changes; call once before serving. */
  async start(): Promise<void> {
    await whenReady(this.sub);
    await this.sub.subscribe(this.channel);
  }

  async lookup(key: string): Promise<KeyRecord | undefined> {
    const hash = hashSecret(key);
    const hit = this.cache.get(hash);
    if (hit) return hit;
    const rec = await this.accounts.lookup(key);
    if (rec) this.cache.set(hash, rec);
    return rec;
  }
}
