/**
 * boxd TypeScript SDK.
 *
 *   const c = new Compute({ apiKey: process.env.BOXD_API_KEY });
 *   const box = await c.box.create({ name: `task-${id}` });
 *   await box.exec(['bash', '-lc', 'npm test']);
 *   await box.suspend(); await box.resume(); await box.destroy();
 *
 * Every failed call throws BoxdApiError carrying the API's error `code` and HTTP `status`.
 */

import type { AccountBody, AccountInfo, AccountListed, KeyBody, KeyCreated, BoxInfo, CreateBoxBody, ExecBody, ExecEvent, ExecOutcome, GoldenInfo, HookBody, HookInfo, PoolStats, SnapshotInfo, TaskInfo } from './types.js';

export type * from './types.js';
export type CreateOptions = CreateBoxBody;
export type ExecOptions = Omit<ExecBody, 'cmd'>;
export type ExecResult = ExecOutcome;

/** An error answered by the API (or a transport failure, code NETWORK_ERROR). */
export class BoxdApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'BoxdApiError';
  }
}


export interface ComputeOptions {
  /** Defaults to env BOXD_API_KEY. */
  apiKey?: string;
  /** Defaults to env BOXD_URL, then http://localhost:8080. */
  baseUrl?: string;
  fetch?: typeof fetch;
}

class Client {
  readonly baseUrl: string;
  readonly apiKey: string;
  private readonly doFetch: typeof fetch;

  constructor(o: ComputeOptions) {
    const key = o.apiKey ?? process.env.BOXD_API_KEY;
    if (!key) throw new BoxdApiError('NO_API_KEY', 'pass apiKey or set BOXD_API_KEY', 0);
    this.apiKey = key;
    this.baseUrl = (o.baseUrl ?? process.env.BOXD_URL ?? 'http://localhost:8080').replace(/\/+$/, '');
    this.doFetch = o.fetch ?? fetch;
  }

