import express from 'express';
import { createServer, type Server } from 'node:http';
import { FastPath } from './fastpath.ts';
import { KeyCache } from './key-cache.ts';
import { Redis } from 'ioredis';
import { Accounts, DEFAULT_ACCOUNT } from '../core/accounts.ts';
import { BoxStore, type BoxRecord } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import { HostClient } from '../core/host-client.ts';
import { HostSweeper } from '../core/sweeper.ts';
import type { Logger } from '../core/log.ts';
import { findGolden, goldenByKey, readGoldens, type GoldenInfo } from '../host/goldens.ts';
import { AccountGoldens, goldenDisplayName } from '../core/account-goldens.ts';
import { goldensApi } from './goldens-api.ts';
import { accountOf, limitBoxKeys, requireAdmin, requireKey } from './auth.ts';
import { accountsApi } from './accounts-api.ts';
import { healthApi } from './health.ts';
import { jsonBody } from './json-body.ts';
import { boxesApi, type PoolClaim } from './boxes-api.ts';
import { forkApi } from './fork-api.ts';
import { dashboard } from './dashboard.ts';
import { hooksApi, publicHooks, taskQueue } from './hooks-api.ts';
import { HookStore } from '../core/hooks.ts';
import { Snapshots } from '../core/snapshots.ts';
import { poolStats, takeFromPool, type PoolHost } from '../pool/claim.ts';
import { errorHandler, notFound, statusOf } from './errors.ts';
import { HostAgents } from './host-agents.ts';
import { clusterSecret } from '../core/secrets.ts';
import { openApiDocument } from './openapi.ts';
import { Metrics } from './metrics.ts';
import { resolveTarget } from './routing.ts';
import { Urls } from './urls.ts';
import { Activity } from './activity.ts';
import { Preview } from './preview.ts';
import { RouteCache } from './route-cache.ts';
import { refuseUpgrade } from './pages.ts';
import { Waker } from './waker.ts';
import { PtyGateway } from './pty.ts';
import { connectRedis } from '../core/redis.ts';

export interface Gateway {
  app: express.Express;
  /** Not listening yet: `server.listen(port, bind)`; tests hand it to supertest. */
  server: Server;
  redis: Redis;
  store: BoxStore;
  accounts: Accounts;
  hosts: HostClient;
  agents: HostAgents;
  urls: Urls;
  activity: Activity;
  waker: Waker;
  routes: RouteCache;
  close(): Promise<void>;
}

/**
 * Builds a gateway: the control API on the bare host name and (when wired) the preview proxy on
 * box subdomains. Stateless apart from caches, so any number can run against one Redis.
 */
