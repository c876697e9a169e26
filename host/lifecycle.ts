import type { Redis } from 'ioredis';
import { StringDecoder } from 'node:string_decoder';
import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import type { Snapshots } from '../core/snapshots.ts';
import type { AccountGoldens } from '../core/account-goldens.ts';
import { Blobs } from '../core/blobs.ts';
import { BoxdError, BoxStateError } from '../core/errors.ts';
import type { ExecMessage, ExecOutcome, HostJob } from '../core/jobs.ts';
import type { Logger } from '../core/log.ts';
import type { BoxLocks } from './locks.ts';
import type { BoxSpec, Runtime } from './runtime.ts';

export interface LifecycleDeps {
  store: BoxStore;
  runtime: Runtime;
  /** Plain (non-subscriber) connection: blobs and exec output. */
  redis: Redis;
  locks: BoxLocks;
  prefix: string;
  hostId: string;
  pidsLimit: number;
  snapshots?: Snapshots;
  accountGoldens?: AccountGoldens;
  log: Logger;
}

/**
 * The box operations a host performs on its own runtime. Each is idempotent where the job that
 * calls it may be retried (create, suspend, resume, destroy), holds the box's lock, and moves
 * the record with an atomic transition only after the runtime did the work.
 */
export class Lifecycle {
  private readonly blobs: Blobs;

  constructor(private readonly d: LifecycleDeps) {
    this.blobs = new Blobs(d.redis, d.prefix);
  }

  /** Runtime name of a box: unique per prefix, so parallel instances never collide. */
  runtimeName(name: string): string {
    return `${this.d.prefix}-${name}`;
  }

  /** Runtime id of a box: its container, which a claimed pool box keeps under its new name. */
  idOf(box: Pick<BoxRecord, 'name' | 'runtimeId'>): string {
    return box.runtimeId ?? this.runtimeName(box.name);
  }

  labels(box: Pick<BoxRecord, 'name' | 'account'>): Record<string, string> {
    return {
      'boxd.managed': 'true',
      'boxd.instance': this.d.prefix,
      'boxd.host': this.d.hostId,
      'boxd.box': box.name,
      'boxd.account': box.account,
    };
  }

  spec(box: BoxRecord): BoxSpec {
    return {
      name: this.runtimeName(box.name),
      image: box.imageRef,
      ports: box.ports,
      env: box.env,
      labels: this.labels(box),
      cpus: box.cpus,
      memoryMb: box.memoryMb,
      pidsLimit: this.d.pidsLimit,
    };
  }

