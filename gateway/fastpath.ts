import type { Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Config } from '../core/config.ts';
import type { Logger } from '../core/log.ts';
import type { FastRoute, Preview } from './preview.ts';
import { resolveTarget } from './routing.ts';

/**
 * EXPERIMENTAL opt-in preview fast path (BOXD_PREVIEW_FASTPATH=true). It sits on the raw client
 * socket in front of Node's HTTP server and, for every request head of a kept-alive connection,
 * parses the head only, runs the same passes as the HTTP path (route → authorize → wake →
 * sanitize, via Preview.fastRoute), writes the rewritten head to a pooled upstream socket and then
 * streams the body and the response through, parsing only the response head and its framing.
 * Anything unusual (the API host, upgrades, Expect, HTTP/1.0, odd framing, a token in the query,
 * any refusal, an upstream that cannot be reached) is handed to the HTTP server with the bytes read
 * so far: from then on the HTTP path owns that connection.
 */
const MAX_HEAD = 16 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

interface Head {
  method: string;
  url: string;
  /** Lower-cased names; duplicates joined as Node does (cookie with '; '). */
  headers: Record<string, string>;
  /** Header names seen more than once. */
  dup: Set<string>;
  bytes: number;
}

export function parseRequestHead(buf: Buffer, end: number): Head | null {
  const text = buf.toString('latin1', 0, end);
  const lines = text.split('\r\n');
  const m = /^([A-Z]+) (\/[^ ]*) HTTP\/1\.1$/.exec(lines[0] ?? '');
  if (!m) return null;
  const headers: Record<string, string> = {};
  const dup = new Set<string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (!line) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) return null;
    const name = line.slice(0, colon).toLowerCase();
    if (!TOKEN_RE.test(name)) return null;
    const value = line.slice(colon + 1).trim();
    if (/[\0\r\n]/.test(value)) return null;
    if (name in headers) {
      dup.add(name);
      headers[name] = headers[name] + (name === 'cookie' ? '; ' : ', ') + value;
    } else headers[name] = value;
  }
  return { method: m[1]!, url: m[2]!, headers, dup, bytes: end + 4 };
}

/** Finds the end of a chunked body, fed incrementally. */
export class ChunkedEnd {
  private state: 'size' | 'data' | 'datacrlf' | 'trailer' = 'size';
  private line = '';
  private left = 0;
  done = false;
  bad = false;
  /** Returns how many bytes of `buf` belong to the body (all of them unless the body ends inside). */
  push(buf: Buffer): number {
    let i = 0;
    while (i < buf.length && !this.done && !this.bad) {
      if (this.state === 'data') {
        const n = Math.min(this.left, buf.length - i);
        i += n;
        this.left -= n;
        if (this.left === 0) this.state = 'datacrlf';
        continue;
      }
      const c = buf[i++]!;
      if (c !== 0x0a) {
        if (this.line.length > 4096) this.bad = true;
        this.line += String.fromCharCode(c);
        continue;
      }
      const line = this.line.replace(/\r$/, '');
      this.line = '';
      if (this.state === 'datacrlf') {
        if (line !== '') this.bad = true;
        this.state = 'size';
      } else if (this.state === 'size') {
        const size = parseInt(line.split(';')[0]!.trim(), 16);
        if (!/^[0-9a-fA-F]+$/.test(line.split(';')[0]!.trim()) || !Number.isSafeInteger(size)) this.bad = true;
        else if (size === 0) this.state = 'trailer';
        else {
          this.left = size;
          this.state = 'data';
        }
      } else if (line === '') this.done = true; // end of trailers
    }
    return i;
  }
}

interface Framing {
  kind: 'none' | 'length' | 'chunked' | 'close';
  length: number;
}

function framingOf(headers: Record<string, string>, dup: Set<string>): Framing | null {
  const te = headers['transfer-encoding'];
  const cl = headers['content-length'];
  if (dup.has('content-length') || dup.has('transfer-encoding')) return null;
  if (te !== undefined) {
    if (cl !== undefined || te.toLowerCase() !== 'chunked') return null;
    return { kind: 'chunked', length: 0 };
  }
  if (cl !== undefined) {
    if (!/^\d{1,15}$/.test(cl)) return null;
    return { kind: 'length', length: Number(cl) };
  }
  return { kind: 'none', length: 0 };
}

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']);

export class FastPath {
  private readonly idle = new Map<string, Socket[]>();
  private readonly clients = new Set<Socket>();
  private readonly drops = new WeakMap<Socket, () => void>();
  private closed = false;

