import { z } from 'zod';
import type * as wire from '../sdk/types.ts';
import type { ErrorCode } from './errors.ts';
import { accountBody, keyBody } from './accounts-api.ts';
import { hookBody } from './hooks-api.ts';
import * as r from './responses.ts';
import { proveSame, type Same } from './responses.ts';
import { BOX_NAME, createBoxBody, execBody, forkBody, snapshotBody } from './schemas.ts';
import { readiness } from './health.ts';
import { goldenBody } from './goldens-api.ts';

/**
 * The API, one entry per route: the registry `GET /v1/openapi.json` is generated from
 * (gateway/openapi.ts). A route mounted without an entry here fails test/openapi.test.ts.
 *
 * Add a route with one line:
 *   { method: 'post', path: '/v1/things/:id', summary: 'Do a thing', body: thingBody, ok: { 201: thing }, errors: ['THING_NOT_FOUND'] },
 * `body`/`ok` take a zod schema (JSON) or `{ '<media type>': schema | 'binary' | 'text' }`; `null`
 * is an empty answer. Every route also gets the errors all routes share (see `sharedErrors`).
 */

export type Method = 'get' | 'post' | 'put' | 'delete';
/** A JSON schema (application/json), or content by media type. */
export type Content = z.ZodType | { [mediaType: string]: z.ZodType | 'binary' | 'text' };

export interface RouteSpec {
  method: Method;
  /** Express syntax: `/v1/boxes/:name`. */
  path: string;
  summary: string;
  /** Reachable without an API key. */
  public?: true;
  body?: Content;
  query?: Record<string, { schema: z.ZodType; required?: true; description: string }>;
  /** Answers by status; `null` means no body. */
  ok: Record<number, Content | null>;
  /** Error codes this route answers besides the shared ones. */
  errors: ErrorCode[];
  /** Longer text for the document. */
  description?: string;
  /** Served on the HTTP upgrade path (a WebSocket), not by an Express route. */
  upgrade?: true;
}

const openApiDocumentSchema = z.record(z.string(), z.unknown()).describe('an OpenAPI 3.1 document');

/** Named component schemas, so SDK generators see stable names (anything else is named after its route). */
export const COMPONENTS: Record<string, z.ZodType> = {
  Box: r.box,
  CreatedBox: r.createdBox,
  BoxList: r.boxList,
  CreateBoxBody: createBoxBody,
  ExecBody: execBody,
  ExecResult: r.execResult,
  ExecEvent: r.execEvent,
  ExecOutput: r.execOutput,
  ExecExit: r.execExit,
  ForkBody: forkBody,
  SnapshotBody: snapshotBody,
  Snapshot: r.snapshot,
  SnapshotCreated: r.snapshotCreated,
  SnapshotList: r.snapshotList,
  HookBody: hookBody,
  Hook: r.hook,
  HookList: r.hookList,
  Task: r.task,
  TaskList: r.taskList,
  TaskQueued: r.taskQueued,
  TaskDuplicate: r.taskDuplicate,
  Golden: r.golden,
  GoldenList: r.goldenList,
  PoolStats: r.poolStats,
  PoolList: r.poolList,
  Health: r.health,
  Ready: readiness,
  AccountBody: accountBody,
  KeyBody: keyBody,
  Account: r.account,
  AccountListed: r.accountListed,
  AccountList: r.accountList,
  AccountLimits: r.accountLimits,
  KeyCreated: r.keyCreated,
  Error: r.apiError,
  OpenApiDocument: openApiDocumentSchema,
};

const HOST: ErrorCode[] = ['RUNTIME_ERROR', 'TIMEOUT', 'UNAVAILABLE'];
const path = { path: { schema: z.string(), required: true, description: 'absolute path of a file in the box (no "..")' } } as const;
const mode = { mode: { schema: z.string().regex(/^[0-7]{3,4}$/), description: 'octal file mode, like 644 or 0755' } } as const;

