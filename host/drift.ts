import type { BoxRecord, BoxStore, BoxSummary } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { BoxLocks } from './locks.ts';
import type { BoxInstance, BoxSpec, Runtime } from './runtime.ts';

/** What one drift check changed, box by box. */
export interface DriftFix {
  box: string;
  kind: 'vanished' | 'paused-by-hand' | 'resumed-by-hand' | 'died-restarted' | 'died-unrecoverable' | 'renamed';
  /** The state the record was left in. */
  state: BoxRecord['state'];
}

export interface DriftDeps {
  store: Pick<BoxStore, 'summaries' | 'get' | 'transition'>;
  runtime: Pick<Runtime, 'list' | 'inspect' | 'create' | 'suspend' | 'watch'>;
  locks: Pick<BoxLocks, 'active' | 'exclusive'>;
  /** Labels of every box this host runs. */
  labels: Record<string, string>;
  spec: (box: BoxRecord) => BoxSpec;
  idOf: (box: Pick<BoxRecord, 'name' | 'runtimeId'>) => string;
  /** Whether a box's container has a name other than its box's (a claimed pool box not renamed yet). */
  misnamed?: (box: Pick<BoxRecord, 'name' | 'runtimeId'>) => boolean;
  /** Renames such a container and records it (Lifecycle.adoptName; takes the box's lock). */
  adopt?: (name: string) => Promise<unknown>;
  hostId: string;
  log: Logger;
}

/**
 * Keeps this host's records true to its runtime while it runs (start-up has `reconcile`). Every
 * tick costs one labeled list of the runtime and one read of a few fields of the host's records;
 * only a box whose two sides disagree is looked at again, under its lock, so a suspend or create
 * in flight (which holds the lock between its runtime step and its record step) is never taken
 * for drift.
 *
 * - container gone → record `error` ("its container was removed outside boxd")
 * - paused while the record says running → record `suspended` (and the reverse → `running`)
 * - container stopped (its processes died) → started again, record keeps its state; when that
 *   fails → `error` ("its container stopped and could not be restarted")
 */
