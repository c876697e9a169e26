import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { BoxdError } from './errors.ts';
import { Keys } from './keys.ts';

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
    prefix: string,
  ) {
    this.keys = new Keys(prefix);
  }
  private readonly keys: Keys;

  async createHook(h: Omit<Hook, 'id' | 'secret' | 'createdAt'> & { secret?: string }): Promise<Hook> {
    const hook: Hook = { ...h, id: `hk_${randomBytes(9).toString('base64url')}`, secret: h.secret ?? randomBytes(32).toString('hex'), createdAt: Date.now() };
    await this.redis.multi().set(this.keys.hook(hook.id), JSON.stringify(hook)).zadd(this.keys.hooks(hook.account), hook.createdAt, hook.id).exec();
    return hook;
  }

  async hook(id: string): Promise<Hook | undefined> {
    const raw = await this.redis.get(this.keys.hook(id));
    return raw ? (JSON.parse(raw) as Hook) : undefined;
  }

  async hooks(account: string): Promise<Hook[]> {
    const ids = await this.redis.zrange(this.keys.hooks(account), 0, -1);
    const all = await Promise.all(ids.map((id) => this.hook(id)));
    return all.filter((h): h is Hook => !!h);
  }

  async deleteHook(account: string, id: string): Promise<void> {
    const h = await this.hook(id);
    if (!h || h.account !== account) throw new BoxdError('HOOK_NOT_FOUND', `no hook ${id}`);
    await this.redis.multi().del(this.keys.hook(id)).zrem(this.keys.hooks(account), id).exec();
  }

  /** Records a delivery id; false when it was seen in the last day (a replay). */
  async firstDelivery(hookId: string, delivery: string, taskId: string): Promise<string | true> {
    const key = this.keys.delivery(hookId, delivery);
    const ok = await this.redis.set(key, taskId, 'EX', 86_400, 'NX');
    return ok ? true : ((await this.redis.get(key)) ?? '');
  }

  async saveTask(t: Task): Promise<void> {
    await this.redis.multi().set(this.keys.task(t.id), JSON.stringify(t), 'EX', 7 * 86_400).zadd(this.keys.tasks(t.account), t.triggeredAt, t.id).exec();
  }

  async task(id: string): Promise<Task | undefined> {
    const raw = await this.redis.get(this.keys.task(id));
    return raw ? (JSON.parse(raw) as Task) : undefined;
  }

  async tasks(account: string, limit = 100): Promise<Task[]> {
    const ids = await this.redis.zrevrange(this.keys.tasks(account), 0, limit - 1);
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
    return this.keys.payload(taskId);
  }
}

/** `sha256=<hex>` of the raw body under the hook's secret, compared in constant time. */
export function verifySignature(secret: string, body: Buffer, header: string | undefined): boolean {
  if (!header || !/^sha256=[0-9a-f]{64}$/i.test(header.trim())) return false;
  const want = createHmac('sha256', secret).update(body).digest();
  const got = Buffer.from(header.trim().slice(7), 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}

export function sign(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export const TASK_QUEUE = 'tasks';
/** Where a task's payload is written (every golden has /tmp, so no folder has to be made first). */
export const PAYLOAD_PATH = '/tmp/boxd-payload';