export const ROUTES: RouteSpec[] = [
  { method: 'get', path: '/', summary: 'The dashboard (HTML; the key is given in the URL fragment)', public: true, ok: { 200: { 'text/html': 'text' } }, errors: [] },
  { method: 'get', path: '/healthz', summary: 'Liveness: always 200 while serving; the body says whether Redis and hosts answer', public: true, ok: { 200: r.health }, errors: [] },
  { method: 'get', path: '/readyz', summary: 'Readiness: 200 when Redis answers and a host is registered, else 503 with the reason', public: true, ok: { 200: readiness, 503: readiness }, errors: [] },
  { method: 'get', path: '/metrics', summary: 'Prometheus metrics (admin key)', ok: { 200: { 'text/plain': 'text' } }, errors: ['FORBIDDEN'] },
  { method: 'get', path: '/v1/openapi.json', summary: 'This document', public: true, ok: { 200: openApiDocumentSchema }, errors: [] },
  { method: 'post', path: '/hooks/:id', summary: 'Trigger a webhook (signed: X-Boxd-Signature "t=…,v1=…", or "sha256=…" unless the hook is timestamped-only; X-Boxd-Delivery required; a repeated delivery id or signed body answers 200 duplicate)', public: true, body: { 'application/octet-stream': 'binary' }, ok: { 202: r.taskQueued, 200: r.taskDuplicate }, errors: ['HOOK_NOT_FOUND', 'UNAUTHORIZED', 'PAYLOAD_TOO_LARGE'] },
  { method: 'get', path: '/v1/goldens', summary: "Golden images: the operator's and the account's own", ok: { 200: r.goldenList }, errors: [] },
  {
    method: 'post', path: '/v1/goldens', summary: 'Promote a box or a snapshot of the account to a golden with a warm pool', body: goldenBody,
    ok: { 201: r.golden }, errors: ['BOX_NOT_FOUND', 'SNAPSHOT_NOT_FOUND', 'GOLDEN_EXISTS', 'BOX_STATE', 'LIMIT_EXCEEDED'],
  },
  { method: 'delete', path: '/v1/goldens/:name', summary: "Delete one of the account's goldens and drain its pool", ok: { 204: null }, errors: ['NOT_FOUND', 'FORBIDDEN'] },
  { method: 'post', path: '/v1/boxes', summary: 'Create a box (from a warm pool when one is ready)', body: createBoxBody, ok: { 201: r.createdBox }, errors: ['BOX_EXISTS', 'LIMIT_EXCEEDED', 'GOLDEN_NOT_FOUND', 'IMAGE_NOT_FOUND', 'IMAGE_NOT_ALLOWED', 'SNAPSHOT_NOT_FOUND', 'NOT_IMPLEMENTED', 'NO_CAPACITY', ...HOST] },
  { method: 'get', path: '/v1/boxes', summary: "The account's boxes", ok: { 200: r.boxList }, errors: [] },
  { method: 'get', path: '/v1/boxes/:name', summary: 'A box', ok: { 200: r.box }, errors: ['BOX_NOT_FOUND'] },
  { method: 'post', path: '/v1/boxes/:name/suspend', summary: 'Freeze a box (processes and memory kept)', ok: { 200: r.box }, errors: ['BOX_NOT_FOUND', 'BOX_STATE', ...HOST] },
  { method: 'post', path: '/v1/boxes/:name/resume', summary: 'Thaw a box', ok: { 200: r.box }, errors: ['BOX_NOT_FOUND', 'BOX_STATE', ...HOST] },
  { method: 'delete', path: '/v1/boxes/:name', summary: 'Destroy a box', ok: { 204: null }, errors: ['BOX_NOT_FOUND', ...HOST] },
  { method: 'post', path: '/v1/boxes/:name/exec', summary: 'Run a command (resumes a suspended box); NDJSON lines with Accept: application/x-ndjson', body: execBody, ok: { 200: { 'application/json': r.execResult, 'application/x-ndjson': r.execEvent } }, errors: ['BOX_NOT_FOUND', 'BOX_STATE', 'LIMIT_EXCEEDED', 'EXEC_LOST', ...HOST] },
  { method: 'put', path: '/v1/boxes/:name/files', summary: 'Write a file (parent folders are created)', query: { ...path, ...mode }, body: { 'application/octet-stream': 'binary' }, ok: { 204: null }, errors: ['BOX_NOT_FOUND', 'BOX_STATE', 'PAYLOAD_TOO_LARGE', 'FILE_TOO_LARGE', 'BLOB_EXPIRED', ...HOST] },
  {
    method: 'get',
    path: '/v1/boxes/:name/pty',
    summary: 'Interactive terminal (WebSocket upgrade)',
    upgrade: true,
    query: {
      cols: { schema: z.coerce.number().int().min(1).max(1000), description: 'terminal columns (default 80)' },
      rows: { schema: z.coerce.number().int().min(1).max(1000), description: 'terminal rows (default 24)' },
      cmd: { schema: z.string(), description: 'argv, one `cmd` per word (default: a login bash, or sh)' },
      token: { schema: z.string(), description: 'the API key, for clients that cannot send Authorization' },
    },
    ok: { 101: null },
    errors: ['BOX_NOT_FOUND', 'BOX_STATE', ...HOST],
    description:
      'Client → server: binary frames are stdin; a text frame is stdin unless it is `{"type":"resize","cols":C,"rows":R}`. Server → client: binary frames of terminal output, then `{"type":"exit","exitCode":N}` and close 1000; a failure after the upgrade is `{"type":"error","code","message"}` and close 1011. A suspended box is resumed first.',
  },
  { method: 'get', path: '/v1/boxes/:name/files', summary: 'Read a file', query: path, ok: { 200: { 'application/octet-stream': 'binary' } }, errors: ['BOX_NOT_FOUND', 'BOX_STATE', 'FILE_NOT_FOUND', 'FILE_TOO_LARGE', 'BLOB_EXPIRED', ...HOST] },
  { method: 'post', path: '/v1/boxes/:name/fork', summary: "A child box from the box's filesystem (processes are not copied)", body: forkBody, ok: { 201: r.createdBox }, errors: ['BOX_NOT_FOUND', 'BOX_EXISTS', 'LIMIT_EXCEEDED', 'BOX_STATE', ...HOST] },
  { method: 'post', path: '/v1/boxes/:name/snapshot', summary: "Store the box's filesystem as a named snapshot", body: snapshotBody, ok: { 201: r.snapshotCreated }, errors: ['BOX_NOT_FOUND', 'SNAPSHOT_EXISTS', 'LIMIT_EXCEEDED', 'BOX_STATE', ...HOST] },
  { method: 'get', path: '/v1/snapshots', summary: "The account's snapshots", ok: { 200: r.snapshotList }, errors: [] },
  { method: 'delete', path: '/v1/snapshots/:snapshot', summary: 'Delete a snapshot', ok: { 204: null }, errors: ['SNAPSHOT_NOT_FOUND'] },
  { method: 'post', path: '/v1/hooks', summary: 'Create a webhook (its secret is shown once)', body: hookBody, ok: { 201: r.hook }, errors: ['GOLDEN_NOT_FOUND', 'LIMIT_EXCEEDED'] },
  { method: 'get', path: '/v1/hooks', summary: "The account's webhooks", ok: { 200: r.hookList }, errors: [] },
  { method: 'delete', path: '/v1/hooks/:id', summary: 'Delete a webhook', ok: { 204: null }, errors: ['HOOK_NOT_FOUND'] },
  { method: 'get', path: '/v1/tasks', summary: "The account's webhook tasks", ok: { 200: r.taskList }, errors: [] },
  { method: 'get', path: '/v1/tasks/:id', summary: 'A webhook task with its steps', ok: { 200: r.task }, errors: ['TASK_NOT_FOUND'] },
  { method: 'get', path: '/v1/pool', summary: 'Warm pools: sizes, ready boxes, hit rate', ok: { 200: r.poolList }, errors: [] },
  { method: 'post', path: '/v1/accounts', summary: 'Create an account (admin key)', body: accountBody, ok: { 201: r.account }, errors: ['FORBIDDEN'] },
  { method: 'get', path: '/v1/accounts', summary: 'Accounts with their limits and key counts (admin key)', ok: { 200: r.accountList }, errors: ['FORBIDDEN'] },
  { method: 'post', path: '/v1/accounts/:id/keys', summary: "A new key of an account, shown once (admin key)", body: keyBody, ok: { 201: r.keyCreated }, errors: ['FORBIDDEN', 'ACCOUNT_NOT_FOUND'] },
  { method: 'delete', path: '/v1/keys/:id', summary: 'Revoke a key (admin key)', ok: { 204: null }, errors: ['FORBIDDEN', 'KEY_NOT_FOUND'] },
];

