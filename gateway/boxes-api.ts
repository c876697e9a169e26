import express, { Router, type Request, type Response } from 'express';
import type { Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { newPreviewToken, type Accounts } from '../core/accounts.ts';
import { Blobs } from '../core/blobs.ts';
import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import { BoxdError, UnavailableError } from '../core/errors.ts';
import type { HostClient } from '../core/host-client.ts';
import type { ExecMessage, ExecOutcome } from '../core/jobs.ts';
import { boxSettings, type GoldenInfo } from '../host/goldens.ts';
import { accountOf } from './auth.ts';
import { boxJson } from './box-view.ts';
import type { ExecStreams } from './exec-stream.ts';
import { createBoxBody, execBody, parse, parseBoxPath, parseName, type CreateBoxBody } from './schemas.ts';
import type { Urls } from './urls.ts';

export interface BoxesApiDeps {
  config: Config;
  redis: Redis;
  store: BoxStore;
  accounts: Accounts;
  hosts: HostClient;
  execStreams: ExecStreams;
  /** The golden `name` as `account` sees it (the operator's, else the account's own). */
  golden: (account: string, name: string) => Promise<GoldenInfo | undefined>;
  urls: Urls;
  /** Optional source of ready boxes (the warm pool); undefined or null means a cold create. */
  claimFromPool?: (golden: string, box: PoolClaim) => Promise<BoxRecord | null>;
  /** Resolves a snapshot of an account to its image, ports and host. */
  snapshot?: (account: string, snapshot: string) => Promise<{ image: string; ports: number[]; hostId: string }>;
}

/** What a claimed pool box is given: the caller's name, account and settings. */
export interface PoolClaim {
  name: string;
  account: string;
  env: Record<string, string>;
  idleTimeoutMs: number;
  public: boolean;
  tokenHash?: string;
  limit: number;
}

const DEFAULT_EXEC_TIMEOUT_MS = 600_000;

/** `/v1/boxes…`: create, list, get, exec, files, suspend, resume, delete. */
export function boxesApi(d: BoxesApiDeps): Router {
  const r = Router();
  const blobs = new Blobs(d.redis, d.config.BOXD_PREFIX);
  const own = async (req: Request): Promise<BoxRecord> => d.store.require(parseName(req.params.name), accountOf(req));
  const send = (res: Response, box: BoxRecord, status = 200, extra: object = {}) =>
    res.status(status).json({ ...boxJson(box, d.urls), ...extra });

  r.post('/boxes', async (req, res) => {
    const body = parse(createBoxBody, req.body);
    const account = accountOf(req);
    const name = body.name ?? `box-${randomBytes(4).toString('hex')}`;
    const preview = body.public === false ? newPreviewToken() : undefined;
    const limit = await d.accounts.maxBoxes(account);
    const settings = await resolveSource(d, body, account);
    const env = body.env ?? {};
    const idleTimeoutMs = body.idleTimeoutMs ?? settings.idleTimeoutMs;
    const tokenHash = preview?.tokenHash;

    if (settings.golden && !body.ports && d.claimFromPool) {
      const claimed = await d.claimFromPool(settings.golden, { name, account, env, idleTimeoutMs, public: body.public ?? true, tokenHash, limit });
      if (claimed) return send(res, claimed, 201, { ...(preview ? { previewToken: preview.token } : {}), pooled: true });
    }

    const hostId = settings.hostId ?? (await d.hosts.pickHost());
    await d.store.create(
      {
        name,
        account,
        golden: settings.golden,
        image: body.image,
        snapshot: body.snapshot,
        imageRef: settings.imageRef,
        ports: body.ports ?? settings.ports,
        public: body.public ?? true,
        tokenHash,
        env,
        idleTimeoutMs,
        cpus: settings.cpus,
        memoryMb: settings.memoryMb,
        hostId,
      },
      limit,
    );
    await d.hosts.call(hostId, { op: 'create', name });
    send(res, await d.store.require(name), 201, preview ? { previewToken: preview.token } : {});
  });

  r.get('/boxes', async (req, res) => {
    const boxes = await d.store.list({ account: accountOf(req) });
    res.json({ boxes: boxes.map((b) => boxJson(b, d.urls)) });
  });

  r.get('/boxes/:name', async (req, res) => send(res, await own(req)));

  for (const op of ['suspend', 'resume'] as const) {
    r.post(`/boxes/:name/${op}`, async (req, res) => {
      const box = await own(req);
      await d.hosts.call(box.hostId, { op, name: box.name });
      send(res, await d.store.require(box.name));
    });
  }

  r.delete('/boxes/:name', async (req, res) => {
    const box = await own(req);
    await d.hosts.call(box.hostId, { op: 'destroy', name: box.name });
    res.status(204).end();
  });

  r.post('/boxes/:name/exec', async (req, res) => {
    const box = await own(req);
    const body = parse(execBody, req.body);
    const timeoutMs = Math.min(body.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS, d.config.BOXD_EXEC_MAX_MS);
    const execId = crypto.randomUUID();
    const stdinBlob = body.stdin === undefined ? undefined : await blobs.put(Buffer.from(body.stdin, 'utf8'), timeoutMs + 60_000, execId);
    const streaming = (req.headers.accept ?? '').includes('application/x-ndjson');
    const job = { op: 'exec' as const, name: box.name, execId, cmd: body.cmd, cwd: body.cwd, env: body.env, stdinBlob, timeoutMs, stream: streaming };
    const wait = timeoutMs + 30_000;
    if (!streaming) {
      res.json(await d.hosts.call<ExecOutcome>(box.hostId, job, wait));
      return;
    }
    await d.hosts.assertAlive(box.hostId);
    let finished = false;
    const write = (m: ExecMessage | { error: { code: string; message: string } }) => {
      if (finished || res.writableEnded || res.destroyed) return;
      res.write(JSON.stringify(m) + '\n');
      if ('exitCode' in m || 'error' in m) {
        finished = true;
        res.end();
        void close();
      }
    };
    const close = await d.execStreams.open(`${d.config.BOXD_PREFIX}:exec:${execId}`, write);
    res.on('close', () => void close());
    res.status(200).setHeader('Content-Type', 'application/x-ndjson');
    res.setHeader('Cache-Control', 'no-store');
    res.flushHeaders();
    d.hosts.call<ExecOutcome>(box.hostId, job, wait).then(
      // The host publishes the exit line itself; this covers a subscriber that lagged.
      (out) => setTimeout(() => write({ exitCode: out.exitCode, durationMs: out.durationMs, timedOut: out.timedOut }), 2000).unref(),
      (e: unknown) => write({ error: e instanceof BoxdError ? e.toWire() : { code: 'INTERNAL', message: String(e) } }),
    );
  });

  r.put('/boxes/:name/files', express.raw({ type: () => true, limit: d.config.BOXD_MAX_FILE_BYTES }), async (req, res) => {
    const box = await own(req);
    const path = parseBoxPath(req.query.path);
    const mode = parseMode(req.query.mode);
    const data = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const blob = await blobs.put(data, 300_000);
    await d.hosts.call(box.hostId, { op: 'putFile', name: box.name, path, blob, mode });
    res.status(204).end();
  });

  r.get('/boxes/:name/files', async (req, res) => {
    const box = await own(req);
    const path = parseBoxPath(req.query.path);
    const { blob } = await d.hosts.call<{ blob: string; size: number }>(box.hostId, { op: 'getFile', name: box.name, path });
    res.status(200).type('application/octet-stream').send(await blobs.take(blob));
  });

  return r;
}

function parseMode(raw: unknown): number | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !/^[0-7]{3,4}$/.test(raw)) throw new BoxdError('INVALID_REQUEST', 'mode must be octal, like 644 or 0755');
  return parseInt(raw, 8);
}

