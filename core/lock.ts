import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

// KEYS[1]: the lock. ARGV: token, ttl ms. Takes a free lock or extends one we hold.
const ACQUIRE = `
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`;

// KEYS[1]: the lock. ARGV: token. Deletes it only when we hold it.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * A lease in Redis: whoever holds `key` does the work; the lease lapses after `ttlMs` unless
 * renewed, so a holder that dies frees it. Not a fencing lock: work under it must be idempotent.
 */
export class RedisLock {
  readonly token = randomUUID();

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly ttlMs: number,
  ) {}

  /** Takes the lease or renews ours; false when another holder has it. */
  async acquire(): Promise<boolean> {
    return (await this.redis.eval(ACQUIRE, 1, this.key, this.token, String(this.ttlMs))) === 1;
  }

  /** Gives the lease up if we hold it. Idempotent. */
  async release(): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.key, this.token);
  }
}
