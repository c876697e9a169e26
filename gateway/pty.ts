import { parsePtyQuery } from '../core/pty-query.ts';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { BoxStore } from '../core/boxes.ts';
import { BoxdError, UnavailableError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Activity } from './activity.ts';
import { statusOf } from './errors.ts';
import { errorOf } from './host-agents.ts';
import { refuseUpgrade } from './pages.ts';
import { parseName } from './schemas.ts';

export const PTY_PATH = /^\/v1\/boxes\/([^/]+)\/pty$/;

/** The shell a terminal runs when the request names no `cmd`: bash when the box has it, else sh. */
export const DEFAULT_SHELL = ['/bin/sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi'];

/** Bytes waiting in one socket beyond this pause reading from the other until they drain. */
export const PTY_HIGH_WATER = 1024 * 1024;

export interface PtyDeps {
  store: BoxStore;
  activity: Activity;
  /** The agent address of a host (from its heartbeat); `fresh` re-reads it. */
  target: (hostId: string, fresh?: boolean) => Promise<{ addr: string; port: number }>;
  /** The cluster secret the host agents accept. */
  secret: string;
  /** The account of an API key, or undefined for an unknown key. */
  accountOfKey: (key: string) => Promise<string | undefined>;
  log: Logger;
}

/**
 * `GET /v1/boxes/:name/pty` — an interactive terminal over a WebSocket.
 *
 * - Auth: `Authorization: Bearer <key>`, or `?token=<key>` for clients that cannot set headers
 *   (browsers); the header wins when both are sent.
 * - Query: `cols`, `rows` (default 80×24), `cmd` (repeat for argv: `cmd=python3&cmd=-q`; default a
 *   login bash, or sh where there is no bash).
 * - Client → server: binary frames are stdin; a text frame is stdin too unless it is the JSON
 *   control message `{"type":"resize","cols":C,"rows":R}`.
 * - Server → client: binary frames of terminal output, then one text frame
 *   `{"type":"exit","exitCode":N}` and a normal close (1000). Errors are a text frame
 *   `{"type":"error","code","message"}` and close 1011.
 * A suspended box is resumed first; the box stays awake while the terminal is open.
 *
 * The bytes go client ⇄ gateway ⇄ the owning host's agent (a second WebSocket, host/agent-pty.ts):
 * nothing of a terminal passes through Redis.
 */
export class PtyGateway {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  private readonly sockets = new Set<WebSocket>();

  constructor(private readonly d: PtyDeps) {}

  /** Handles the upgrade when `req` is for a terminal; false otherwise (the caller refuses it). */
  handles(req: IncomingMessage): boolean {
    return PTY_PATH.test(new URL(req.url ?? '/', 'http://x').pathname);
  }