interface Source {
  golden?: string;
  /** The host that must run the box (a snapshot lives on one host). */
  hostId?: string;
  imageRef: string;
  ports: number[];
  idleTimeoutMs: number;
  cpus: number;
  memoryMb: number;
}

async function resolveSource(d: BoxesApiDeps, body: CreateBoxBody, account: string): Promise<Source> {
  const defaults = { idleTimeoutMs: d.config.BOXD_IDLE_TIMEOUT_MS, cpus: d.config.BOXD_BOX_CPUS, memoryMb: d.config.BOXD_BOX_MEMORY_MB };
  if (body.image) return { imageRef: body.image, ports: [], ...defaults };
  if (body.snapshot) {
    if (!d.snapshot) throw new BoxdError('NOT_IMPLEMENTED', 'snapshots are not available');
    const snap = await d.snapshot(account, body.snapshot);
    return { imageRef: snap.image, ports: snap.ports, hostId: snap.hostId, ...defaults };
  }
  const name = body.golden ?? 'default';
  const g = await d.golden(account, name);
  if (!g) throw new BoxdError('GOLDEN_NOT_FOUND', `no golden image "${name}"; see GET /v1/goldens`);
  if (!g.built) throw new UnavailableError(`golden "${name}" is not built on the host yet; run \`npm start\` or \`tsx golden-images/build.ts ${name}\``);
  // An account golden's image is on one host only.
  return { ...boxSettings(g), hostId: g.hostId };
}