/** Schemas of path parameters by name (anything else is a string). */
export const PATH_PARAMS: Record<string, z.ZodType> = {
  name: z.string().regex(BOX_NAME).describe('box name'),
  snapshot: snapshotBody.shape.snapshot.describe('snapshot name'),
};

/** The errors every route can answer, by what it takes. */
export function sharedErrors(route: RouteSpec): ErrorCode[] {
  const out: ErrorCode[] = ['UNAVAILABLE', 'INTERNAL'];
  // FORBIDDEN: a box-scoped key outside boxes, or a member key on an admin route.
  if (!route.public) out.push('UNAUTHORIZED', 'FORBIDDEN');
  if (route.body || route.query || route.path.includes(':')) out.push('INVALID_REQUEST');
  if (route.body && route.body instanceof z.ZodType) out.push('INVALID_JSON', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE');
  return out;
}

// The request schemas that validate bodies are the SDK's request types (input side: defaults optional).
type Flat<T> = T extends object ? { [K in keyof T]: T[K] } : T;
proveSame<Same<Flat<z.input<typeof createBoxBody>>, Flat<wire.CreateBoxBody>>>();
proveSame<Same<Flat<z.input<typeof execBody>>, Flat<wire.ExecBody>>>();
proveSame<Same<Flat<z.input<typeof forkBody>>, Flat<wire.ForkBody>>>();
proveSame<Same<Flat<z.input<typeof snapshotBody>>, Flat<wire.SnapshotBody>>>();
proveSame<Same<Flat<z.input<typeof hookBody>>, Flat<wire.HookBody>>>();
proveSame<Same<Flat<z.input<typeof accountBody>>, Flat<wire.AccountBody>>>();
proveSame<Same<Flat<z.input<typeof keyBody>>, Flat<wire.KeyBody>>>();
