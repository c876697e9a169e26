import express, { Router } from 'express';
import { Queue } from 'bullmq';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Accounts } from '../core/accounts.ts';
import type { Config } from '../core/config.ts';
import { BoxdError } from '../core/errors.ts';
import { TASK_QUEUE, checkSignature, type Hook, type HookStore, type Task } from '../core/hooks.ts';
import type { GoldenInfo } from '../host/goldens.ts';
import { accountOf } from './auth.ts';
import { goldenName, parse } from './schemas.ts';
import type { HookInfo, TaskInfo } from '../sdk/types.ts';
import type { Urls } from './urls.ts';
import { queuePrefix } from '../core/keys.ts';

const MAX_PAYLOAD = 1024 * 1024;

export const hookBody = z
  .object({
    name: z.string().min(1).max(100),
    golden: goldenName.default('default'),
    steps: z.array(z.object({ cmd: z.union([z.string().min(1).max(65_536), z.array(z.string().max(65_536)).min(1).max(1000)]) }).strict()).min(1).max(50),
    secret: z.string().min(16, 'secrets have at least 16 characters').max(256).optional(),
    keepMs: z.number().int().min(0).max(24 * 3600 * 1000).default(0),
    signature: z
      .enum(['any', 'timestamped'])
      .default('any')
      .describe('which X-Boxd-Signature forms the hook accepts: `any` (`t=…,v1=…` or `sha256=…`) or only `timestamped` (`t=…,v1=…`)'),
  })
  .strict();

export interface HooksDeps {
  config: Config;
  redis: Redis;
  hooks: HookStore;
  goldens: () => Promise<Map<string, GoldenInfo>>;
  /** The golden `name` as `account` sees it (the operator's or the account's own). */
  golden?: (account: string, name: string) => Promise<GoldenInfo | undefined>;
  urls: Urls;
  /** Per-account limits (maxHooks); without it hooks are unlimited. */
  accounts?: Pick<Accounts, 'accountLimits'>;
}

/** The task queue, shared by every host. */
export function taskQueue(d: HooksDeps): Queue {
  const q = new Queue(TASK_QUEUE, { connection: d.redis, prefix: queuePrefix(d.config.BOXD_PREFIX) });
  q.on('error', () => undefined);
  return q;
}

/** `POST /hooks/:id`: public, signed; enqueues a task and answers 202 at once. */
export function publicHooks(d: HooksDeps, queue: Queue): Router {
  const r = Router();
  r.post('/hooks/:id', express.raw({ type: () => true, limit: MAX_PAYLOAD }), async (req, res) => {
    const hook = await d.hooks.hook(String(req.params.id));
    if (!hook) throw new BoxdError('HOOK_NOT_FOUND', 'no such hook');
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const signature = req.header('x-boxd-signature') ?? req.header('x-hub-signature-256');
    const check = checkSignature(hook.secret, body, signature);
    const timestampedOnly = hook.signature === 'timestamped';
    if (!check.ok) {
      const bare = timestampedOnly ? '' : ' (or "sha256=<hex HMAC-SHA256 of the raw body>")';
      throw new BoxdError('UNAUTHORIZED', `${check.reason}: send X-Boxd-Signature "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">"${bare}`);
    }
    if (timestampedOnly && !check.timestamped) {
      throw new BoxdError(
        'UNAUTHORIZED',
        'this hook accepts only timestamped signatures (it was created with "signature": "timestamped"): send X-Boxd-Signature "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">", not "sha256=…"',
      );
    }
    // Every delivery names itself, and a signature is remembered too (a `sha256=` one has no
    // timestamp): a repeat, or a captured body replayed under a new id, runs nothing.
    const delivery = (req.header('x-boxd-delivery') ?? req.header('x-github-delivery'))?.trim();
    if (!delivery) throw new BoxdError('INVALID_REQUEST', 'missing X-Boxd-Delivery: a unique id per delivery (used to drop repeats)');
    const taskId = `tk-${randomBytes(8).toString('hex')}`;
    const first = await d.hooks.firstDelivery(hook.id, delivery.slice(0, 200), taskId, check);
    if (first !== true) {
      res.status(200).json({ task: first, duplicate: true });
      return;
    }
    const task: Task = { id: taskId, hook: hook.id, account: hook.account, state: 'queued', steps: [], box: null, attempts: 0, triggeredAt: Date.now() };
    await d.redis.set(d.hooks.payloadKey(taskId), body, 'EX', 7 * 86_400);
    await d.hooks.saveTask(task);
    await queue.add('task', { taskId }, { jobId: taskId, attempts: 2, backoff: { type: 'fixed', delay: 1000 }, removeOnComplete: { age: 86_400 }, removeOnFail: { age: 86_400 } });
    res.status(202).json({ task: taskJson(task, d.urls) });
  });
  return r;
}

/** `/v1/hooks…` and `/v1/tasks…` (authenticated). */
export function hooksApi(d: HooksDeps): Router {
  const r = Router();
  r.post('/hooks', async (req, res) => {
    const body = parse(hookBody, req.body);
    const account = accountOf(req);
    const known = d.golden ? !!(await d.golden(account, body.golden)) : (await d.goldens()).has(body.golden);
    if (!known) throw new BoxdError('GOLDEN_NOT_FOUND', `no golden image "${body.golden}"`);
    const limit = d.accounts ? (await d.accounts.accountLimits(account)).maxHooks : -1;
    const hook = await d.hooks.createHook({ ...body, account }, limit);
    res.status(201).json({ ...hookJson(hook, d.urls), secret: hook.secret });
  });
  r.get('/hooks', async (req, res) => {
    res.json({ hooks: (await d.hooks.hooks(accountOf(req))).map((h) => hookJson(h, d.urls)) });
  });
  r.delete('/hooks/:id', async (req, res) => {
    await d.hooks.deleteHook(accountOf(req), String(req.params.id));
    res.status(204).end();
  });
  r.get('/tasks', async (req, res) => {
    res.json({ tasks: (await d.hooks.tasks(accountOf(req))).map((t) => taskJson(t, d.urls)) });
  });
  r.get('/tasks/:id', async (req, res) => {
    const t = await d.hooks.task(String(req.params.id));
    if (!t || t.account !== accountOf(req)) throw new BoxdError('TASK_NOT_FOUND', `no task ${req.params.id}`);
    res.json(taskJson(t, d.urls));
  });
  return r;
}

function hookJson(h: Hook, urls: Urls): HookInfo {
  return { id: h.id, url: `${urls.api}/hooks/${h.id}`, name: h.name, golden: h.golden, steps: h.steps, keepMs: h.keepMs, signature: h.signature ?? 'any', createdAt: new Date(h.createdAt).toISOString() };
}

function taskJson(t: Task, urls: Urls): TaskInfo {
  return {
    id: t.id,
    hook: t.hook,
    state: t.state,
    steps: t.steps.map((s) => ({ cmd: s.cmd, exitCode: s.exitCode, stdout: s.stdout, stderr: s.stderr, durationMs: s.durationMs, startedAt: new Date(s.startedAt).toISOString() })),
    box: t.box ? { name: t.box.name, kept: t.box.kept, url: t.box.kept ? urls.box(t.box.name) : null, until: t.box.until ? new Date(t.box.until).toISOString() : undefined } : null,
    error: t.error,
    attempts: t.attempts,
    triggeredAt: new Date(t.triggeredAt).toISOString(),
    startedAt: t.startedAt ? new Date(t.startedAt).toISOString() : undefined,
    finishedAt: t.finishedAt ? new Date(t.finishedAt).toISOString() : undefined,
  };
}
