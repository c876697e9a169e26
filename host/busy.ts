import { BoxdError } from '../core/errors.ts';

/** Why an exec was cancelled. */
export type CancelReason = 'destroyed' | 'client-gone';

/**
 * The execs and file transfers running on each box of this host. They hold no lock: suspend,
 * resume and destroy never wait for them. Destroy cancels the box's execs (their command trees
 * are killed and they answer BOX_NOT_FOUND); the idle sweep skips boxes with work in flight.
 */
export class BusyBoxes {
  private readonly boxes = new Map<string, Map<string, AbortController>>();

  /** Registers work on `name`; call `done` when it ends (idempotent). */
  start(name: string, id: string): { signal: AbortSignal; done: () => void } {
    let m = this.boxes.get(name);
    if (!m) this.boxes.set(name, (m = new Map()));
    const ctl = new AbortController();
    m.set(id, ctl);
    return {
      signal: ctl.signal,
      done: () => {
        const now = this.boxes.get(name);
        if (!now?.delete(id)) return;
        if (!now.size) this.boxes.delete(name);
      },
    };
  }

  count(name: string): number {
    return this.boxes.get(name)?.size ?? 0;
  }

  /** Cancels one piece of work. */
  cancel(name: string, id: string, reason: CancelReason): void {
    this.boxes.get(name)?.get(id)?.abort(reason);
  }

  /** Cancels everything running on `name`. */
  cancelAll(name: string, reason: CancelReason): number {
    const m = this.boxes.get(name);
    if (!m) return 0;
    for (const ctl of m.values()) ctl.abort(reason);
    return m.size;
  }
}

/** The error an exec answers when its box was destroyed under it. */
export function destroyedWhileRunning(name: string): BoxdError {
  return new BoxdError('BOX_NOT_FOUND', `box "${name}" was destroyed while the command ran`);
}
