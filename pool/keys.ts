/** Redis keys of the warm pool. */
export { POOL_ACCOUNT } from '../core/boxes.ts';
export const poolListKey = (prefix: string, hostId: string, golden: string) => `${prefix}:pool:${hostId}:${golden}`;
export const poolStatsKey = (prefix: string) => `${prefix}:poolstats`;
