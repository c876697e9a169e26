import type { Redis } from 'ioredis';
import { BoxdError } from './errors.ts';
import type { NetworkPolicy } from './network-policy.ts';

/**
 * Goldens an account made itself: a prepared box or one of its snapshots promoted to an image
 * with its own warm pool. They live on the host that holds the image and are visible to their
 * account only. Box records and pool lists name them by their key `<account>/<name>` (a `/` never
 * appears in an operator golden's name), so two accounts may both have a golden called `app`.
 */
export interface AccountGolden {
  name: string;
  account: string;
  /** `<account>/<name>`: what box records, pool lists and pool stats carry. */
  key: string;
  image: string;
  hostId: string;
  ports: number[];
  poolSize: number;
  idleTimeoutMs: number;
  cpus: number;
  memoryMb: number;
  /** The source box's disk quota and egress policy, which its pooled boxes get too. */
  diskMb?: number;
  network?: NetworkPolicy;
  from: { box?: string; snapshot?: string };
  createdAt: number;
  /** False while the image is being made. */
  ready: boolean;
}

export const accountGoldenKey = (account: string, name: string): string => `${account}/${name}`;

/** The name a user knows a golden by: an account golden's key without its account. */
export const goldenDisplayName = (key: string): string => key.slice(key.indexOf('/') + 1);

/** Account golden records: one Redis hash, key → JSON. */
export class AccountGoldens {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private get hash(): string {
    return `{${this.prefix}}:agoldens`;
  }

  /** The image of an account's golden (deterministic, so a retried job reuses it). */
  imageFor(account: string, name: string): string {
    return `boxd-ugolden/${this.prefix}-${account}-${name}:latest`.toLowerCase();
  }

  /** Reserves the name in the account; GOLDEN_EXISTS when taken. */
  async reserve(g: AccountGolden): Promise<void> {
    const ok = await this.redis.hsetnx(this.hash, g.key, JSON.stringify(g));
    if (!ok) throw new BoxdError('GOLDEN_EXISTS', `a golden named "${g.name}" already exists`);
  }

  async save(g: AccountGolden): Promise<void> {
    await this.redis.hset(this.hash, g.key, JSON.stringify(g));
  }

  async get(key: string): Promise<AccountGolden | undefined> {
    const raw = await this.redis.hget(this.hash, key);
    return raw ? (JSON.parse(raw) as AccountGolden) : undefined;
  }

  async all(): Promise<AccountGolden[]> {
    return (await this.redis.hvals(this.hash)).map((v) => JSON.parse(v) as AccountGolden);
  }

  async list(account: string): Promise<AccountGolden[]> {
    return (await this.all()).filter((g) => g.account === account).sort((a, b) => a.createdAt - b.createdAt);
  }

  async remove(key: string): Promise<void> {
    await this.redis.hdel(this.hash, key);
  }

  /** Whether any golden record still points at `image`. */
  async imageInUse(image: string): Promise<boolean> {
    return (await this.all()).some((g) => g.image === image);
  }
}
