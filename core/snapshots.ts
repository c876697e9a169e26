import type { Redis } from 'ioredis';
import { BoxdError } from './errors.ts';
import { Keys } from './keys.ts';

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
    return new Keys(this.prefix).snapshots(account);
  }

  /** The image a snapshot of an account lives in (deterministic, so retries reuse it). */
  imageFor(account: string, name: string): string {
    return `boxd-snap/${this.prefix}-${account}-${name}:latest`.toLowerCase();
  }

  /** Reserves a name; SNAPSHOT_EXISTS when taken. */
  async reserve(s: Snapshot): Promise<void> {
    const ok = await this.redis.hsetnx(this.key(s.account), s.name, JSON.stringify(s));
    if (!ok) throw new BoxdError('SNAPSHOT_EXISTS', `a snapshot named "${s.name}" already exists`);
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
