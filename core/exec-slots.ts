import type { Redis } from 'ioredis';
import { Keys } from './keys.ts';

// KEYS[1] the account's ZSET of running exec ids, scored by when their slot expires;
// KEYS[2] the account's hash (its own maxExecs, when set, is the cap).
// ARGV: now, expiry of the new slot, exec id, the operator's cap.
// Returns {1, cap} when taken, {0, cap} at the cap.
const TAKE = `
local cap = tonumber(redis.call('HGET', KEYS[2], 'maxExecs') or '') or tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= cap then return {0, cap} end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return {1, cap}
`;

/**
 * The per-account cap on concurrent execs, shared by every gateway: a ZSET of exec ids whose
 * scores are the time their slot lapses (timeout plus a margin), so a gateway that died
 * mid-exec leaks nothing for long. One round trip to take a slot (the account's own cap read in
 * the same script); the release is not awaited.
 */
export class ExecSlots {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(account: string): string {
    return new Keys(this.prefix).execs(account);
  }

  /**
   * Takes a slot for `execId` under the account's own `maxExecs` when it has one, else
   * `defaultCap`. `ok` is false when the account already runs `cap` execs.
   */
  async take(account: string, execId: string, defaultCap: number, holdMs: number): Promise<{ ok: boolean; cap: number }> {
    const now = Date.now();
    const keys = new Keys(this.prefix);
    const [ok, cap] = (await this.redis.eval(TAKE, 2, keys.execs(account), keys.account(account), now, now + holdMs, execId, defaultCap)) as [number, number];
    return { ok: ok === 1, cap };
  }

  release(account: string, execId: string): void {
    void this.redis.zrem(this.key(account), execId).catch(() => undefined);
  }

  async running(account: string): Promise<number> {
    await this.redis.zremrangebyscore(this.key(account), '-inf', Date.now());
    return this.redis.zcard(this.key(account));
  }
}
