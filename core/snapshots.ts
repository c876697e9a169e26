import type { Redis } from 'ioredis';
import { BoxdError, LimitError } from './errors.ts';

const RESERVE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'EXISTS' end
local limit = tonumber(ARGV[3])
if limit >= 0 and redis.call('HLEN', KEYS[1]) >= limit then return 'LIMIT' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'OK'`;

/** Repository of an account's snapshot images (Docker repository names are lowercase). */
export const snapshotRepo = (prefix: string, account: string) => `boxd-snap/${prefix}-${account}`.toLowerCase();

/** Image of a fork: the account's fork repository, tagged with the child's (globally unique) name. */
export const forkImage = (prefix: string, account: string, child: string) => `boxd-fork/${prefix}-${account}`.toLowerCase() + `:${child}`;

/** A named, account-scoped filesystem image boxes can be created from (on the host that has it). */
export interface Snapshot {
  name: string;
  account: string;
  image: string;
  box: string;
  hostId: string;
  ports: number[];
  golden?: string;
  createdAt: number;
}

/** Snapshot records: one Redis hash per account, name → JSON. */
export class Snapshots {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(account: string): string {
    return `{${this.prefix}}:snap:${account}`;
  }

  /**
   * The image a snapshot of an account lives in (deterministic, so retries reuse it): one
   * repository per account and the snapshot's name as the tag, so two accounts' names never
   * meet in one image and an image name tells whose it is.
   */
  imageFor(account: string, name: string): string {
    return `${snapshotRepo(this.prefix, account)}:${name}`;
  }

  /** Whether `image` is one of `account`'s snapshot images (by name; it may be deleted since). */
  ownsImage(account: string, image: string): boolean {
    return image.startsWith(`${snapshotRepo(this.prefix, account)}:`);
  }

  /**
   * Reserves a name; SNAPSHOT_EXISTS when taken, LIMIT_EXCEEDED when the account already has
   * `limit` snapshots (-1: no limit). Atomic.
   */
  async reserve(s: Snapshot, limit = -1): Promise<void> {
    const out = await this.redis.eval(RESERVE, 1, this.key(s.account), s.name, JSON.stringify(s), String(limit));
    if (out === 'LIMIT') throw new LimitError(`account "${s.account}" already has ${limit} snapshots; delete one first`);
    if (out === 'EXISTS') throw new BoxdError('SNAPSHOT_EXISTS', `a snapshot named "${s.name}" already exists`);
  }

  async get(account: string, name: string): Promise<Snapshot | undefined> {
    const raw = await this.redis.hget(this.key(account), name);
    return raw ? (JSON.parse(raw) as Snapshot) : undefined;
  }

  async require(account: string, name: string): Promise<Snapshot> {
    const s = await this.get(account, name);
    if (!s) throw new BoxdError('SNAPSHOT_NOT_FOUND', `no snapshot named "${name}"`);
    return s;
  }

  async list(account: string): Promise<Snapshot[]> {
    const all = await this.redis.hvals(this.key(account));
    return all.map((v) => JSON.parse(v) as Snapshot).sort((a, b) => a.createdAt - b.createdAt);
  }

  async remove(account: string, name: string): Promise<void> {
    await this.redis.hdel(this.key(account), name);
  }

  /** Whether any snapshot record still points at `image`. */
  async referenced(account: string, image: string): Promise<boolean> {
    return (await this.list(account)).some((s) => s.image === image);
  }
}
