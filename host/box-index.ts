import type { Redis } from 'ioredis';
import type { BoxEvent, BoxStore, BoxSummary } from '../core/boxes.ts';
import type { Logger } from '../core/log.ts';
import { whenReady } from '../core/redis.ts';

/**
 * This host's boxes in memory, for its periodic passes (heartbeat, drift check, idle sweep): read
 * whole once, then kept by the box events every transition publishes (one small read of the box
 * that moved), so a pass costs nothing per suspended box. A missed message (Redis reconnecting)
 * is made good by a whole read on every (re)subscription and every `fullMs`.
 *
 * `lastActivityAt` moves without an event (activity is a plain write): `running` reads it fresh.
 */
export class HostBoxIndex {
  private boxes = new Map<string, BoxSummary>();
  private timer: NodeJS.Timeout | undefined;
  /** Names whose event read landed while a whole read was in flight: read again after it. */
  private duringFull: Set<string> | undefined;
  private full$: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly d: {
      store: Pick<BoxStore, 'summaries' | 'summariesOf' | 'summary' | 'eventsChannel'>;
      /** A connection of its own, for SUBSCRIBE. */
      sub: Redis;
      hostId: string;
      fullMs: number;
      /** Called when a box appears, goes, or changes state or size (what the heartbeat counts). */
      onChange?: () => void;
      log: Logger;
    },
  ) {}

  /** Subscribes, reads every box once; resolves when the index is complete. */
  async start(): Promise<void> {
    this.d.sub.on('message', (channel: string, message: string) => {
      if (channel !== this.d.store.eventsChannel) return;
      let event: BoxEvent;
      try {
        event = JSON.parse(message) as BoxEvent;
      } catch {
        return;
      }
      void this.seen(event.name);
    });
    await whenReady(this.d.sub);
    // ioredis subscribes again after a reconnect; events sent meanwhile are lost: read all again.
    this.d.sub.on('ready', () => void this.full());
    await this.d.sub.subscribe(this.d.store.eventsChannel);
    await this.full();
    this.timer = setInterval(() => void this.full(), this.d.fullMs);
    this.timer.unref();
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** Every box of this host as last seen (by name). */
  list(): BoxSummary[] {
    return [...this.boxes.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** This host's running boxes, read fresh from Redis (their activity moves without events). */
  async running(): Promise<BoxSummary[]> {
    const names: string[] = [];
    for (const b of this.boxes.values()) if (b.state === 'running') names.push(b.name);
    return (await this.d.store.summariesOf(names)).filter((b) => b.hostId === this.d.hostId);
  }

  /** Reads every box of this host again. Concurrent calls share one read. */
  full(): Promise<void> {
    this.full$ ??= (async () => {
      this.duringFull = new Set();
      try {
        const all = await this.d.store.summaries(this.d.hostId);
        const was = this.boxes;
        this.boxes = new Map(all.map((b) => [b.name, b]));
        if (was.size !== this.boxes.size || all.some((b) => differs(was.get(b.name), b))) this.d.onChange?.();
      } catch (err) {
        this.d.log.warn({ err }, 'could not read this host’s boxes');
      } finally {
        const again = this.duringFull;
        this.duringFull = undefined;
        this.full$ = undefined;
        // Their event read may be older or newer than the whole read: read them once more.
        for (const name of again ?? []) void this.seen(name);
      }
    })();
    return this.full$;
  }

  /**
   * Reads box `name` again (its event said it changed); resolves once the index holds what was
   * read, so a caller that just changed the box can count on it. Never throws.
   */
  async seen(name: string): Promise<void> {
    if (this.closed) return;
    try {
      const b = await this.d.store.summary(name);
      const was = this.boxes.get(name);
      const now = b && b.hostId === this.d.hostId ? b : undefined;
      if (now) this.boxes.set(name, now);
      else this.boxes.delete(name);
      this.duringFull?.add(name);
      if (differs(was, now)) this.d.onChange?.();
    } catch (err) {
      this.d.log.warn({ box: name, err }, 'could not read a box that changed');
    }
  }
}

/** Whether the heartbeat would count a box differently (present, state, size). */
function differs(a: BoxSummary | undefined, b: BoxSummary | undefined): boolean {
  if (!a || !b) return a !== b;
  return a.state !== b.state || a.cpus !== b.cpus || a.memoryMb !== b.memoryMb;
}