  async raw(method: string, path: string, init: { body?: string | Buffer; json?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.apiKey}`, ...init.headers };
    let body: string | Buffer | undefined = init.body;
    if (init.json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    let res: Response;
    try {
      res = await this.doFetch(this.baseUrl + path, { method, headers, body });
    } catch (e) {
      const cause = (e as Error & { cause?: { code?: string; message?: string } }).cause;
      throw new BoxdApiError('NETWORK_ERROR', `could not reach boxd at ${this.baseUrl} (${method} ${path}: ${cause?.code ?? cause?.message ?? (e as Error).message}); is it running? BOXD_URL sets the address`, 0);
    }
    if (res.status >= 400) {
      const text = await res.text();
      let code = 'HTTP_ERROR';
      let message = text || res.statusText;
      try {
        const e = (JSON.parse(text) as { error?: { code: string; message: string } }).error;
        if (e) ({ code, message } = e);
      } catch {
        /* not JSON */
      }
      throw new BoxdApiError(code, message, res.status);
    }
    return res;
  }

  async json<T>(method: string, path: string, json?: unknown): Promise<T> {
    const res = await this.raw(method, path, json === undefined ? {} : { json });
    return (res.status === 204 ? undefined : await res.json()) as T;
  }
}

/** A box handle. `info` is the state as of the last call that returned it. */
export class Box {
  constructor(
    private readonly client: Client,
    public info: BoxInfo,
  ) {}

  get name(): string {
    return this.info.name;
  }
  /** The preview URL of the box's first port (null without ports). */
  get url(): string | null {
    return this.info.url;
  }
  get state(): BoxInfo['state'] {
    return this.info.state;
  }

  private path(rest = ''): string {
    return `/v1/boxes/${encodeURIComponent(this.info.name)}${rest}`;
  }

  async refresh(): Promise<Box> {
    this.info = await this.client.json<BoxInfo>('GET', this.path());
    return this;
  }

  /** Runs argv to completion (a suspended box is resumed first). */
  async exec(cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.client.json<ExecResult>('POST', this.path('/exec'), { cmd, ...opts });
  }

  /** Runs argv and yields output as it comes, then `{ exitCode }`. */
  async *stream(cmd: string[], opts: ExecOptions = {}): AsyncGenerator<ExecEvent> {
    const res = await this.client.raw('POST', this.path('/exec'), { json: { cmd, ...opts }, headers: { Accept: 'application/x-ndjson' } });
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const m = JSON.parse(line) as ExecEvent | { error: { code: string; message: string } };
        if ('error' in m) throw new BoxdApiError(m.error.code, m.error.message, 200);
        yield m;
      }
    }
  }

  /** An interactive terminal (a suspended box is resumed first); see `Pty`. */
  async pty(opts: PtyOptions = {}): Promise<Pty> {
    return openPty(this.client.baseUrl, this.client.apiKey, this.info.name, opts);
  }

  async suspend(): Promise<Box> {
    this.info = await this.client.json<BoxInfo>('POST', this.path('/suspend'));
    return this;
  }

  async resume(): Promise<Box> {
    this.info = await this.client.json<BoxInfo>('POST', this.path('/resume'));
    return this;
  }

  /** A child box from this box's current filesystem (processes are not copied). */
  async fork(opts: { name?: string } = {}): Promise<Box> {
    return new Box(this.client, await this.client.json<BoxInfo>('POST', this.path('/fork'), opts));
  }

  /** Stores the filesystem as a named snapshot boxes can be created from. */
  async snapshot(name: string): Promise<SnapshotInfo> {
    return (await this.client.json<{ snapshot: SnapshotInfo }>('POST', this.path('/snapshot'), { snapshot: name })).snapshot;
  }

  readonly files = {
    write: async (path: string, data: string | Uint8Array, opts: { mode?: number } = {}): Promise<void> => {
      const q = `?path=${encodeURIComponent(path)}${opts.mode !== undefined ? `&mode=${opts.mode.toString(8)}` : ''}`;
      await this.client.raw('PUT', this.path(`/files${q}`), { body: typeof data === 'string' ? data : Buffer.from(data), headers: { 'Content-Type': 'application/octet-stream' } });
    },
    read: async (path: string): Promise<Buffer> => {
      const res = await this.client.raw('GET', this.path(`/files?path=${encodeURIComponent(path)}`));
      return Buffer.from(await res.arrayBuffer());
    },
    readText: async (path: string): Promise<string> => (await this.files.read(path)).toString('utf8'),
  };

  async destroy(): Promise<void> {
    await this.client.json('DELETE', this.path());
    this.info = { ...this.info, state: 'destroyed' };
  }
}

/** The entry point: `new Compute({ apiKey, baseUrl })`. */
export class Compute {
  private readonly client: Client;

  constructor(opts: ComputeOptions = {}) {
    this.client = new Client(opts);
  }

  get baseUrl(): string {
    return this.client.baseUrl;
  }

  readonly box = {
    create: async (opts: CreateOptions = {}): Promise<Box> => new Box(this.client, await this.client.json<BoxInfo>('POST', '/v1/boxes', opts)),
    get: async (name: string): Promise<Box> => new Box(this.client, await this.client.json<BoxInfo>('GET', `/v1/boxes/${encodeURIComponent(name)}`)),
    list: async (): Promise<Box[]> => (await this.client.json<{ boxes: BoxInfo[] }>('GET', '/v1/boxes')).boxes.map((b) => new Box(this.client, b)),
  };

  readonly snapshots = {
    list: async () => (await this.client.json<{ snapshots: SnapshotInfo[] }>('GET', '/v1/snapshots')).snapshots,
    delete: async (name: string) => void (await this.client.json('DELETE', `/v1/snapshots/${encodeURIComponent(name)}`)),
  };

  readonly hooks = {
    create: async (h: HookBody) => this.client.json<HookInfo & { secret: string }>('POST', '/v1/hooks', h),
    list: async () => (await this.client.json<{ hooks: HookInfo[] }>('GET', '/v1/hooks')).hooks,
    delete: async (id: string) => void (await this.client.json('DELETE', `/v1/hooks/${encodeURIComponent(id)}`)),
  };

  /** Goldens: the operator's and the account's own (promoted from a box or a snapshot, with a warm pool). */
  readonly golden = {
    create: async (g: { name: string; fromBox?: string; fromSnapshot?: string; poolSize?: number; ports?: number[]; idleTimeoutMs?: number }) =>
      this.client.json<GoldenInfo>('POST', '/v1/goldens', g),
    list: async () => (await this.client.json<{ goldens: GoldenInfo[] }>('GET', '/v1/goldens')).goldens,
    delete: async (name: string) => void (await this.client.json('DELETE', `/v1/goldens/${encodeURIComponent(name)}`)),
  };

  readonly tasks = {
    get: async (id: string) => this.client.json<TaskInfo>('GET', `/v1/tasks/${encodeURIComponent(id)}`),
    list: async () => (await this.client.json<{ tasks: TaskInfo[] }>('GET', '/v1/tasks')).tasks,
  };

  /** Accounts and keys (admin key only). Keys are answered once and stored hashed. */
  readonly accounts = {
    create: async (a: AccountBody) => this.client.json<AccountInfo>('POST', '/v1/accounts', a),
    list: async () => (await this.client.json<{ accounts: AccountListed[] }>('GET', '/v1/accounts')).accounts,
  };

  readonly keys = {
    /** A new key of `account` (its only showing). */
    create: async (account: string, opts: KeyBody = {}) => this.client.json<KeyCreated>('POST', `/v1/accounts/${encodeURIComponent(account)}/keys`, opts),
    delete: async (id: string) => void (await this.client.json('DELETE', `/v1/keys/${encodeURIComponent(id)}`)),
  };

  async goldens() {
    return (await this.client.json<{ goldens: GoldenInfo[] }>('GET', '/v1/goldens')).goldens;
  }

  async pool() {
    return (await this.client.json<{ pools: PoolStats[] }>('GET', '/v1/pool')).pools;
  }
}
/**
 * `box.pty()`: an interactive terminal in a box over the API's WebSocket
 * (`GET /v1/boxes/:name/pty`). Uses the `ws` package when it can be imported (it sends the key
 * in the Authorization header), else the platform's WebSocket (key in `?token=`).
 */

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
  // Not a dependency of this package: used when the application has it (a variable specifier keeps
  // bundlers and the type checker from requiring it).
  const wsName = 'ws';
  const wsLib = (await import(wsName).catch(() => undefined)) as
    | { WebSocket: new (u: URL, o: { headers: Record<string, string> }) => MinimalSocket & { on(ev: 'unexpected-response', cb: (req: unknown, res: import('node:http').IncomingMessage) => void): void } }
    | undefined;
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
    // A refusal (an HTTP answer instead of the upgrade) fires neither error nor close once
    // `unexpected-response` has a listener: reject with the API's error as soon as it is read.
    if (refused) void refused.then(reject);
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new BoxdApiError('NETWORK_ERROR', `could not open a terminal at ${url.origin}`, 0));
    ws.onclose = (ev) => reject(new BoxdApiError('NETWORK_ERROR', `terminal refused (${ev.code})`, 0));
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
