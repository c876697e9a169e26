import type { HostInfo, Resources } from './jobs.ts';

/**
 * Where a new box goes: a pure function of the hosts' heartbeats, so it is tested as a table.
 *
 * A host can take a box when it is alive (heartbeat younger than `deadMs`), holds the box's
 * golden (when it has one), and its committed cpus and memory plus the box's stay within its
 * capacity times the overcommit ratios (limits are ceilings, not reservations: a suspended box commits
 * only a fraction, and a running one rarely uses all of its limit). Among those, the host with
 * the largest free share after placing the box wins (the smaller of its free cpu and free memory
 * fractions), ties going to the fewest boxes, then to the id, so the choice is deterministic.
 */
export interface PlacementRequest {
  cpus: number;
  memoryMb: number;
  /** Golden the box is made from: only hosts holding it qualify. */
  golden?: string;
  /** Hosts that must not be chosen (e.g. one that just refused). */
  exclude?: string[];
}

export type Placement =
  | { ok: true; hostId: string }
  | { ok: false; reason: 'NO_HOST' | 'NO_GOLDEN' | 'NO_CAPACITY'; message: string };

export interface PlacementPolicy {
  now: number;
  deadMs: number;
  /** Memory overcommit: committed memory may reach capacity × this. */
  overcommit: number;
  /** Cpu overcommit (default: as memory). */
  cpuOvercommit?: number;
}

const ZERO: Resources = { cpus: 0, memoryMb: 0 };

/** Whether a heartbeat is recent enough. */
export function isAlive(h: Pick<HostInfo, 'heartbeatAt'>, now: number, deadMs: number): boolean {
  return now - h.heartbeatAt < deadMs;
}

/** Fraction of a host left free after adding `need` (negative: it does not fit). */
export function freeShare(h: HostInfo, need: Resources, overcommit: number, cpuOvercommit = overcommit): number {
  const cap = h.capacity;
  if (!cap || cap.cpus <= 0 || cap.memoryMb <= 0) return -1;
  const used = h.committed ?? ZERO;
  const cpu = 1 - (used.cpus + need.cpus) / (cap.cpus * cpuOvercommit);
  const mem = 1 - (used.memoryMb + need.memoryMb) / (cap.memoryMb * overcommit);
  return Math.min(cpu, mem);
}

export function placeBox(hosts: HostInfo[], req: PlacementRequest, policy: PlacementPolicy): Placement {
  const alive = hosts.filter((h) => isAlive(h, policy.now, policy.deadMs) && !req.exclude?.includes(h.id));
  if (!alive.length) return { ok: false, reason: 'NO_HOST', message: 'no live host; start one with `npm start` (or `tsx host/main.ts`)' };
  // A host that does not advertise its goldens (an older host) is trusted to have them.
  const holding = req.golden ? alive.filter((h) => !h.goldens || h.goldens.includes(req.golden!)) : alive;
  if (!holding.length) {
    return { ok: false, reason: 'NO_GOLDEN', message: `no live host holds golden "${req.golden}" yet; build it with \`tsx golden-images/build.ts ${req.golden}\` on a host` };
  }
  const need = { cpus: req.cpus, memoryMb: req.memoryMb };
  let best: { h: HostInfo; share: number } | undefined;
  for (const h of holding) {
    const share = freeShare(h, need, policy.overcommit, policy.cpuOvercommit);
    if (share < 0) continue;
    if (!best || share > best.share || (share === best.share && tieBreak(h, best.h) < 0)) best = { h, share };
  }
  if (!best) {
    return {
      ok: false,
      reason: 'NO_CAPACITY',
      message: `no host has room for a box of ${req.cpus} cpus / ${req.memoryMb} MiB (${holding.length} live host(s) hold its image, all full); suspend or delete boxes, add a host, or retry later`,
    };
  }
  return { ok: true, hostId: best.h.id };
}

function tieBreak(a: HostInfo, b: HostInfo): number {
  const n = (h: HostInfo) => (h.boxes ? h.boxes.running + h.boxes.suspended + h.boxes.other : 0);
  return n(a) - n(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
