import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { BoxdError } from './errors.ts';
import { Keys } from './keys.ts';

export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** A new preview token for a private box: shown to the caller once, stored only as its hash. */
export function newPreviewToken(): { token: string; tokenHash: string } {
  const token = `bxp_${randomBytes(24).toString('base64url')}`;
  return { token, tokenHash: hashSecret(token) };
}

/** The account of the bootstrap key (`BOXD_API_KEY`). */
export const DEFAULT_ACCOUNT = 'default';

/**
 * What a key may do:
 *  - `admin`: everything of its account, plus accounts and keys (the bootstrap key);
 *  - `member`: everything of its account (boxes, snapshots, hooks, tasks), no accounts or keys;
 *  - `box`: a key handed to an agent inside one box: create/fork/exec/files/destroy boxes of the
 *    box's account, never keys, accounts, hooks or tasks. Revoked when that box is destroyed.
 */
export type KeyRole = 'admin' | 'member' | 'box';

/** A key as stored (under the sha256 of the key; the key itself is never stored). */
export interface KeyRecord {
  id: string;
  account: string;
  role: KeyRole;
  /** For `box` keys: the box the key was issued to. */
  box?: string;
  createdAt: number;
}

/** Per-account limits; a field left out falls back to the operator's default. */
export interface AccountLimits {
  /** Live boxes. */
  maxBoxes: number;
  /** Concurrent execs; undefined: the operator's `BOXD_MAX_EXECS` applies. */
  maxExecs?: number;
  /** Stored snapshots. */
  maxSnapshots: number;
  /** Webhooks. */
  maxHooks: number;
}

export interface Account extends Partial<AccountLimits> {
  id: string;
  name: string;
  createdAt: number;
}

export const DEFAULT_MAX_SNAPSHOTS = 50;
export const DEFAULT_MAX_HOOKS = 50;

/** Account ids are short, lowercase and fit a Docker repository name (snapshot images carry them). */
export const ACCOUNT_ID = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;

const LIMIT_FIELDS = ['maxBoxes', 'maxExecs', 'maxSnapshots', 'maxHooks'] as const;

/**
 * Accounts, their keys and limits, in Redis:
 *  - `<p>:apikey:<sha256(key)>` → KeyRecord JSON (the only way from a key to its account);
 *  - `<p>:keyid:<id>` → sha256 of the key (to delete a key by id);
 *  - `<p>:account:<id>` hash {name, createdAt, maxBoxes?, maxExecs?, maxSnapshots?, maxHooks?};
 *  - `<p>:accounts` set of account ids; `<p>:acct:<id>:keys` set of key ids;
 *  - `<p>:boxkeys:<account>:<box>` set of ids of the box-scoped keys of one box.
 */
