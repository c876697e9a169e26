import type { BoxRecord } from '../core/boxes.ts';
import { BoxdError, BoxNotFoundError, TimeoutError, UnavailableError } from '../core/errors.ts';
import type { RouteCache } from './route-cache.ts';

/**
 * Brings a box to `running` for the preview path. Concurrent requests for one box share one
 * resume call (to the owning host's agent) per gateway (the host makes resumes from several gateways idempotent under the
 * box's lock, so exactly one unpause happens). Waiters are bounded in number and in time.
 */
export class Waker {
  private readonly waking = new Map<string, Promise<BoxRecord | undefined>>();
  private readonly waiters = new Map<string, number>();

  constructor(
    private readonly d: {
      routes: RouteCache;
      /** Resumes a box on its host (the host agent's resume: the cgroup freezer thaw). */
      resume: (hostId: string, name: string) => Promise<BoxRecord | void>;
      timeoutMs: number;
      maxWaiters: number;
    },
  ) {}

  /** Returns the box once running; UnavailableError (503) past the bounds or when it cannot wake. */
  async ensureRunning(box: BoxRecord): Promise<BoxRecord> {
    if (box.state === 'running') return box;
    if (box.state === 'error' || box.state === 'destroyed') throw new UnavailableError(`box "${box.name}" is ${box.state}${box.error ? `: ${box.error}` : ''}`);
    const count = this.waiters.get(box.name) ?? 0;
    if (count >= this.d.maxWaiters) throw new UnavailableError(`too many requests are waiting for box "${box.name}" to wake`);
    this.waiters.set(box.name, count + 1);
    try {
      const deadline = Date.now() + this.d.timeoutMs;
      for (;;) {
        const current = await this.d.routes.get(box.name);
        if (!current) throw new BoxNotFoundError(box.name);
        if (current.state === 'running') return current;
        if (current.state === 'error' || current.state === 'destroyed') throw new UnavailableError(`box "${box.name}" is ${current.state}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new UnavailableError(`box "${box.name}" did not wake within ${this.d.timeoutMs} ms`);
        if (current.state === 'suspended') {
          // The host answers with the resumed record: no second read on the hot path.
          const woke = await within(this.wake(current, left), left);
          if (woke?.state === 'running') return woke;
        }
        else await this.nextEvent(box.name, left); // creating: wait for its create to finish
      }
    } catch (e) {
      if (e instanceof TimeoutError) throw new UnavailableError(`box "${box.name}" did not wake in time`);
      if (e instanceof BoxdError && e.code === 'BOX_STATE') return this.ensureRunningAgain(box);
      throw e;
    } finally {
      const n = (this.waiters.get(box.name) ?? 1) - 1;
      if (n <= 0) this.waiters.delete(box.name);
      else this.waiters.set(box.name, n);
    }
  }

  private async ensureRunningAgain(box: BoxRecord): Promise<BoxRecord> {
    const current = await this.d.routes.get(box.name);
    if (current?.state === 'running') return current;
    throw new UnavailableError(`box "${box.name}" could not be woken (it is ${current?.state ?? 'gone'})`);
  }

  /** Starts (or joins) the resume of a suspended box. */
  wake(box: Pick<BoxRecord, 'name' | 'hostId'>, timeoutMs = this.d.timeoutMs): Promise<BoxRecord | undefined> {
    let p = this.waking.get(box.name);
    if (!p) {
      void timeoutMs;
      p = this.d
        .resume(box.hostId, box.name)
        .then((b) => (b && typeof b === 'object' && 'state' in b ? b : undefined))
        .finally(() => this.waking.delete(box.name));
      this.waking.set(box.name, p);
    }
    return p;
  }

  private nextEvent(name: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const off = this.d.routes.on(name, () => {
        clearTimeout(timer);
        off();
        resolve();
      });
      const timer = setTimeout(() => {
        off();
        resolve();
      }, Math.min(timeoutMs, 1000));
    });
  }
}

/** Waits for `p` at most `ms`; on time-out it resolves, and the caller re-reads the state. */
function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]).finally(() => clearTimeout(timer));
}
