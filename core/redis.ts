import { Cluster, Redis, type RedisOptions } from 'ioredis';

/**
 * Opens a connection for `url`. `redis://` and `rediss://` are a single server;
 * `redis+cluster://[user:pass@]h1:p1,h2:p2/` (any number of seed nodes) is a Redis Cluster,
 * reached through ioredis' Cluster client. Every key boxd uses carries the instance's hash tag
 * (core/keys.ts), so scripts and transactions work the same on both.
 *
 * The Cluster client is returned typed as `Redis`: boxd only calls commands both share.
 */
export function connectRedis(url: string, opts: RedisOptions = {}): Redis {
  const cluster = parseClusterUrl(url);
  if (!cluster) return new Redis(url, opts);
  const { password, username } = cluster;
  const c = new Cluster(cluster.nodes, {
    redisOptions: { ...opts, ...(password ? { password } : {}), ...(username ? { username } : {}) },
    // BullMQ's blocking commands need no retry limit; ioredis' Cluster reads it from here.
    ...(opts.maxRetriesPerRequest === null ? { maxRedirections: 16 } : {}),
  });
  return c as unknown as Redis;
}

/** The seed nodes of a `redis+cluster://` URL, or undefined for any other URL. */
export function parseClusterUrl(url: string): { nodes: { host: string; port: number }[]; username?: string; password?: string } | undefined {
  const m = /^redis\+cluster:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?#]+)\/?$/.exec(url);
  if (!m) return undefined;
  const nodes = m[3]!.split(',').map((hp) => {
    const i = hp.lastIndexOf(':');
    const host = i > 0 ? hp.slice(0, i) : hp;
    const port = i > 0 ? Number(hp.slice(i + 1)) : 6379;
    if (!host || !Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`bad cluster node "${hp}" in REDIS_URL`);
    return { host, port };
  });
  return {
    nodes,
    username: m[1] ? decodeURIComponent(m[1]) : undefined,
    password: m[2] ? decodeURIComponent(m[2]) : undefined,
  };
}

/**
 * Resolves once `conn` is ready. Subscribe only then: ioredis writes SUBSCRIBE before its ready
 * check (Redis allows it while loading), the reply puts the connection in subscriber mode, and
 * the ready check's INFO is then refused ("Connection in subscriber mode") — the connection
 * drops and comes back, and events published meanwhile are lost.
 */
export async function whenReady(conn: Pick<Redis, 'status' | 'once'>): Promise<void> {
  if (conn.status === 'ready') return;
  await new Promise<void>((resolve) => conn.once('ready', () => resolve()));
}
