import type { BoxStore } from '../core/boxes.ts';
import type { Logger } from '../core/log.ts';
import type { Lifecycle } from './lifecycle.ts';

/**
 * Suspends this host's boxes that had no activity for their `idleTimeoutMs` (0: never).
 * Activity is what gateways record for inbound traffic (refreshed every second while a request
 * is in flight or a WebSocket is open) plus running execs and file transfers.
 */
export class IdleSuspender {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly d: {
      store: Pick<BoxStore, 'summaries'>;
      lifecycle: Pick<Lifecycle, 'suspendIfIdle' | 'busyCount'>;
      hostId: string;
      intervalMs: number;
      log: Logger;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      if (!this.running) this.running = this.sweep().then(() => undefined).finally(() => (this.running = undefined));
    }, this.d.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass over this host's running boxes; returns the names it suspended. */
  async sweep(now = Date.now): Promise<string[]> {
    const suspended: string[] = [];
    try {
      // A few fields of each box (not whole records): this runs every second over every box.
      const boxes = await this.d.store.summaries(this.d.hostId);
      const isIdle = (b: { idleTimeoutMs: number; lastActivityAt: number; name: string }) =>
        b.idleTimeoutMs > 0 && now() - b.lastActivityAt >= b.idleTimeoutMs && this.d.lifecycle.busyCount(b.name) === 0;
      for (const box of boxes) {
        if (box.state !== 'running' || !isIdle(box)) continue;
        try {
          if (await this.d.lifecycle.suspendIfIdle(box.name, isIdle)) {
            suspended.push(box.name);
            this.d.log.info({ box: box.name, idleMs: now() - box.lastActivityAt }, 'suspended idle box');
          }
        } catch (e) {
          this.d.log.warn({ box: box.name, err: e }, 'idle suspend failed');
        }
      }
    } catch (e) {
      this.d.log.warn({ err: e }, 'idle sweep failed');
    }
    return suspended;
  }
}