export async function createGateway(config: Config, log: Logger): Promise<Gateway> {
  // Every command is bounded: with Redis frozen or gone the API answers 503 within ~2 s, not 30.
  const redis = connectRedis(config.REDIS_URL, { maxRetriesPerRequest: 3, commandTimeout: config.BOXD_REDIS_TIMEOUT_MS || undefined });
  const sub = connectRedis(config.REDIS_URL, { maxRetriesPerRequest: null });
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis error'));
  sub.on('error', (err) => log.warn({ err: err.message }, 'redis subscriber error'));
  const prefix = config.BOXD_PREFIX;
  const store = new BoxStore(redis, prefix);
  const accounts = new Accounts(redis, prefix, config.BOXD_MAX_BOXES);
  await accounts.ensureAccount(DEFAULT_ACCOUNT, DEFAULT_ACCOUNT);
  if (config.BOXD_API_KEY) await accounts.addKey(config.BOXD_API_KEY, DEFAULT_ACCOUNT, 'admin');
  const hosts = new HostClient(redis, config.REDIS_URL, prefix, config.BOXD_JOB_TIMEOUT_MS, { deadMs: config.BOXD_HOST_DEAD_MS, overcommit: config.BOXD_OVERCOMMIT, cpuOvercommit: config.BOXD_CPU_OVERCOMMIT });
  const sweeper = new HostSweeper({ redis, store, prefix, deadMs: config.BOXD_HOST_DEAD_MS, log: log.child({ part: 'sweeper' }) });
  sweeper.start();
  const agents = new HostAgents(redis, prefix, clusterSecret(config), undefined, config.BOXD_HOST_DEAD_MS);
  const resume = async (hostId: string, name: string) => (await agents.json<{ box: BoxRecord }>(hostId, { method: 'POST', path: `/v1/boxes/${name}/resume` })).box;
  const urls = new Urls(config.BOXD_BASE_DOMAIN, config.BOXD_PUBLIC_URL, config.BOXD_PORT);
  const metrics = new Metrics();
  const routes = new RouteCache(store, sub);
  await routes.start();
  const keys = new KeyCache(accounts, sub, prefix);
  await keys.start();
  const activity = new Activity(store);
  activity.start(config.BOXD_ACTIVITY_FLUSH_MS);
  const waker = new Waker({ routes, resume, timeoutMs: config.BOXD_WAKE_TIMEOUT_MS, maxWaiters: config.BOXD_WAKE_MAX_WAITERS });
  // A box suspended while we hold requests or WebSockets to it is woken again at once, so a
  // race between an auto-suspend and traffic always ends with the traffic served. A suspend a
  // user asked for sticks: only new traffic wakes it (the waker, or a WebSocket message).
  routes.onAny((e) => {
    if (e.state === 'suspended' && activity.busy(e.name) > 0) {
      void routes.get(e.name).then((b) => (b?.state === 'suspended' && !b.manualSuspend ? waker.wake(b) : undefined)).catch(() => undefined);
    }
  });
  const ptys = new PtyGateway({ store, activity, target: (h, fresh) => agents.target(h, fresh), secret: clusterSecret(config), accountOfKey: (k) => accounts.accountOf(k), log: log.child({ part: 'pty' }) });
  const preview = new Preview({ config, routes, waker, activity, accounts, metrics, addrOf: (h) => agents.addrOf(h), log: log.child({ part: 'preview' }) });

  let goldenCache: { at: number; value: Map<string, GoldenInfo> } | undefined;
  const goldens = async () => {
    if (!goldenCache || Date.now() - goldenCache.at > 2000) {
      // Built means built on some live host (each host says which goldens it holds).
      const [value, alive] = await Promise.all([readGoldens(redis, prefix), hosts.aliveHosts()]);
      for (const g of value.values()) if (alive.length) g.built = alive.some((h) => !h.goldens || h.goldens.includes(g.name));
      goldenCache = { at: Date.now(), value };
    }
    return goldenCache.value;
  };

  const api = express();
  api.disable('x-powered-by');
  api.set('etag', false);
  api.use((req, res, next) => {
    res.on('finish', () => metrics.inc('boxd_api_requests_total', { status: `${Math.floor(res.statusCode / 100)}xx` }));
    next();
  });
  api.use(dashboard());
  api.use(healthApi(redis, hosts));
  api.get('/metrics', requireKey(accounts), requireAdmin, async (_req, res) => {
    res.type('text/plain; version=0.0.4').send(await metrics.render(store));
  });
  const accountGoldens = new AccountGoldens(redis, prefix);
  const golden = async (account: string, name: string) => findGolden(await goldens(), accountGoldens, account, name);
  const hookDeps = { config, redis, hooks: new HookStore(redis, prefix), goldens, golden, urls, accounts };
  const tasksQueue = taskQueue(hookDeps);
  api.use(publicHooks(hookDeps, tasksQueue));
  // Public: the machine-readable API (gateway/api-spec.ts), generated once on first request.
  let openapi: object | undefined;
  api.get('/v1/openapi.json', (_req, res) => {
    res.json((openapi ??= openApiDocument(undefined, { serverUrl: urls.api })));
  });
  const v1 = express.Router();
  v1.use(requireKey(keys));
  v1.use(limitBoxKeys);
  // JSON bodies for everything but file uploads, which take raw bytes.
  v1.use(jsonBody('20mb'));
  v1.use(accountsApi(accounts));
  const snapshots = new Snapshots(redis, prefix);
  v1.use(goldensApi({ config, store, hosts, snapshots, accountGoldens, goldens }));
  const poolHost: PoolHost = {
    wake: (hostId, name) => resume(hostId, name),
    destroy: (hostId, name) => hosts.call(hostId, { op: 'destroy', name }),
    refill: (hostId, golden) => hosts.enqueue(hostId, { op: 'pool-fill', golden }),
  };
  const claimFromPool = async (golden: string, c: PoolClaim) => {
    const alive = (await hosts.aliveHosts()).map((h) => h.id);
    const fields = { env: c.env, idleTimeoutMs: c.idleTimeoutMs, public: c.public, tokenHash: c.tokenHash };
    const from = await takeFromPool(redis, prefix, alive, { golden, name: c.name, account: c.account, limit: c.limit, fields }, poolHost);
    return from ? store.require(c.name) : null;
  };
  v1.use(
    boxesApi({
      config, redis, store, accounts, hosts, agents, goldens, golden, urls,
      claimFromPool: config.BOXD_POOL ? claimFromPool : undefined,
      snapshot: async (account, name) => snapshots.require(account, name),
      snapshotsOf: async (account) => snapshots.list(account),
    }),
  );
  v1.use(forkApi({
    store, accounts, hosts, snapshots, urls, redis, prefix, agents,
    pool: config.BOXD_POOL ? { redis, prefix, golden: async (key) => goldenByKey(await goldens(), accountGoldens, key) } : undefined,
  }));
  v1.use(hooksApi(hookDeps));
  v1.get('/pool', async (req, res) => {
    const alive = (await hosts.aliveHosts()).map((h) => h.id);
    const all = [...(await goldens()).values()].map((g) => ({ name: g.name, poolSize: g.poolSize }));
    // The account's own goldens are pooled on their one host.
    const own = (await accountGoldens.list(accountOf(req))).filter((g) => alive.includes(g.hostId));
    const ownStats = await Promise.all(own.map(async (g) => (await poolStats(redis, prefix, [{ name: g.key, poolSize: g.poolSize }], [g.hostId]))[0]!));
    const pools = [...(await poolStats(redis, prefix, all, alive)), ...ownStats.map((p) => ({ ...p, golden: goldenDisplayName(p.golden), owner: 'account' }))];
    res.json({ pools });
  });
  api.use('/v1', v1);
  api.use(notFound);
  api.use(errorHandler(log));

  // Box host names skip Express entirely: the preview path is hot and needs none of it.
  // Slow or stalled clients are cut off: headers within BOXD_HEADERS_TIMEOUT_MS (checked every
  // second, not Node's default 30 s), the whole request within BOXD_REQUEST_TIMEOUT_MS.
  const server = createServer({
    headersTimeout: config.BOXD_HEADERS_TIMEOUT_MS,
    requestTimeout: config.BOXD_REQUEST_TIMEOUT_MS,
    connectionsCheckingInterval: Math.min(1000, Math.max(100, config.BOXD_HEADERS_TIMEOUT_MS / 4)),
  }, (req, res) => {
    const target = resolveTarget(req.headers.host, config.BOXD_BASE_DOMAIN);
    if (target.kind === 'api') return api(req, res);
    if (target.kind === 'invalid') {
      res.writeHead(statusOf('INVALID_HOST'), { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: { code: 'INVALID_HOST', message: target.reason } }));
      return;
    }
    preview.web(req, res, target.box, target.port).catch((err) => {
      log.error({ err }, 'preview failure');
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    });
  });
  server.on('clientError', (err: Error & { code?: string }, socket) => {
    const timedOut = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    if (socket.writable) socket.end(timedOut ? 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n' : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  const fast = config.BOXD_PREVIEW_FASTPATH ? FastPath.attach(server, { config, preview, routes, activity, metrics, log: log.child({ part: 'fastpath' }) }) : null;

  server.on('upgrade', (req, socket: import('node:net').Socket, head: Buffer) => {
    socket.on('error', () => undefined);
    const target = resolveTarget(req.headers.host, config.BOXD_BASE_DOMAIN);
    if (target.kind === 'api' && ptys.handles(req)) {
      ptys.upgrade(req, socket, head).catch(() => socket.destroy());
      return;
    }
    if (target.kind !== 'box') {
      const code = target.kind === 'invalid' ? 'INVALID_HOST' : 'NO_WEBSOCKET';
      refuseUpgrade(socket, statusOf(code), code, 'WebSockets are served on box host names only');
      return;
    }
    preview.ws(req, socket, head, target.box, target.port).catch(() => socket.destroy());
  });

  return {
    activity,
    waker,
    routes,
    app: api,
    server,
    redis,
    store,
    accounts,
    hosts,
    agents,
    urls,
    /**
     * Stops accepting, drops WebSockets and idle connections, gives requests in flight up to
     * BOXD_CLOSE_GRACE_MS to be answered (an exec whose host stops gets its error), then closes
     * what is left.
     */
    async close() {
      const closed = new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
      server.closeIdleConnections();
      fast?.close();
      preview.dropWebSockets();
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<void>((r) => (timer = setTimeout(r, config.BOXD_CLOSE_GRACE_MS)));
      await Promise.race([closed, graceOver]);
      clearTimeout(timer);
      server.closeAllConnections();
      await closed;
      preview.close();
      ptys.close();
      await sweeper.stop();
      agents.close();
      await activity.stop();
      await hosts.close();
      await tasksQueue.close().catch(() => undefined);
      await Promise.all([redis.quit(), sub.quit()].map((p) => p.catch(() => undefined)));
    },
  };
}
