import { createProxyServer } from 'http-proxy-3';
import { Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { hashSecret, type Accounts } from '../core/accounts.ts';
import { POOL_ACCOUNT, type BoxRecord } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import { BoxdError, isRedisDown } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { Activity } from './activity.ts';
import { statusOf } from './errors.ts';
import type { Metrics } from './metrics.ts';
import { refuseUpgrade, sendPage } from './pages.ts';
import type { RouteCache } from './route-cache.ts';
import { canonicalHost } from './routing.ts';
import type { Waker } from './waker.ts';
import { FrameBoundary, keepAlive, PONG } from './ws-keepalive.ts';

export const TOKEN_PARAM = 'boxd_token';
export const TOKEN_HEADER = 'x-boxd-token';
/** The token cookie is named per box, so no other host's cookie can stand in for it. */
const TOKEN_COOKIE_PREFIX = 'boxd_token';
export const tokenCookie = (box: string) => `${TOKEN_COOKIE_PREFIX}_${box}`;

/** A refusal on the preview path: a code (its status comes from gateway/errors.ts) and a sentence for the page. */
class Refusal extends Error {
  readonly status: number;
  constructor(
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = statusOf(code);
  }
}

export interface Routed {
  box: BoxRecord;
  port: number;
  /** The owning host's address, where the box's ports are published. */
  hostAddr: string;
  hostPort: number;
}

export interface PreviewDeps {
  config: Config;
  routes: RouteCache;
  waker: Waker;
  activity: Activity;
  accounts: Pick<Accounts, 'lookup'>;
  metrics: Metrics;
  /** Address a host publishes its boxes' ports on (from its heartbeat). */
  addrOf: (hostId: string) => Promise<string>;
  log: Logger;
}

/**
 * The preview path, as small named passes: route (box and port from the Host) → authorize
 * (private boxes) → wake (suspended boxes) → strip and set headers → proxy (HTTP or WebSocket).
 * Every failure ends in a page or a closed socket; nothing here throws to the server.
 */
export class Preview {
  // Without an agent http-proxy sends `Connection: close` and pays a new TCP connection (two, via
  // the engine's port proxy) per request. Idle sockets are dropped quickly so a destroyed box's
  // port is not reused through a stale socket; a reset on reuse is retried for body-less requests.
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 512, maxFreeSockets: 64, timeout: 60_000, keepAliveMsecs: 1000 });
  private readonly proxy = createProxyServer({ xfwd: false, ws: true, prependPath: false, agent: this.agent });
  private readonly keyCache = new LRUCache<string, boolean>({ max: 1000, ttl: 60_000 });
  private readonly upstreamTimers = new WeakMap<IncomingMessage, { timedOut: boolean }>();
  /** Upstream socket of a proxied WebSocket → its client socket, until the upgrade completes. */
  private readonly wsClients = new WeakMap<Socket, Socket>();
  /** Client sockets of open WebSockets: an upgraded socket would hold the server's close forever. */
  private readonly wsSockets = new Set<Socket>();

  constructor(private readonly d: PreviewDeps) {
    // Errors without a callback would crash the process; every call passes one, this is a net.
    this.proxy.on('error', (err) => d.log.debug({ err: err.message }, 'proxy error'));
    this.proxy.on('proxyReqWs', (proxyReq, _req, client) => {
      proxyReq.once('socket', (upstream: Socket) => this.wsClients.set(upstream, client as Socket));
    });
    // Emitted once both sockets are piped: from here the gateway pings the client.
    this.proxy.on('open', (upstream) => {
      const client = this.wsClients.get(upstream);
      if (!client) return;
      this.wsClients.delete(upstream);
      keepAlive(client, upstream, d.config.BOXD_WS_PING_MS, () => {
        d.metrics.inc('boxd_preview_websockets_dead_total');
        d.log.debug('dropped a WebSocket whose client stopped answering pings');
      });
    });
    this.proxy.on('proxyReq', (proxyReq, req) => {
      const state = { timedOut: false };
      this.upstreamTimers.set(req, state);
      proxyReq.setTimeout(d.config.BOXD_UPSTREAM_TIMEOUT_MS, () => {
        state.timedOut = true;
        proxyReq.destroy(new Error('upstream timeout'));
      });
    });
    // Runs before the response headers are copied to the client.
    this.proxy.on('proxyRes', (proxyRes, req) => {
      const set = proxyRes.headers['set-cookie'];
      if (set) proxyRes.headers['set-cookie'] = hostOnlyCookies(set, canonicalHost(req.headers.host) ?? '');
    });
  }

  async web(req: IncomingMessage, res: ServerResponse, boxName: string, port: number | null): Promise<void> {
    let routed: Routed;
    try {
      const box = await this.route(boxName, port);
      this.boxNames.set(req, box.name);
      if (this.authorize(req, res, box)) return; // answered (redirect that sets the cookie)
      routed = await this.awake(box, port);
    } catch (e) {
      this.refuse(res, e);
      return;
    }
    this.d.metrics.inc('boxd_preview_requests_total');
    const release = this.d.activity.hold(routed.box.name);
    res.once('close', release);
    res.once('finish', release);
    await this.sanitize(req);
    // Body-less requests reuse pooled upstream sockets and are retried while the app is not
    // listening yet (or a pooled socket turns out closed); requests with a body get a fresh
    // connection and one try, since they cannot be replayed.
    const retryUntil = isBodyless(req) ? Date.now() + this.d.config.BOXD_CONNECT_RETRY_MS : null;
    this.forward(req, res, routed, retryUntil);
  }

  /** `retryUntil` null: the request has a body, so one try on a fresh connection. */
  private forward(req: IncomingMessage, res: ServerResponse, routed: Routed, retryUntil: number | null): void {
    const target = { host: routed.hostAddr, port: routed.hostPort };
    this.proxy.web(
      req,
      res,
      // Body-less requests send an empty body of our own rather than piping `req`: on an upstream
      // error the proxy tears down what it piped, and a retry needs the request still open.
      retryUntil === null ? { target, agent: false } : { target, buffer: Readable.from([]) },
      (err: Error & { code?: string }) => {
        if (req.destroyed || res.destroyed || (req.socket?.destroyed && !res.headersSent)) return; // the client went away: not our error
        if (res.headersSent) {
          res.destroy();
          return;
        }
        if (this.upstreamTimers.get(req)?.timedOut) {
          this.d.metrics.inc('boxd_preview_errors_total', { code: 'UPSTREAM_TIMEOUT' });
          sendPage(res, statusOf('UPSTREAM_TIMEOUT'), 'UPSTREAM_TIMEOUT', 'The app did not answer', `Box "${routed.box.name}" accepted the request on port ${routed.port} but sent nothing back within ${this.d.config.BOXD_UPSTREAM_TIMEOUT_MS} ms.`);
          return;
        }
        // Right after a wake or a start the app may not listen yet: retry body-less requests briefly.
        if (retryUntil !== null && Date.now() < retryUntil && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(err.code ?? '')) {
          setTimeout(() => this.forward(req, res, routed, retryUntil), 100).unref();
          return;
        }
        this.d.metrics.inc('boxd_preview_errors_total', { code: 'UPSTREAM_UNAVAILABLE' });
        sendPage(res, statusOf('UPSTREAM_UNAVAILABLE'), 'UPSTREAM_UNAVAILABLE', 'Nothing is listening', `Box "${routed.box.name}" is running, but no app answered on port ${routed.port} (${err.code ?? err.message}). Start a server on 0.0.0.0:${routed.port} inside the box.`, { 'Retry-After': '1' });
      },
    );
  }

  async ws(req: IncomingMessage, socket: Socket, head: Buffer, boxName: string, port: number | null): Promise<void> {
    socket.on('error', () => undefined);
    let routed: Routed;
    try {
      const box = await this.route(boxName, port);
      this.boxNames.set(req, box.name);
      if (!box.public) this.checkToken(box, this.tokenOf(req, new URL(req.url ?? '/', 'http://x')));
      routed = await this.awake(box, port);
    } catch (e) {
      const r = this.asRefusal(e);
      refuseUpgrade(socket, r.status, r.code, r.message, r.headers);
      return;
    }
    this.d.metrics.inc('boxd_preview_websockets_total');
    socket.once('close', this.d.activity.hold(routed.box.name));
    this.wsSockets.add(socket);
    socket.once('close', () => this.wsSockets.delete(socket));
    this.wakeOnTraffic(socket, routed.box.name);
    await this.sanitize(req);
    this.proxy.ws(req, socket, head, { target: { host: routed.hostAddr, port: routed.hostPort }, agent: false }, () => {
      if (!socket.destroyed) refuseUpgrade(socket, statusOf('UPSTREAM_UNAVAILABLE'), 'UPSTREAM_UNAVAILABLE', `no app accepted the WebSocket on port ${routed.port}`);
    });
  }

  /**
   * A box suspended by hand while a WebSocket to it stays open stays suspended until traffic
   * comes: a message from the client wakes it (the bytes wait in the socket meanwhile). Pongs
   * answering the gateway's pings are not traffic.
   */
  private wakeOnTraffic(socket: Socket, name: string): void {
    let checking = false;
    const frames = new FrameBoundary((opcode) => {
      if (opcode === PONG || checking) return;
      checking = true;
      void this.d.routes
        .get(name)
        .then((b) => (b?.state === 'suspended' ? this.d.waker.wake(b) : undefined))
        .catch(() => undefined)
        .finally(() => (checking = false));
    });
    socket.on('data', (chunk: Buffer) => frames.push(chunk));
  }

  /**
   * Route, authorize and wake for the fast path (gateway/fastpath.ts), which sanitizes on bytes
   * itself. Null when the HTTP path must answer instead (a refusal, a page): it re-runs the passes.
   * `token` is the caller's X-Boxd-Token, else its token cookie (a token in the query never gets here).
   */
  async fastRoute(boxName: string, port: number | null, token: (box: string) => string | undefined): Promise<Routed | null> {
    try {
      const box = await this.route(boxName, port);
      if (!box.public) this.checkToken(box, token(box.name));
      return await this.awake(box, port);
    } catch {
      return null;
    }
  }

  /** Whether `token` opens private `box` (a hash and a constant-time compare). */
  tokenOpens(box: BoxRecord, token: string | undefined): boolean {
    try {
      this.checkToken(box, token);
      return true;
    } catch {
      return false;
    }
  }

  /** isApiKey's answer when it is cached, else undefined. */
  knownApiKey(auth: string): boolean | undefined {
    return this.keyCache.get(auth);
  }

  /** The preview-token cookie of `box` among Cookie header values. */
  static tokenCookieOf(values: string[], box: string): string | undefined {
    return cookies(values.join('; ')).get(tokenCookie(box));
  }

  /** Cookie header values with every boxd_token cookie left out; undefined when nothing is left. */
  static withoutTokenCookies(values: string[]): string | undefined {
    const kept = values.join(';').split(';').map((c) => c.trim()).filter((c) => c && !c.startsWith(TOKEN_COOKIE_PREFIX));
    return kept.length ? kept.join('; ') : undefined;
  }

  /** Pass 1: the box and the port, from the cache. */
  private async route(boxName: string, port: number | null): Promise<BoxRecord> {
    const box = await this.d.routes.get(boxName);
    // Warm-pool boxes are nobody's yet: they do not exist for previews (and are never woken by one).
    if (!box || box.account === POOL_ACCOUNT) throw new Refusal('BOX_NOT_FOUND', `There is no box called "${boxName}".`);
    if (!box.ports.length) throw new Refusal('NO_PORTS', `Box "${boxName}" declares no ports, so it has no preview.`);
    if (port !== null && !box.ports.includes(port)) throw new Refusal('PORT_NOT_DECLARED', `Box "${boxName}" does not declare port ${port}; it declares ${box.ports.join(', ')}.`);
    return box;
  }

  /** Pass 2: private boxes need their token. Returns true when it already answered. */
  private authorize(req: IncomingMessage, res: ServerResponse, box: BoxRecord): boolean {
    if (box.public) return false;
    const url = new URL(req.url ?? '/', 'http://x');
    const fromQuery = url.searchParams.get(TOKEN_PARAM);
    this.checkToken(box, this.tokenOf(req, url));
    if (fromQuery && (req.method === 'GET' || req.method === 'HEAD')) {
      // Trade the query parameter for a cookie of this host only, and drop it from the URL.
      url.searchParams.delete(TOKEN_PARAM);
      res.writeHead(302, {
        Location: url.pathname + (url.search || ''),
        'Set-Cookie': `${tokenCookie(box.name)}=${encodeURIComponent(fromQuery)}; Path=/; HttpOnly; SameSite=Lax`,
        'Cache-Control': 'no-store',
      });
      res.end();
      return true;
    }
    return false;
  }

  private tokenOf(req: IncomingMessage, url: URL): string | undefined {
    const header = req.headers[TOKEN_HEADER];
    if (typeof header === 'string' && header) return header;
    const q = url.searchParams.get(TOKEN_PARAM);
    if (q) return q;
    return cookies(req.headers.cookie).get(tokenCookie(this.boxOf(req)));
  }

  private readonly boxNames = new WeakMap<IncomingMessage, string>();
  private boxOf(req: IncomingMessage): string {
    return this.boxNames.get(req) ?? '';
  }

  private checkToken(box: BoxRecord, token: string | undefined): void {
    if (!token) throw new Refusal('TOKEN_REQUIRED', `Box "${box.name}" is private: open it with ?${TOKEN_PARAM}=<preview token> or send ${TOKEN_HEADER}.`);
    const a = Buffer.from(hashSecret(token), 'hex');
    const b = Buffer.from(box.tokenHash ?? '', 'hex');
    if (a.length !== b.length || !timingSafeEqual(a, b)) throw new Refusal('TOKEN_INVALID', `That token does not open box "${box.name}".`);
  }

  /** Pass 3: a running box and the host port to connect to. */
  private async awake(box: BoxRecord, port: number | null): Promise<Routed> {
    const running = await this.d.waker.ensureRunning(box);
    const p = port ?? running.ports[0]!;
    const hostPort = running.hostPorts[p];
    if (!hostPort) throw new Refusal('NO_ROUTE', `Box "${box.name}" has no published port for ${p} yet.`, { 'Retry-After': '1' });
    // The port is published on the owning host's address: never a port of this machine's loopback,
    // which on another host would be some other box.
    return { box: running, port: p, hostAddr: await this.d.addrOf(running.hostId), hostPort };
  }

  /**
   * Whether an Authorization value carries a boxd API key in any form — `Bearer <key>`,
   * `token <key>`, a raw key, Basic with the key as user or password — looked up once a minute
   * per value. An app's own tokens are not keys and pass.
   */
  async isApiKey(auth: string): Promise<boolean> {
    let known = this.keyCache.get(auth);
    if (known === undefined) {
      // When Redis cannot say, drop the header rather than risk forwarding a key.
      const found = await Promise.all(keyCandidates(auth).map((c) => this.d.accounts.lookup(c))).then((r) => r.some(Boolean), () => true);
      known = found;
      this.keyCache.set(auth, known);
    }
    return known;
  }

  /** Pass 4: the box sees our X-Forwarded-* only, and never the caller's API key or preview token. */
  private async sanitize(req: IncomingMessage): Promise<void> {
    const h = req.headers;
    for (const name of Object.keys(h)) {
      if (name.startsWith('x-forwarded-') || name === 'forwarded' || name === 'x-real-ip' || name === TOKEN_HEADER) delete h[name];
    }
    if (h.cookie) {
      const kept = h.cookie.split(';').map((c) => c.trim()).filter((c) => c && !c.startsWith(TOKEN_COOKIE_PREFIX));
      if (kept.length) h.cookie = kept.join('; ');
      else delete h.cookie;
    }
    if (h.authorization && (await this.isApiKey(h.authorization))) delete h.authorization;
    const proxyAuth = h['proxy-authorization'];
    if (typeof proxyAuth === 'string' && (await this.isApiKey(proxyAuth))) delete h['proxy-authorization'];
    if (req.url?.includes(TOKEN_PARAM)) {
      const url = new URL(req.url, 'http://x');
      url.searchParams.delete(TOKEN_PARAM);
      req.url = url.pathname + url.search;
    }
    h['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    h['x-forwarded-proto'] = 'http';
    h['x-forwarded-host'] = h.host ?? '';
    if (req.socket.localPort) h['x-forwarded-port'] = String(req.socket.localPort);
  }

  private asRefusal(e: unknown): Refusal {
    if (e instanceof Refusal) return e;
    if (e instanceof BoxdError) {
      const status = statusOf(e.code);
      return new Refusal(e.code, e.message, status === 503 ? { 'Retry-After': '2' } : {});
    }
    if (isRedisDown(e)) return new Refusal('UNAVAILABLE', 'boxd cannot reach its state store right now', { 'Retry-After': '2' });
    this.d.log.error({ err: e }, 'preview failure');
    return new Refusal('INTERNAL', 'internal error');
  }

  private refuse(res: ServerResponse, e: unknown): void {
    const r = this.asRefusal(e);
    this.d.metrics.inc('boxd_preview_errors_total', { code: r.code });
    const titles: Record<number, string> = { 401: 'This box is private', 403: 'Wrong preview token', 404: 'No such box', 503: 'The box is not available', 504: 'Timed out' };
    sendPage(res, r.status, r.code, titles[r.status] ?? 'Preview error', r.message, r.headers);
  }

  /** Closes every proxied WebSocket (their clients see the connection end). */
  dropWebSockets(): void {
    for (const s of this.wsSockets) s.destroy();
    this.wsSockets.clear();
  }

  close(): void {
    this.dropWebSockets();
    this.proxy.close();
    this.agent.destroy();
  }
}

