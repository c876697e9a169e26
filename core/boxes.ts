import type { Redis } from 'ioredis';
import type { NetworkPolicy } from './network-policy.ts';
import { BoxExistsError, BoxNotFoundError, BoxStateError, LimitError } from './errors.ts';
import { Keys } from './keys.ts';

export type BoxOrigin = 'pool' | 'fork-pool' | 'fork-commit';

/** `lost`: the owning host stopped heartbeating; the box may come back when the host does. */
export type BoxState = 'creating' | 'running' | 'suspended' | 'destroyed' | 'error' | 'lost';

/** A box as stored in Redis. Runtime details stay behind `runtimeId` (an opaque handle). */
export interface BoxRecord {
  name: string;
  account: string;
  state: BoxState;
  /** Golden the box came from, if any. */
  golden?: string;
  /** Image the user asked for (`image`), or the snapshot name (`snapshot`). */
  image?: string;
  snapshot?: string;
  /** Image reference the box was created from (a golden tag, an image, a snapshot image). */
  imageRef: string;
  ports: number[];
  /** Box port → port on 127.0.0.1 of the owning host. */
  hostPorts: Record<number, number>;
  public: boolean;
  /** sha256 of the preview token of a private box. */
  tokenHash?: string;
  parent?: string;
  env: Record<string, string>;
  idleTimeoutMs: number;
  cpus: number;
  memoryMb: number;
  /** Disk quota of the box's writable filesystem in MiB; unset: the host's default. */
  diskMb?: number;
  /** Egress policy; unset: `open`. */
  network?: NetworkPolicy;
  createdAt: number;
  lastActivityAt: number;
  hostId: string;
  runtimeId?: string;
  error?: string;
  /**
   * How the box was made, when not a plain create: claimed from a warm pool, forked onto a
   * pool box (its parent's changes copied in) or forked by committing the parent.
   */
  origin?: BoxOrigin;
  /** Suspended by a user's call (not for idleness): gateways do not wake it for requests already held, only for new traffic. */
  manualSuspend?: boolean;
  /** State the box had when its host was declared dead (set while `lost`). */
  lostFrom?: BoxState;
  /** Bumped by every transition; caches compare it. */
  version: number;
}

/** What `BoxStore.summaries` reads of a box: defaults as in a full record. */
export type BoxSummary = Pick<BoxRecord, 'name' | 'state' | 'cpus' | 'memoryMb' | 'idleTimeoutMs' | 'lastActivityAt' | 'hostId' | 'runtimeId'>;
const SUMMARY_FIELDS = ['name', 'state', 'cpus', 'memoryMb', 'idleTimeoutMs', 'lastActivityAt', 'hostId', 'runtimeId'] as const;

function summaryOf(v: (string | null)[] | undefined): BoxSummary | undefined {
  const [name, state, cpus, memoryMb, idleTimeoutMs, lastActivityAt, host, runtimeId] = v ?? [];
  if (!name) return undefined;
  return {
    name,
    state: (state ?? 'error') as BoxState,
    cpus: Number(cpus ?? 2),
    memoryMb: Number(memoryMb ?? 8192),
    idleTimeoutMs: Number(idleTimeoutMs ?? 0),
    lastActivityAt: Number(lastActivityAt ?? 0),
    hostId: host ?? '',
    runtimeId: runtimeId || undefined,
  };
}

/** What a new record needs; the rest has defaults. */
export type NewBox = Omit<BoxRecord, 'state' | 'version' | 'hostPorts' | 'createdAt' | 'lastActivityAt'> &
  Partial<Pick<BoxRecord, 'hostPorts' | 'createdAt' | 'lastActivityAt'>>;

/**
 * What a caller saw of a record a moment ago (the gateway, when it sends an exec or a resume to
 * the box's host): enough to act on the same record without reading it again.
 */
export type SeenRecord = Pick<BoxRecord, 'state' | 'version' | 'runtimeId'>;

