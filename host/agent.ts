import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { BoxdError, ValidationError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { AGENT_PTY_PATH, AgentPtys } from './agent-pty.ts';
import type { Lifecycle } from './lifecycle.ts';

/**
 * The host agent: the data-plane endpoint gateways call directly (no queue) for what must be
 * fast or carries bytes — exec (JSON or NDJSON stream, stdin), files (streamed both ways),
 * suspend and resume (also the preview wake), and terminals (a WebSocket, host/agent-pty.ts). It listens on the host's own address and
 * accepts only `Authorization: Bearer <cluster secret>`. Boxes cannot reach it: the host
 * drops new connections from the boxes' bridge (and it binds loopback by default).
 *
 * Wire: errors are `{error:{code,message}}` with a 4xx/5xx status; the gateway rebuilds them by code.
 */
export interface AgentDeps {
  lifecycle: Pick<Lifecycle, 'exec' | 'suspend' | 'resume' | 'putFileStream' | 'openFile' | 'pty'>;
  /** Marks a box used while a terminal on it is open. */
  touch?: (name: string) => Promise<void>;
  secret: string;
  addr: string;
  port: number;
  maxFileBytes: number;
  log: Logger;
  /** BOXD_PREFIX: only this installation's own images (snapshots, forks, account goldens) move. */
  prefix?: string;
  /** Image transfer between hosts (`GET`/`HEAD /v1/images/:ref`, `POST /v1/images?ref=`). */
  images?: {
    has(ref: string): Promise<boolean>;
    save?(ref: string): Promise<Readable>;
    load?(tar: Readable): Promise<void>;
  };
}

/**
 * Whether `ref` is an image boxd made for this installation and may move between hosts: a
 * snapshot (boxd-snap/<prefix>-…), a fork (boxd-fork/<prefix>-…) or an account golden
 * (boxd-ugolden/<prefix>-…). Goldens are built on each host; anything else is not ours.
 */
export function movableImage(ref: string, prefix: string): boolean {
  const p = prefix.toLowerCase().replace(/[^a-z0-9._-]/g, '');
  if (!p || ref.length > 255) return false;
  const m = /^boxd-(snap|fork|ugolden)\/([a-z0-9][a-z0-9._-]*):([A-Za-z0-9_][A-Za-z0-9._-]{0,127})$/.exec(ref);
  return !!m && m[2]!.startsWith(`${p}-`);
}

export interface AgentHandle {
  server: Server;
  /** The terminals open on this host. */
  ptys: AgentPtys;
  port: number;
  close(): Promise<void>;
}

export const agentExecBody = z
  .object({
    execId: z.string().regex(/^[A-Za-z0-9-]{8,64}$/),
    cmd: z.array(z.string()).min(1),
    cwd: z.string().optional(),
    env: z.record(z.string(), z.string()).optional(),
    stdin: z.string().optional(),
    timeoutMs: z.number().int().min(1),
    stream: z.boolean().default(false),
    detach: z.boolean().default(false),
    /** The record as the gateway read it (Lifecycle's `seen`): spares the host reading it again. */
    box: z
      .object({
        state: z.enum(['creating', 'running', 'suspended', 'destroyed', 'error', 'lost']),
        version: z.number().int(),
        runtimeId: z.string().optional(),
        env: z.record(z.string(), z.string()),
      })
      .strict()
      .optional(),
  })
  .strict();
export type AgentExecBody = z.infer<typeof agentExecBody>;

/** Optional body of a resume: the record as the gateway read it (Lifecycle.resume's `seen`). */
export const agentResumeBody = z
  .object({
    box: z
      .object({
        state: z.enum(['creating', 'running', 'suspended', 'destroyed', 'error', 'lost']),
        version: z.number().int(),
        runtimeId: z.string().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const ROUTE = /^\/v1\/boxes\/([a-z0-9-]{1,63})\/(exec|files|suspend|resume)$/;

export async function startAgent(d: AgentDeps): Promise<AgentHandle> {
  const want = createHash('sha256').update(d.secret).digest();
  const authorized = (req: IncomingMessage): boolean => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    return timingSafeEqual(createHash('sha256').update(m[1]!).digest(), want);
  };

  const server = createServer((req, res) => {
    res.on('error', () => undefined);
    handle(req, res).catch((e) => fail(res, e, d.log));
  });
  server.keepAliveTimeout = 65_000;

  const ptys = new AgentPtys({ lifecycle: d.lifecycle, touch: d.touch, log: d.log.child({ part: 'pty' }) });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => undefined);
    const refuse = (e: unknown) => {
      const err = e instanceof BoxdError ? e : new BoxdError('INTERNAL', 'internal error');
      if (!(e instanceof BoxdError)) d.log.error({ err: e }, 'host agent terminal failure');
      if (!socket.writable) return void socket.destroy();
      const text = JSON.stringify({ error: err.toWire() });
      const status = STATUS[err.code] ?? 500;
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
      );
    };
    if (!authorized(req)) return refuse(new BoxdError('UNAUTHORIZED', 'the host agent needs the cluster secret'));
    const url = new URL(req.url ?? '/', 'http://agent');
    const m = AGENT_PTY_PATH.exec(url.pathname);
    if (!m || req.method !== 'GET') return refuse(new BoxdError('NOT_FOUND', `no WebSocket route ${req.method} ${url.pathname}`));
    ptys.upgrade(req, socket, head, m[1]!, url).catch(refuse);
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!authorized(req)) return fail(res, new BoxdError('UNAUTHORIZED', 'the host agent needs the cluster secret'), d.log);
    const url = new URL(req.url ?? '/', 'http://agent');
    if (url.pathname === '/healthz') return sendJson(res, 200, { ok: true });
    if (url.pathname === '/v1/images' && req.method === 'POST') return loadImage(req, res, url);
    if (url.pathname.startsWith('/v1/images/') && (req.method === 'GET' || req.method === 'HEAD')) {
      return saveImage(req, res, url.pathname.slice('/v1/images/'.length));
    }
    const m = ROUTE.exec(url.pathname);
    if (!m) return fail(res, new BoxdError('NOT_FOUND', `no route ${req.method} ${url.pathname}`), d.log);
    const [, name, op] = m as unknown as [string, string, string];
    if (op === 'exec' && req.method === 'POST') return exec(req, res, name);
    if (op === 'suspend' && req.method === 'POST') {
      req.resume();
      return sendJson(res, 200, { box: await d.lifecycle.suspend(name) });
    }
    if (op === 'resume' && req.method === 'POST') {
      const raw = await readBody(req, 64 * 1024);
      let seen: z.infer<typeof agentResumeBody>['box'];
      try {
        seen = raw.length ? agentResumeBody.parse(JSON.parse(raw.toString('utf8'))).box : undefined;
      } catch (e) {
        throw new ValidationError(`invalid resume request: ${(e as Error).message.slice(0, 200)}`);
      }
      return sendJson(res, 200, { box: await d.lifecycle.resume(name, seen) });
    }
    if (op === 'files' && req.method === 'PUT') return putFile(req, res, name, url);
    if (op === 'files' && req.method === 'GET') return getFile(req, res, name, url);
    return fail(res, new BoxdError('NOT_FOUND', `no route ${req.method} ${url.pathname}`), d.log);
  };

  const exec = async (req: IncomingMessage, res: ServerResponse, name: string): Promise<void> => {
    const raw = await readBody(req, 32 * 1024 * 1024);
    let parsed: AgentExecBody;
    try {
      parsed = agentExecBody.parse(JSON.parse(raw.toString('utf8')));
    } catch (e) {
      throw new ValidationError(`invalid exec request: ${(e as Error).message.slice(0, 200)}`);
    }
    const body = parsed;
    // The caller going away kills the command's tree, unless it asked to detach.
    const gone = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished && !body.detach) gone.abort();
    });
    const common = {
      name,
      execId: body.execId,
      cmd: body.cmd,
      cwd: body.cwd,
      env: body.env,
      stdin: body.stdin === undefined ? undefined : Buffer.from(body.stdin, 'utf8'),
      timeoutMs: body.timeoutMs,
      signal: gone.signal,
      seen: body.box,
    };
    if (!body.stream) {
      const out = await d.lifecycle.exec(common);
      return sendJson(res, 200, out);
    }
    const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
    };
    const line = (m: object): void | Promise<void> => {
      start();
      if (res.destroyed) return;
      if (!res.write(JSON.stringify(m) + '\n')) {
        return new Promise<void>((resolve) => {
          res.once('drain', resolve);
          res.once('close', resolve);
        });
      }
    };
    try {
      const out = await d.lifecycle.exec({
        ...common,
        maxOutputBytes: 0,
        onOutput: (stream, data) => {
          const text = decoders[stream].write(data);
          return text ? line({ stream, data: text }) : undefined;
        },
      });
      for (const stream of ['stdout', 'stderr'] as const) {
        const rest = decoders[stream].end();
        if (rest) void line({ stream, data: rest });
      }
      void line({ exitCode: out.exitCode, durationMs: out.durationMs, timedOut: out.timedOut });
      res.end();
    } catch (e) {
      if (!started) throw e;
      void line({ error: e instanceof BoxdError ? e.toWire() : { code: 'INTERNAL', message: String(e) } });
      res.end();
    }
  };

  const putFile = async (req: IncomingMessage, res: ServerResponse, name: string, url: URL): Promise<void> => {
    const path = url.searchParams.get('path') ?? '';
    if (!path.startsWith('/')) throw new ValidationError('path must be absolute');
    const modeRaw = url.searchParams.get('mode');
    const mode = modeRaw ? parseInt(modeRaw, 8) : undefined;
    const len = req.headers['content-length'];
    if (len !== undefined) {
      const size = Number(len);
      if (!Number.isSafeInteger(size) || size < 0) throw new ValidationError('bad Content-Length');
      if (size > d.maxFileBytes) throw new BoxdError('FILE_TOO_LARGE', `files are limited to ${d.maxFileBytes} bytes`);
      await d.lifecycle.putFileStream(name, path, req, size, mode);
      return void res.writeHead(204).end();
    }
    // A chunked body has no size up front, and a tar entry needs one: spool it to a temp file.
    const dir = await mkdtemp(`${tmpdir()}/boxd-upload-`);
    try {
      let size = 0;
      const file = `${dir}/body`;
      await pipeline(
        req,
        async function* (src: AsyncIterable<Buffer>) {
          for await (const chunk of src) {
            size += chunk.length;
            if (size > d.maxFileBytes) throw new BoxdError('FILE_TOO_LARGE', `files are limited to ${d.maxFileBytes} bytes`);
            yield chunk;
          }
        },
        createWriteStream(file),
      );
      await d.lifecycle.putFileStream(name, path, createReadStream(file), size, mode);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    res.writeHead(204).end();
  };

  const ownRef = (raw: string | null): string => {
    let ref = '';
    try {
      ref = decodeURIComponent(raw ?? '');
    } catch {
      /* invalid escape: refused below */
    }
    if (!movableImage(ref, d.prefix ?? '')) {
      throw new BoxdError('IMAGE_NOT_ALLOWED', `only this installation's snapshot, fork and account-golden images move between hosts, not "${ref.slice(0, 200)}"`);
    }
    return ref;
  };

  // `docker save` of one of our images, streamed as it is made (never held whole). HEAD answers
  // 200 or 404: whether this host holds it.
  const saveImage = async (req: IncomingMessage, res: ServerResponse, raw: string): Promise<void> => {
    req.resume();
    const ref = ownRef(raw);
    if (!d.images) throw new BoxdError('NOT_IMPLEMENTED', 'this host cannot move images');
    if (!(await d.images.has(ref))) throw new BoxdError('IMAGE_NOT_FOUND', `no image ${ref} on this host`);
    if (req.method === 'HEAD') return void res.writeHead(200).end();
    if (!d.images.save) throw new BoxdError('NOT_IMPLEMENTED', 'this host cannot move images');
    const tar = await d.images.save(ref);
    res.writeHead(200, { 'Content-Type': 'application/x-tar', 'Cache-Control': 'no-store' });
    await pipeline(tar, res).catch(() => {
      tar.destroy();
      res.destroy();
    });
  };

  // `docker load` of a tar streamed in (the engine reads it as it arrives); answers once the
  // image `ref` names is there.
  const loadImage = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    let ref: string;
    try {
      ref = ownRef(url.searchParams.get('ref'));
      if (!d.images?.load) throw new BoxdError('NOT_IMPLEMENTED', 'this host cannot move images');
    } catch (e) {
      req.resume();
      throw e;
    }
    if (await d.images.has(ref)) {
      req.resume();
      return sendJson(res, 200, { ref, loaded: false });
    }
    await d.images.load(req);
    if (!(await d.images.has(ref))) throw new ValidationError(`the uploaded tar did not hold image ${ref}`);
    d.log.info({ ref }, 'image loaded from another host');
    sendJson(res, 200, { ref, loaded: true });
  };

  const getFile = async (req: IncomingMessage, res: ServerResponse, name: string, url: URL): Promise<void> => {
    req.resume();
    const path = url.searchParams.get('path') ?? '';
    if (!path.startsWith('/')) throw new ValidationError('path must be absolute');
    const { size, stream } = await d.lifecycle.openFile(name, path);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) });
    await pipeline(stream, res).catch(() => {
      stream.destroy();
      res.destroy();
    });
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(d.port, d.addr, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  d.log.info({ addr: d.addr, port }, 'host agent listening');
  return {
    server,
    port,
    ptys,
    async close() {
      await ptys.close();
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    },
  };
}

const STATUS: Record<string, number> = {
  INVALID_REQUEST: 400,
  UNAUTHORIZED: 401,
  BOX_NOT_FOUND: 404,
  FILE_NOT_FOUND: 404,
  IMAGE_NOT_FOUND: 404,
  IMAGE_NOT_ALLOWED: 403,
  NOT_IMPLEMENTED: 501,
  NOT_FOUND: 404,
  BOX_STATE: 409,
  BOX_BUSY: 409,
  FILE_TOO_LARGE: 413,
  LIMIT_EXCEEDED: 429,
  UNAVAILABLE: 503,
};

function fail(res: ServerResponse, e: unknown, log: Logger): void {
  const err = e instanceof BoxdError ? e : new BoxdError('INTERNAL', 'internal error');
  if (!(e instanceof BoxdError)) log.error({ err: e }, 'host agent failure');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, STATUS[err.code] ?? 500, { error: err.toWire() });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.destroy();
        reject(new BoxdError('PAYLOAD_TOO_LARGE', 'request body is too large'));
      } else chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}
