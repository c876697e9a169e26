import { Router } from 'express';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { HostClient } from '../core/host-client.ts';

/** The `/readyz` answer (200 ready, 503 not), for the OpenAPI document. */
export const readiness = z.object({ ready: z.boolean(), redis: z.boolean(), hosts: z.number().int(), reason: z.string().optional() }).strict();

/** Resolves to `fallback` when `p` takes longer than `ms` (the Redis call itself is left to its own timeout). */
function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)));
  return Promise.race([p.catch(() => fallback), late]).finally(() => clearTimeout(timer));
}

/**
 * `GET /healthz`: liveness. Always 200 while the process serves HTTP, within ~0.5 s even when
 * Redis is frozen (its checks are bounded); the body says what it saw.
 * `GET /readyz`: readiness. 200 only when Redis answers and at least one host is registered,
 * else 503 with the reason, so a balancer sends no traffic to a gateway that cannot serve it.
 */
export function healthApi(redis: Redis, hosts: Pick<HostClient, 'aliveHosts'>, budgetMs = 500): Router {
  const r = Router();
  const check = async () => {
    const redisOk = await within(redis.ping().then(() => true), budgetMs, false);
    const hostsAlive = redisOk ? await within(hosts.aliveHosts().then((h) => h.length), budgetMs, 0) : 0;
    return { redis: redisOk, hosts: hostsAlive };
  };
  r.get('/healthz', async (_req, res) => {
    res.status(200).json({ ok: true, ...(await check()) });
  });
  r.get('/readyz', async (_req, res) => {
    const c = await check();
    const ready = c.redis && c.hosts > 0;
    const reason = !c.redis ? 'Redis does not answer' : c.hosts === 0 ? 'no host process is registered' : undefined;
    if (!ready) res.setHeader('Retry-After', '1');
    res.status(ready ? 200 : 503).json({ ready, ...c, ...(reason ? { reason } : {}) });
  });
  return r;
}
