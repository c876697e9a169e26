import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { BoxdError, LimitError } from './errors.ts';

const CREATE_HOOK = `
local limit = tonumber(ARGV[1])
if limit >= 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 'LIMIT' end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 'OK'`;

/**
 * Records one delivery under its id and under the digest of its verified signature, or answers
 * the task of the first delivery that had either. KEYS: delivery id key, signature key.
 * ARGV: task id, id TTL (s), signature TTL (s).
 */
const FIRST_DELIVERY = `
local seen = redis.call('GET', KEYS[1]) or redis.call('GET', KEYS[2])
if seen then return seen end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[3]))
return true`;

/** How long a delivery id is remembered (a repeat within it runs nothing), in seconds. */
export const DELIVERY_TTL_S = 86_400;
/**
 * How long a signature without a timestamp (`sha256=`) is remembered, in seconds: the same signed
 * body sent again within it (under any delivery id) is a replay and runs nothing.
 */
export const BARE_SIGNATURE_TTL_S = 7 * 86_400;

/** Which signature forms a hook accepts: both (the default), or only `t=…,v1=…`. */
export type SignaturePolicy = 'any' | 'timestamped';

export interface HookStep {
  /** argv, or a string run with `sh -c`. */
  cmd: string[] | string;
}

export interface Hook {
  id: string;
  account: string;
  name: string;
  golden: string;
  steps: HookStep[];
  secret: string;
  /** Keep the task's box this long after the run (0: destroy at once). */
  keepMs: number;
  /** Unset on hooks made before the option: `any`. */
  signature?: SignaturePolicy;
  createdAt: number;
}

export type TaskState = 'queued' | 'running' | 'succeeded' | 'failed';

export interface StepResult {
  cmd: string[];
  exitCode: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  startedAt: number;
}

export interface Task {
  id: string;
  hook: string;
  account: string;
  state: TaskState;
  steps: StepResult[];
  box: { name: string; url: string | null; kept: boolean; until?: number } | null;
  error?: string;
  attempts: number;
  triggeredAt: number;
  startedAt?: number;
  finishedAt?: number;
}

/** Hooks and tasks in Redis (JSON values, per-account indexes). */
export class HookStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** Creates a hook; LIMIT_EXCEEDED when the account already has `limit` hooks (-1: no limit). Atomic. */
  async createHook(h: Omit<Hook, 'id' | 'secret' | 'createdAt'> & { secret?: string }, limit = -1): Promise<Hook> {
    const hook: Hook = { ...h, id: `hk_${randomBytes(9).toString('base64url')}`, secret: h.secret ?? randomBytes(32).toString('hex'), createdAt: Date.now() };
    const out = await this.redis.eval(CREATE_HOOK, 2, `{${this.prefix}}:hooks:${hook.account}`, `{${this.prefix}}:hook:${hook.id}`, String(limit), String(hook.createdAt), hook.id, JSON.stringify(hook));
    if (out === 'LIMIT') throw new LimitError(`account "${hook.account}" already has ${limit} hooks; delete one first`);
    return hook;
  }

  async hook(id: string): Promise<Hook | undefined> {
    const raw = await this.redis.get(`{${this.prefix}}:hook:${id}`);
    return raw ? (JSON.parse(raw) as Hook) : undefined;
  }

  async hooks(account: string): Promise<Hook[]> {
    const ids = await this.redis.zrange(`{${this.prefix}}:hooks:${account}`, 0, -1);
    const all = await Promise.all(ids.map((id) => this.hook(id)));
    return all.filter((h): h is Hook => !!h);
  }

  async deleteHook(account: string, id: string): Promise<void> {
    const h = await this.hook(id);
    if (!h || h.account !== account) throw new BoxdError('HOOK_NOT_FOUND', `no hook ${id}`);
    await this.redis.multi().del(`{${this.prefix}}:hook:${id}`).zrem(`{${this.prefix}}:hooks:${account}`, id).exec();
  }

  /**
   * Records a delivery: true when it is new, else the id of the first task of the same delivery.
   * A delivery is the same when its id was seen in the last day, or when its verified signature
   * (`digest`, the HMAC it carried) was: within its window (7 days for `sha256=`, twice the
   * timestamp tolerance for `t=…,v1=…`) a captured body and signature sent again under a new
   * delivery id is a replay. Atomic.
   */
  async firstDelivery(hookId: string, delivery: string, taskId: string, sig: { digest: string; timestamped: boolean }): Promise<string | true> {
    const idKey = `{${this.prefix}}:delivery:${hookId}:${delivery}`;
    const sigKey = `{${this.prefix}}:delivery-sig:${hookId}:${createHash('sha256').update(sig.digest).digest('hex')}`;
    const sigTtl = sig.timestamped ? 2 * SIGNATURE_TOLERANCE_S : BARE_SIGNATURE_TTL_S;
    const out = await this.redis.eval(FIRST_DELIVERY, 2, idKey, sigKey, taskId, String(DELIVERY_TTL_S), String(sigTtl));
    return out === 1 ? true : String(out ?? '');
  }

  async saveTask(t: Task): Promise<void> {
    await this.redis.multi().set(`{${this.prefix}}:task:${t.id}`, JSON.stringify(t), 'EX', 7 * 86_400).zadd(`{${this.prefix}}:tasks:${t.account}`, t.triggeredAt, t.id).exec();
  }

  async task(id: string): Promise<Task | undefined> {
    const raw = await this.redis.get(`{${this.prefix}}:task:${id}`);
    return raw ? (JSON.parse(raw) as Task) : undefined;
  }

  async tasks(account: string, limit = 100): Promise<Task[]> {
    const ids = await this.redis.zrevrange(`{${this.prefix}}:tasks:${account}`, 0, limit - 1);
    const all = await Promise.all(ids.map((id) => this.task(id)));
    return all.filter((t): t is Task => !!t);
  }

  async updateTask(id: string, fn: (t: Task) => void): Promise<Task | undefined> {
    const t = await this.task(id);
    if (!t) return undefined;
    fn(t);
    await this.saveTask(t);
    return t;
  }

  payloadKey(taskId: string): string {
    return `{${this.prefix}}:payload:${taskId}`;
  }
}

