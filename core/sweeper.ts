import type { Redis } from 'ioredis';
import type { BoxStore } from './boxes.ts';
import type { HostInfo } from './jobs.ts';
import { Keys } from './keys.ts';
import { RedisLock } from './lock.ts';
import type { Logger } from './log.ts';
import { isAlive } from './placement.ts';

/**
 * Declares dead hosts' boxes `lost`. Runs in every gateway and host; a Redis lease makes one of
 * them do the work at a time. A host is dead when its heartbeat is older than `deadMs`.
 *
 * Heartbeats stop when Redis does, so after Redis was unreachable (from here) the sweeper waits
 * until Redis has answered for a whole `deadMs` — every live host has beaten again by then —
 * before it judges anyone: an outage of Redis never kills hosts.
 */
export class HostSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** Since when Redis has answered without a failure in between (undefined: it just failed). */
  private healthySince: number | undefined;
  private readonly keys: Keys;
  private readonly lock: RedisLock;

  constructor(
    private readonly d: {
      redis: Redis;
      store: Pick<BoxStore, 'list' | 'lose'>;
      prefix: string;
      deadMs: number;
      log: Logger;
      /** For tests. */
      now?: () => number;
    },
  ) {
    this.keys = new Keys(d.prefix);
    this.lock = new RedisLock(d.redis, this.keys.sweepLock, Math.max(2 * this.interval, 5_000));
  }

  /** How often it sweeps: often enough that boxes are lost within 30 s of the host's last beat. */
  get interval(): number {
    return Math.max(200, Math.min(5_000, Math.floor(this.d.deadMs / 3)));
  }

  private now(): number {
    return (this.d.now ?? Date.now)();
  }

  /** One pass. Returns the hosts it judged dead (empty when it skipped or held no lease). */
  async sweep(): Promise<string[]> {
    try {
      await this.d.redis.ping();
    } catch {
      this.healthySince = undefined;
      return [];
    }
    const now = this.now();
    this.healthySince ??= now;
    if (now - this.healthySince < this.d.deadMs) return [];
    try {
      if (!(await this.lock.acquire())) return [];
      const all = Object.values(await this.d.redis.hgetall(this.keys.hosts)).map((v) => JSON.parse(v) as HostInfo);
      const dead = all.filter((h) => !isAlive(h, this.now(), this.d.deadMs));
      for (const h of dead) {
        const reason = `host ${h.id} stopped answering (last heartbeat ${new Date(h.heartbeatAt).toISOString()})`;
        const boxes = await this.d.store.list({ hostId: h.id });
        let lost = 0;
        for (const b of boxes) if (await this.d.store.lose(b.name, reason)) lost++;
        if (lost) this.d.log.warn({ host: h.id, lost }, 'host is dead; its boxes are lost');
      }
      return dead.map((h) => h.id);
    } catch (err) {
      this.healthySince = undefined;
      this.d.log.warn({ err }, 'host sweep failed');
      return [];
    }
  }

  start(): void {
    const loop = () => {
      this.timer = setTimeout(() => {
        this.running = this.sweep().then(() => undefined);
        void this.running.finally(() => this.timer && loop());
      }, this.interval);
      this.timer.unref();
    };
    loop();
  }

  async stop(): Promise<void> {
    const t = this.timer;
    this.timer = undefined;
    if (t) clearTimeout(t);
    await this.running?.catch(() => undefined);
    await this.lock.release().catch(() => undefined);
  }
}