/** Emitted on `<prefix>:events` by every transition, atomically with it. */
export interface BoxEvent {
  name: string;
  state: BoxState;
  from: BoxState | null;
  version: number;
}

/** Account of the warm pool's boxes (not a tenant: its boxes are invisible and not counted). */
export const POOL_ACCOUNT = '_pool';
export const boxCountsKey = (prefix: string) => new Keys(prefix).boxCounts;

// The scripts below spell POOL_ACCOUNT ('_pool') literally.

// Every script declares every key it touches (KEYS), all under the instance's hash tag, so
// they run unchanged on a Redis Cluster. Lost boxes stay in their account's set (the owner
// still sees them) but are also in the account's lost set, and the limit counts the difference.
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 'EXISTS' end
local limit = tonumber(ARGV[1])
if limit >= 0 and redis.call('SCARD', KEYS[2]) - redis.call('SCARD', KEYS[5]) >= limit then return 'LIMIT' end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if redis.call('HGET', KEYS[1], 'account') ~= '_pool' then redis.call('HINCRBY', KEYS[6], 'creating', 1) end
redis.call('PUBLISH', ARGV[3], cjson.encode({name = ARGV[2], state = 'creating', from = false, version = 1}))
return 'OK'`;

const TRANSITION = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'MISSING', ''} end
if ARGV[2] ~= '*' and not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then
  return {'CONFLICT', state}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[3])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
if redis.call('HGET', KEYS[1], 'account') ~= '_pool' then
  redis.call('HINCRBY', KEYS[2], state, -1)
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[4], state = ARGV[3], from = state, version = version}))
return {'OK', state}`;

// KEYS: box, counts. ARGV: channel, name, state, version, runtimeId ('' for none) the record must
// still have, state to go to, fields... Returns the record after the move (HGETALL), or false.
const TRANSITION_SEEN = `
local cur = redis.call('HMGET', KEYS[1], 'state', 'version', 'runtimeId')
if cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4] or (cur[3] or '') ~= ARGV[5] then return false end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[6])
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
if redis.call('HGET', KEYS[1], 'account') ~= '_pool' then
  redis.call('HINCRBY', KEYS[2], ARGV[3], -1)
  redis.call('HINCRBY', KEYS[2], ARGV[6], 1)
end
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], state = ARGV[6], from = ARGV[3], version = version}))
return redis.call('HGETALL', KEYS[1])`;

// KEYS: box, account's lost set, counts. ARGV: channel, name, account, 'lose' | 'found', reason | state to return to.
// Losing keeps the state the box had (lostFrom); finding puts it back (or the state given).
const LOSE = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'MISSING' end
if redis.call('HGET', KEYS[1], 'account') ~= ARGV[3] then return 'RETRY' end
local version
if ARGV[4] == 'lose' then
  if state == 'lost' or state == 'error' then return 'SAME' end
  version = redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('HSET', KEYS[1], 'state', 'lost', 'lostFrom', state, 'error', ARGV[5])
  redis.call('SADD', KEYS[2], ARGV[2])
  if ARGV[3] ~= '_pool' then
    redis.call('HINCRBY', KEYS[3], state, -1)
    redis.call('HINCRBY', KEYS[3], 'lost', 1)
  end
  redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], state = 'lost', from = state, version = version}))
else
  if state ~= 'lost' then return 'SAME' end
  version = redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('HSET', KEYS[1], 'state', ARGV[5], 'lostFrom', '', 'error', '')
  redis.call('SREM', KEYS[2], ARGV[2])
  if ARGV[3] ~= '_pool' then
    redis.call('HINCRBY', KEYS[3], 'lost', -1)
    redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  end
  redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], state = ARGV[5], from = state, version = version}))
