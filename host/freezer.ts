import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

/**
 * Suspends and resumes a container by writing its cgroup freezer directly: a write and a few
 * reads of one file, well under a millisecond, against ~20 ms for `docker pause`/`unpause`.
 * cgroup v1: `/sys/fs/cgroup/freezer/<path>/freezer.state` (FROZEN/THAWED, FREEZING while it
 * settles); cgroup v2: `/sys/fs/cgroup/<path>/cgroup.freeze` (1/0, settled when
 * `cgroup.events` says `frozen 1`). Docker does not see the container as paused.
 *
 * Hazard: a process entering the cgroup while it freezes (`runc init` of a starting `docker exec`)
 * gets frozen half-way and wedges dockerd's lock on the container. Callers gate exec starts and
 * use `caughtRuncInit` after freezing.
 */
export class Freezer {
  readonly version: 1 | 2;
  private readonly root: string;

  constructor(root = '/sys/fs/cgroup') {
    this.root = root;
    this.version = existsSync(`${root}/cgroup.controllers`) ? 2 : 1;
  }

  /** Whether this machine lets us write freezer files (root, a freezer hierarchy mounted). */
  usable(): boolean {
    if (this.version === 2) return existsSync(`${this.root}/cgroup.controllers`);
    return existsSync(`${this.root}/freezer`);
  }

  /** The freezer directory of the cgroup `pid` belongs to; undefined when it cannot be found. */
  dirOf(pid: number): string | undefined {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch {
      return undefined;
    }
    for (const line of text.split('\n')) {
      const [, controllers, path] = line.split(':');
      if (path === undefined) continue;
      if (this.version === 2 && controllers === '') return `${this.root}${path}`;
      if (this.version === 1 && controllers!.split(',').includes('freezer')) return `${this.root}/freezer${path}`;
    }
    return undefined;
  }

  /** `frozen`, `freezing` or `thawed`; undefined when the cgroup is gone. */
  state(dir: string): 'frozen' | 'freezing' | 'thawed' | undefined {
    try {
      if (this.version === 1) {
        const s = readFileSync(`${dir}/freezer.state`, 'utf8').trim();
        return s === 'FROZEN' ? 'frozen' : s === 'FREEZING' ? 'freezing' : 'thawed';
      }
      const want = readFileSync(`${dir}/cgroup.freeze`, 'utf8').trim() === '1';
      const frozen = /^frozen 1$/m.test(readFileSync(`${dir}/cgroup.events`, 'utf8'));
      return frozen ? 'frozen' : want ? 'freezing' : 'thawed';
    } catch {
      return undefined;
    }
  }

  /**
   * Freezes the cgroup and waits until every task in it is frozen, at most `settleMs`.
   * Returns false (after thawing again) when it did not settle: a task was busy in the kernel.
   * Throws when the file cannot be written.
   */
  async freeze(dir: string, settleMs = 50): Promise<boolean> {
    this.write(dir, true);
    const until = performance.now() + settleMs;
    for (let spins = 0; ; spins++) {
      if (this.state(dir) === 'frozen') return true;
      if (performance.now() > until) break;
      // A few tight re-reads first (it usually settles within microseconds), then yield.
      if (spins > 20) await new Promise((r) => setTimeout(r, 1));
    }
    this.write(dir, false);
    return false;
  }

  thaw(dir: string): void {
    this.write(dir, false);
  }

  /** Pids in the cgroup (its own tasks, not its children's). */
  pids(dir: string): number[] {
    try {
      return readFileSync(`${dir}/cgroup.procs`, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      return [];
    }
  }

  /** Whether a `runc init` (a starting exec) is among the cgroup's processes. */
  caughtRuncInit(dir: string): boolean {
    return this.pids(dir).some(isRuncInit);
  }

  private write(dir: string, frozen: boolean): void {
    if (this.version === 1) writeFileSync(`${dir}/freezer.state`, frozen ? 'FROZEN' : 'THAWED');
    else writeFileSync(`${dir}/cgroup.freeze`, frozen ? '1' : '0');
  }
}

/** runc renames its init stages `runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]`; before that argv is `runc init`. */
export function isRuncInit(pid: number): boolean {
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    if (comm.startsWith('runc')) return true;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv[1] === 'init' && basename(argv[0] ?? '').startsWith('runc');
  } catch {
    return false;
  }
}

/** Every pid of the machine (used to find an exec's processes by their env tag). */
export function allPids(): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}
