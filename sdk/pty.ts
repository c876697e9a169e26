/**
 * `box.pty()`: an interactive terminal in a box over the API's WebSocket
 * (`GET /v1/boxes/:name/pty`). Uses the `ws` package when it can be imported (it sends the key
 * in the Authorization header), else the platform's WebSocket (key in `?token=`).
 */
import { BoxdApiError } from './errors.ts';

export interface PtyOptions {
  /** Terminal size (default 80×24). */
  cols?: number;
  rows?: number;
  /** argv to run (default: a login bash, or sh where the box has no bash). */
  cmd?: string[];
}

/** A running terminal. Output is one byte stream (stdout and stderr merged, as on any TTY). */
export interface Pty {
  /** Receives every output chunk, in order (chunks that came before are delivered at once). */
  onData(cb: (data: Uint8Array) => void): void;
  /** Sends keystrokes / stdin. */
  write(data: string | Uint8Array): void;
  resize(cols: number, rows: number): void;
  /** Hangs up: the command gets SIGHUP (then SIGKILL) and `exited` resolves. */
  close(): void;
  /** The command's exit code once it ended; rejects with BoxdApiError when the terminal failed. */
  readonly exited: Promise<number>;
}

interface MinimalSocket {
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason?: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export async function openPty(baseUrl: string, apiKey: string, box: string, opts: PtyOptions = {}): Promise<Pty> {
  const url = new URL(`${baseUrl.replace(/^http/, 'ws')}/v1/boxes/${encodeURIComponent(box)}/pty`);
  url.searchParams.set('cols', String(opts.cols ?? 80));
  url.searchParams.set('rows', String(opts.rows ?? 24));
  for (const c of opts.cmd ?? []) url.searchParams.append('cmd', c);

  let ws: MinimalSocket;
  let refused: Promise<BoxdApiError> | undefined;
  const wsLib = await import('ws').catch(() => undefined);
  if (wsLib) {
    const sock = new wsLib.WebSocket(url, { headers: { Authorization: `Bearer ${apiKey}` } });
    refused = new Promise((resolve) => {
      sock.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(new BoxdApiError(String(res.headers['x-boxd-error'] ?? 'HTTP_ERROR'), body.trim() || `HTTP ${res.statusCode}`, res.statusCode ?? 0)));
      });
    });
    ws = sock as unknown as MinimalSocket;
  } else {
    const Native = (globalThis as { WebSocket?: new (u: string) => MinimalSocket }).WebSocket;
    if (!Native) throw new BoxdApiError('NO_WEBSOCKET', 'no WebSocket client: install the "ws" package', 0);
    url.searchParams.set('token', apiKey);
    ws = new Native(url.toString());
  }
  ws.binaryType = 'arraybuffer';

  const early: Uint8Array[] = [];
  let sink: ((d: Uint8Array) => void) | undefined;
  let settle!: { resolve: (n: number) => void; reject: (e: unknown) => void };
  const exited = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
  exited.catch(() => undefined);
  let result: { exitCode: number } | { error: BoxdApiError } | undefined;

  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => {
      if (refused) void refused.then(reject);
      else reject(new BoxdApiError('NETWORK_ERROR', `could not open a terminal at ${url.origin}`, 0));
    };
    ws.onclose = (ev) => {
      if (!refused) reject(new BoxdApiError('NETWORK_ERROR', `terminal refused (${ev.code})`, 0));
    };
  });
  ws.onerror = () => undefined;
  ws.onmessage = (ev) => {
    if (typeof ev.data === 'string') {
      const m = JSON.parse(ev.data) as { type: string; exitCode?: number; code?: string; message?: string };
      if (m.type === 'exit') result = { exitCode: m.exitCode ?? -1 };
      else if (m.type === 'error') result = { error: new BoxdApiError(m.code ?? 'INTERNAL', m.message ?? 'terminal failed', 0) };
      return;
    }
    const data = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : new Uint8Array(ev.data as Buffer);
    if (sink) sink(data);
    else early.push(data);
  };
  ws.onclose = (ev) => {
    if (result && 'exitCode' in result) settle.resolve(result.exitCode);
    else if (result) settle.reject(result.error);
    else settle.reject(new BoxdApiError('NETWORK_ERROR', `terminal closed without an exit code (${ev.code})`, 0));
  };
  const encoder = new TextEncoder();
  return {
    onData(cb) {
      sink = cb;
      for (const d of early.splice(0)) cb(d);
    },
    write(data) {
      if (ws.readyState === 1) ws.send(typeof data === 'string' ? encoder.encode(data) : data);
    },
    resize(cols, rows) {
      if (ws.readyState === 1) ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    },
    close() {
      ws.close(1000);
    },
    exited,
  };
}
