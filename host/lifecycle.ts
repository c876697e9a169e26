import type { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { POOL_ACCOUNT, type BoxRecord, type BoxStore, type SeenRecord } from '../core/boxes.ts';
import { forkImage, type Snapshots } from '../core/snapshots.ts';
import type { AccountGoldens } from '../core/account-goldens.ts';
import { BoxdError, BoxStateError } from '../core/errors.ts';
import type { ExecOutcome } from '../core/jobs.ts';
import { BusyBoxes, destroyedWhileRunning } from './busy.ts';
import type { Logger } from '../core/log.ts';
import type { BoxLocks } from './locks.ts';
import type { BoxSpec, OutputStream, PtyProcess, PtyRequest, Runtime } from './runtime.ts';

/** One command to run in a box. */
export interface ExecCall {
  name: string;
  execId: string;
  cmd: string[];
  cwd?: string;
  env?: Record<string, string>;
  stdin?: Buffer;
  timeoutMs: number;
  onOutput?: (stream: OutputStream, data: Buffer) => void | Promise<void>;
  maxOutputBytes?: number;
  /** Aborts when the caller is gone: the command's tree is killed. */
  signal?: AbortSignal;
  /**
   * The record as the gateway read it just before: when running, the command goes straight to
   * its container without reading the record again. A stale one costs nothing but a retry (a
   * frozen or gone container refuses the start, and the record is read then).
   */
  seen?: SeenBox;
}

/** A record as the gateway saw it, with what an exec needs of it. */
export type SeenBox = SeenRecord & Pick<BoxRecord, 'env'>;

/** BOX_STATE while resuming means another transition raced us: read the state again. */
function retryOnState(e: unknown): void {
  if (e instanceof BoxdError && e.code === 'BOX_STATE') return;
  throw e;
}

export interface LifecycleDeps {
  store: BoxStore;
  runtime: Runtime;
  redis: Redis;
  locks: BoxLocks;
  prefix: string;
  hostId: string;
  pidsLimit: number;
  /** Disk quota of boxes whose record names none, and the most any box gets, in MiB (0: no quotas). */
  diskMb?: number;
  snapshots?: Snapshots;
  accountGoldens?: AccountGoldens;
  /** Revokes the box-scoped keys of a destroyed box (Accounts.revokeBoxKeys). */
  revokeBoxKeys?: (account: string, box: string) => Promise<void>;
  log: Logger;
}

/** How long after a claim its container takes the box's name, in ms. */
const ADOPT_DELAY_MS = 2000;

/**
 * The box operations a host performs on its own runtime. Each is idempotent where the job that
 * calls it may be retried (create, suspend, resume, destroy), holds the box's lock, and moves
 * the record with an atomic transition only after the runtime did the work.
 */
export class Lifecycle {
  private readonly busy = new BusyBoxes();

  constructor(private readonly d: LifecycleDeps) {}

  /** Runtime name of a box: unique per prefix, so parallel instances never collide. */
  runtimeName(name: string): string {
    return `${this.d.prefix}-${name}`;
  }

  /** Runtime id of a box: its container, which a claimed pool box keeps under its new name. */
  idOf(box: Pick<BoxRecord, 'name' | 'runtimeId'>): string {
    return box.runtimeId ?? this.runtimeName(box.name);
  }

  /**
   * Labels are fixed when a container is made, and a pool box becomes a user's box later under
   * another name and account. So only a box made for its user names its box and account; a pool
   * box names its pool (`boxd.pool`, the golden) and its slot (`boxd.slot`, its pool name, never
   * a box's). Which box a container serves is its name (`<prefix>-<box>`, renamed at the claim)
   * and the record's `runtimeId`, never a label.
   */
  labels(box: Pick<BoxRecord, 'name' | 'account' | 'golden'>): Record<string, string> {
    const own = { 'boxd.managed': 'true', 'boxd.instance': this.d.prefix, 'boxd.host': this.d.hostId };
    if (box.account === POOL_ACCOUNT) return { ...own, 'boxd.pool': box.golden ?? '', 'boxd.slot': box.name };
    return { ...own, 'boxd.box': box.name, 'boxd.account': box.account };
  }

  /** Boxes whose container is being renamed to their name, and the rename's end. */
  private readonly renaming = new Map<string, Promise<void>>();

  /**
   * Gives the container of `name` its box's runtime name when it has another (a claimed pool box
   * keeps its pool name until then), and records it. Takes the box's lock; idempotent; a box
   * that is gone or not running/suspended is left alone. Returns whether it renamed.
   */
  async adoptName(name: string): Promise<boolean> {
    const rename = this.d.runtime.rename?.bind(this.d.runtime);
    if (!rename) return false;
    return this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.get(name);
      if (!box || (box.state !== 'running' && box.state !== 'suspended')) return false;
      const to = this.runtimeName(name);
      if (this.idOf(box) === to) return false;
      await rename(this.idOf(box), this.spec(box));
      await this.d.store.update(name, { runtimeId: to });
      return true;
    });
  }

  /** adoptName once the caller's lock is released, without waiting; execs racing it retry. */
  private adoptSoon(name: string): void {
    if (!this.d.runtime.rename || this.renaming.has(name)) return;
    const run = (async () => {
      // Not at once: an agent execs right after its create, and that first exec would wait for the
      // rename (engine rename, disk image, egress rules, hostname: ~130 ms). A moment later it
      // usually lands between calls; a call that meets it retries under the new name.
      await new Promise((r) => setTimeout(r, ADOPT_DELAY_MS).unref());
      await this.adoptName(name);
    })()
      .catch((err) => this.d.log.warn({ box: name, err }, 'could not rename a claimed container (the drift check tries again)'))
      .finally(() => this.renaming.delete(name));
    this.renaming.set(name, run);
  }

  /** Whether the container of `box` still has a name other than its box's. */
  misnamed(box: Pick<BoxRecord, 'name' | 'runtimeId'>): boolean {
    return this.idOf(box) !== this.runtimeName(box.name);
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
      diskMb: diskQuota(box.diskMb, this.d.diskMb ?? 0),
      network: box.network ?? 'open',
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
      await this.d.store.transition(name, ['running'], 'suspended', { manualSuspend: true });
      return { ...box, state: 'suspended', manualSuspend: true, version: box.version + 1 };
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
      await this.d.store.transition(name, ['running'], 'suspended', { manualSuspend: false });
      return true;
    });
  }

  /**
   * Resumes `name`. With `seen` (the record as the gateway read it a moment ago, suspended), the
   * container is thawed first and one script moves the record on only if it is still that same
   * record: one Redis round trip instead of two. Otherwise the usual path reads the record again.
   */
  async resume(name: string, seen?: SeenRecord): Promise<BoxRecord> {
    return this.d.locks.exclusive(name, async () => (seen?.state === 'suspended' ? await this.resumeSeen(name, seen) : undefined) ?? this.resumeLocked(name));
  }

  /**
   * Under the box's lock no other operation of this host moves the record or the container, so
   * when the record is still exactly `seen` after the thaw, it was so before it too. When it moved
   * meanwhile (another resume, a destroy, the sweeper marking it lost), undefined: the caller
   * reads it. A box marked lost while suspended is frozen again, as its record says.
   */
  private async resumeSeen(name: string, seen: SeenRecord): Promise<BoxRecord | undefined> {
    const id = this.idOf({ name, runtimeId: seen.runtimeId });
    try {
      await this.d.runtime.resume(id);
    } catch {
      return undefined;
    }
    const box = await this.d.store.transitionSeen(name, seen, 'running', { lastActivityAt: Date.now(), manualSuspend: false });
    if (box) return box;
    const now = await this.d.store.get(name);
    if (now?.state === 'lost' && now.lostFrom === 'suspended' && this.idOf(now) === id) await this.d.runtime.suspend(id).catch(() => undefined);
    return undefined;
  }

  private async resumeLocked(name: string): Promise<BoxRecord> {
    const box = await this.d.store.require(name);
    if (box.state === 'running') return box;
    if (box.state !== 'suspended') throw new BoxStateError(name, box.state, 'resume');
    await this.d.runtime.resume(this.idOf(box));
    const lastActivityAt = Date.now();
    await this.d.store.transition(name, ['suspended'], 'running', { lastActivityAt, manualSuspend: false });
    // A claimed pool box: answer first, rename its container right after.
    if (this.misnamed(box)) this.adoptSoon(name);
    // The record as the transition left it (its version moved by one), without reading it back.
    return { ...box, state: 'running', lastActivityAt, manualSuspend: false, version: box.version + 1 };
  }

  /** The record of `name` once running (resumed first when suspended). */
  private async running(name: string, what: string): Promise<BoxRecord> {
    for (let i = 0; i < 3; i++) {
      const box = await this.d.store.require(name);
      if (box.state === 'running') return box;
      if (box.state === 'suspended') await this.resume(name).catch(retryOnState);
      else throw new BoxStateError(name, box.state, what);
    }
    throw new BoxStateError(name, 'changing state', what);
  }

  /**
   * Runs `fn` on a running box with no lock held: suspend, resume and destroy never wait for it.
   * A box suspended between the state read and the engine call is refused by the runtime
   * (BOX_STATE) and resumed again. Destroy cancels `signal` and the call answers BOX_NOT_FOUND.
   */
  private async onRunning<T>(
    name: string,
    id: string,
    what: string,
    fn: (box: Pick<BoxRecord, 'name' | 'runtimeId' | 'env'>, signal: AbortSignal) => Promise<T>,
    outer?: AbortSignal,
    seen?: SeenBox,
  ): Promise<T> {
    const work = this.busy.start(name, id);
    const onOuter = () => this.busy.cancel(name, id, 'client-gone');
    outer?.addEventListener('abort', onOuter, { once: true });
    try {
      for (let i = 0; ; i++) {
        // The first try may use the record the caller saw (when running); a retry reads it.
        const trusted = i === 0 && seen?.state === 'running';
        const box = trusted ? { name, runtimeId: seen.runtimeId, env: seen.env } : await this.running(name, what);
        try {
          const out = await fn(box, work.signal);
          if (work.signal.reason === 'destroyed') throw destroyedWhileRunning(name);
          return out;
        } catch (e) {
          if (work.signal.reason === 'destroyed') throw destroyedWhileRunning(name);
          if (e instanceof BoxdError && e.code === 'BOX_NOT_FOUND') {
            const now = await this.d.store.get(name);
            if (!now) throw destroyedWhileRunning(name);
            // The seen record named a container that is gone (the engine refused before starting anything): read it.
            if (trusted) continue;
            // The container was renamed under us (a claimed pool box taking its name): again by the new name.
            const renamed = this.renaming.get(name);
            if (i < 5 && (renamed || this.idOf(now) !== this.idOf(box))) {
              await renamed;
              continue;
            }
          }
          if (i < 5 && e instanceof BoxdError && e.code === 'BOX_STATE') {
            await new Promise((r) => setTimeout(r, 10 * (i + 1))); // a suspend is landing: let its record catch up
            continue;
          }
          throw e;
        }
      }
    } finally {
      outer?.removeEventListener('abort', onOuter);
      work.done();
    }
  }

  /** Starts a command on a terminal in the box (resumed first if suspended), with the box's env. */
  async pty(name: string, req: PtyRequest): Promise<PtyProcess> {
    const start = this.d.runtime.pty?.bind(this.d.runtime);
    if (!start) throw new BoxdError('NOT_IMPLEMENTED', 'this host’s runtime has no terminals');
    for (let i = 0; ; i++) {
      const box = await this.running(name, 'open a terminal');
      this.touch(name);
      try {
        return await start(this.idOf(box), { ...req, env: { ...box.env, ...req.env } });
      } catch (e) {
        const renamed = this.renaming.get(name);
        if (i > 2 || !(e instanceof BoxdError && e.code === 'BOX_NOT_FOUND') || !renamed) throw e;
        await renamed;
      }
    }
  }

  /** Execs and file transfers running on `name`. */
  busyCount(name: string): number {
    return this.busy.count(name);
  }

  /**
   * Runs a command. Holds no lock. `signal` aborting (the client went away) kills the command's
   * process tree; destroy kills it too and the call throws BOX_NOT_FOUND.
   */
  async exec(req: ExecCall): Promise<ExecOutcome> {
    const started = performance.now();
    const result = await this.onRunning(
      req.name,
      req.execId,
      'run commands',
      async (box, signal) => {
        this.touch(req.name);
        const r = await this.d.runtime.exec(this.idOf(box), {
          cmd: req.cmd,
          cwd: req.cwd,
          execId: req.execId,
          // The box's own env first (a claimed pool box got it after its container was made).
          env: { ...box.env, ...req.env },
          stdin: req.stdin,
          timeoutMs: req.timeoutMs,
          signal,
          onOutput: req.onOutput,
          maxOutputBytes: req.maxOutputBytes,
        });
        this.touch(req.name);
        return r;
      },
      req.signal,
      req.seen,
    );
    return {
      exitCode: result.exitCode,
      stdout: result.stdout.toString('utf8'),
      stderr: result.stderr.toString('utf8'),
      durationMs: Math.round(performance.now() - started),
      timedOut: result.timedOut,
      truncated: result.truncated,
    };
  }

  /** Activity for the idle sweep, without waiting for Redis. */
  private touch(name: string): void {
    void this.d.store.touch(name).catch(() => undefined);
  }

  /** Writes bytes into a box (resumed first if suspended). */
  async writeFile(name: string, path: string, data: Buffer, mode?: number): Promise<void> {
    await this.onRunning(name, `put-${randomUUID()}`, 'write files', async (box) => {
      await this.d.runtime.putFile(this.idOf(box), path, data, mode);
      this.touch(name);
    });
  }

  /** Streams `size` bytes into a file of a box; a partial upload leaves nothing behind. */
  async putFileStream(name: string, path: string, source: Readable, size: number, mode?: number): Promise<void> {
    await this.onRunning(name, `put-${randomUUID()}`, 'write files', async (box) => {
      await this.d.runtime.putFileStream(this.idOf(box), path, source, size, mode);
      this.touch(name);
    });
  }

  /** Opens a file of a box for streaming. The transfer counts as busy until the stream closes. */
  async openFile(name: string, path: string): Promise<{ size: number; stream: Readable }> {
    const id = `get-${randomUUID()}`;
    const hold = this.busy.start(name, id);
    try {
      const opened = await this.onRunning(name, `${id}-open`, 'read files', (box) => this.d.runtime.getFileStream(this.idOf(box), path));
      opened.stream.once('close', () => {
        hold.done();
        this.touch(name);
      });
      return opened;
    } catch (e) {
      hold.done();
      throw e;
    }
  }

  /** Removes the container, the record, and the box's fork image when nothing else uses it. Idempotent. */
  async destroy(name: string): Promise<void> {
    // Running execs hold no lock: cancel them (their trees are killed) and go on at once.
    this.busy.cancelAll(name, 'destroyed');
    await this.d.locks.exclusive(name, async () => {
      const box = await this.d.store.get(name);
      await this.d.runtime.destroy(box ? this.idOf(box) : this.runtimeName(name));
      await this.d.store.remove(name);
      if (box) await this.d.revokeBoxKeys?.(box.account, box.name).catch((err) => this.d.log.warn({ err, box: name }, 'revoking box keys failed'));
      // Only images that are this box's own (its fork image) or its account's unreferenced
      // snapshot images are removed: never another account's image.
      if (box && box.imageRef === forkImage(this.d.prefix, box.account, box.name)) await this.d.runtime.removeImage(box.imageRef);
      if (box && this.d.snapshots?.ownsImage(box.account, box.imageRef) && !(await this.d.snapshots.referenced(box.account, box.imageRef))) {
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
    // A retry of a fork whose caller gave up finds no record: nothing to finish, nothing to write.
    const c = await this.d.store.require(child);
    const image = forkImage(this.d.prefix, c.account, child);
    await this.d.locks.exclusive(parent, async () => {
      const p = await this.d.store.require(parent);
      if (p.state !== 'running' && p.state !== 'suspended') throw new BoxStateError(parent, p.state, 'fork');
      await this.commitFrozen(p, image, { 'boxd.instance': this.d.prefix, 'boxd.fork-of': parent });
    }).catch(async (e) => {
      // A retried attempt needs the record: it goes only when no attempt follows.
      const permanent = e instanceof BoxdError && e.code !== 'RUNTIME_ERROR';
      if (permanent || finalAttempt) {
        await this.d.store.remove(child);
        await this.d.runtime.removeImage(image).catch(() => false);
      }
      throw e;
    });
    try {
      await this.d.store.update(child, { imageRef: image, origin: 'fork-commit' });
    } catch (e) {
      await this.d.runtime.removeImage(image).catch(() => false);
      throw e;
    }
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
          if (this.misnamed(c)) this.adoptSoon(child);
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

/** A box's quota: what it asked for, never above the host's maximum; no quota when the host has none. */
export function diskQuota(asked: number | undefined, hostMax: number): number {
  if (hostMax <= 0) return 0;
  return Math.min(asked ?? hostMax, hostMax);
}
