import type { Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { BoxRecord } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import type { Logger } from '../core/log.ts';
import type { Activity } from './activity.ts';
import { ChunkedEnd, CRLFCRLF, parseRequestHead, parseResponseHead, type RequestHead } from './fast-head.ts';
import type { Metrics } from './metrics.ts';
import { rawPage } from './pages.ts';
import { hostOnlyCookies, Preview, type Routed } from './preview.ts';
import type { RouteCache } from './route-cache.ts';
import { canonicalHost, resolveTarget, type Target } from './routing.ts';

/**
 * The preview fast path (opt-in: BOXD_PREVIEW_FASTPATH=true). It sits on the raw
 * client socket in front of Node's HTTP server. Per request head of a kept-alive connection it
 * reads the few header lines it acts on from the bytes (gateway/fast-head.ts), runs the preview
 * passes (route → authorize → wake, answered from a per-connection memo while the box's cached
 * record is unchanged), rewrites the head (drops X-Forwarded-*, the preview token and any boxd key,
 * hop-by-hop lines; adds our X-Forwarded-*), and writes it to the upstream connection pinned to
 * this client connection. The response is parsed only as far as its status line, Set-Cookie and
 * framing; its bytes then pass through. Anything unusual (the API host, upgrades, Expect, a token
 * in the query, odd framing, any refusal, an upstream that cannot be reached) is handed to the HTTP
 * server with the bytes read so far: from then on the HTTP path owns that connection.
 */
const MAX_HEAD = 16 * 1024;
/** Pipelined bytes buffered while a response is under way before the client is paused. */
const MAX_PENDING = 64 * 1024;
const EMPTY = Buffer.alloc(0);
/**
 * Bytes per read of an upstream socket. Upstream reads land in a buffer of the connection's own
 * (net's `onread`), not a fresh allocation each, and skip the Readable stream machinery.
 */
const READ_SIZE = 16 * 1024;

const IDLE = 0, ROUTING = 1, SENDING = 2, GONE = 3;
const REQUEST_LINE = /^[A-Z]+ \S+ HTTP\/1\.[01]\r$/;

/** Whether a partial head could still become a request (its first line, once whole, is one). */
function looksLikeRequest(buf: Buffer): boolean {
  const c = buf[0]!;
  if (c < 0x41 || c > 0x5a) return false;
  const lf = buf.indexOf(10);
  return lf < 0 || (lf < 8192 && REQUEST_LINE.test(buf.toString('latin1', 0, lf)));
}

interface Memo {
  host: string;
  target: Target;
  record: BoxRecord | undefined;
  routed: Routed | undefined;
  /** A token that opened `record` (private boxes). */
  token: string | undefined;
  /** Our X-Forwarded-* lines and the final CRLF, for this host. */
  tail: Buffer;
  /** The route cache's generation and the sweep tick when `record` was last checked against it. */
  gen: number;
  tick: number;
}

export interface FastPathDeps {
  config: Config;
  preview: Preview;
  routes: Pick<RouteCache, 'peek' | 'generation'>;
  activity: Pick<Activity, 'begin' | 'end'>;
  metrics: Pick<Metrics, 'inc'>;
  log: Logger;
}

export class FastPath {
  readonly conns = new Set<Conn>();
  /** Requests served since the last sweep, added to the metric there (not a map write per request). */
  requests = 0;
  /** Counts sweeps: a memo checked during this tick need not ask the route cache again. */
  tick = 0;
  closed = false;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    readonly d: FastPathDeps,
    readonly handOff: (socket: Socket, buffered: Buffer) => void,
  ) {
    const c = d.config;
    // One timer for every connection's header, request and upstream deadlines.
    const every = Math.min(1000, Math.max(50, Math.min(c.BOXD_HEADERS_TIMEOUT_MS, c.BOXD_UPSTREAM_TIMEOUT_MS) / 4));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  /** Takes over `server`'s 'connection' event; the HTTP server's own listener becomes the fallback. */
  static attach(server: Server, d: FastPathDeps): FastPath {
    const listeners = server.listeners('connection') as ((s: Socket) => void)[];
    server.removeAllListeners('connection');
    const fast = new FastPath(d, (socket, buffered) => {
      socket.pause();
      // Node's HTTP parser would read the handle directly and miss the bytes read so far.
      const handle = (socket as unknown as { _handle?: { _consumed?: boolean } })._handle;
      if (handle) handle._consumed = true;
      if (buffered.length) socket.unshift(buffered);
      for (const l of listeners) l.call(server, socket);
      socket.resume();
    });
    server.on('connection', (s: Socket) => fast.accept(s));
    return fast;
  }

  accept(client: Socket): void {
    if (this.closed) return void client.destroy();
    this.conns.add(new Conn(this, client));
  }

  private sweep(): void {
    this.tick++;
    if (this.requests) {
      this.d.metrics.inc('boxd_preview_requests_total', {}, this.requests);
      this.requests = 0;
    }
    const now = Date.now();
    for (const c of this.conns) c.check(now);
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    // Idle connections go now; a request under way gets its response, then its connection closes.
    for (const c of this.conns) c.closeWhenIdle();
  }
}

/** One client connection: its parse state, the request in flight, and its pinned upstream socket. */
class Conn {
  private state = IDLE;
  /** When the current wait began: for a head, the request body, or the upstream's first byte. */
  private since = Date.now();
  private buf: Buffer = EMPTY;
  private memo: Memo | undefined;
  private ended = false;

  private upstream: Socket | null = null;
  /** Where the upstream socket reads into; replaced when a write still holds bytes of it. */
  private readBuf: Buffer | null = null;
  private upRecord: BoxRecord | undefined;
  private upPort = 0;
  private upReused = false;

  // The request in flight.
  private pending: Buffer = EMPTY;
  private head: RequestHead | undefined;
  private out: Buffer = EMPTY;
  private box = '';
  private reqDone = true;
  private reqLeft = 0;
  private reqChunks: ChunkedEnd | null = null;
  private retried = false;
  /** The box counts this request as activity until release(). */
  private held = false;

  // Its response.
  private resBuf: Buffer = EMPTY;
  private resHeadDone = false;
  private responded = false;
  private resLeft = 0;
  private resChunks: ChunkedEnd | null = null;
  private untilClose = false;
  private resClose = false;
  private noBody = false;

  constructor(
    private readonly fp: FastPath,
    private readonly client: Socket,
  ) {
    client.setNoDelay(true);
    client.on('data', this.onData);
    client.on('end', this.onEnd);
    client.on('error', this.onError);
    client.on('close', this.onClose);
    client.on('drain', this.onClientDrain);
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === SENDING && !this.reqDone) {
      const n = this.body(chunk);
      if (n < chunk.length && this.state === SENDING) this.keep(chunk.subarray(n));
      return;
    }
    this.keep(chunk);
    if (this.state === IDLE) this.next();
  };

  private keep(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    if (this.state !== IDLE && this.buf.length > MAX_PENDING) this.client.pause();
  }

  private readonly onEnd = (): void => {
    this.ended = true;
    if (this.state === IDLE && !this.buf.length) this.client.end();
    // The server allows half-open sockets: a client gone mid-body would otherwise stay forever.
    else if (this.state === SENDING && !this.reqDone) this.destroy();
  };
  private readonly onError = (): void => void this.client.destroy();
  private readonly onClose = (): void => this.destroy();
  private readonly onClientDrain = (): void => void this.upstream?.resume();
  private readonly onUpstreamDrain = (): void => {
    if (this.state === SENDING && !this.reqDone) this.client.resume();
  };

  /** Reads and serves the next request head in the buffer, if it is whole. */
  private next(): void {
    const buf = this.buf;
    if (!buf.length) {
      if (this.ended) this.client.end();
      return;
    }
    const end = buf.indexOf(CRLFCRLF);
    if (end < 0 || end + 4 > MAX_HEAD) {
      if (buf.length > MAX_HEAD || end + 4 > MAX_HEAD) this.fatal('HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else if (!looksLikeRequest(buf)) this.giveUp(EMPTY); // garbage: the HTTP server answers 400
      return;
    }
    this.buf = EMPTY; // from here `buf` is the request and what follows it
    const head = parseRequestHead(buf, end + 4);
    if (!head || head.unusual) return this.giveUp(buf);
    let memo = this.memo;
    if (!memo || memo.host !== head.host) {
      const host = head.host!;
      const s = this.client;
      const tail = Buffer.from(`x-forwarded-for: ${s.remoteAddress ?? ''}\r\nx-forwarded-proto: http\r\nx-forwarded-host: ${host}\r\n${s.localPort ? `x-forwarded-port: ${s.localPort}\r\n` : ''}\r\n`, 'latin1');
      memo = this.memo = { host, target: resolveTarget(host, this.fp.d.config.BOXD_BASE_DOMAIN), record: undefined, routed: undefined, token: undefined, tail, gen: -1, tick: -1 };
    }
    const target = memo.target;
    if (target.kind !== 'box') return this.giveUp(buf);
    this.head = head;
    this.pending = buf;
    const d = this.fp.d;
    // The route cache's answer, without asking it (an LRU look-up with a clock read) while nothing
    // in it changed since this memo last asked, within one sweep tick (so its TTL still applies).
    let record = memo.record;
    const routes = d.routes;
    if (memo.gen !== routes.generation || memo.tick !== this.fp.tick) {
      record = routes.peek(target.box);
      memo.gen = routes.generation;
      memo.tick = this.fp.tick;
    }
    if (record !== undefined && record === memo.record && memo.routed) {
      const ok = record.public || (memo.token !== undefined && this.tokenOf(record.name) === memo.token);
      const auth = head.authorization === undefined || d.preview.knownApiKey(head.authorization) !== undefined;
      const proxyAuth = head.proxyAuthorization === undefined || d.preview.knownApiKey(head.proxyAuthorization) !== undefined;
      if (ok && auth && proxyAuth) return this.send(memo.routed);
      if (auth && proxyAuth && record.state === 'running' && d.preview.tokenOpens(record, this.tokenOf(record.name))) {
        memo.token = this.tokenOf(record.name);
        return this.send(memo.routed);
      }
    }
    this.state = ROUTING;
    this.client.pause();
    this.routeSlowly(target.box, target.port, memo).catch((err: unknown) => {
      d.log.error({ err }, 'preview fast path failure');
      this.client.destroy();
    });
  }

  private tokenOf(box: string): string | undefined {
    const h = this.head!;
    if (h.token) return h.token;
    return h.tokenCookies ? Preview.tokenCookieOf(h.tokenCookies, box) : undefined;
  }

  /** A box not in the memo (or a key not yet looked up): the passes with their awaits. */
  private async routeSlowly(box: string, port: number | null, memo: Memo): Promise<void> {
    const p = this.fp.d.preview;
    const head = this.head!;
    const routed = await p.fastRoute(box, port, (name) => this.tokenOf(name));
    if (head.authorization !== undefined) await p.isApiKey(head.authorization);
    if (head.proxyAuthorization !== undefined) await p.isApiKey(head.proxyAuthorization);
    if (this.state !== ROUTING) return; // the client went away
    if (!routed) return this.giveUp(this.pending); // refusals and pages: the HTTP path answers them
    if (this.buf.length) {
      // What arrived while routing follows the head (body bytes, pipelined requests).
      this.pending = Buffer.concat([this.pending, this.buf]);
      this.buf = EMPTY;
    }
    memo.record = routed.box;
    memo.routed = routed;
    memo.token = routed.box.public ? undefined : this.tokenOf(routed.box.name);
    this.client.resume();
    this.send(routed);
  }

  /** Rewrites the head, writes it (and the body bytes at hand) to the pinned upstream. */
  private send(routed: Routed): void {
    const head = this.head!;
    const memo = this.memo!;
    const buf = this.pending;
    // Lines to leave out, in order: the head's own list plus the key-bearing Authorization lines.
    // (No closures here: this runs per request, and each closure costs an allocation.)
    let drop = head.drop;
    if (this.isKey(head.authorization) || this.isKey(head.proxyAuthorization)) {
      drop = drop ? drop.slice() : [];
      if (head.authAt >= 0 && this.isKey(head.authorization)) drop.push(head.authAt, buf.indexOf(10, head.authAt) + 1);
      if (head.proxyAuthAt >= 0 && this.isKey(head.proxyAuthorization)) drop.push(head.proxyAuthAt, buf.indexOf(10, head.proxyAuthAt) + 1);
      const pairs: [number, number][] = [];
      for (let i = 0; i < drop.length; i += 2) pairs.push([drop[i]!, drop[i + 1]!]);
      drop = pairs.sort((a, b) => a[0] - b[0]).flat();
    }
    const cookie = head.tokenCookies ? Preview.withoutTokenCookies(head.tokenCookies) : undefined;
    const extra = cookie !== undefined ? Buffer.from(`cookie: ${cookie}\r\n`, 'latin1') : EMPTY;
    const bodyStart = head.size;
    const headEnd = bodyStart - 2; // keep the lines' CRLFs, not the final one: memo.tail ends the head
    let out: Buffer;
    if (!drop && !extra.length) {
      out = Buffer.allocUnsafe(headEnd + memo.tail.length);
      buf.copy(out, 0, 0, headEnd);
      memo.tail.copy(out, headEnd);
    } else {
      let kept = headEnd;
      if (drop) for (let i = 0; i < drop.length; i += 2) kept -= drop[i + 1]! - drop[i]!;
      out = Buffer.allocUnsafe(kept + extra.length + memo.tail.length);
      let o = 0;
      let from = 0;
      if (drop) {
        for (let i = 0; i < drop.length; i += 2) {
          o += buf.copy(out, o, from, drop[i]!);
          from = drop[i + 1]!;
        }
      }
      o += buf.copy(out, o, from, headEnd);
      o += extra.copy(out, o);
      memo.tail.copy(out, o);
    }
    this.out = out;
    this.box = routed.box.name;
    this.hold();
    this.fp.requests++;
    this.state = SENDING;
    this.since = Date.now();
    this.retried = false;
    this.resBuf = EMPTY;
    this.resHeadDone = this.responded = this.untilClose = this.resClose = false;
    this.resChunks = null;
    this.noBody = head.method === 'HEAD';
    this.reqChunks = head.chunked ? new ChunkedEnd() : null;
    this.reqLeft = head.contentLength > 0 ? head.contentLength : 0;
    this.reqDone = !head.chunked && this.reqLeft === 0;

    const up = this.pin(routed);
    const rest = buf.length > bodyStart ? buf.subarray(bodyStart) : EMPTY;
    if (this.reqDone) {
      up.write(out);
      if (rest.length) this.keep(rest);
      return;
    }
    up.cork();
    up.write(out);
    const n = rest.length ? this.body(rest) : 0;
    up.uncork();
    if (n < rest.length && this.state === SENDING) this.keep(rest.subarray(n));
  }

  /** Whether an Authorization value is a boxd API key (known or still being looked up). */
  private isKey(v: string | undefined): boolean {
    return v !== undefined && this.fp.d.preview.knownApiKey(v) !== false;
  }

  /** The upstream socket of this client connection, for this box and port. */
  private pin(routed: Routed): Socket {
    const up = this.upstream;
    if (up && !up.destroyed && this.upRecord === routed.box && this.upPort === routed.hostPort) {
      this.upReused = true;
      return up;
    }
    this.dropUpstream();
    return this.open(routed.hostAddr, routed.hostPort, routed.box);
  }

  private open(addr: string, port: number, record: BoxRecord | undefined): Socket {
    const up = connect({ host: addr, port, noDelay: true, onread: { buffer: this.readBufOf, callback: this.onUpstreamRead } });
    this.upstream = up;
    this.upRecord = record;
    this.upPort = port;
    this.upReused = false;
    up.on('end', this.onUpstreamGone);
    up.on('close', this.onUpstreamGone);
    up.on('error', this.onUpstreamGone);
    up.on('drain', this.onUpstreamDrain);
    return up;
  }

  private dropUpstream(): void {
    const up = this.upstream;
    if (!up) return;
    this.upstream = null;
    up.off('end', this.onUpstreamGone);
    up.off('close', this.onUpstreamGone);
    up.off('drain', this.onUpstreamDrain);
    up.on('error', () => undefined);
    up.off('error', this.onUpstreamGone);
    up.destroy();
  }

  /** Forwards request body bytes; returns how many of `chunk` belong to the body. */
  private body(chunk: Buffer): number {
    let n: number;
    const chunks = this.reqChunks;
    if (chunks) {
      n = chunks.push(chunk);
      if (chunks.bad) {
        this.fatal('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return chunk.length;
      }
      if (chunks.done) this.reqDone = true;
    } else {
      n = Math.min(this.reqLeft, chunk.length);
      this.reqLeft -= n;
      if (this.reqLeft === 0) this.reqDone = true;
    }
    if (n && this.upstream && !this.upstream.write(n < chunk.length ? chunk.subarray(0, n) : chunk)) this.client.pause();
    if (this.reqDone) this.since = Date.now();
    return n;
  }

  /** The buffer the next upstream read goes into (net calls this after every read). */
  private readonly readBufOf = (): Buffer => (this.readBuf ??= Buffer.allocUnsafe(READ_SIZE));

  /**
   * `n` bytes from the upstream socket at the start of the connection's read buffer. They are
   * only valid during this call: anything kept (a partial head) is copied, and a write the
   * kernel did not take whole keeps the buffer, so the next read gets a new one (see write()).
   */
  private readonly onUpstreamRead = (n: number, buf: Uint8Array): boolean => {
    this.upstreamBytes(n, buf as Buffer);
    return true; // pausing is write()'s business
  };

  private upstreamBytes(n: number, buf: Buffer): void {
    if (this.state !== SENDING) {
      this.dropUpstream(); // bytes nobody asked for
      return;
    }
    const chunk = buf.subarray(0, n);
    let data = chunk;
    let headBytes: Buffer | null = null;
    let rewritten = false;
    while (!this.resHeadDone) {
      const res = this.resBuf.length ? Buffer.concat([this.resBuf, data]) : data;
      const end = res.indexOf(CRLFCRLF);
      if (end < 0) {
        if (res.length > MAX_HEAD * 4) return this.upstreamFailed();
        this.resBuf = res === data ? Buffer.from(data) : res; // `data` is the read buffer's: copy
        return;
      }
      this.resBuf = EMPTY;
      const r = parseResponseHead(res, end + 4);
      if (!r) return this.upstreamFailed();
      let h = res.subarray(0, end + 4);
      if (r.setCookie) {
        h = this.hostOnly(h);
        rewritten = true;
      }
      data = res.subarray(end + 4);
      if (r.status < 200) {
        this.write(h); // an interim response; the final one follows
        this.responded = true;
        continue;
      }
      this.resHeadDone = true;
      this.resClose = r.close;
      if (this.noBody || r.status === 204 || r.status === 304) this.resLeft = 0;
      else if (r.chunked) this.resChunks = new ChunkedEnd();
      else if (r.untilClose || r.contentLength < 0) this.untilClose = true;
      else this.resLeft = r.contentLength;
      // Zero-copy when the head was not rewritten: one write of head and body bytes together.
      if (!rewritten) {
        const n = this.resBody(data);
        this.responded = true;
        this.write(res.subarray(0, end + 4 + n));
        if (n < data.length) this.resClose = true; // more than the response: do not trust this socket
        return this.resDoneNow() ? this.finish() : undefined;
      }
      headBytes = h;
    }
    if (headBytes) {
      this.responded = true;
      this.write(headBytes);
    }
    if (data.length) {
      const n = this.resBody(data);
      this.write(n < data.length ? data.subarray(0, n) : data);
      if (n < data.length) this.resClose = true;
    }
    if (this.resDoneNow()) this.finish();
  }

  /** How many of `data` belong to the response body. */
  private resBody(data: Buffer): number {
    if (this.untilClose) return data.length;
    if (this.resChunks) {
      const n = this.resChunks.push(data);
      if (this.resChunks.bad) this.resClose = true;
      return n;
    }
    const n = Math.min(this.resLeft, data.length);
    this.resLeft -= n;
    return n;
  }

  private resDoneNow(): boolean {
    if (!this.resHeadDone || this.untilClose) return false;
    if (this.resChunks) return this.resChunks.done || this.resChunks.bad;
    return this.resLeft === 0;
  }

  private write(b: Buffer): void {
    if (!b.length) return;
    const c = this.client;
    const flushed = c.write(b);
    // Not all of it went to the kernel: the socket still holds `b`, which may be the read buffer's.
    if (c.writableLength > 0) this.readBuf = null;
    if (!flushed) this.upstream?.pause();
  }

  /** Set-Cookie lines for other domains (the base domain, a parent) dropped. */
  private hostOnly(head: Buffer): Buffer {
    const host = canonicalHost(this.memo?.host) ?? '';
    const lines = head.toString('latin1', 0, head.length - 4).split('\r\n');
    const isCookie = (l: string) => /^set-cookie:/i.test(l);
    const kept = new Set(hostOnlyCookies(lines.filter(isCookie).map((l) => l.slice(l.indexOf(':') + 1).trim()), host));
    const out = lines.filter((l) => !isCookie(l) || kept.has(l.slice(l.indexOf(':') + 1).trim()));
    return Buffer.from(`${out.join('\r\n')}\r\n\r\n`, 'latin1');
  }

  /** The response is complete: back to reading heads, or close. */
  private finish(): void {
    this.release();
    this.state = IDLE;
    this.since = Date.now();
    if (this.resChunks?.bad) return this.destroy();
    if (!this.reqDone) {
      // The app answered before reading the whole body: this connection cannot be reused.
      this.dropUpstream();
      this.state = GONE;
      this.client.end();
      return;
    }
    if (this.resClose) this.dropUpstream();
    if (this.head!.close || this.resClose || this.fp.closed) {
      this.state = GONE;
      this.dropUpstream();
      this.client.end();
      return;
    }
    this.client.resume();
    this.upstream?.resume();
    this.next();
  }

  private readonly onUpstreamGone = (err?: Error | boolean): void => {
    const up = this.upstream;
    if (!up) return;
    if (this.state !== SENDING) {
      // An idle upstream the box closed: the next request opens a new one.
      if (err !== undefined || up.destroyed || !up.readable) this.dropUpstream();
      return;
    }
    if (this.untilClose && this.resHeadDone) {
      this.resClose = true;
      this.untilClose = false;
      this.resLeft = 0;
      return this.finish();
    }
    this.upstreamFailed();
  };

  /** The upstream failed before the response was complete. */
  private upstreamFailed(timedOut = false): void {
    this.dropUpstream();
    this.release();
    const head = this.head!;
    const bodyless = !head.chunked && head.contentLength <= 0;
    if (!this.responded && bodyless && !timedOut) {
      const m = this.memo;
      if (this.upReused && !this.retried && m?.routed) {
        // A kept connection the box had just closed: once more on a fresh one.
        this.retried = true;
        this.hold();
        const up = this.open(m.routed.hostAddr, m.routed.hostPort, m.routed.box);
        up.write(this.out);
        return;
      }
      // Nothing was answered and nothing but the head was sent: the HTTP path retries it (the app
      // may not listen yet after a wake) and answers with its page.
      this.state = ROUTING;
      return this.giveUp(this.pending.subarray(0, head.size));
    }
    this.state = GONE;
    if (this.responded) return void this.client.destroy();
    const code = timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
    this.fp.d.metrics.inc('boxd_preview_errors_total', { code });
    const page = timedOut
      ? rawPage(504, code, 'The app did not answer', `Box "${this.box}" accepted the request but sent nothing back within ${this.fp.d.config.BOXD_UPSTREAM_TIMEOUT_MS} ms.`)
      : rawPage(502, code, 'Nothing is listening', `Box "${this.box}" is running, but its app closed the connection before answering.`, { 'Retry-After': '1' });
    this.fatal(page);
  }

  /** Hands the connection to Node's HTTP server with `bytes`, then what is buffered, as what it reads first. */
  private giveUp(bytes: Buffer): void {
    const c = this.client;
    this.release();
    this.dropUpstream();
    c.off('data', this.onData);
    c.off('end', this.onEnd);
    c.off('error', this.onError);
    c.off('close', this.onClose);
    c.off('drain', this.onClientDrain);
    c.on('error', () => undefined);
    this.state = GONE;
    this.fp.conns.delete(this);
    const rest = this.buf.length ? Buffer.concat([bytes, this.buf]) : bytes;
    this.buf = EMPTY;
    this.fp.handOff(c, rest);
  }

  /** Writes a last response and closes. */
  private fatal(response: string): void {
    this.release();
    this.state = GONE;
    this.dropUpstream();
    this.client.end(response);
    setTimeout(() => this.client.destroy(), 1000).unref();
  }

  private hold(): void {
    this.held = true;
    this.fp.d.activity.begin(this.box);
  }

  private release(): void {
    if (!this.held) return;
    this.held = false;
    this.fp.d.activity.end(this.box);
  }

  /** Deadlines, from the shared sweep. */
  check(now: number): void {
    const c = this.fp.d.config;
    const waited = now - this.since;
    if (this.state === IDLE && waited > c.BOXD_HEADERS_TIMEOUT_MS) this.fatal('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
    else if (this.state !== SENDING) return;
    else if (!this.reqDone && waited > c.BOXD_REQUEST_TIMEOUT_MS) {
      if (this.responded) return this.destroy();
      this.release();
      this.fatal('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
    } else if (this.reqDone && !this.responded && waited > c.BOXD_UPSTREAM_TIMEOUT_MS) this.upstreamFailed(true);
  }

  closeWhenIdle(): void {
    if (this.state === IDLE || this.state === GONE) this.destroy();
  }

  destroy(): void {
    this.release();
    this.state = GONE;
    this.dropUpstream();
    this.fp.conns.delete(this);
    this.client.destroy();
  }
}
