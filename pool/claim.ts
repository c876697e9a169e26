import type { Redis } from 'ioredis';
import { boxCountsKey, encodeFields, type BoxRecord } from '../core/boxes.ts';
import { BoxExistsError, LimitError } from '../core/errors.ts';
import { POOL_ACCOUNT, poolListKey, poolStatsKey } from './keys.ts';

/**
 * Takes one ready (suspended) box off a host's pool list and renames it into the caller's box in
 * one Lua script: two concurrent claims — from any number of gateways — never get the same box,
 * and the name and the account's limit are checked in the same step.
 */
const CLAIM = `
local prefix = ARGV[1]
local newName = ARGV[2]
local newKey = prefix .. ':box:' .. newName
if redis.call('EXISTS', newKey) == 1 then return {'EXISTS'} end
local limit = tonumber(ARGV[3])
if limit >= 0 and redis.call('SCARD', KEYS[3]) >= limit then return {'LIMIT'} end
while true do
  local pooled = redis.call('LPOP', KEYS[1])
  if not pooled then return {'EMPTY'} end
  local oldKey = prefix .. ':box:' .. pooled
  if redis.call('HGET', oldKey, 'state') == 'suspended' then
    redis.call('HSET', newKey, unpack(redis.call('HGETALL', oldKey)))
    redis.call('HSET', newKey, 'name', newName, 'account', ARGV[4], unpack(ARGV, 5))
    local version = redis.call('HINCRBY', newKey, 'version', 1)
    local host = redis.call('HGET', newKey, 'hostId')
    redis.call('DEL', oldKey)
    redis.call('SREM', KEYS[2], pooled)
    redis.call('SREM', prefix .. ':boxes', pooled)
    redis.call('SREM', prefix .. ':host:' .. host .. ':boxes', pooled)
    redis.call('HINCRBY', KEYS[4], 'suspended', 1)
    redis.call('SADD', KEYS[3], newName)
    redis.call('SADD', prefix .. ':boxes', newName)
    redis.call('SADD', prefix .. ':host:' .. host .. ':boxes', newName)
    redis.call('PUBLISH', prefix .. ':events', cjson.encode({name = pooled, state = 'destroyed', from = 'suspended', version = version}))
    redis.call('PUBLISH', prefix .. ':events', cjson.encode({name = newName, state = 'suspended', from = 'suspended', version = version}))
    return {'OK', pooled, host}
  end
end`;

export interface ClaimRequest {
  hostId: string;
  golden: string;
  name: string;
  account: string;
  limit: number;
  /** Fields the claimed box takes from the caller. */
  fields: Partial<Pick<BoxRecord, 'env' | 'idleTimeoutMs' | 'public' | 'tokenHash' | 'createdAt' | 'lastActivityAt' | 'parent' | 'origin'>>;
}

/** Claims a ready box from `hostId`'s pool of `golden`; undefined when the pool is empty. */
export async function claimPooled(redis: Redis, prefix: string, req: ClaimRequest): Promise<{ pooled: string } | undefined> {
  // A pooled box has no token: write an empty one unless the caller's box is private.
  const fields = encodeFields({ ...req.fields, tokenHash: req.fields.tokenHash ?? '' });
  const [outcome, pooled] = (await redis.eval(
    CLAIM,
    4,
    poolListKey(prefix, req.hostId, req.golden),
    `${prefix}:acct:${POOL_ACCOUNT}:boxes`,
    `${prefix}:acct:${req.account}:boxes`,
    boxCountsKey(prefix),
    prefix,
    req.name,
    String(req.limit),
    req.account,
    ...fields,
  )) as [string, string?];
  if (outcome === 'EXISTS') throw new BoxExistsError(req.name);
  if (outcome === 'LIMIT') throw new LimitError(`account "${req.account}" already has ${req.limit} live boxes; delete one first`);
  if (outcome !== 'OK') return undefined;
  return { pooled: pooled! };
}

/** How a caller reaches the host whose box it claimed. */
export interface PoolHost {
  /** Resumes the claimed (suspended) box. */
  wake(hostId: string, name: string): Promise<unknown>;
  /** Removes a claimed box that could not be woken. */
  destroy(hostId: string, name: string): Promise<unknown>;
  /** Asks the host to top its pool up again (no need to wait). */
  refill(hostId: string, golden: string): Promise<unknown>;
}

/**
 * Takes a ready box of `golden` from the first of `hostIds` that has one, renamed into the
 * caller's box, and wakes it. Returns the host it came from, or undefined when every pool was
 * empty (the caller then creates cold). Hits and misses are counted. A box that cannot be woken
 * is destroyed, never left half-claimed.
 */
export async function takeFromPool(
  redis: Redis,
  prefix: string,
  hostIds: string[],
  req: Omit<ClaimRequest, 'hostId'>,
  host: PoolHost,
): Promise<string | undefined> {
  for (const hostId of hostIds) {
    const now = Date.now();
    const got = await claimPooled(redis, prefix, { ...req, hostId, fields: { createdAt: now, lastActivityAt: now, origin: 'pool', ...req.fields } });
    if (!got) continue;
    void host.refill(hostId, req.golden).catch(() => undefined);
    try {
      await host.wake(hostId, req.name);
    } catch (e) {
      await host.destroy(hostId, req.name).catch(() => undefined);
      throw e;
    }
    await recordClaim(redis, prefix, req.golden, true);
    return hostId;
  }
  await recordClaim(redis, prefix, req.golden, false);
  return undefined;
}

async function recordClaim(redis: Redis, prefix: string, golden: string, hit: boolean): Promise<void> {
  await redis.hincrby(poolStatsKey(prefix), `${golden}:${hit ? 'hits' : 'misses'}`, 1);
}

export interface PoolStats {
  golden: string;
  target: number;
  ready: number;
  hits: number;
  misses: number;
  hitRate: number | null;
}

/** Pool size, ready boxes (over every host) and hit rate per golden. */
export async function poolStats(redis: Redis, prefix: string, goldens: { name: string; poolSize: number }[], hostIds: string[]): Promise<PoolStats[]> {
  const stats = await redis.hgetall(poolStatsKey(prefix));
  const out: PoolStats[] = [];
  for (const g of goldens) {
    let ready = 0;
    for (const h of hostIds) ready += await redis.llen(poolListKey(prefix, h, g.name));
    const hits = Number(stats[`${g.name}:hits`] ?? 0);
    const misses = Number(stats[`${g.name}:misses`] ?? 0);
    out.push({ golden: g.name, target: g.poolSize * hostIds.length, ready, hits, misses, hitRate: hits + misses ? hits / (hits + misses) : null });
  }
  return out;
}
