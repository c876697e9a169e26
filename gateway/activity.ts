import type { BoxStore } from '../core/boxes.ts';

/**
 * Inbound traffic per box, kept in memory and written to Redis at most once per flush interval
 * per box, not once per request. A box with a request in flight or a WebSocket open is touched
 * at every flush, so the host never finds it idle.
 */
export class Activity {
  private readonly inflight = new Map<string, number>();
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly store: Pick<BoxStore, 'touch'>) {}

  begin(name: string): void {
    this.inflight.set(name, (this.inflight.get(name) ?? 0) + 1);
    this.dirty.add(name);
  }

  end(name: string): void {
    const n = (this.inflight.get(name) ?? 1) - 1;
    if (n <= 0) this.inflight.delete(name);
    else this.inflight.set(name, n);
    this.dirty.add(name);
  }

  /** Counts `name` busy until the returned function is called (calling it again does nothing). */
  hold(name: string): () => void {
    this.begin(name);
    let held = true;
    return () => {
      if (held) {
        held = false;
        this.end(name);
      }
    };
  }

  /** Requests in flight and WebSockets open to `name` through this gateway. */
  busy(name: string): number {
    return this.inflight.get(name) ?? 0;
  }

  async flush(now = Date.now()): Promise<void> {
    const names = new Set([...this.dirty, ...this.inflight.keys()]);
    this.dirty.clear();
    await Promise.all([...names].map((n) => this.store.touch(n, now).catch(() => undefined)));
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }
}
