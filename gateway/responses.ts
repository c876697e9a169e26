import { networkPolicySchema } from '../core/network-policy.ts';
import { z } from 'zod';
import type * as wire from '../sdk/types.ts';

/**
 * zod schemas of the API's answers, for the OpenAPI document (gateway/api-spec.ts). The checks at
 * the bottom make the compiler prove each one equals the SDK's wire type in sdk/types.ts.
 */

const iso = z.string().describe('ISO 8601 time');
const boxState = z.enum(['creating', 'running', 'suspended', 'destroyed', 'error', 'lost']);

export const box = z
  .object({
    name: z.string(),
    state: boxState,
    golden: z.string().optional(),
    image: z.string().optional(),
    snapshot: z.string().optional(),
    url: z.string().nullable().describe('preview URL of the first declared port'),
    urls: z.record(z.string(), z.string()).describe('preview URL per declared port'),
    ports: z.array(z.number().int()),
    public: z.boolean(),
    parent: z.string().optional(),
    idleTimeoutMs: z.number().int(),
    diskMb: z.number().int().optional().describe('disk quota in MiB, when the box asked for one'),
    network: networkPolicySchema.describe('egress policy'),
    createdAt: iso,
    lastActivityAt: iso,
    error: z.string().optional(),
    origin: z.enum(['pool', 'fork-pool', 'fork-commit']).optional().describe('how the box was made, when not a plain create'),
  })
  .strict();

export const createdBox = box
  .extend({
    previewToken: z.string().optional().describe('only for a private box: open its preview with ?boxd_token=…'),
    pooled: z.boolean().optional().describe('true when the box came from a warm pool'),
  })
  .strict();

export const boxList = z.object({ boxes: z.array(box) }).strict();

export const execResult = z
  .object({
    exitCode: z.number().int(),
    stdout: z.string(),
    stderr: z.string(),
    durationMs: z.number(),
    timedOut: z.boolean(),
    truncated: z.boolean(),
  })
  .strict();

export const execOutput = z.object({ stream: z.enum(['stdout', 'stderr']), data: z.string() }).strict();
export const execExit = z.object({ exitCode: z.number().int(), durationMs: z.number(), timedOut: z.boolean() }).strict();
export const execStreamError = z.object({ error: z.object({ code: z.string(), message: z.string() }).strict() }).strict();
/** One NDJSON line of a streamed exec (`Accept: application/x-ndjson`). */
export const execEvent = z.union([execOutput, execExit, execStreamError]);

export const snapshot = z
  .object({ name: z.string(), box: z.string(), ports: z.array(z.number().int()), golden: z.string().optional(), createdAt: iso })
  .strict();
export const snapshotCreated = z.object({ snapshot }).strict();
export const snapshotList = z.object({ snapshots: z.array(snapshot) }).strict();

const hookStep = z.object({ cmd: z.union([z.string(), z.array(z.string())]) }).strict();
export const hook = z
  .object({
    id: z.string(),
    url: z.string().describe('where to POST signed triggers'),
    name: z.string(),
    golden: z.string(),
    steps: z.array(hookStep),
    keepMs: z.number().int(),
    signature: z.enum(['any', 'timestamped']).describe('which signature forms the hook accepts'),
    createdAt: iso,
    secret: z.string().optional().describe('only in the answer to the create'),
  })
  .strict();
export const hookList = z.object({ hooks: z.array(hook) }).strict();

const taskStep = z
  .object({ cmd: z.array(z.string()), exitCode: z.number().int().nullable(), stdout: z.string(), stderr: z.string(), durationMs: z.number(), startedAt: iso })
  .strict();
const taskBox = z.object({ name: z.string(), kept: z.boolean(), url: z.string().nullable(), until: iso.optional() }).strict();
export const task = z
  .object({
    id: z.string(),
    hook: z.string(),
    state: z.enum(['queued', 'running', 'succeeded', 'failed']),
    steps: z.array(taskStep),
    box: taskBox.nullable(),
    error: z.string().optional(),
    attempts: z.number().int(),
    triggeredAt: iso,
    startedAt: iso.optional(),
    finishedAt: iso.optional(),
  })
  .strict();
export const taskList = z.object({ tasks: z.array(task) }).strict();
export const taskQueued = z.object({ task }).strict();
export const taskDuplicate = z.object({ task: z.string().describe('the id of the first task of this delivery (same delivery id, or the same signed body replayed)'), duplicate: z.literal(true) }).strict();

