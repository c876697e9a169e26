import type { Redis } from 'ioredis';
import { Keys } from './keys.ts';

// KEYS[1] the account's ZSET of running exec ids, scored by when their slot expires.
// ARGV: now, expiry of the new slot, exec id, cap. Returns 1 when taken, 0 at the cap.
const TAKE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
`;

/**
 * The per-account cap on concurrent execs, shared by every gateway: a ZSET of exec ids whose
 * scores are the time their slot lapses (timeout plus a margin), so a gateway that died
 * mid-exec leaks nothing for long. One round trip to take a slot; the release is not awaited.
 */
export class ExecSlots {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(account: string): string {
    return new Keys(this.prefix).execs(account);
  }

  /** Takes a slot for `execId`; false when the account already runs `cap` execs. */
  async take(account: string, execId: string, cap: number, holdMs: number): Promise<boolean> {
    const now = Date.now();
    const r = await this.redis.eval(TAKE, 1, this.key(account), now, now + holdMs, execId, cap);
    return r === 1;
  }

  release(account: string, execId: string): void {
    void this.redis.zrem(this.key(account), execId).catch(() => undefined);
  }

  async running(account: string): Promise<number> {
    await this.redis.zremrangebyscore(this.key(account), '-inf', Date.now());
    return this.redis.zcard(this.key(account));
  }
}