export class DriftWatch {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<DriftFix[]> | undefined;
  /** Boxes seen stopped by the last pass: a stop is acted on when two passes agree. */
  private stoppedBefore = new Set<string>();
  private unwatch: (() => void) | undefined;
  /** Containers the engine reported changed, checked a moment later (a `docker rm -f` shows a stop first). */
  private readonly soon = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly d: DriftDeps) {}

  /** One pass; concurrent calls share it. */
  check(): Promise<DriftFix[]> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  /**
   * Checks every box each `intervalMs` and, when the runtime reports changes, the box whose
   * container changed a second after the engine said so.
   */
  start(intervalMs: number): void {
    if (intervalMs <= 0) return;
    this.timer = setInterval(() => void this.check().catch((err) => this.d.log.warn({ err }, 'drift check failed')), intervalMs);
    this.timer.unref();
    this.unwatch = this.d.runtime.watch?.(this.d.labels, (id) => {
      if (this.stopped || this.soon.has(id)) return;
      const t = setTimeout(() => {
        this.soon.delete(id);
        void this.checkContainer(id).catch((err) => this.d.log.warn({ err, id }, 'drift check failed'));
      }, 1000);
      t.unref();
      this.soon.set(id, t);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.unwatch?.();
    for (const t of this.soon.values()) clearTimeout(t);
    this.soon.clear();
    await this.running?.catch(() => undefined);
  }

  /** Checks the box whose container is `id` (one the engine reported changed). */
  private async checkContainer(id: string): Promise<DriftFix | undefined> {
    const box = (await this.d.store.summaries(this.d.hostId)).find((b) => this.d.idOf(b) === id);
    if (!box || (box.state !== 'running' && box.state !== 'suspended') || this.d.locks.active(box.name)) return undefined;
    const fix = await this.d.locks.exclusive(box.name, () => this.fix(box.name));
    if (fix) this.d.log.warn(fix, `box drifted: ${describe(fix)}`);
    return fix;
  }

  private async pass(): Promise<DriftFix[]> {
    const [containers, records] = await Promise.all([this.d.runtime.list(this.d.labels), this.d.store.summaries(this.d.hostId)]);
    const byId = new Map(containers.map((c) => [c.id, c]));
    const fixes: DriftFix[] = [];
    const stopped = new Set<string>();
    for (const box of records) {
      if (box.state !== 'running' && box.state !== 'suspended') continue;
      if (this.d.adopt && this.d.misnamed?.(box) && !this.d.locks.active(box.name)) {
        // A claim renames its container right after answering; one that did not get to it (the
        // host died in between, the engine refused) is renamed here. A container gone under
        // its old name is drift like any other.
        const renamed = await this.d.adopt(box.name).then(
          (r) => r !== false,
          (err) => {
            if (!(err instanceof BoxdError && err.code === 'BOX_NOT_FOUND')) this.d.log.warn({ box: box.name, err }, 'could not rename a container to its box');
            return false;
          },
        );
        if (renamed) {
          const fix: DriftFix = { box: box.name, kind: 'renamed', state: box.state };
          fixes.push(fix);
          this.d.log.info(fix, `box drifted: ${describe(fix)}`);
          continue;
        }
      }
      const c = byId.get(this.d.idOf(box));
      if (agrees(box, c) || this.d.locks.active(box.name)) continue;
      // A container being removed (`docker rm -f`) looks stopped for a moment: wait for a second look.
      if (c?.state === 'stopped' && !this.stoppedBefore.has(box.name)) {
        stopped.add(box.name);
        continue;
      }
      const fix = await this.d.locks.exclusive(box.name, () => this.fix(box.name)).catch((err) => {
        this.d.log.warn({ box: box.name, err }, 'could not mend drift');
        return undefined;
      });
      if (fix) {
        fixes.push(fix);
        this.d.log.warn(fix, `box drifted: ${describe(fix)}`);
      }
    }
    this.stoppedBefore = stopped;
    return fixes;
  }

  /** Re-reads both sides under the box's lock and makes the record follow the runtime. */
  private async fix(name: string): Promise<DriftFix | undefined> {
    const box = await this.d.store.get(name);
    if (!box || (box.state !== 'running' && box.state !== 'suspended')) return undefined;
    const c = await this.d.runtime.inspect(this.d.idOf(box));
    if (agrees(box, c)) return undefined;
    const from = [box.state];
    const vanished = async (): Promise<DriftFix> => {
      await this.d.store.transition(name, from, 'error', { error: `its container was removed outside boxd (noticed ${new Date().toISOString()})` });
      return { box: name, kind: 'vanished', state: 'error' };
    };
    if (!c) return vanished();
    if (c.state === 'paused') {
      await this.d.store.transition(name, from, 'suspended');
      return { box: name, kind: 'paused-by-hand', state: 'suspended' };
    }
    if (c.state === 'running') {
      await this.d.store.transition(name, from, 'running', { lastActivityAt: Date.now() });
      return { box: name, kind: 'resumed-by-hand', state: 'running' };
    }
    // Stopped: its processes died (killed, OOM, engine restart). Its files survive a restart.
    const inst = await this.d.runtime.create({ ...this.d.spec(box), name: c.id }).catch(() => undefined);
    if (!inst) {
      // `docker rm -f` shows the container stopped for a moment before it is gone.
      if (!(await this.d.runtime.inspect(c.id).catch(() => c))) return vanished();
      await this.d.store.transition(name, from, 'error', { error: `its container stopped and could not be restarted (noticed ${new Date().toISOString()})` });
      return { box: name, kind: 'died-unrecoverable', state: 'error' };
    }
    if (box.state === 'suspended') await this.d.runtime.suspend(c.id);
    // Ports may change on a restart; the transition publishes them so caches drop the old ones.
    await this.d.store.transition(name, from, box.state, { hostPorts: inst.ports, lastActivityAt: Date.now() });
    return { box: name, kind: 'died-restarted', state: box.state };
  }
}

function agrees(box: Pick<BoxSummary, 'state'>, c: BoxInstance | undefined): boolean {
  if (!c) return false;
  return box.state === 'running' ? c.state === 'running' : c.state === 'paused';
}

function describe(f: DriftFix): string {
  switch (f.kind) {
    case 'vanished':
      return 'its container was removed outside boxd; the box is now error';
    case 'paused-by-hand':
      return 'its container was paused outside boxd; the box is now suspended';
    case 'resumed-by-hand':
      return 'its container was unpaused outside boxd; the box is now running';
    case 'died-restarted':
      return 'its container stopped; it was started again (its processes were lost, its files kept)';
    case 'renamed':
      return 'its container still had its pool name; it was renamed to the box';
    case 'died-unrecoverable':
      return 'its container stopped and could not be started again; the box is now error';
  }
}
