import type { WireError } from './errors.ts';

/**
 * The control plane: durable lifecycle work a host runs from its BullMQ queue (`host-<id>`),
 * retried and idempotent. Job data and results stay small (a few KiB). The data plane — exec,
 * files, suspend/resume, the preview wake — goes gateway → host agent directly (host/agent.ts).
 */
export type HostJob =
  | { op: 'create'; name: string }
  | { op: 'destroy'; name: string }
  | { op: 'fork'; name: string; child: string }
  | { op: 'fork-pool'; name: string; child: string }
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

export interface ExecOutcome {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
  truncated: boolean;
}

/** NDJSON lines of a streaming exec. */
export type ExecMessage =
  | { stream: 'stdout' | 'stderr'; data: string }
  | { exitCode: number; durationMs: number; timedOut: boolean }
  | { error: WireError };

/** Attempts per operation: lifecycle steps are idempotent and retried; exec is not. */
export const ATTEMPTS: Record<HostOp, number> = {
  create: 3,
  destroy: 5,
  fork: 2,
  'fork-pool': 1,
  'golden-commit': 2,
  'golden-tag': 2,
  'golden-drop': 3,
  snapshot: 2,
  deleteSnapshot: 3,
  'pool-fill': 1,
  task: 2,
};

export const hostQueueName = (hostId: string): string => `host-${hostId}`;

/** A host's heartbeat in `<prefix>:hosts`. */
export interface HostInfo {
  id: string;
  /** Address of the host: its agent and its boxes' published ports. */
  addr?: string;
  /** Port of its agent (host/agent.ts). */
  agentPort?: number;
  startedAt: number;
  heartbeatAt: number;
}

export const HOST_ALIVE_MS = 15_000;
