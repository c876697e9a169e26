import type Docker from 'dockerode';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { allPids, type Freezer } from './freezer.ts';

export interface ContainerInfo {
  /** Host pid of the container's first process. */
  pid: number;
  /** Its freezer cgroup directory (undefined without a usable freezer). */
  dir?: string;
}

/**
 * What the host sees of a container's processes from its own /proc, without asking the engine:
 * the container's cgroup, its processes, the processes of one exec (found by their
 * `BOXD_EXEC_ID` env tag, since the engine often reports an exec's pid as 0), its root folder.
 * The init pid is asked of the engine once per container and cached.
 */
export class ContainerProcs {
  private readonly cache = new Map<string, ContainerInfo>();

  constructor(
    private readonly docker: Docker,
    private readonly freezer: Freezer | undefined,
  ) {}

  async info(id: string): Promise<ContainerInfo | undefined> {
    const hit = this.cache.get(id);
    if (hit && existsSync(`/proc/${hit.pid}`) && (!hit.dir || existsSync(hit.dir))) return hit;
    this.cache.delete(id);
    let pid: number;
    try {
      pid = (await this.docker.getContainer(id).inspect()).State.Pid;
    } catch {
      return undefined;
    }
    if (!pid) return undefined;
    const info: ContainerInfo = { pid, dir: this.freezer?.dirOf(pid) };
    this.cache.set(id, info);
    return info;
  }

  /** A renamed container: known under both names (an exec started under the old one still finds its processes). */
  alias(from: string, to: string): void {
    const hit = this.cache.get(from);
    if (hit) this.cache.set(to, hit);
  }

  forget(id: string): void {
    this.cache.delete(id);
  }

  /** Host pids of the container's processes. */
  async pids(id: string): Promise<number[]> {
    const info = await this.info(id);
    if (!info) return [];
    if (info.dir && this.freezer) return this.freezer.pids(info.dir);
    // No freezer hierarchy: every process sharing the init's pid namespace.
    const ns = nsOf(info.pid);
    return ns ? allPids().filter((p) => nsOf(p) === ns) : [];
  }

  /** Host pids of the processes carrying `BOXD_EXEC_ID=<execId>`. */
  async tagged(id: string, execId: string): Promise<number[]> {
    const tag = Buffer.from(`\0BOXD_EXEC_ID=${execId}\0`);
    const head = Buffer.from(`BOXD_EXEC_ID=${execId}\0`);
    const out: number[] = [];
    for (const pid of await this.pids(id)) {
      try {
        const env = readFileSync(`/proc/${pid}/environ`);
        if (env.includes(tag) || env.subarray(0, head.length).equals(head)) out.push(pid);
      } catch {
        /* gone */
      }
    }
    return out;
  }

  /** SIGKILLs every process of an exec until none is left (children forked meanwhile included). */
  async killTagged(id: string, execId: string, maxMs = 5000): Promise<number> {
    let killed = 0;
    const until = Date.now() + maxMs;
    for (;;) {
      const pids = await this.tagged(id, execId);
      if (!pids.length) return killed;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
          killed++;
        } catch {
          /* already gone */
        }
      }
      if (Date.now() > until) return killed;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The container's root folder as seen from the host. */
  async root(id: string): Promise<string | undefined> {
    const info = await this.info(id);
    return info ? `/proc/${info.pid}/root` : undefined;
  }
}

function nsOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}
