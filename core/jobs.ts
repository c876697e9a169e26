import type { ExecExit, ExecOutcome, ExecOutput } from '../sdk/types.ts';
import type { WireError } from './errors.ts';

/**
 * The control plane: durable lifecycle work a host runs from its BullMQ queue (`host-<id>`),
 * retried and idempotent. Job data and results stay small (a few KiB). The data plane — exec,
 * files, suspend/resume, the preview wake, terminals — goes gateway → host agent directly (host/agent.ts).
 */
export type HostJob =
  | { op: 'create'; name: string }
  | { op: 'destroy'; name: string }
  | { op: 'fork'; name: string; child: string }
  | { op: 'fork-pool'; name: string; child: string }
  /** Commits a box to the image of a fork `child` of `account`, made on another host (the image is moved there). */
  | { op: 'fork-image'; name: string; child: string; account: string }
  /** Removes one of this installation's fork images (a copy moved elsewhere, or a failed fork's). */
  | { op: 'drop-image'; image: string }
  | { op: 'snapshot'; name: string; snapshot: string; account: string }
  | { op: 'deleteSnapshot'; snapshot: string; account: string }
  | { op: 'golden-commit'; name: string; image: string }
  | { op: 'golden-tag'; from: string; image: string }
  | { op: 'golden-drop'; golden: string; image: string }
  | { op: 'pool-fill'; golden?: string }
  | { op: 'task'; taskId: string };

export type HostOp = HostJob['op'];

/** What a host job returns: domain errors are answers, not job failures (no retry). */
export type JobResult<T = unknown> = { ok: true; value: T } | { ok: false; error: WireError };

/** An exec's answer is the SDK's wire type (the server imports sdk/types.ts, never the other way). */
export type { ExecOutcome };

/** Messages on `<prefix>:exec:<execId>` while an exec streams: the NDJSON lines the API sends. */
export type ExecMessage = ExecOutput | ExecExit | { error: WireError };

/** Attempts per operation: lifecycle steps are idempotent and retried; exec is not. */
export const ATTEMPTS: Record<HostOp, number> = {
  create: 3,
  destroy: 5,
  fork: 2,
  'fork-pool': 1,
  'fork-image': 2,
  'drop-image': 3,
  'golden-commit': 2,
  'golden-tag': 2,
  'golden-drop': 3,
  snapshot: 2,
  deleteSnapshot: 3,
  'pool-fill': 1,
  task: 2,
};

export const hostQueueName = (hostId: string): string => `host-${hostId}`;

/** A host's heartbeat in `{<prefix>}:hosts`, rewritten every BOXD_HEARTBEAT_MS. */
export interface HostInfo {
  id: string;
  /** Address of the host: its agent and its boxes' published ports. */
  addr?: string;
  /** Port of its agent (host/agent.ts). */
  agentPort?: number;
  startedAt: number;
  heartbeatAt: number;
  /** What the host offers to boxes (detected or BOXD_HOST_CPUS / BOXD_HOST_MEMORY_MB). */
  capacity?: Resources;
  /** What its boxes commit: running (and creating) boxes in full, suspended ones no cpu and BOXD_SUSPENDED_WEIGHT of their memory. */
  committed?: Resources;
  /** How many of its boxes are in each state. */
  boxes?: { running: number; suspended: number; other: number };
  /** Names of its boxes in state `creating` (counted in `committed`): a gateway's pending placements end here. */
  creating?: string[];
  /** Golden names whose current image this host holds. */
  goldens?: string[];
}

export interface Resources {
  cpus: number;
  memoryMb: number;
}

/** Default of BOXD_HOST_DEAD_MS: a heartbeat older than this means the host is dead. */
export const HOST_ALIVE_MS = 15_000;