  /**
   * Creates the container of a record in state `creating` and moves it to `running`.
   * A retried call reuses the container of the first. When the record was deleted meanwhile,
   * the container is removed again: no orphans.
   */
  async create(name: string, finalAttempt: boolean): Promise<BoxRecord> {
    return this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.require(name);
      if (box.state !== 'creating') return box;
      let instance;
      try {
        instance = await this.d.runtime.create(this.spec(box));
      } catch (e) {
        const permanent = e instanceof BoxdError && e.code !== 'RUNTIME_ERROR';
        if (permanent || finalAttempt) {
          await this.d.runtime.destroy(this.runtimeName(name)).catch(() => undefined);
          await this.d.store.remove(name);
        }
        throw e;
      }
      try {
        await this.d.store.transition(name, ['creating'], 'running', {
          runtimeId: instance.id,
          hostPorts: instance.ports,
          lastActivityAt: Date.now(),
        });
      } catch (e) {
        if (e instanceof BoxdError && e.code === 'BOX_NOT_FOUND') await this.d.runtime.destroy(instance.id);
        throw e;
      }
      return this.d.store.require(name);
    });
  }

  async suspend(name: string): Promise<BoxRecord> {
    return this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.require(name);
      if (box.state === 'suspended') return box;
      if (box.state !== 'running') throw new BoxStateError(name, box.state, 'suspend');
      await this.d.runtime.suspend(this.idOf(box));
      await this.d.store.transition(name, ['running'], 'suspended');
      return this.d.store.require(name);
    });
  }

  /**
   * Suspends `name` only if `isIdle` still holds once its lock is held and again after the
   * freeze: activity recorded meanwhile thaws it at once. Returns whether it suspended. Traffic
   * that lands in the last instant is still served: gateways holding requests for a box that
   * became suspended wake it again.
   */
  async suspendIfIdle(name: string, isIdle: (box: BoxRecord) => boolean): Promise<boolean> {
    if (this.d.locks.active(name)) return false;
    return this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.get(name);
      if (!box || box.state !== 'running' || !isIdle(box)) return false;
      const id = this.idOf(box);
      await this.d.runtime.suspend(id);
      const after = await this.d.store.get(name);
      if (!after || after.state !== 'running' || !isIdle(after)) {
        await this.d.runtime.resume(id);
        return false;
      }
      await this.d.store.transition(name, ['running'], 'suspended');
      return true;
    });
  }

  async resume(name: string): Promise<BoxRecord> {
    return this.d.locks.exclusive(name, () => this.resumeLocked(name));
  }

  private async resumeLocked(name: string): Promise<BoxRecord> {
    const box = await this.d.store.require(name);
    if (box.state === 'running') return box;
    if (box.state !== 'suspended') throw new BoxStateError(name, box.state, 'resume');
    await this.d.runtime.resume(this.idOf(box));
    await this.d.store.transition(name, ['suspended'], 'running', { lastActivityAt: Date.now() });
    return this.d.store.require(name);
  }

  /** Resumes when suspended, then runs `fn` holding the box's shared lock. */
  private async whileRunning<T>(name: string, fn: (box: BoxRecord) => Promise<T>): Promise<T> {
    for (let i = 0; i < 3; i++) {
      const box = await this.d.store.require(name);
      if (box.state === 'suspended') await this.resume(name);
      else if (box.state !== 'running') throw new BoxStateError(name, box.state, 'run commands');
      const out = await this.d.locks.shared(name, async () => {
        const now = await this.d.store.require(name);
        if (now.state !== 'running') return undefined; // suspended in between: resume again
        return { value: await fn(now) };
      });
      if (out) return out.value;
    }
    throw new BoxStateError(name, 'changing state', 'run commands');
  }

  async exec(job: Extract<HostJob, { op: 'exec' }>): Promise<ExecOutcome> {
    const channel = `${this.d.prefix}:exec:${job.execId}`;
    const publish = (m: ExecMessage) => void this.d.redis.publish(channel, JSON.stringify(m)).catch(() => undefined);
    try {
      const stdin = job.stdinBlob ? await this.blobs.take(job.stdinBlob) : undefined;
      const outcome = await this.whileRunning(job.name, async (box) => {
        await this.d.store.touch(job.name);
        const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
        const started = performance.now();
        const result = await this.d.runtime.exec(this.idOf(box), {
          cmd: job.cmd,
          cwd: job.cwd,
          // The box's own env first (a claimed pool box got it after its container was made).
          env: { ...box.env, ...job.env },
          stdin,
          timeoutMs: job.timeoutMs,
          onOutput: job.stream
            ? (stream, data) => {
                const text = decoders[stream].write(data);
                if (text) publish({ stream, data: text });
              }
            : undefined,
        });
        const durationMs = Math.round(performance.now() - started);
        await this.d.store.touch(job.name);
        return {
          exitCode: result.exitCode,
          stdout: result.stdout.toString('utf8'),
          stderr: result.stderr.toString('utf8'),
          durationMs,
          timedOut: result.timedOut,
          truncated: result.truncated,
        };
      });
      if (job.stream) publish({ exitCode: outcome.exitCode, durationMs: outcome.durationMs, timedOut: outcome.timedOut });
      return outcome;
    } catch (e) {
      if (job.stream) {
        const error = e instanceof BoxdError ? e.toWire() : { code: 'RUNTIME_ERROR', message: (e as Error).message };
        publish({ error });
      }
      throw e;
    }
  }

  async putFile(name: string, path: string, blob: string, mode?: number): Promise<void> {
    await this.writeFile(name, path, await this.blobs.take(blob), mode);
  }

  /** Writes bytes into a box (resumed first if suspended). */
  async writeFile(name: string, path: string, data: Buffer, mode?: number): Promise<void> {
    await this.whileRunning(name, async (box) => {
      await this.d.runtime.putFile(this.idOf(box), path, data, mode);
      await this.d.store.touch(name);
    });
  }

  /** Reads a file into a blob the caller collects (and deletes). */
  async getFile(name: string, path: string): Promise<{ blob: string; size: number }> {
    return this.whileRunning(name, async (box) => {
      const data = await this.d.runtime.getFile(this.idOf(box), path);
      await this.d.store.touch(name);
      return { blob: await this.blobs.put(data, 120_000), size: data.length };
    });
  }


  /** Removes the container, the record, and the box's fork image when nothing else uses it. Idempotent. */
  async destroy(name: string): Promise<void> {
    await this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.get(name);
      await this.d.runtime.destroy(box ? this.idOf(box) : this.runtimeName(name));
      await this.d.store.remove(name);
      if (box?.imageRef.startsWith('boxd-fork/')) await this.d.runtime.removeImage(box.imageRef);
      if (box?.imageRef.startsWith('boxd-snap/') && this.d.snapshots && !(await this.d.snapshots.referenced(box.account, box.imageRef))) {
        await this.d.runtime.removeImage(box.imageRef);
      }
      // A deleted account golden's image goes with the last box made from it.
      if (box?.imageRef.startsWith('boxd-ugolden/') && this.d.accountGoldens && !(await this.d.accountGoldens.imageInUse(box.imageRef))) {
        await this.d.runtime.removeImage(box.imageRef);
      }
    });
  }

  /**
   * Forks `parent` into the record `child` (state creating, made by the caller): commits the
   * parent's filesystem to the child's own image, then creates the child from it. The parent
   * keeps running (it is frozen for the commit only) and nothing the child does reaches it.
   */
  async fork(parent: string, child: string, finalAttempt: boolean): Promise<BoxRecord> {
    const image = `boxd-fork/${this.d.prefix}-${child}:v1`;
    await this.d.locks.exclusive(parent, async () => {
      const p = await this.d.store.require(parent);
      if (p.state !== 'running' && p.state !== 'suspended') throw new BoxStateError(parent, p.state, 'fork');
      await this.commitFrozen(p, image, { 'boxd.instance': this.d.prefix, 'boxd.fork-of': parent });
    }).catch(async (e) => {
      await this.d.store.remove(child);
      throw e;
    });
    await this.d.store.update(child, { imageRef: image, origin: 'fork-commit' });
    return this.create(child, finalAttempt);
  }

  /**
   * Forks `parent` into `child`, a pool box of the parent's image already claimed under the
   * child's name (suspended, nothing run in it since it was made): the parent is frozen for the
   * copy of its filesystem changes into the child, thawed, and the child resumed. When the
   * runtime cannot copy faithfully (NOT_SUPPORTED), the claimed box is dropped and the child is
   * made by the commit path instead. On any other failure the child is removed.
   */
  async forkFromPool(parent: string, child: string): Promise<BoxRecord> {
    let fallback = false;
    try {
      await this.d.locks.exclusive(child, () =>
        this.d.locks.exclusive(parent, async () => {
          const p = await this.d.store.require(parent);
          if (p.state !== 'running' && p.state !== 'suspended') throw new BoxStateError(parent, p.state, 'fork');
          const c = await this.d.store.require(child);
          if (c.state !== 'suspended' || c.imageRef !== p.imageRef) throw new BoxStateError(child, c.state, 'take a fork');
          const from = this.idOf(p);
          const to = this.idOf(c);
          const thaw = p.state === 'running';
          if (thaw) await this.d.runtime.suspend(from);
          let failed: unknown;
          try {
            const copied = await this.d.runtime.copyChanges(from, to);
            this.d.log.debug({ parent, child, ...copied }, 'fork copied from the pool');
          } catch (e) {
            failed = e;
          }
          // Parent and child wake together; a failed copy leaves the child frozen (it goes).
          await Promise.all([thaw ? this.d.runtime.resume(from) : undefined, failed ? undefined : this.d.runtime.resume(to)]);
          if (failed) throw failed;
          await this.d.store.transition(child, ['suspended'], 'running', { lastActivityAt: Date.now(), origin: 'fork-pool' });
        }),
      );
    } catch (e) {
      const box = await this.d.store.get(child);
      if (box) await this.d.runtime.destroy(this.idOf(box)).catch(() => undefined);
      if (!(e instanceof BoxdError && e.code === 'NOT_SUPPORTED') || !box) {
        await this.d.store.remove(child);
        throw e;
      }
      this.d.log.info({ parent, child, reason: e.message }, 'fork from the pool not possible here; committing');
      fallback = true;
    }
    if (fallback) {
      await this.d.store.transition(child, '*', 'creating', { runtimeId: '', hostPorts: {} });
      return this.fork(parent, child, true);
    }
    return this.d.store.require(child);
  }

  /** Commits a box's filesystem to the snapshot's image. The snapshot record is the caller's. */
  async snapshot(name: string, image: string, labels: Record<string, string> = { 'boxd.snapshot-of': name }): Promise<void> {
    await this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.require(name);
      if (box.state !== 'running' && box.state !== 'suspended') throw new BoxStateError(name, box.state, 'snapshot');
      await this.commitFrozen(box, image, { 'boxd.instance': this.d.prefix, ...labels });
    });
  }

  /**
   * Commits with the box frozen by our own suspend (the cgroup freezer where the runtime has
   * it, much cheaper than the engine's pause/unpause round trip), thawed again only when it was
   * running. A suspended box is already frozen and stays so.
   */
  private async commitFrozen(box: BoxRecord, image: string, labels: Record<string, string>): Promise<void> {
    const id = this.idOf(box);
    if (box.state === 'running') await this.d.runtime.suspend(id);
    try {
      await this.d.runtime.commit(id, image, labels, { frozen: true });
    } finally {
      if (box.state === 'running') await this.d.runtime.resume(id);
    }
  }
}