  constructor(
    private readonly config: Config,
    private readonly preview: Preview,
    private readonly log: Logger,
    private readonly handOff: (socket: Socket, buffered: Buffer) => void,
  ) {}

  /** Takes over `server`'s 'connection' event; the HTTP server's own listener becomes the fallback. */
  static attach(server: Server, config: Config, preview: Preview, log: Logger): FastPath {
    const listeners = server.listeners('connection') as ((s: Socket) => void)[];
    server.removeAllListeners('connection');
    const fast = new FastPath(config, preview, log, (socket, buffered) => {
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
    if (this.closed) {
      client.destroy();
      return;
    }
    this.clients.add(client);
    client.once('close', () => this.clients.delete(client));
    client.on('error', () => client.destroy());
    client.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    let busy = false;
    // A whole head (or, between requests, the next one) within BOXD_HEADERS_TIMEOUT_MS, however it trickles in.
    let timer: NodeJS.Timeout | undefined;
    const stopTimer = () => clearTimeout(timer);
    const headTimer = () => {
      stopTimer();
      timer = setTimeout(() => {
        client.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n');
        setTimeout(() => client.destroy(), 1000).unref();
      }, this.config.BOXD_HEADERS_TIMEOUT_MS);
      timer.unref();
    };
    headTimer();
    client.once('close', stopTimer);
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (!busy) next();
    };
    const giveUp = (pending?: Buffer) => {
      client.off('data', onData);
      client.off('end', onEnd);
      stopTimer();
      this.clients.delete(client);
      const rest = pending ? (buf.length ? Buffer.concat([pending, buf]) : pending) : buf;
      buf = Buffer.alloc(0);
      this.handOff(client, rest);
    };
    const next = () => {
      if (!buf.length) return;
      const end = buf.indexOf(CRLFCRLF);
      if (end < 0) {
        if (buf.length > MAX_HEAD) giveUp();
        return;
      }
      const head = parseRequestHead(buf, end);
      const target = head ? resolveTarget(head.headers.host, this.config.BOXD_BASE_DOMAIN) : null;
      const framing = head ? framingOf(head.headers, head.dup) : null;
      if (
        !head ||
        !framing ||
        target?.kind !== 'box' ||
        head.method === 'CONNECT' ||
        head.dup.has('host') ||
        head.dup.has('authorization') ||
        'upgrade' in head.headers ||
        'expect' in head.headers ||
        head.url.includes('boxd_token')
      ) {
        giveUp();
        return;
      }
      busy = true;
      client.pause();
      const pending = buf;
      buf = Buffer.alloc(0); // forward() owns the bytes after the head
      stopTimer();
      this.preview
        .fastRoute({ method: head.method, url: head.url, headers: head.headers }, target.box, target.port, client)
        .then(
          (r) => {
            if (!r) return giveUp(pending); // refusals and redirects: the HTTP path answers them
            this.forward(client, head, framing, r, pending.subarray(head.bytes), (rest, keep) => {
              busy = false;
              buf = rest;
              if (!keep) {
                client.end();
                return;
              }
              headTimer();
              client.resume();
              next();
            }, (rest) => {
              // Nothing reached the box and the request has no body: let the HTTP path retry it.
              busy = false;
              giveUp(Buffer.concat([pending.subarray(0, head.bytes), rest]));
            });
          },
          (err: unknown) => {
            this.log.error({ err }, 'preview fast path failure');
            client.destroy();
          },
        );
    };
    const onEnd = () => {
      if (!busy) client.end();
    };
    client.on('data', onData);
    client.on('end', onEnd);
  }

  private take(key: string): Socket | undefined {
    const list = this.idle.get(key);
    while (list?.length) {
      const s = list.pop()!;
      if (!list.length) this.idle.delete(key);
      const drop = this.drops.get(s);
      if (drop) {
        s.off('close', drop);
        s.off('error', drop);
        s.off('end', drop);
        s.off('timeout', drop);
      }
      s.setTimeout(0);
      if (!s.destroyed && s.writable) return s;
    }
    return undefined;
  }

  private give(key: string, s: Socket): void {
    if (this.closed) return void s.destroy();
    let list = this.idle.get(key);
    if (!list) this.idle.set(key, (list = []));
    if (list.length >= 64) return void s.destroy();
    list.push(s);
    const drop = () => {
      s.destroy();
      const l = this.idle.get(key);
      const i = l?.indexOf(s) ?? -1;
      if (i >= 0) l!.splice(i, 1);
    };
    this.drops.set(s, drop);
    s.once('close', drop);
    s.once('error', drop);
    s.once('end', drop);
    s.setTimeout(1000);
    s.once('timeout', drop);
  }

  private forward(
    client: Socket,
    head: Head,
    reqFraming: Framing,
    r: FastRoute,
    early: Buffer,
    done: (rest: Buffer, keep: boolean) => void,
    retry: (rest: Buffer) => void,
  ): void {
    const h = r.headers;
    const clientClose = /(^|,)\s*close\s*(,|$)/i.test(head.headers.connection ?? '');
    const named = (head.headers.connection ?? '').toLowerCase().split(',').map((x) => x.trim());
    let out = `${head.method} ${r.url} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(h)) {
      if (HOP.has(k) || named.includes(k) || v === undefined) continue;
      if (reqFraming.kind === 'chunked' && k === 'transfer-encoding') continue;
      out += `${k}: ${v}\r\n`;
    }
    if (reqFraming.kind === 'chunked') out += 'transfer-encoding: chunked\r\n';
    out += '\r\n';

    const key = `${r.hostAddr}:${r.hostPort}`;
    const pooled = this.take(key);
    const upstream = pooled ?? connect({ host: r.hostAddr, port: r.hostPort, noDelay: true });
    const bodyless = reqFraming.kind === 'none' || (reqFraming.kind === 'length' && reqFraming.length === 0);
    let responded = false; // some response bytes went to the client
    let finished = false;
    let reqDone = bodyless;
    let resDone = false;
    let reusable = true;
    let leftover: Buffer = Buffer.alloc(0);
    let timedOut = false;

    const finish = (ok: boolean) => {
      if (finished) return;
      finished = true;
      r.release();
      client.off('data', onClientData);
      client.off('close', onClientClose);
      upstream.off('data', onUpstreamData);
      upstream.off('end', onUpstreamEnd);
      upstream.off('error', onUpstreamError);
      upstream.off('close', onUpstreamEnd);
      upstream.off('timeout', onUpstreamTimeout);
      upstream.setTimeout(0);
      if (ok && reusable) this.give(key, upstream);
      else upstream.destroy();
      if (!ok) {
        client.destroy();
        return;
      }
      done(leftover, !clientClose && !resClose);
    };

    // Request body: forward exactly its bytes, keep what follows for the next head.
    let reqLeft = reqFraming.kind === 'length' ? reqFraming.length : 0;
    const chunked = reqFraming.kind === 'chunked' ? new ChunkedEnd() : null;
    const onClientData = (chunk: Buffer) => {
      if (reqDone) {
        leftover = leftover.length ? Buffer.concat([leftover, chunk]) : chunk;
        client.pause(); // the next head waits for this response (no pipelining)
        return;
      }
      let n: number;
      if (chunked) {
        n = chunked.push(chunk);
        if (chunked.bad) return finish(false);
        if (chunked.done) reqDone = true;
      } else {
        n = Math.min(reqLeft, chunk.length);
        reqLeft -= n;
        if (reqLeft === 0) reqDone = true;
      }
      if (n) upstream.write(chunk.subarray(0, n));
      if (n < chunk.length) {
        leftover = chunk.subarray(n);
        client.pause();
      }
      if (reqDone && resDone) finish(true);
    };
    const onClientClose = () => finish(false);

    // Response: head parsed, body framed, all bytes passed through.
    let resBuf: Buffer = Buffer.alloc(0);
    let resHeadDone = false;
    let resClose = false;
    let resLeft = 0;
    let resChunked: ChunkedEnd | null = null;
    let untilClose = false;
    const onUpstreamData = (chunk: Buffer) => {
      if (resDone) return;
      upstream.setTimeout(0);
      let data: Buffer = chunk;
      while (!resHeadDone) {
        resBuf = resBuf.length ? Buffer.concat([resBuf, data]) : data;
        data = Buffer.alloc(0);
        const end = resBuf.indexOf(CRLFCRLF);
        if (end < 0) {
          if (resBuf.length > 64 * 1024) return finish(false);
          return;
        }
        const text = resBuf.toString('latin1', 0, end);
        const lines = text.split('\r\n');
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
        if (!m) return finish(false);
        const status = Number(m[1]);
        const hs: Record<string, string> = {};
        const dup = new Set<string>();
        let hasCookie = false;
        for (const line of lines.slice(1)) {
          const c = line.indexOf(':');
          if (c <= 0) continue;
          const k = line.slice(0, c).toLowerCase();
          if (k === 'set-cookie') hasCookie = true;
          if (k in hs) dup.add(k);
          hs[k] = line.slice(c + 1).trim();
        }
        let headBytes = resBuf.subarray(0, end + 4);
        if (hasCookie) headBytes = Buffer.from(r.rewriteCookies(lines).join('\r\n') + '\r\n\r\n', 'latin1');
        const body = resBuf.subarray(end + 4);
        resBuf = Buffer.alloc(0);
        responded = true;
        client.write(headBytes);
        if (status >= 100 && status < 200) {
          data = body;
          continue; // an interim response; the final one follows
        }
        resHeadDone = true;
        if (/(^|,)\s*close\s*(,|$)/i.test(hs.connection ?? '') || lines[0]!.startsWith('HTTP/1.0')) {
          resClose = true;
          reusable = false;
        }
        const f = framingOf(hs, dup);
        if (head.method === 'HEAD' || status === 204 || status === 304) resDone = true;
        else if (!f) return finish(false);
        else if (f.kind === 'length') {
          resLeft = f.length;
          if (resLeft === 0) resDone = true;
        } else if (f.kind === 'chunked') resChunked = new ChunkedEnd();
        else {
          untilClose = true;
          resClose = true;
          reusable = false;
        }
        data = body;
        break;
      }
      if (!data.length && !resDone) return;
      if (resDone) {
        if (data.length) reusable = false;
      } else if (untilClose) {
        client.write(data);
        return;
      } else if (resChunked) {
        const n = resChunked.push(data);
        if (resChunked.bad) return finish(false);
        client.write(n < data.length ? data.subarray(0, n) : data);
        if (n < data.length) reusable = false;
        if (resChunked.done) resDone = true;
      } else {
        const n = Math.min(resLeft, data.length);
        client.write(n < data.length ? data.subarray(0, n) : data);
        if (n < data.length) reusable = false;
        resLeft -= n;
        if (resLeft === 0) resDone = true;
      }
      if (resDone) {
        if (!reqDone) reusable = false; // the app answered before reading the whole body
        if (!reqDone) {
          reqDone = true;
          resClose = true;
        }
        finish(true);
      }
    };
    const onUpstreamEnd = () => {
      if (finished) return;
      if (untilClose && resHeadDone) {
        resDone = true;
        reqDone = true;
        return finish(true);
      }
      onUpstreamError(Object.assign(new Error('upstream closed'), { code: 'ECONNRESET' }));
    };
    const onUpstreamTimeout = () => {
      timedOut = true;
      onUpstreamError(new Error('upstream timeout'));
    };
    const onUpstreamError = (err: Error & { code?: string }) => {
      if (finished) return;
      if (!responded && bodyless && !timedOut) {
        // Nothing was answered and nothing but the head was sent: replay it on the HTTP path.
        finished = true;
        r.release();
        client.off('data', onClientData);
        client.off('close', onClientClose);
        upstream.off('timeout', onUpstreamTimeout);
        upstream.destroy();
        retry(leftover);
        return;
      }
      this.log.debug({ err: err.message }, 'fast path upstream error');
      if (!responded) {
        const code = timedOut ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
        const status = timedOut ? 504 : 502;
        const body = `${code}\n`;
        client.end(`HTTP/1.1 ${status} ${timedOut ? 'Gateway Timeout' : 'Bad Gateway'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nX-Boxd-Error: ${code}\r\nConnection: close\r\n\r\n${body}`);
      }
      finish(false);
    };

    upstream.on('data', onUpstreamData);
    upstream.on('end', onUpstreamEnd);
    upstream.on('close', onUpstreamEnd);
    upstream.on('error', onUpstreamError);
    upstream.setTimeout(this.config.BOXD_UPSTREAM_TIMEOUT_MS);
    upstream.on('timeout', onUpstreamTimeout);
    client.on('data', onClientData);
    client.once('close', onClientClose);
    upstream.write(Buffer.from(out, 'latin1'));
    if (early.length) onClientData(early);
    if (!reqDone) client.resume();
  }

  close(): void {
    this.closed = true;
    for (const c of this.clients) c.destroy();
    for (const l of this.idle.values()) for (const s of l) s.destroy();
    this.idle.clear();
  }
}