export class Accounts {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly defaultMaxBoxes: number,
  ) {}

  private keyKey(hash: string): string {
    return `{${this.prefix}}:apikey:${hash}`;
  }
  private accountKey(id: string): string {
    return `{${this.prefix}}:account:${id}`;
  }
  private boxKeysKey(account: string, box: string): string {
    return `{${this.prefix}}:boxkeys:${account}:${box}`;
  }

  /** Makes `key` a key of `account` with `role` (idempotent: same key, same record id). */
  async addKey(key: string, account: string, role: KeyRole = 'member', box?: string): Promise<KeyRecord> {
    const hash = hashSecret(key);
    const id = `key-${hash.slice(0, 16)}`;
    const rec: KeyRecord = { id, account, role, ...(box ? { box } : {}), createdAt: Date.now() };
    const m = this.redis
      .multi()
      .set(this.keyKey(hash), JSON.stringify(rec))
      .set(`{${this.prefix}}:keyid:${id}`, hash)
      .sadd(`{${this.prefix}}:acct:${account}:keys`, id)
      .publish(new Keys(this.prefix).keysChanged, hash);
    if (box) m.sadd(this.boxKeysKey(account, box), id);
    await m.exec();
    return rec;
  }

  /** Creates a new random key for `account` (shown once; only its hash is kept). */
  async createKey(account: string, role: KeyRole = 'member'): Promise<string> {
    const key = `bxd_${randomBytes(24).toString('base64url')}`;
    await this.addKey(key, account, role);
    return key;
  }

  /** Like createKey, with the stored record (its id is what DELETE /v1/keys/:id takes). */
  async createKeyRecord(account: string, role: KeyRole = 'member'): Promise<{ key: string; record: KeyRecord }> {
    const key = `bxd_${randomBytes(24).toString('base64url')}`;
    return { key, record: await this.addKey(key, account, role) };
  }

  /** The record of a key, or undefined for an unknown key. */
  async lookup(key: string): Promise<KeyRecord | undefined> {
    const raw = await this.redis.get(this.keyKey(hashSecret(key)));
    if (!raw) return undefined;
    // Keys written before roles existed held the bare account name.
    if (!raw.startsWith('{')) return { id: '', account: raw, role: 'member', createdAt: 0 };
    return JSON.parse(raw) as KeyRecord;
  }

  /** The account a key belongs to, or undefined. */
  async accountOf(key: string): Promise<string | undefined> {
    return (await this.lookup(key))?.account;
  }

  /** Deletes a key by id. With `account`, only a key of that account. Throws KEY_NOT_FOUND. */
  async deleteKey(id: string, account?: string): Promise<void> {
    const hash = await this.redis.get(`{${this.prefix}}:keyid:${id}`);
    const raw = hash ? await this.redis.get(this.keyKey(hash)) : null;
    const rec = raw?.startsWith('{') ? (JSON.parse(raw) as KeyRecord) : undefined;
    if (!hash || !rec || (account !== undefined && rec.account !== account)) throw new BoxdError('KEY_NOT_FOUND', `no key ${id}`);
    // Gateways cache keys for a moment (gateway/key-cache.ts): the message drops it there.
    const m = this.redis
      .multi()
      .del(this.keyKey(hash))
      .del(`{${this.prefix}}:keyid:${id}`)
      .srem(`{${this.prefix}}:acct:${rec.account}:keys`, id)
      .publish(new Keys(this.prefix).keysChanged, hash);
    if (rec.box) m.srem(this.boxKeysKey(rec.account, rec.box), id);
    await m.exec();
  }

  /**
   * A new key for an agent running inside box `boxName` of `accountId` (role `box`): it acts for
   * that account but may only create, fork, exec in, read/write files of, and destroy boxes — never
   * manage keys, accounts, hooks or tasks. Shown once. Revoked by `revokeBoxKeys` when the box is
   * destroyed (Lifecycle.destroy calls it).
   *
   *   const key = await accounts.issueBoxKey(box.account, box.name); // "bxd_…"
   */
  async issueBoxKey(accountId: string, boxName: string): Promise<string> {
    const key = `bxd_${randomBytes(24).toString('base64url')}`;
    await this.addKey(key, accountId, 'box', boxName);
    return key;
  }

  /** Deletes every box-scoped key issued to `boxName` of `accountId`. Idempotent. */
  async revokeBoxKeys(accountId: string, boxName: string): Promise<void> {
    const set = this.boxKeysKey(accountId, boxName);
    const ids = await this.redis.smembers(set);
    for (const id of ids) await this.deleteKey(id, accountId).catch(() => undefined);
    await this.redis.del(set);
  }

  /** Creates an account with a generated id. */
  async createAccount(name: string, limits: Partial<AccountLimits> = {}): Promise<Account> {
    const id = `acct-${randomBytes(6).toString('hex')}`;
    const account: Account = { id, name, createdAt: Date.now(), ...limits };
    await this.saveAccount(account);
    return account;
  }

  /** Writes an account record (and registers the id). */
  async saveAccount(a: Account): Promise<void> {
    const fields: string[] = ['name', a.name, 'createdAt', String(a.createdAt)];
    for (const f of LIMIT_FIELDS) if (a[f] !== undefined) fields.push(f, String(a[f]));
    await this.redis.multi().hset(this.accountKey(a.id), ...fields).sadd(`{${this.prefix}}:accounts`, a.id).exec();
  }

  /** Makes sure the bootstrap account exists (idempotent; keeps its limits). */
  async ensureAccount(id: string, name: string): Promise<void> {
    await this.redis.multi().hsetnx(this.accountKey(id), 'name', name).hsetnx(this.accountKey(id), 'createdAt', String(Date.now())).sadd(`{${this.prefix}}:accounts`, id).exec();
  }

  async account(id: string): Promise<Account | undefined> {
    const h = await this.redis.hgetall(this.accountKey(id));
    if (!h.name) return undefined;
    const a: Account = { id, name: h.name, createdAt: Number(h.createdAt ?? 0) };
    for (const f of LIMIT_FIELDS) if (h[f] !== undefined && h[f] !== '') a[f] = Number(h[f]);
    return a;
  }

  async listAccounts(): Promise<Account[]> {
    const ids = (await this.redis.smembers(`{${this.prefix}}:accounts`)).sort();
    const all = await Promise.all(ids.map((id) => this.account(id)));
    return all.filter((a): a is Account => !!a);
  }

  /** Ids of the keys of an account (never the keys). */
  async keyIds(account: string): Promise<string[]> {
    return (await this.redis.smembers(`{${this.prefix}}:acct:${account}:keys`)).sort();
  }

  /**
   * The limits of an account: its own where set, else the operator's defaults. `maxExecs` is
   * undefined unless the account sets one (the exec limiter then uses `BOXD_MAX_EXECS`).
   */
  async accountLimits(accountId: string): Promise<AccountLimits> {
    const h = await this.redis.hmget(this.accountKey(accountId), ...LIMIT_FIELDS);
    const num = (v: string | null | undefined) => (v === null || v === undefined || v === '' ? undefined : Number(v));
    return {
      maxBoxes: num(h[0]) ?? this.defaultMaxBoxes,
      maxExecs: num(h[1]),
      maxSnapshots: num(h[2]) ?? DEFAULT_MAX_SNAPSHOTS,
      maxHooks: num(h[3]) ?? DEFAULT_MAX_HOOKS,
    };
  }

  async maxBoxes(account: string): Promise<number> {
    return (await this.accountLimits(account)).maxBoxes;
  }

  async setMaxBoxes(account: string, max: number): Promise<void> {
    await this.redis.hset(this.accountKey(account), 'maxBoxes', String(max));
  }
}