function isBodyless(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return !req.headers['transfer-encoding'] && (len === undefined || len === '0');
}

function cookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) {
      try {
        out.set(part.slice(0, i).trim(), decodeURIComponent(part.slice(i + 1).trim()));
      } catch {
        /* malformed cookie value */
      }
    }
  }
  return out;
}

/**
 * Every string in an Authorization value that could be a key: the value itself, each word and
 * `name=value` part, and for Basic the decoded user and password. Keys are at least 16 characters.
 */
export function keyCandidates(auth: string): string[] {
  const out = new Set<string>();
  const add = (v: string | undefined) => {
    const t = v?.trim().replace(/^["']|["']$/g, '');
    if (t && t.length >= 16 && t.length <= 512) out.add(t);
  };
  add(auth);
  const words = auth.split(/[\s,;]+/).filter(Boolean);
  for (const w of words) {
    add(w);
    const eq = w.indexOf('=');
    if (eq > 0) add(w.slice(eq + 1));
    for (const part of w.split(':')) add(part);
  }
  if (words.length >= 2 && /^basic$/i.test(words[0]!)) {
    const decoded = Buffer.from(words[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    add(decoded);
    if (colon >= 0) {
      add(decoded.slice(0, colon));
      add(decoded.slice(colon + 1));
    }
  }
  return [...out].slice(0, 16);
}

/**
 * Drops `Set-Cookie` lines whose `Domain` is not exactly the request's host: a box may set cookies
 * for its own host name only, never for the base domain (or a parent) where it would reach — and
 * could shadow — other boxes' cookies, including their preview-token cookies.
 */
export function hostOnlyCookies(lines: string[], host: string): string[] {
  return lines.filter((line) => {
    for (const attr of line.split(';').slice(1)) {
      const eq = attr.indexOf('=');
      if (eq < 0 || attr.slice(0, eq).trim().toLowerCase() !== 'domain') continue;
      const domain = attr.slice(eq + 1).trim().replace(/^\./, '').replace(/\.$/, '').toLowerCase();
      if (domain !== host) return false;
    }
    return true;
  });
}
