import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { BoxStore } from '../core/boxes.ts';
import { BoxdError } from '../core/errors.ts';
import type { HostClient } from '../core/host-client.ts';
import type { Logger } from '../core/log.ts';
import { frame, PTY_PING_MS, ptyChannels, PtyTag } from '../core/pty-wire.ts';
import type { Activity } from './activity.ts';
import { statusOf } from './errors.ts';
import { refuseUpgrade } from './pages.ts';
import { parseName } from './schemas.ts';

export const PTY_PATH = /^\/v1\/boxes\/([^/]+)\/pty$/;

/** The shell a terminal runs when the request names no `cmd`: bash when the box has it, else sh. */
export const DEFAULT_SHELL = ['/bin/sh', '-c', 'if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi'];

export interface PtyDeps {
  store: BoxStore;
  hosts: HostClient;
  activity: Activity;
  /** Publisher connection and the gateway's shared subscriber. */
  redis: Redis;
  sub: Redis;
  prefix: string;
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
 */
export class PtyGateway {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  private readonly handlers = new Map<string, (m: Buffer) => void>();
  private readonly sockets = new Set<WebSocket>();

  constructor(private readonly d: PtyDeps) {
    d.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.handlers.get(channel.toString())?.(message));
  }

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
      opts = parseQuery(url.searchParams);
    } catch (e) {
      const err = e instanceof BoxdError ? e : new BoxdError('INTERNAL', String(e));
      refuseUpgrade(socket, statusOf(err.code), err.code, err.message);
      return;
    }
    // The command starts before the upgrade completes: a refusal is still an HTTP answer, and an
    // open socket means a running command. Output that comes before the socket is kept.
    const ptyId = randomUUID();
    const ch = ptyChannels(this.d.prefix, ptyId);
    const early: Buffer[] = [];
    this.handlers.set(ch.output, (m) => early.push(m));
    try {
      await this.d.sub.subscribe(ch.output);
      await this.d.hosts.call(box.hostId, { op: 'pty-open', name: box.name, ptyId, cmd: opts.cmd, cols: opts.cols, rows: opts.rows });
    } catch (e) {
      this.handlers.delete(ch.output);
      void this.d.sub.unsubscribe(ch.output).catch(() => undefined);
      const err = e instanceof BoxdError ? e : new BoxdError('INTERNAL', String(e));
      this.d.log.warn({ box: box.name, err: err.message }, 'terminal did not start');
      refuseUpgrade(socket, statusOf(err.code), err.code, err.message);
      return;
    }
    if (socket.destroyed) {
      this.handlers.delete(ch.output);
      void this.d.sub.unsubscribe(ch.output).catch(() => undefined);
      void this.d.redis.publish(ch.input, frame(PtyTag.end)).catch(() => undefined);
      return;
    }
    const name = box.name;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.session(ws, name, ch, early));
  }

  private session(ws: WebSocket, name: string, ch: { input: string; output: string }, early: Buffer[]): void {
    this.sockets.add(ws);
    const release = this.d.activity.hold(name);
    let done = false;
    const send = (m: Buffer) => void this.d.redis.publish(ch.input, m).catch(() => undefined);
    const ping = setInterval(() => send(frame(PtyTag.ping)), PTY_PING_MS);
    const cleanup = () => {
      clearInterval(ping);
      release();
      this.sockets.delete(ws);
      this.handlers.delete(ch.output);
      void this.d.sub.unsubscribe(ch.output).catch(() => undefined);
    };
    const finish = (text: string, code: number) => {
      if (done) return;
      done = true;
      if (ws.readyState === ws.OPEN) {
        ws.send(text);
        ws.close(code);
      }
      cleanup();
    };
    const onOutput = (m: Buffer) => {
      const payload = m.subarray(1);
      if (m[0] === PtyTag.data) {
        if (ws.readyState === ws.OPEN) ws.send(payload, { binary: true });
      } else if (m[0] === PtyTag.control) {
        const { exitCode } = JSON.parse(payload.toString()) as { exitCode: number };
        finish(JSON.stringify({ type: 'exit', exitCode }), 1000);
      } else if (m[0] === PtyTag.end) {
        finish(JSON.stringify({ type: 'error', ...(JSON.parse(payload.toString()) as object) }), 1011);
      }
    };
    this.handlers.set(ch.output, onOutput);
    for (const m of early.splice(0)) onOutput(m);
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (!isBinary) {
        const control = parseControl(buf);
        if (control) return send(frame(PtyTag.control, control));
      }
      send(frame(PtyTag.data, buf));
    });
    ws.on('close', () => {
      if (!done) {
        done = true;
        send(frame(PtyTag.end));
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

function parseQuery(q: URLSearchParams): { cols: number; rows: number; cmd: string[] } {
  const dim = (key: string, def: number) => {
    const raw = q.get(key);
    if (raw === null || raw === '') return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 1000) throw new BoxdError('INVALID_REQUEST', `${key} must be an integer from 1 to 1000`);
    return n;
  };
  const cmd = q.getAll('cmd');
  if (cmd.some((c) => c.length > 4096) || cmd.length > 256) throw new BoxdError('INVALID_REQUEST', 'cmd is too long');
  if (cmd.length && !cmd[0]) throw new BoxdError('INVALID_REQUEST', 'cmd must name a program');
  return { cols: dim('cols', 80), rows: dim('rows', 24), cmd: cmd.length ? cmd : DEFAULT_SHELL };
}

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