export const golden = z
  .object({
    name: z.string(),
    tag: z.string(),
    description: z.string(),
    ports: z.array(z.number().int()),
    poolSize: z.number().int(),
    cpus: z.number(),
    memoryMb: z.number().int(),
    idleTimeoutMs: z.number().int(),
    built: z.boolean(),
    owner: z.enum(['operator', 'account']).describe("the operator's (golden-images/) or the account's own"),
    from: z.object({ box: z.string().optional(), snapshot: z.string().optional() }).strict().optional().describe('what an account golden was promoted from'),
    createdAt: iso.optional(),
  })
  .strict();
export const goldenList = z.object({ goldens: z.array(golden) }).strict();

export const poolStats = z
  .object({
    golden: z.string(), target: z.number().int(), ready: z.number().int(), hits: z.number().int(), misses: z.number().int(), hitRate: z.number().nullable(),
    owner: z.literal('account').optional().describe("set for the pools of the account's own goldens"),
  })
  .strict();
export const poolList = z.object({ pools: z.array(poolStats) }).strict();

export const health = z.object({ ok: z.boolean(), redis: z.boolean(), hosts: z.number().int() }).strict();

const limits = {
  maxBoxes: z.number().int(),
  maxExecs: z.number().int().optional().describe("absent: the operator's BOXD_MAX_EXECS applies"),
  maxSnapshots: z.number().int(),
  maxHooks: z.number().int(),
};
export const accountLimits = z.object(limits).strict();
export const account = z
  .object({ id: z.string(), name: z.string(), ...limits, maxBoxes: limits.maxBoxes.optional(), maxSnapshots: limits.maxSnapshots.optional(), maxHooks: limits.maxHooks.optional(), createdAt: iso })
  .strict();
export const accountListed = account.extend({ limits: accountLimits, keys: z.number().int().describe('how many keys the account has') }).strict();
export const accountList = z.object({ accounts: z.array(accountListed) }).strict();
export const keyCreated = z
  .object({ id: z.string(), account: z.string(), role: z.enum(['admin', 'member']), key: z.string().describe('shown only in this answer') })
  .strict();

export const apiError = z.object({ error: z.object({ code: z.string(), message: z.string() }).strict() }).strict();

// --- compile-time proof that these are the SDK's wire types -------------------------------------
/** true only when A and B are the same type (not merely assignable). */
export type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Flattens intersections so `Same` compares shapes. */
type Flat<T> = T extends object ? { [K in keyof T]: T[K] } : T;
export function proveSame<_ extends true>(): void {}

proveSame<Same<Flat<z.output<typeof box>>, Flat<wire.BoxJson>>>();
proveSame<Same<Flat<z.output<typeof createdBox>>, Flat<wire.BoxInfo>>>();
proveSame<Same<Flat<z.output<typeof execResult>>, Flat<wire.ExecOutcome>>>();
proveSame<Same<Flat<z.output<typeof execOutput>>, Flat<wire.ExecOutput>>>();
proveSame<Same<Flat<z.output<typeof execExit>>, Flat<wire.ExecExit>>>();
proveSame<Same<Flat<z.output<typeof snapshot>>, Flat<wire.SnapshotInfo>>>();
proveSame<Same<Flat<z.output<typeof hook>>, Flat<wire.HookInfo>>>();
proveSame<Same<Flat<z.output<typeof task>>, Flat<wire.TaskInfo>>>();
proveSame<Same<Flat<z.output<typeof taskBox>>, Flat<wire.TaskBox>>>();
proveSame<Same<Flat<z.output<typeof golden>>, Flat<wire.GoldenInfo>>>();
proveSame<Same<Flat<z.output<typeof poolStats>>, Flat<wire.PoolStats>>>();
proveSame<Same<Flat<z.output<typeof apiError>>, Flat<wire.ApiError>>>();
proveSame<Same<Flat<z.output<typeof accountLimits>>, Flat<wire.AccountLimits>>>();
proveSame<Same<Flat<z.output<typeof account>>, Flat<wire.AccountInfo>>>();
proveSame<Same<Flat<z.output<typeof accountListed>>, Flat<wire.AccountListed>>>();
proveSame<Same<Flat<z.output<typeof keyCreated>>, Flat<wire.KeyCreated>>>();
