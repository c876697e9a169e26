/**
 * The API's wire shapes: what requests carry and answers hold. The SDK's own, so it imports nothing
 * from the server; the server imports these (never the other way), `gateway/api-spec.ts` proves at
 * compile time that its zod schemas match them, and test/openapi.test.ts checks them against
 * `GET /v1/openapi.json`.
 */

export type BoxState = 'creating' | 'running' | 'suspended' | 'destroyed' | 'error' | 'lost';

/** A box as the API shows it. */
export interface BoxJson {
  name: string;
  state: BoxState;
  golden?: string;
  image?: string;
  snapshot?: string;
  /** The preview URL of the first declared port (null without ports). */
  url: string | null;
  urls: Record<string, string>;
  ports: number[];
  public: boolean;
  parent?: string;
  idleTimeoutMs: number;
  /** Disk quota in MiB, when the box asked for one (else the host's default applies). */
  diskMb?: number;
  /** Egress policy: `open` (internet, not host/LAN/link-local/other boxes), `none`, or an allowlist. */
  network: NetworkPolicy;
  createdAt: string;
  lastActivityAt: string;
  error?: string;
  /** How the box was made, when not a plain create: from a warm pool, forked onto a pool box, forked by commit. */
  origin?: 'pool' | 'fork-pool' | 'fork-commit';
}

/** Egress policy of a box: `open`, `none`, or `{ allow: ["10.0.0.0/8:443", …] }`. */
export type NetworkPolicy = 'open' | 'none' | { allow: string[] };

/** A box as create and fork answer it: `previewToken` for a private box, `pooled` when it came from the warm pool. */
export interface BoxInfo extends BoxJson {
  previewToken?: string;
  pooled?: boolean;
}

/** `POST /v1/boxes`: at most one of golden, image and snapshot. */
export interface CreateBoxBody {
  name?: string;
  golden?: string;
  image?: string;
  snapshot?: string;
  ports?: number[];
  env?: Record<string, string>;
  idleTimeoutMs?: number;
  public?: boolean;
  /** Disk quota in MiB, at most the host's BOXD_BOX_DISK_MB. */
  diskMb?: number;
  network?: NetworkPolicy;
  /** Put BOXD_URL, a box-scoped BOXD_API_KEY and BOXD_BOX in the box's env (`boxd` is on PATH). */
  agent?: boolean;
}

/** `POST /v1/boxes/:name/exec`. */
export interface ExecBody {
  cmd: string[];
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string;
  timeoutMs?: number;
  /** Keep the command running when the client disconnects from the stream. */
  detach?: boolean;
}

/** The JSON answer of an exec. Output is capped at 4 MiB per stream (`truncated`). */
export interface ExecOutcome {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
  truncated: boolean;
}

/** A streamed exec's NDJSON lines: output chunks, then the exit line. */
export type ExecOutput = { stream: 'stdout' | 'stderr'; data: string };
export type ExecExit = { exitCode: number; durationMs: number; timedOut: boolean };
export type ExecEvent = ExecOutput | ExecExit;

export interface ForkBody {
  name?: string;
}

export interface SnapshotBody {
  snapshot: string;
}

export interface SnapshotInfo {
  name: string;
  box: string;
  ports: number[];
  golden?: string;
  createdAt: string;
}

export interface HookStep {
  /** argv, or a string run with `sh -c`. */
  cmd: string | string[];
}

/** `POST /v1/hooks`. */
export interface HookBody {
  name: string;
  golden?: string;
  steps: HookStep[];
  secret?: string;
  keepMs?: number;
  /** Which X-Boxd-Signature forms the hook accepts (default `any`); `timestamped` refuses `sha256=…`. */
  signature?: HookSignature;
}

/** `any`: `t=…,v1=…` or `sha256=…`; `timestamped`: only `t=…,v1=…`. */
export type HookSignature = 'any' | 'timestamped';

/** A hook as listed; its create answer also holds the `secret` (shown once). */
export interface HookInfo {
  id: string;
  url: string;
  name: string;
  golden: string;
  steps: HookStep[];
  keepMs: number;
  signature: HookSignature;
  createdAt: string;
  secret?: string;
}

export type TaskState = 'queued' | 'running' | 'succeeded' | 'failed';

export interface TaskStep {
  cmd: string[];
  exitCode: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  startedAt: string;
}

export interface TaskBox {
  name: string;
  kept: boolean;
  url: string | null;
  until?: string;
}

export interface TaskInfo {
  id: string;
  hook: string;
  state: TaskState;
  steps: TaskStep[];
  box: TaskBox | null;
  error?: string;
  attempts: number;
  triggeredAt: string;
  startedAt?: string;
  finishedAt?: string;
}

export interface GoldenInfo {
  name: string;
  tag: string;
  description: string;
  ports: number[];
  poolSize: number;
  cpus: number;
  memoryMb: number;
  idleTimeoutMs: number;
  built: boolean;
  /** The operator's (golden-images/) or the account's own. */
  owner: 'operator' | 'account';
  /** What an account golden was promoted from. */
  from?: { box?: string; snapshot?: string };
  createdAt?: string;
}

export interface PoolStats {
  golden: string;
  target: number;
  ready: number;
  hits: number;
  misses: number;
  hitRate: number | null;
  /** Set for the pools of the account's own goldens. */
  owner?: 'account';
}

export interface AccountLimits {
  maxBoxes: number;
  /** Concurrent execs; absent: the operator's BOXD_MAX_EXECS applies. */
  maxExecs?: number;
  maxSnapshots: number;
  maxHooks: number;
}

/** `POST /v1/accounts` (admin key). Limits left out take the defaults. */
export interface AccountBody {
  name: string;
  maxBoxes?: number;
  maxExecs?: number;
  maxSnapshots?: number;
  maxHooks?: number;
}

/** An account as created (limits it was given). */
export interface AccountInfo extends Partial<AccountLimits> {
  id: string;
  name: string;
  createdAt: string;
}

/** An account as listed: its effective limits and how many keys it has. */
export interface AccountListed extends AccountInfo {
  limits: AccountLimits;
  keys: number;
}

/** `POST /v1/accounts/:id/keys` (admin key). */
export interface KeyBody {
  role?: 'admin' | 'member';
}

/** A new key: `key` is shown only in this answer (stored hashed). */
export interface KeyCreated {
  id: string;
  account: string;
  role: 'admin' | 'member';
  key: string;
}

/** Every error answer: `{ error: { code, message } }`. */
export interface ApiError {
  error: { code: string; message: string };
}
