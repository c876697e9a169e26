import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { BoxdError } from '../core/errors.ts';
import { hostQueueName, type HostJob, type JobResult } from '../core/jobs.ts';
import type { Logger } from '../core/log.ts';
import { queuePrefix } from '../core/keys.ts';

/** Handles one job; `finalAttempt` tells whether a thrown error will be retried. */
export type JobHandler = (job: HostJob, finalAttempt: boolean) => Promise<unknown>;

/**
 * The host's BullMQ worker. Domain errors (any BoxdError but RUNTIME_ERROR) come back as
 * `{ ok: false, error }` at once; other errors are retried per the job's attempts and reported
 * as RUNTIME_ERROR after the last one.
 */
export function startWorker(opts: {
  connection: Redis;
  prefix: string;
  hostId: string;
  concurrency: number;
  handle: JobHandler;
  log: Logger;
}): Worker {
  const worker = new Worker(
    hostQueueName(opts.hostId),
    async (job: Job): Promise<JobResult> => {
      const data = job.data as HostJob;
      const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const log = opts.log.child({ op: data.op, box: 'name' in data ? data.name : undefined, job: job.id });
      try {
        const value = await opts.handle(data, finalAttempt);
        return { ok: true, value: value ?? null };
      } catch (e) {
        if (e instanceof BoxdError && e.code !== 'RUNTIME_ERROR') return { ok: false, error: e.toWire() };
        log.warn({ err: e, attempt: job.attemptsMade + 1, finalAttempt }, 'job failed');
        if (!finalAttempt) throw e;
        return { ok: false, error: { code: 'RUNTIME_ERROR', message: (e as Error).message } };
      }
    },
    { connection: opts.connection, prefix: queuePrefix(opts.prefix), concurrency: opts.concurrency, autorun: true },
  );
  worker.on('error', (err) => opts.log.error({ err }, 'worker error'));
  return worker;
}
