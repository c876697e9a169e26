import { Queue, Worker, type Job } from 'bullmq';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { BoxStore } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import { PAYLOAD_PATH, TASK_QUEUE, type HookStore, type StepResult, type Task } from '../core/hooks.ts';
import { hostQueueName } from '../core/jobs.ts';
import type { Logger } from '../core/log.ts';
import { boxSettings, findGolden, type GoldenInfo } from './goldens.ts';
import type { AccountGoldens } from '../core/account-goldens.ts';
import type { Lifecycle } from './lifecycle.ts';
import { takeFromPool } from '../pool/claim.ts';
import { queuePrefix } from '../core/keys.ts';

const STEP_TIMEOUT_MS = 30 * 60_000;

/**
 * Runs webhook tasks from the shared `tasks` queue: a box from the golden's warm pool on this host
 * (else a cold one), the payload written to BOXD_PAYLOAD, the steps in order until one fails, each
 * step's output recorded as it finishes; then the box is destroyed, or kept for the hook's keepMs.
 * A task whose host dies is re-run by BullMQ's stalled-job check; after its last attempt it is
 * marked failed with the reason, never left running.
 */
export class TaskRunner {
  private worker: Worker | undefined;
  private readonly hostQueue: Queue;

  constructor(
    private readonly d: {
      connection: Redis;
      redis: Redis;
      prefix: string;
      hostId: string;
      store: BoxStore;
      hooks: HookStore;
      lifecycle: Lifecycle;
      goldens: () => Promise<Map<string, GoldenInfo>>;
      /** The accounts' own goldens a hook may name. */
      accountGoldens?: AccountGoldens;
      maxBoxes: (account: string) => Promise<number>;
      lockMs: number;
      log: Logger;
    },
  ) {
    this.hostQueue = new Queue(hostQueueName(d.hostId), { connection: d.redis, prefix: queuePrefix(d.prefix) });
  }

  async start(): Promise<void> {
    this.worker = new Worker(TASK_QUEUE, (job: Job) => this.run(job), {
      connection: this.d.connection,
      prefix: queuePrefix(this.d.prefix),
      concurrency: 4,
      lockDuration: this.d.lockMs,
      stalledInterval: this.d.lockMs,
      maxStalledCount: 1,
    });
    this.worker.on('failed', (job, err) => {
      if (!job || job.attemptsMade < (job.opts.attempts ?? 1)) return;
      void this.d.hooks.updateTask((job.data as { taskId: string }).taskId, (t) => {
        t.state = 'failed';
        t.error = err.message;
        t.finishedAt = Date.now();
      });
    });
    this.worker.on('error', (err) => this.d.log.warn({ err }, 'task worker error'));
    await this.worker.waitUntilReady();
  }

