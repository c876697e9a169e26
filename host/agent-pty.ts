import { parsePtyQuery } from '../core/pty-query.ts';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { BoxdError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Lifecycle } from './lifecycle.ts';
import type { PtyProcess } from './runtime.ts';

export const AGENT_PTY_PATH = /^\/v1\/boxes\/([a-z0-9-]{1,63})\/pty$/;

/** Output waiting in a socket beyond this pauses the terminal's output until it drains. */
export const PTY_HIGH_WATER = 1024 * 1024;
/** The agent pings every gateway socket this often; one that misses a pong is dropped. */
const PING_MS = 15_000;

export interface AgentPtyDeps {
  lifecycle: Pick<Lifecycle, 'pty'>;
  /** Marks the box used (keeps it awake) while a terminal is open. */
  touch?: (name: string) => Promise<void>;
  log: Logger;
}

/**
 * Terminals on the host agent: `GET /v1/boxes/:name/pty?cols=&rows=&cmd=` upgraded to a
 * WebSocket (the caller authenticated with the cluster secret already). The command starts
 * (its box resumed first) before the upgrade completes, so a refusal is a plain HTTP answer.
 *
 * Wire, gateway → agent: binary frames are stdin; a text frame is `{"type":"resize","cols","rows"}`.
 * Agent → gateway: binary frames are output, then a text frame `{"type":"exit","exitCode"}` and
 * close 1000, or `{"type":"error","code","message"}` and close 1011. The socket closing first
 * hangs the command up (SIGHUP to its process group, then SIGKILL).
 */
export class AgentPtys {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  private readonly open = new Set<{ ws: WebSocket; proc: PtyProcess }>();
  private readonly timer: NodeJS.Timeout;
  private readonly alive = new WeakMap<WebSocket, boolean>();

  constructor(private readonly d: AgentPtyDeps) {
    this.timer = setInterval(() => {
      for (const s of this.open) {
        if (this.alive.get(s.ws) === false) {
          d.log.info('closing a terminal whose gateway stopped answering pings');
          s.ws.terminate();
          continue;
        }
        this.alive.set(s.ws, false);
        s.ws.ping();
      }
    }, PING_MS);
    this.timer.unref();
  }

  get size(): number {
    return this.open.size;
  }

  /** Starts the terminal; throws (before any upgrade) when the request or the box refuses it. */
  async upgrade(req: IncomingMessage, socket: Socket, head: Buffer, name: string, url: URL): Promise<void> {
    const q = parsePtyQuery(url.searchParams);
    const proc = await this.d.lifecycle.pty(name, q);
    if (socket.destroyed) {
      await proc.kill();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.session(ws, proc, name));
  }

  private session(ws: WebSocket, proc: PtyProcess, name: string): void {
    const entry = { ws, proc };
    this.open.add(entry);
    this.alive.set(ws, true);
    ws.on('pong', () => this.alive.set(ws, true));
    const touch = () => void this.d.touch?.(name).catch(() => undefined);
    const touching = setInterval(touch, 5_000);
    touching.unref();
    let done = false;
    let paused = false;
    proc.onData((data) => {
      if (ws.readyState !== ws.OPEN) return;
      ws.send(data, { binary: true });
      if (!paused && ws.bufferedAmount > PTY_HIGH_WATER && proc.pause) {
        paused = true;
        proc.pause();
        const drain = setInterval(() => {
          if (ws.readyState !== ws.OPEN || ws.bufferedAmount < PTY_HIGH_WATER / 4) {
            clearInterval(drain);
            paused = false;
            proc.resume?.();
          }
        }, 10);
      }
    });
    const finish = (text: string, code: number) => {
      if (done) return;
      done = true;
      clearInterval(touching);
      this.open.delete(entry);
      touch();
      if (ws.readyState === ws.OPEN) {
        ws.send(text);
        ws.close(code);
      }
    };
    void proc.exited.then(
      (exitCode) => finish(JSON.stringify({ type: 'exit', exitCode }), 1000),
      (e: unknown) => finish(JSON.stringify({ type: 'error', ...(e instanceof BoxdError ? e.toWire() : { code: 'RUNTIME_ERROR', message: String(e) }) }), 1011),
    );
    // In order: keys typed after a resize must reach a terminal that already has the new size.
    let queue = Promise.resolve();
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      queue = queue
        .then(async () => {
          if (isBinary) return proc.write(buf);
          const size = parseResize(buf);
          if (size) await proc.resize(size.cols, size.rows);
        })
        .catch(() => undefined);
    });
    ws.on('close', () => {
      clearInterval(touching);
      this.open.delete(entry);
      if (!done) {
        done = true;
        void proc.kill();
      }
    });
    ws.on('error', () => undefined);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.open];
    for (const s of all) s.ws.terminate();
    await Promise.all(all.map((s) => s.proc.kill()));
    this.wss.close();
  }
}

/** A well-formed resize (sizes clamped to 1..1000), or undefined. */
function parseResize(buf: Buffer): { cols: number; rows: number } | undefined {
  try {
    const m = JSON.parse(buf.toString()) as { type?: unknown; cols?: unknown; rows?: unknown };
    if (m.type !== 'resize' || !Number.isInteger(m.cols) || !Number.isInteger(m.rows)) return undefined;
    const cols = m.cols as number;
    const rows = m.rows as number;
    if (cols < 1 || rows < 1) return undefined;
    return { cols: Math.min(cols, 1000), rows: Math.min(rows, 1000) };
  } catch {
    return undefined;
  }
}
