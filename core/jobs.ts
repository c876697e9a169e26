import type { WireError } from './errors.ts';

/**
 * The jobs a host runs, one BullMQ queue per host (`host-<id>`). Job data is plain JSON;
 * bytes (files) travel through short-lived Redis blobs, not in job data.
 */
export type HostJob =
  | { op: 'create'; name: string }
  | { op: 'exec'; name: string; execId: string; cmd: string[]; cwd?: string; env?: Record<string, string>; stdinBlob?: string; timeoutMs: number; stream: boolean }
  | { op: 'suspend'; name: string }
  | { op: 'resume'; name: string }
  | { op: 'destroy'; name: string }
  | { op: 'putFile'; name: string; path: string; blob: string; mode?: number }
  | { op: 'getFile'; name: string; path: string }
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

/** Messages on `<prefix>:exec:<execId>` while an exec streams. */
export type ExecMessage =
  | { stream: 'stdout' | 'stderr'; data: string }
  | { exitCode: number; durationMs: number; timedOut: boolean }
  | { error: WireError };

/** Attempts per operation: lifecycle steps are idempotent and retried; exec is not. */
export const ATTEMPTS: Record<HostOp, number> = {
  create: 3,
  exec: 1,
  suspend: 2,
  resume: 3,
  destroy: 5,
  putFile: 1,
  getFile: 1,
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
  startedAt: number;
  heartbeatAt: number;
}

export const HOST_ALIVE_MS = 15_000;
