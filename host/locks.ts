/**
 * Per-box reader/writer locks inside one host. Exclusive holders (suspend, resume, destroy,
 * fork) never overlap with anything else on the same box; shared holders (exec, files) overlap
 * with each other. Waiters are served in arrival order, so a suspend cannot starve.
 */
export class BoxLocks {
  private readonly boxes = new Map<string, { readers: number; writer: boolean; waiting: Waiter[] }>();

  /** Number of shared holders (running execs, file transfers) of `name`. */
  busy(name: string): number {
    return this.boxes.get(name)?.readers ?? 0;
  }

  /** True while anything holds or waits for the lock of `name`. */
  active(name: string): boolean {
    const s = this.boxes.get(name);
    return !!s && (s.readers > 0 || s.writer || s.waiting.length > 0);
  }

  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.run(name, true, fn);
  }

  shared<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.run(name, false, fn);
  }

  private async run<T>(name: string, exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    let s = this.boxes.get(name);
    if (!s) this.boxes.set(name, (s = { readers: 0, writer: false, waiting: [] }));
    const state = s;
    const free = exclusive ? !state.writer && state.readers === 0 : !state.writer;
    if (free && state.waiting.length === 0) this.take(state, exclusive);
    else await new Promise<void>((resolve) => state.waiting.push({ exclusive, resolve }));
    try {
      return await fn();
    } finally {
      if (exclusive) state.writer = false;
      else state.readers--;
      this.wake(name, state);
    }
  }

  private take(s: { readers: number; writer: boolean }, exclusive: boolean): void {
    if (exclusive) s.writer = true;
    else s.readers++;
  }

  private wake(name: string, s: { readers: number; writer: boolean; waiting: Waiter[] }): void {
    while (s.waiting.length) {
      const next = s.waiting[0]!;
      if (next.exclusive) {
        if (s.writer || s.readers > 0) break;
        s.waiting.shift();
        this.take(s, true);
        next.resolve();
        break;
      }
      if (s.writer) break;
      s.waiting.shift();
      this.take(s, false);
      next.resolve();
    }
    if (!s.writer && s.readers === 0 && s.waiting.length === 0) this.boxes.delete(name);
  }
}

interface Waiter {
  exclusive: boolean;
  resolve: () => void;
}