/** How far a timestamped signature's `t` may be from now, in seconds (Stripe's default). */
export const SIGNATURE_TOLERANCE_S = 300;

/** `digest`: hex of the HMAC that matched (what a replay would carry again). */
export type SignatureCheck = { ok: true; timestamped: boolean; digest: string } | { ok: false; reason: string };

/**
 * Checks `X-Boxd-Signature`, in one of two forms, in constant time:
 *  - `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` (Stripe-style): `t` must be
 *    within SIGNATURE_TOLERANCE_S of `now`, so a captured request cannot be replayed later;
 *  - `sha256=<hex HMAC-SHA256 of the raw body>` (GitHub-style, no timestamp).
 * Several `v1=` values (secret rotation) are accepted if any matches.
 */
export function checkSignature(secret: string, body: Buffer, header: string | undefined, now = Date.now()): SignatureCheck {
  const h = header?.trim() ?? '';
  const equal = (hex: string, want: Buffer) => {
    const got = Buffer.from(hex, 'hex');
    return got.length === want.length && timingSafeEqual(got, want);
  };
  if (/^sha256=[0-9a-f]{64}$/i.test(h)) {
    const want = createHmac('sha256', secret).update(body).digest();
    return equal(h.slice(7), want) ? { ok: true, timestamped: false, digest: want.toString('hex') } : { ok: false, reason: 'signature does not match' };
  }
  const parts = h.split(',').map((p) => p.trim().split('=') as [string, string?]);
  const t = parts.find(([k]) => k === 't')?.[1];
  const v1 = parts.filter(([k, v]) => k === 'v1' && v && /^[0-9a-f]{64}$/i.test(v)).map(([, v]) => v!);
  if (!t || !/^\d{1,12}$/.test(t) || !v1.length) return { ok: false, reason: 'missing signature' };
  if (Math.abs(now / 1000 - Number(t)) > SIGNATURE_TOLERANCE_S) return { ok: false, reason: `timestamp outside the ${SIGNATURE_TOLERANCE_S} s tolerance` };
  const want = createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  return v1.some((v) => equal(v, want)) ? { ok: true, timestamped: true, digest: want.toString('hex') } : { ok: false, reason: 'signature does not match' };
}

/** Whether `header` is a valid signature of `body` (either form). */
export function verifySignature(secret: string, body: Buffer, header: string | undefined, now = Date.now()): boolean {
  return checkSignature(secret, body, header, now).ok;
}

/** `sha256=<hex>`: the signature without a timestamp. */
export function sign(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** `t=<seconds>,v1=<hex>`: the timestamped signature (preferred: it cannot be replayed after 5 minutes). */
export function signTimestamped(secret: string, body: Buffer | string, at = Date.now()): string {
  const t = Math.floor(at / 1000);
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex')}`;
}

export const TASK_QUEUE = 'tasks';
/** Where a task's payload is written (every golden has /tmp, so no folder has to be made first). */
export const PAYLOAD_PATH = '/tmp/boxd-payload';
