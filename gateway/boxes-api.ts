import { Router, type Request, type Response } from 'express';
import { pipeline } from 'node:stream/promises';
import type { Redis } from 'ioredis';
import { randomBytes, randomUUID } from 'node:crypto';
import { newPreviewToken, type Accounts } from '../core/accounts.ts';
import { ExecSlots } from '../core/exec-slots.ts';
import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import { BoxdError, LimitError, UnavailableError, ValidationError } from '../core/errors.ts';
import { samePolicy, type NetworkPolicy } from '../core/network-policy.ts';
import type { HostClient } from '../core/host-client.ts';
import { boxSettings, type GoldenInfo } from '../host/goldens.ts';
import { accountOf } from './auth.ts';
import { agentEnv } from './agent-env.ts';
import { boxJson } from './box-view.ts';
import { errorOf, passHeaders, readText, type HostAgents } from './host-agents.ts';
import { createBoxBody, execBody, parse, parseBoxPath, parseName, type CreateBoxBody } from './schemas.ts';
import type { Urls } from './urls.ts';

export interface BoxesApiDeps {
  config: Config;
  redis: Redis;
  store: BoxStore;
  accounts: Accounts;
  hosts: HostClient;
  agents: HostAgents;
  goldens: () => Promise<Map<string, GoldenInfo>>;
  /** The golden `name` as `account` sees it (the operator's, else the account's own). */
  golden: (account: string, name: string) => Promise<GoldenInfo | undefined>;
  urls: Urls;
  /** Optional source of ready boxes (the warm pool); undefined or null means a cold create. */
  claimFromPool?: (golden: string, box: PoolClaim) => Promise<BoxRecord | null>;
  /** Resolves a snapshot of an account to its image, ports and host. */
  snapshot?: (account: string, snapshot: string) => Promise<{ image: string; ports: number[]; hostId: string }>;
  /** The snapshots of an account (an `image` at create may name one of their images). */
  snapshotsOf?: (account: string) => Promise<{ image: string; ports: number[]; hostId: string }[]>;
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

/**
 * `/v1/boxes…`: create, list, get, delete (control plane: BullMQ jobs to the owning host) and
 * exec, files, suspend, resume (data plane: straight to the owning host's agent).
 */
export function boxesApi(d: BoxesApiDeps): Router {
  const r = Router();
  const slots = new ExecSlots(d.redis, d.config.BOXD_PREFIX);
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
    const maxDisk = d.config.BOXD_BOX_DISK_MB;
    if (body.diskMb !== undefined && maxDisk > 0 && body.diskMb > maxDisk) {
      throw new ValidationError(`diskMb ${body.diskMb} is above this host's maximum of ${maxDisk} MiB`);
    }
    const diskMb = body.diskMb ?? settings.diskMb;
    const network = body.network ?? settings.network;
    // A pool box was made with its golden's disk and network: a create asking otherwise is cold.
    const poolFits = (body.diskMb === undefined || body.diskMb === settings.diskMb) && samePolicy(network, settings.network);

    // An agent box's env holds a key for its own name on its own host: always a cold create.
    const wantsAgent = body.agent ?? settings.agent ?? false;
    if (settings.golden && !body.ports && poolFits && !wantsAgent && d.claimFromPool) {
      const claimed = await d.claimFromPool(settings.golden, { name, account, env, idleTimeoutMs, public: body.public ?? true, tokenHash, limit });
      if (claimed) return send(res, claimed, 201, { ...(preview ? { previewToken: preview.token } : {}), pooled: true });
    }

    // A box goes where there is room (core/placement.ts). A snapshot's image is made on one
    // host: that host is preferred while it has room, else the best live host gets a copy first.
    const hostId = await placeFor(d, settings, name);
    // Until its host answers (or this fails first), this gateway counts the box on that host itself.
    try {
      const agent = wantsAgent ? await agentEnv({ redis: d.redis, accounts: d.accounts, prefix: d.config.BOXD_PREFIX }, hostId, account, name) : undefined;
      if (agent) Object.assign(env, agent.env);
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
          diskMb,
          network,
          hostId,
        },
        limit,
      ).catch(async (e: unknown) => {
        await agent?.undo();
        throw e;
      });
      try {
        await d.hosts.call(hostId, { op: 'create', name });
      } catch (e) {
        // The host died or gave no answer: the caller gets the error and the name is freed. A host
        // that finishes later finds no record and removes its container again; one that restarts
        // removes the container as unknown.
        if (e instanceof BoxdError && (e.code === 'HOST_LOST' || e.code === 'TIMEOUT')) await d.store.remove(name).catch(() => undefined);
        throw e;
      }
    } finally {
      d.hosts.unplace(hostId, name);
    }
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
      // A resume carries the record as read here: the host then reads it no more (Lifecycle.resume).
      const seen = op === 'resume' ? { box: { state: box.state, version: box.version, runtimeId: box.runtimeId } } : undefined;
      const body = seen && Buffer.from(JSON.stringify(seen));
      const headers = body ? { 'Content-Type': 'application/json' } : undefined;
      const done = await d.agents.json<{ box: BoxRecord }>(box.hostId, { method: 'POST', path: `/v1/boxes/${box.name}/${op}`, headers, body });
      send(res, done.box);
    });
  }

  r.delete('/boxes/:name', async (req, res) => {
    const box = await own(req);
    if (box.state === 'lost') {
      // Its host is dead: forget the record (and the box's own keys) now; the host drops the
      // container if it comes back.
      await d.store.remove(box.name);
      await d.accounts.revokeBoxKeys(box.account, box.name);
      res.status(204).end();
      return;
    }
    await d.hosts.call(box.hostId, { op: 'destroy', name: box.name });
    res.status(204).end();
  });

  // Exec goes straight to the owning host's agent; output streams back through this response
  // with backpressure and never touches Redis. The account's slot is released when it ends.
  r.post('/boxes/:name/exec', async (req, res) => {
    const account = accountOf(req);
    const body = parse(execBody, req.body);
    const timeoutMs = Math.min(body.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS, d.config.BOXD_EXEC_MAX_MS);
    const execId = randomUUID();
    // The record and the account's exec slot (its own limit when it has one, POST /v1/accounts
    // { maxExecs }, else the operator's; read in the same script) at the same time.
    const [found, slot] = await Promise.allSettled([
      own(req),
      slots.take(account, execId, d.config.BOXD_MAX_EXECS, timeoutMs + 60_000),
    ]);
    if (found.status === 'rejected' || slot.status === 'rejected') {
      if (slot.status === 'fulfilled' && slot.value.ok) slots.release(account, execId);
      throw found.status === 'rejected' ? found.reason : (slot as PromiseRejectedResult).reason;
    }
    const box = found.value;
    if (!slot.value.ok) throw new LimitError(`this account already runs ${slot.value.cap} commands; wait for one to finish`);
    const streaming = (req.headers.accept ?? '').includes('application/x-ndjson');
    const gone = new AbortController();
    res.once('close', () => {
      slots.release(account, execId);
      if (!res.writableFinished) gone.abort();
    });
    // The record as read here goes along: the host starts the command without reading it again.
    const seen = { state: box.state, version: box.version, runtimeId: box.runtimeId, env: box.env };
    const payload = Buffer.from(JSON.stringify({ ...body, timeoutMs, execId, stream: streaming, detach: body.detach ?? false, box: seen }));
    const up = await d.agents.request(box.hostId, { method: 'POST', path: `/v1/boxes/${box.name}/exec`, headers: { 'Content-Type': 'application/json' }, body: payload, once: true }, gone.signal);
    if ((up.statusCode ?? 500) >= 300) throw errorOf(up.statusCode ?? 500, await readText(up));
    res.writeHead(200, passHeaders(up.headers));
    await pipeline(up, res).catch(() => {
      up.destroy();
      res.destroy();
    });
  });

  r.put('/boxes/:name/files', async (req, res) => {
    const box = await own(req);
    const path = parseBoxPath(req.query.path);
    const mode = parseMode(req.query.mode);
    const len = req.headers['content-length'];
    if (len !== undefined && Number(len) > d.config.BOXD_MAX_FILE_BYTES) {
      throw new BoxdError('FILE_TOO_LARGE', `files are limited to ${d.config.BOXD_MAX_FILE_BYTES} bytes`);
    }
    const query = new URLSearchParams({ path });
    if (mode !== undefined) query.set('mode', mode.toString(8));
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    if (len !== undefined) headers['Content-Length'] = len;
    else headers['Transfer-Encoding'] = 'chunked';
    const up = await d.agents.request(box.hostId, { method: 'PUT', path: `/v1/boxes/${box.name}/files?${query}`, headers, body: req });
    const text = await readText(up);
    if ((up.statusCode ?? 500) >= 300) throw errorOf(up.statusCode ?? 500, text);
    res.status(204).end();
  });

  r.get('/boxes/:name/files', async (req, res) => {
    const box = await own(req);
    const path = parseBoxPath(req.query.path);
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    const up = await d.agents.request(box.hostId, { method: 'GET', path: `/v1/boxes/${box.name}/files?${new URLSearchParams({ path })}` }, gone.signal);
    if ((up.statusCode ?? 500) >= 300) throw errorOf(up.statusCode ?? 500, await readText(up));
    res.writeHead(200, { ...passHeaders(up.headers), 'content-type': 'application/octet-stream' });
    await pipeline(up, res).catch(() => {
      up.destroy();
      res.destroy();
    });
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
  /** The host that holds the image (a snapshot is made on one host). */
  hostId?: string;
  /** The image may be copied to another host (a snapshot's); else the box must run on hostId. */
  movable?: boolean;
  imageRef: string;
  ports: number[];
  idleTimeoutMs: number;
  cpus: number;
  memoryMb: number;
  diskMb?: number;
  network?: NetworkPolicy;
  /** The golden's manifest makes agent boxes by default. */
  agent?: boolean;
}

async function resolveSource(d: BoxesApiDeps, body: CreateBoxBody, account: string): Promise<Source> {
  const defaults = { idleTimeoutMs: d.config.BOXD_IDLE_TIMEOUT_MS, cpus: d.config.BOXD_BOX_CPUS, memoryMb: d.config.BOXD_BOX_MEMORY_MB };
  if (body.image) {
    // `image` takes only a golden's tag, an image on the operator's allowlist, or one of the
    // caller's own snapshot images: never another account's fork or snapshot, nor any local image.
    const golden = [...(await d.goldens()).values()].find((g) => g.tag === body.image);
    if (golden) return boxSettings(golden);
    if (d.config.BOXD_ALLOWED_IMAGES.includes(body.image)) return { imageRef: body.image, ports: [], ...defaults };
    const snap = (await d.snapshotsOf?.(account))?.find((s) => s.image === body.image);
    if (snap) return { imageRef: snap.image, ports: snap.ports, hostId: snap.hostId, movable: true, ...defaults };
    throw new BoxdError('IMAGE_NOT_ALLOWED', `image "${body.image}" is not allowed: use a golden (GET /v1/goldens), one of your snapshots, or an image the operator lists in BOXD_ALLOWED_IMAGES`);
  }
  if (body.snapshot) {
    if (!d.snapshot) throw new BoxdError('NOT_IMPLEMENTED', 'snapshots are not available');
    const snap = await d.snapshot(account, body.snapshot);
    return { imageRef: snap.image, ports: snap.ports, hostId: snap.hostId, movable: true, ...defaults };
  }
  const name = body.golden ?? 'default';
  const g = await d.golden(account, name);
  if (!g) throw new BoxdError('GOLDEN_NOT_FOUND', `no golden image "${name}"; see GET /v1/goldens`);
  // An account golden's image is made on one host and copied to another when a box goes there.
  return g.hostId ? { ...boxSettings(g), hostId: g.hostId, movable: true } : boxSettings(g);
}

/**
 * The host a new box of `s` goes to. Without a holding host: placement. An image made on one
 * host (a snapshot's, an account golden's) goes, in this order of preference, to: its own host
 * when alive with room; another live host that already holds a copy, with room; else the best
 * live host by placement, which first gets the image (HostAgents.ensureImage: agent to agent
 * through this gateway, from a live host that holds it; never through Redis).
 */
async function placeFor(d: BoxesApiDeps, s: Source, box: string): Promise<string> {
  const need = { cpus: s.cpus, memoryMb: s.memoryMb };
  if (!s.hostId) return d.hosts.pickHost({ ...need, golden: s.golden }, { box });
  if (!s.movable) {
    await d.hosts.assertAlive(s.hostId);
    return s.hostId;
  }
  const alive = (await d.hosts.aliveHosts()).map((h) => h.id);
  const onlyOn = (holders: string[]) => d.hosts.pickHost({ ...need, exclude: alive.filter((h) => !holders.includes(h)) }, { box }).catch(() => undefined);
  const origin = alive.includes(s.hostId) ? [s.hostId] : [];
  if (origin.length) {
    const onOrigin = await onlyOn(origin);
    if (onOrigin) return onOrigin;
  }
  // Copies made by earlier creates: asked of each other live host (one HEAD each); a host that
  // does not answer counts as not holding it.
  const others = alive.filter((h) => h !== s.hostId);
  const held = await Promise.all(others.map((h) => d.agents.hasImage(h, s.imageRef).catch(() => false)));
  const copies = others.filter((_, i) => held[i]);
  if (copies.length) {
    const onCopy = await onlyOn(copies);
    if (onCopy) return onCopy;
  }
  const hostId = await d.hosts.pickHost(need, { box });
  await d.agents.ensureImage(s.imageRef, hostId, [...origin, ...copies]).catch((e: unknown) => {
    d.hosts.unplace(hostId, box);
    throw e;
  });
  return hostId;
}
