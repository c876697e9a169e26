import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { Keys } from './keys.ts';

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** A new preview token for a private box: shown to the caller once, stored only as its hash. */
export function newPreviewToken(): { token: string; tokenHash: string } {
  const token = `bxp_${randomBytes(24).toString('base64url')}`;
  return { token, tokenHash: hashSecret(token) };
}

/** API keys (stored as sha256) → accounts, and per-account limits. */
export class Accounts {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly defaultMaxBoxes: number,
  ) {
    this.keys = new Keys(prefix);
  }
  private readonly keys: Keys;

  /** Makes `key` a key of `account`. Idempotent. */
  async addKey(key: string, account: string): Promise<void> {
    await this.redis.set(this.keys.apiKey(hashSecret(key)), account);
  }

  /** Creates a new random key for `account` and returns it (shown once). */
  async createKey(account: string): Promise<string> {
    const key = `bxd_${randomBytes(24).toString('base64url')}`;
    await this.addKey(key, account);
    return key;
  }

  /** The account a key belongs to, or undefined. */
  async accountOf(key: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.apiKey(hashSecret(key)))) ?? undefined;
  }

  async maxBoxes(account: string): Promise<number> {
    const v = await this.redis.hget(this.keys.account(account), 'maxBoxes');
    return v ? Number(v) : this.defaultMaxBoxes;
  }

  async setMaxBoxes(account: string, max: number): Promise<void> {
    await this.redis.hset(this.keys.account(account), 'maxBoxes', String(max));
  }
}