  private async run(job: Job): Promise<void> {
    const { taskId } = job.data as { taskId: string };
    const log = this.d.log.child({ task: taskId });
    const task = await this.d.hooks.task(taskId);
    if (!task) return;
    const hook = await this.d.hooks.hook(task.hook);
    // A retried task starts over: the box of an attempt that died goes first.
    if (task.box && !task.box.kept) await this.d.lifecycle.destroy(task.box.name).catch(() => undefined);
    const save = (fn: (t: Task) => void) => this.d.hooks.updateTask(taskId, fn);
    await save((t) => {
      t.state = 'running';
      t.attempts += 1;
      t.steps = [];
      t.box = null;
      t.error = undefined;
    });
    if (!hook) {
      await save((t) => ((t.state = 'failed'), (t.error = 'the hook was deleted'), (t.finishedAt = Date.now())));
      return;
    }
    let boxName: string | undefined;
    try {
      boxName = await this.box(task, hook.golden);
      await save((t) => (t.box = { name: boxName!, url: null, kept: false }));
      const payload = (await this.d.redis.getBuffer(this.d.hooks.payloadKey(taskId))) ?? Buffer.alloc(0);
      await this.d.lifecycle.writeFile(boxName, PAYLOAD_PATH, payload, 0o644);
      let failed = false;
      for (const step of hook.steps) {
        const cmd = Array.isArray(step.cmd) ? step.cmd : ['sh', '-c', step.cmd];
        const startedAt = Date.now();
        await save((t) => (t.startedAt ??= startedAt));
        const out = await this.d.lifecycle.exec({
          name: boxName,
          execId: randomBytes(8).toString('hex'),
          cmd,
          env: { BOXD_PAYLOAD: PAYLOAD_PATH, BOXD_TASK: taskId },
          timeoutMs: STEP_TIMEOUT_MS,
        });
        const result: StepResult = { cmd, exitCode: out.exitCode, stdout: out.stdout, stderr: out.stderr, durationMs: out.durationMs, startedAt };
        await save((t) => t.steps.push(result));
        if (out.exitCode !== 0) {
          failed = true;
          break;
        }
      }
      await this.finish(taskId, boxName, hook.keepMs, failed ? 'failed' : 'succeeded', failed ? 'a step exited non-zero' : undefined);
      log.info({ state: failed ? 'failed' : 'succeeded' }, 'task finished');
    } catch (e) {
      if (e instanceof BoxdError && e.code !== 'RUNTIME_ERROR') {
        await this.finish(taskId, boxName, 0, 'failed', `${e.code}: ${e.message}`);
        return;
      }
      if (boxName) await this.d.lifecycle.destroy(boxName).catch(() => undefined);
      throw e; // retried; the failed handler records the reason after the last attempt
    }
  }

  private async finish(taskId: string, boxName: string | undefined, keepMs: number, state: 'succeeded' | 'failed', error?: string): Promise<void> {
    let until: number | undefined;
    if (boxName && keepMs > 0) {
      until = Date.now() + keepMs;
      await this.hostQueue.add('destroy', { op: 'destroy', name: boxName }, { delay: keepMs, attempts: 5, removeOnComplete: true, removeOnFail: 100 });
    } else if (boxName) {
      await this.d.lifecycle.destroy(boxName).catch(() => undefined);
    }
    await this.d.hooks.updateTask(taskId, (t) => {
      t.state = state;
      t.error = error;
      t.finishedAt = Date.now();
      if (t.box) t.box = { ...t.box, kept: !!until, until };
    });
  }

  /** A running box of `golden` for the task: from this host's pool when one is ready. */
  private async box(task: Task, golden: string): Promise<string> {
    const name = `task-${task.id.replace(/^tk-/, '').slice(0, 16)}`;
    const operator = await this.d.goldens();
    const info = this.d.accountGoldens ? await findGolden(operator, this.d.accountGoldens, task.account, golden) : operator.get(golden);
    if (!info) throw new BoxdError('GOLDEN_NOT_FOUND', `no golden image "${golden}"`);
    if (info.hostId && info.hostId !== this.d.hostId) throw new BoxdError('GOLDEN_NOT_FOUND', `golden "${golden}" lives on host ${info.hostId}, not here`);
    const limit = await this.d.maxBoxes(task.account);
    const fromPool = await takeFromPool(
      this.d.redis,
      this.d.prefix,
      [this.d.hostId],
      { golden: info.name, name, account: task.account, limit, fields: { env: {}, idleTimeoutMs: info.idleTimeoutMs, public: true } },
      {
        wake: (_host, box) => this.d.lifecycle.resume(box),
        destroy: (_host, box) => this.d.lifecycle.destroy(box),
        refill: () => this.hostQueue.add('pool-fill', { op: 'pool-fill', golden: info.name }, { removeOnComplete: true, removeOnFail: true }),
      },
    );
    if (fromPool) return name;
    await this.d.store.create({ ...boxSettings(info), name, account: task.account, public: true, env: {}, hostId: this.d.hostId }, limit);
    await this.d.lifecycle.create(name, true);
    return name;
  }

  async close(): Promise<void> {
    await this.worker?.close();
    await this.hostQueue.close();
  }
}