  async upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    let box;
    let opts;
    try {
      const header = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
      const key = header ?? url.searchParams.get('token') ?? undefined;
      if (!key) throw new BoxdError('UNAUTHORIZED', 'missing API key: send "Authorization: Bearer <key>" or ?token=<key>');
      const account = await this.d.accountOfKey(key);
      if (!account) throw new BoxdError('UNAUTHORIZED', 'unknown API key');
      const name = parseName(decodeURIComponent(PTY_PATH.exec(url.pathname)![1]!));
      box = await this.d.store.require(name, account);
      opts = parsePtyQuery(url.searchParams, DEFAULT_SHELL);
    } catch (e) {
      const err = e instanceof BoxdError ? e : new BoxdError('INTERNAL', String(e));
      refuseUpgrade(socket, statusOf(err.code), err.code, err.message);
      return;
    }
    // The command starts (on the host) before the client's upgrade completes: a refusal is still
    // an HTTP answer, and an open socket means a running command.
    const q = new URLSearchParams({ cols: String(opts.cols), rows: String(opts.rows) });
    for (const c of opts.cmd) q.append('cmd', c);
    const path = `/v1/boxes/${encodeURIComponent(box.name)}/pty?${q}`;
    const early: { data: Buffer; binary: boolean }[] = [];
    let upstream: WebSocket;
    try {
      upstream = await this.connect(box.hostId, path, early);
    } catch (e) {
      const err = e instanceof BoxdError ? e : new UnavailableError(String(e));
      this.d.log.warn({ box: box.name, err: err.message }, 'terminal did not start');
      refuseUpgrade(socket, statusOf(err.code), err.code, err.message);
      return;
    }
    if (socket.destroyed) {
      upstream.close();
      return;
    }
    const name = box.name;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.session(ws, upstream, name, early));
  }

  /** Opens the agent's WebSocket; messages that come before the session starts go to `early`. */
  private async connect(hostId: string, path: string, early: { data: Buffer; binary: boolean }[]): Promise<WebSocket> {
    for (let attempt = 0; ; attempt++) {
      const t = await this.d.target(hostId, attempt > 0);
      try {
        return await new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(`ws://${t.addr.includes(':') ? `[${t.addr}]` : t.addr}:${t.port}${path}`, {
            headers: { Authorization: `Bearer ${this.d.secret}` },
            maxPayload: 1024 * 1024,
            handshakeTimeout: 60_000,
          });
          ws.on('message', (data: RawData, binary: boolean) => early.push({ data: toBuffer(data), binary }));
          ws.once('unexpected-response', (_req, res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.once('end', () => reject(errorOf(res.statusCode ?? 500, Buffer.concat(chunks).toString('utf8'))));
            res.once('error', reject);
          });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        });
      } catch (e) {
        // A host that restarted on another port: re-read its heartbeat once.
        if (attempt === 0 && (e as { code?: string }).code === 'ECONNREFUSED') continue;
        if (e instanceof BoxdError) throw e;
        throw new UnavailableError(`host ${hostId} did not open the terminal: ${(e as Error).message}`);
      }
    }
  }

  private session(ws: WebSocket, up: WebSocket, name: string, early: { data: Buffer; binary: boolean }[]): void {
    this.sockets.add(ws);
    const release = this.d.activity.hold(name);
    let done = false;
    const cleanup = () => {
      release();
      this.sockets.delete(ws);
    };
    const finish = (text: string, code: number) => {
      if (done) return;
      done = true;
      if (ws.readyState === ws.OPEN) {
        ws.send(text);
        ws.close(code);
      }
      up.close();
      cleanup();
    };
    // A reader that falls behind pauses the other side until its socket drains.
    const relay = (to: WebSocket, from: WebSocket, data: Buffer | string, binary: boolean) => {
      if (to.readyState !== to.OPEN) return;
      to.send(data, { binary });
      if (to.bufferedAmount > PTY_HIGH_WATER && !from.isPaused) {
        from.pause();
        const drain = setInterval(() => {
          if (to.readyState !== to.OPEN || to.bufferedAmount < PTY_HIGH_WATER / 4) {
            clearInterval(drain);
            if (from.readyState === from.OPEN) from.resume();
          }
        }, 10);
      }
    };
    const onUpstream = (data: Buffer, binary: boolean) => {
      if (binary) return relay(ws, up, data, true);
      let m: { type?: string; exitCode?: number; code?: string; message?: string };
      try {
        m = JSON.parse(data.toString('utf8')) as typeof m;
      } catch {
        return;
      }
      if (m.type === 'exit') finish(JSON.stringify({ type: 'exit', exitCode: m.exitCode }), 1000);
      else if (m.type === 'error') finish(JSON.stringify({ type: 'error', code: m.code, message: m.message }), 1011);
    };
    up.removeAllListeners('message');
    up.on('message', (data: RawData, binary: boolean) => onUpstream(toBuffer(data), binary));
    for (const m of early.splice(0)) onUpstream(m.data, m.binary);
    up.on('close', () => finish(JSON.stringify({ type: 'error', code: 'UNAVAILABLE', message: 'the host closed the terminal' }), 1011));
    up.on('error', () => undefined);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = toBuffer(data);
      if (!isBinary) {
        const control = parseControl(buf);
        if (control) return relay(up, ws, JSON.stringify({ type: 'resize', ...control }), false);
      }
      relay(up, ws, buf, true);
    });
    ws.on('close', () => {
      if (!done) {
        done = true;
        up.close(); // the agent hangs the command up
        cleanup();
      }
    });
    ws.on('error', () => undefined);
  }

  close(): void {
    for (const ws of this.sockets) ws.terminate();
    this.wss.close();
  }
}

const toBuffer = (data: RawData): Buffer => (Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data));

/** A resize control message, or undefined for anything else (which is stdin). */
export function parseControl(buf: Buffer): { cols: number; rows: number } | undefined {
  if (buf.length > 200 || buf[0] !== 0x7b) return undefined;
  try {
    const m = JSON.parse(buf.toString()) as { type?: unknown; cols?: unknown; rows?: unknown };
    if (m.type === 'resize' && Number.isInteger(m.cols) && Number.isInteger(m.rows)) return { cols: m.cols as number, rows: m.rows as number };
  } catch {
    /* not JSON: stdin */
  }
  return undefined;
}
