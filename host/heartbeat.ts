import { cpus as osCpus, totalmem } from 'node:os';
import type { Redis } from 'ioredis';
import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import type { HostInfo, Resources } from '../core/jobs.ts';
import { Keys } from '../core/keys.ts';
import type { Logger } from '../core/log.ts';
import type { Runtime } from './runtime.ts';

/** What this machine offers: the configured figures, or the detected ones where 0. */
export function hostCapacity(cpus: number, memoryMb: number): Resources {
  return {
    cpus: cpus > 0 ? cpus : osCpus().length,
    memoryMb: memoryMb > 0 ? memoryMb : Math.floor(totalmem() / 1024 / 1024),
  };
}

/**
 * What a host's boxes commit: running and creating boxes their full cpus and memory, suspended
 * ones no cpu and `suspendedWeight` of their memory; boxes in error or lost commit nothing.
 */
export function committed(boxes: Pick<BoxRecord, 'state' | 'cpus' | 'memoryMb'>[], suspendedWeight: number): { committed: Resources; boxes: NonNullable<HostInfo['boxes']> } {
  const c = { cpus: 0, memoryMb: 0 };
  const n = { running: 0, suspended: 0, other: 0 };
  for (const b of boxes) {
    const live = b.state === 'running' || b.state === 'creating';
    if (live) n.running++;
    else if (b.state === 'suspended') n.suspended++;
    else n.other++;
    // A frozen box uses no CPU at all; its memory stays resident, hence the weight.
    if (live) c.cpus += b.cpus;
    c.memoryMb += (live ? 1 : b.state === 'suspended' ? suspendedWeight : 0) * b.memoryMb;
  }
  return { committed: { cpus: round(c.cpus), memoryMb: Math.round(c.memoryMb) }, boxes: n };
}

const round = (x: number) => Math.round(x * 100) / 100;

/**
 * Writes this host's heartbeat: liveness, capacity, what its boxes commit and which goldens it
 * holds. `extra` lets other parts of the host add fields (its data-plane address).
 *
 * Beats come every `everyMs` (`start`) and, when the host's boxes change, soon after (`soon`):
 * placement reads commitments from here, so a heartbeat that waited for the next period would
 * refuse a create right after deletes, or pile a burst onto one host. Beats never overlap;
 * change beats come at most one per `debounceMs`, the last one after the last change.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  private readonly keys: Keys;
  private sawLost = false;
  private lastBeat: number | undefined;
  private away = false;
  /** Goldens held, as of the last full beat (a change beat does not ask Docker again). */
  private held: string[] | undefined;
  private inFlight: Promise<void> | undefined;
  private lastStart = 0;
  /** Callers of `soon` waiting for a beat that has not started yet. */
  private pending: { done: Promise<void>; resolve: () => void } | undefined;
  private soonTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly d: {
      redis: Pick<Redis, 'hset' | 'hdel'>;
      store: Pick<BoxStore, 'summaries'>;
      runtime: Pick<Runtime, 'hasImage'>;
      prefix: string;
      hostId: string;
      capacity: Resources;
      suspendedWeight: number;
      /** BOXD_HOST_DEAD_MS. */
      deadMs: number;
      /** Least time between the starts of two change beats (BOXD_HEARTBEAT_DEBOUNCE_MS). */
      debounceMs?: number;
      /** Golden name → image tag, of every golden this host knows. */
      goldens: () => Map<string, { tag: string }>;
      extra?: () => Record<string, unknown>;
      /** Called after a beat that found boxes of this host marked lost (it was taken for dead). */
      onLost?: () => void;
      log: Logger;
    },
  ) {
    this.keys = new Keys(d.prefix);
  }

  /** The record as it would be written now; `full: false` reuses the goldens found last time. */
  async info(full = true): Promise<HostInfo> {
    const mine = await this.d.store.summaries(this.d.hostId);
    this.sawLost = mine.some((b) => b.state === 'lost');
    if (full || !this.held) {
      const held: string[] = [];
      for (const [name, g] of this.d.goldens()) if (await this.d.runtime.hasImage(g.tag).catch(() => false)) held.push(name);
      this.held = held.sort();
    }
    return {
      ...(this.d.extra?.() ?? {}),
      id: this.d.hostId,
      startedAt: this.startedAt,
      heartbeatAt: Date.now(),
      capacity: this.d.capacity,
      ...committed(mine, this.d.suspendedWeight),
      creating: mine.filter((b) => b.state === 'creating').map((b) => b.name).sort(),
      goldens: this.held,
    };
  }

  /**
   * Writes a beat now (after the one in flight, if any). It answers every `soon` made before it
   * starts. Never throws: a failed write is logged and the next beat tries again.
   */
  async beat(full = true): Promise<void> {
    while (this.inFlight) await this.inFlight;
    if (this.stopped) return;
    const waiting = this.pending;
    this.pending = undefined;
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.soonTimer = undefined;
    this.lastStart = Date.now();
    this.inFlight = this.write(full).finally(() => {
      this.inFlight = undefined;
      waiting?.resolve();
      this.schedule();
    });
    return this.inFlight;
  }

  /**
   * Asks for a beat because this host's boxes changed. Resolves once a beat that started after
   * this call is written (or failed, or the heartbeat stopped). Calls while one waits share it.
   */
  soon(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (!this.pending) {
      let resolve!: () => void;
      const done = new Promise<void>((r) => (resolve = r));
      this.pending = { done, resolve };
      this.schedule();
    }
    return this.pending.done;
  }

  /** Starts the pending change beat when the last one is `debounceMs` old and none is in flight. */
  private schedule(): void {
    if (!this.pending || this.inFlight || this.soonTimer || this.stopped) return;
    const wait = Math.max(0, this.lastStart + (this.d.debounceMs ?? 150) - Date.now());
    this.soonTimer = setTimeout(() => {
      this.soonTimer = undefined;
      void this.beat(false);
    }, wait);
  }

  private async write(full: boolean): Promise<void> {
    try {
      const info = await this.info(full);
      if (this.stopped) return;
      await this.d.redis.hset(this.keys.hosts, this.d.hostId, JSON.stringify(info));
      const now = Date.now();
      // A gap longer than a dead host's lapse means sweepers may have judged us: check (on the
      // next periodic beat, so that a burst of change beats asks for one reconcile, not many).
      if (this.lastBeat !== undefined && now - this.lastBeat > this.d.deadMs) this.away = true;
      this.lastBeat = now;
      if (full && (this.sawLost || this.away) && this.timer) {
        this.away = false;
        this.d.onLost?.();
      }
    } catch (err) {
      this.d.log.warn({ err }, 'heartbeat failed');
    }
  }

  start(everyMs: number): void {
    const loop = () => {
      this.timer = setTimeout(() => void this.beat().finally(() => this.timer && loop()), everyMs);
      this.timer.unref();
    };
    loop();
  }

  /** Stops beating (waiting for a beat in flight) and removes the record (a clean stop is not a death). */
  async stop(): Promise<void> {
    this.stopped = true;
    const t = this.timer;
    this.timer = undefined;
    if (t) clearTimeout(t);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.soonTimer = undefined;
    this.pending?.resolve();
    this.pending = undefined;
    await this.inFlight;
    await this.d.redis.hdel(this.keys.hosts, this.d.hostId).catch(() => undefined);
  }
}