end
return 'OK'`;

// KEYS: box, every-box set, account set, account's lost set, host set, counts. ARGV: name, channel, account, host.
// The caller read account and host first; if the record says otherwise it reads again.
const REMOVE = `
local account = redis.call('HGET', KEYS[1], 'account')
if not account then return 'MISSING' end
if account ~= ARGV[3] or redis.call('HGET', KEYS[1], 'hostId') ~= ARGV[4] then return 'RETRY' end
local state = redis.call('HGET', KEYS[1], 'state')
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('DEL', KEYS[1])
if account ~= '_pool' then redis.call('HINCRBY', KEYS[6], state, -1) end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({name = ARGV[1], state = 'destroyed', from = state, version = version}))
return 'OK'`;

const UPDATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`;

const TOUCH = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'lastActivityAt') or '-1')
if cur < 0 then return 0 end
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'lastActivityAt', ARGV[1]) end
return 1`;

type Fields = Partial<Omit<BoxRecord, 'name' | 'state' | 'version'>>;

/** Flattens fields for HSET: objects as JSON, everything else as text, undefined left out. */
export function encodeFields(fields: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    out.push(k, typeof v === 'object' ? JSON.stringify(v) : String(v));
  }
  return out;
}

function decode(h: Record<string, string>): BoxRecord | undefined {
  if (!h.name) return undefined;
  const json = <T>(s: string | undefined, d: T): T => (s ? (JSON.parse(s) as T) : d);
  return {
    name: h.name,
    account: h.account ?? 'default',
    state: (h.state ?? 'error') as BoxState,
    golden: h.golden || undefined,
    image: h.image || undefined,
    snapshot: h.snapshot || undefined,
    imageRef: h.imageRef ?? '',
    ports: json(h.ports, [] as number[]),
    hostPorts: json(h.hostPorts, {} as Record<number, number>),
    public: h.public !== 'false',
    tokenHash: h.tokenHash || undefined,
    parent: h.parent || undefined,
    env: json(h.env, {} as Record<string, string>),
    idleTimeoutMs: Number(h.idleTimeoutMs ?? 0),
    cpus: Number(h.cpus ?? 2),
    memoryMb: Number(h.memoryMb ?? 8192),
    diskMb: h.diskMb ? Number(h.diskMb) : undefined,
    network: h.network ? (h.network.startsWith('{') ? json(h.network, 'open' as NetworkPolicy) : (h.network as NetworkPolicy)) : undefined,
    createdAt: Number(h.createdAt ?? 0),
    lastActivityAt: Number(h.lastActivityAt ?? 0),
    hostId: h.hostId ?? '',
    runtimeId: h.runtimeId || undefined,
    error: h.error || undefined,
    origin: (h.origin || undefined) as BoxOrigin | undefined,
    manualSuspend: h.manualSuspend === 'true' || undefined,
    lostFrom: (h.lostFrom || undefined) as BoxState | undefined,
    version: Number(h.version ?? 0),
  };
}

/**
 * Box records in Redis. Every state change is one Lua script: it checks the current state,
 * writes, bumps `version` and publishes a BoxEvent, so a wake and an auto-suspend racing each
 * other cannot both win and no cache misses a change.
 */
export class BoxStore {
  readonly keys: Keys;

  constructor(
    private readonly redis: Redis,
    readonly prefix: string,
  ) {
    this.keys = new Keys(prefix);
  }

  key(name: string): string {
    return this.keys.box(name);
  }
  /** Hash state → number of boxes in it (pool boxes not counted), kept by every script that moves a box. */
  get countsKey(): string {
    return boxCountsKey(this.prefix);
  }
  /** Live boxes by state (pool boxes left out), from the counters: O(1) whatever the number of boxes. */
  async counts(): Promise<Record<string, number>> {
    const h = await this.redis.hgetall(this.countsKey);
    return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Math.max(0, Number(v))]));
  }
  get eventsChannel(): string {
    return this.keys.events;
  }
  private accountKey(account: string): string {
    return this.keys.accountBoxes(account);
  }
  private lostKey(account: string): string {
    return this.keys.accountLost(account);
  }
  private hostKey(hostId: string): string {
    return this.keys.hostBoxes(hostId);
  }

  /**
   * Inserts a record in state `creating` (created and last active now, no ports published yet,
   * unless given). Throws BoxExistsError when the name is taken and
   * LimitError when the account already has `limit` live boxes (-1: no limit). Atomic.
   */
  async create(record: NewBox, limit: number): Promise<BoxRecord> {
    const now = Date.now();
    const full: BoxRecord = { hostPorts: {}, createdAt: now, lastActivityAt: now, ...record, state: 'creating', version: 1 };
    const { name: _n, ...rest } = full;
    const result = await this.redis.eval(
      CREATE,
      6,
      this.key(record.name),
      this.accountKey(record.account),
      this.keys.boxes,
      this.hostKey(record.hostId),
      this.lostKey(record.account),
      this.countsKey,
      String(limit),
      record.name,
      this.eventsChannel,
      'name',
      record.name,
      'state',
      'creating',
      'version',
      '1',
      ...encodeFields(rest),
    );
    if (result === 'EXISTS') throw new BoxExistsError(record.name);
    if (result === 'LIMIT') throw new LimitError(`account "${record.account}" already has ${limit} live boxes; delete one first`);
    return full;
  }

  async get(name: string): Promise<BoxRecord | undefined> {
    return decode(await this.redis.hgetall(this.key(name)));
  }

  /** Like get, but throws BoxNotFoundError. With `account`, boxes of other accounts are not found. */
  async require(name: string, account?: string): Promise<BoxRecord> {
    const box = await this.get(name);
    if (!box || (account !== undefined && box.account !== account)) throw new BoxNotFoundError(name);
    return box;
  }

  async list(set: { account: string } | { hostId: string } | 'all'): Promise<BoxRecord[]> {
    const key = set === 'all' ? this.keys.boxes : 'account' in set ? this.accountKey(set.account) : this.hostKey(set.hostId);
    const names = (await this.redis.smembers(key)).sort();
    if (!names.length) return [];
    const pipe = this.redis.pipeline();
    for (const n of names) pipe.hgetall(this.key(n));
    const rows = (await pipe.exec()) ?? [];
    return rows.map(([, h]) => decode(h as Record<string, string>)).filter((b): b is BoxRecord => !!b);
  }

  /**
   * The few fields a host's periodic passes read (idle sweep, heartbeat, drift check), for every
   * box of one host: one HMGET of eight short fields per box instead of a whole record and its JSON (a
   * thousand suspended boxes are read every second by the idle sweep).
   */
  async summaries(hostId: string): Promise<BoxSummary[]> {
    return this.summariesOf(await this.redis.smembers(this.hostKey(hostId)));
  }

  /** The summaries of the named boxes that still exist, by name (one pipelined HMGET each). */
  async summariesOf(names: string[]): Promise<BoxSummary[]> {
    if (!names.length) return [];
    const pipe = this.redis.pipeline();
    for (const n of names) pipe.hmget(this.key(n), ...SUMMARY_FIELDS);
    const rows = (await pipe.exec()) ?? [];
    const out: BoxSummary[] = [];
    for (const [, v] of rows) {
      const s = summaryOf(v as (string | null)[] | undefined);
      if (s) out.push(s);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** One box's summary; undefined when it is gone. */
  async summary(name: string): Promise<BoxSummary | undefined> {
    return summaryOf(await this.redis.hmget(this.key(name), ...SUMMARY_FIELDS));
  }

  /**
   * Moves a box from one of `from` (or any state with '*') to `to`, writing `fields` in the same
   * step. Throws BoxNotFoundError when the record is gone, BoxStateError when its state is not in
   * `from`. Returns the state it left.
   */
  async transition(name: string, from: BoxState[] | '*', to: BoxState, fields: Fields = {}): Promise<BoxState> {
    const [outcome, state] = (await this.redis.eval(
      TRANSITION,
      2,
      this.key(name),
      this.countsKey,
      this.eventsChannel,
      from === '*' ? '*' : from.join(','),
      to,
      name,
      ...encodeFields(fields),
    )) as [string, string];
    if (outcome === 'MISSING') throw new BoxNotFoundError(name);
    if (outcome === 'CONFLICT') throw new BoxStateError(name, state, `go to ${to}`);
    return state as BoxState;
  }

  /**
   * Like transition, from exactly the record `seen` (same state, version and runtime handle):
   * the record after the move, or undefined (nothing written) when it is no longer that one.
   */
  async transitionSeen(name: string, seen: SeenRecord, to: BoxState, fields: Fields = {}): Promise<BoxRecord | undefined> {
    const flat = (await this.redis.eval(
      TRANSITION_SEEN,
      2,
      this.key(name),
      this.countsKey,
      this.eventsChannel,
      name,
      seen.state,
      String(seen.version),
      seen.runtimeId ?? '',
      to,
      ...encodeFields(fields),
    )) as string[] | null;
    if (!flat) return undefined;
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i]!] = flat[i + 1]!;
    return decode(h);
  }

  /**
   * Writes fields that are not state (ports, runtime handle). Throws BoxNotFoundError when the
   * record is gone: a late write never leaves a half record behind (one that has no name, so GET
   * answers 404 while create answers 409).
   */
  async update(name: string, fields: Fields): Promise<void> {
    const args = encodeFields(fields);
    if (!args.length) return;
    if ((await this.redis.eval(UPDATE, 1, this.key(name), ...args)) !== 1) throw new BoxNotFoundError(name);
  }

  /** Records activity at `at` (never moves it backwards). */
  async touch(name: string, at = Date.now()): Promise<void> {
    await this.redis.eval(TOUCH, 1, this.key(name), String(at));
  }

  /** Deletes the record and publishes `destroyed`. Idempotent. */
  async remove(name: string): Promise<void> {
    for (;;) {
      const [account, hostId] = await this.redis.hmget(this.key(name), 'account', 'hostId');
      if (account == null) return;
      const keys = [this.key(name), this.keys.boxes, this.accountKey(account), this.lostKey(account), this.hostKey(hostId ?? ''), this.countsKey];
      const out = await this.redis.eval(REMOVE, keys.length, ...keys, name, this.eventsChannel, account, hostId ?? '');
      if (out !== 'RETRY') return;
    }
  }

  /**
   * Marks a box `lost` (its host is dead) with `reason`, remembering the state it had; it stops
   * counting against its account's limit. False when it was gone, already lost, or in `error`.
   */
  async lose(name: string, reason: string): Promise<boolean> {
    return (await this.loseOrFind(name, 'lose', reason)) === 'OK';
  }

  /** Takes a box out of `lost` into `state` (its host came back and still has it). */
  async found(name: string, state: BoxState): Promise<boolean> {
    return (await this.loseOrFind(name, 'found', state)) === 'OK';
  }

  private async loseOrFind(name: string, op: 'lose' | 'found', arg: string): Promise<string> {
    for (;;) {
      const account = await this.redis.hget(this.key(name), 'account');
      if (account === null) return 'MISSING';
      const out = (await this.redis.eval(LOSE, 3, this.key(name), this.lostKey(account), this.countsKey, this.eventsChannel, name, account, op, arg)) as string;
      if (out !== 'RETRY') return out;
    }
  }

  /** Boxes of an account that count against its limit (lost ones do not). */
  async count(account: string): Promise<number> {
    const [[, all], [, lost]] = (await this.redis.multi().scard(this.accountKey(account)).scard(this.lostKey(account)).exec()) as [[unknown, number], [unknown, number]];
    return all - lost;
  }
}
