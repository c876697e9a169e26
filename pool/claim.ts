import type { PoolStats } from '../sdk/types.ts';
import type { Redis } from 'ioredis';
import { boxCountsKey, encodeFields, type BoxRecord } from '../core/boxes.ts';
import { BoxExistsError, LimitError } from '../core/errors.ts';
import { Keys } from '../core/keys.ts';
import { POOL_ACCOUNT, poolListKey, poolStatsKey } from './keys.ts';

/**
 * Takes the ready (suspended) box at the head of a host's pool list and renames it into the
 * caller's box in one Lua script: two concurrent claims — from any number of gateways — never get
 * the same box, and the name and the account's limit are checked in the same step.
 *
 * The caller peeks at the head first so that the script can declare every key it touches
 * (Redis Cluster); when the head changed in between the script answers RETRY.
 * KEYS: list, pool account set, caller's account set, caller's lost set, new box, pooled box,
 *       every-box set, host set, box counts. ARGV: expected head, new name, limit, account, channel, fields….
 */
const CLAIM = `
local newName = ARGV[2]
if redis.call('EXISTS', KEYS[5]) == 1 then return {'EXISTS'} end
local limit = tonumber(ARGV[3])
if limit >= 0 and redis.call('SCARD', KEYS[3]) - redis.call('SCARD', KEYS[4]) >= limit then return {'LIMIT'} end
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return {'EMPTY'} end
if head ~= ARGV[1] then return {'RETRY'} end
redis.call('LPOP', KEYS[1])
if redis.call('HGET', KEYS[6], 'state') ~= 'suspended' then return {'SKIP'} end
local pooled = ARGV[1]
redis.call('HSET', KEYS[5], unpack(redis.call('HGETALL', KEYS[6])))
redis.call('HSET', KEYS[5], 'name', newName, 'account', ARGV[4], unpack(ARGV, 6))
local version = redis.call('HINCRBY', KEYS[5], 'version', 1)
local host = redis.call('HGET', KEYS[5], 'hostId')
redis.call('DEL', KEYS[6])
redis.call('SREM', KEYS[2], pooled)
redis.call('SREM', KEYS[7], pooled)
redis.call('SREM', KEYS[8], pooled)
redis.call('HINCRBY', KEYS[9], 'suspended', 1)
redis.call('SADD', KEYS[3], newName)
redis.call('SADD', KEYS[7], newName)
redis.call('SADD', KEYS[8], newName)
redis.call('PUBLISH', ARGV[5], cjson.encode({name = pooled, state = 'destroyed', from = 'suspended', version = version}))
redis.call('PUBLISH', ARGV[5], cjson.encode({name = newName, state = 'suspended', from = 'suspended', version = version}))
return {'OK', pooled, host}`;

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
  const k = new Keys(prefix);
  const list = k.pool(req.hostId, req.golden);
  // A pooled box has no token: write an empty one unless the caller's box is private.
  const fields = encodeFields({ ...req.fields, tokenHash: req.fields.tokenHash ?? '' });
  for (;;) {
    const head = await redis.lindex(list, 0);
    if (head === null) return undefined;
    const keys = [list, k.accountBoxes(POOL_ACCOUNT), k.accountBoxes(req.account), k.accountLost(req.account), k.box(req.name), k.box(head), k.boxes, k.hostBoxes(req.hostId), k.boxCounts];
    const [outcome, pooled] = (await redis.eval(CLAIM, keys.length, ...keys, head, req.name, String(req.limit), req.account, k.events, ...fields)) as [string, string?];
    if (outcome === 'EXISTS') throw new BoxExistsError(req.name);
    if (outcome === 'LIMIT') throw new LimitError(`account "${req.account}" already has ${req.limit} live boxes; delete one first`);
    if (outcome === 'EMPTY') return undefined;
    if (outcome === 'OK') return { pooled: pooled! };
    // RETRY (another claim took the head) or SKIP (a stale entry was dropped): look again.
  }
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
