/** Redis keys of the warm pool. */
export const POOL_ACCOUNT = '_pool';
export const poolListKey = (prefix: string, hostId: string, golden: string) => `${prefix}:pool:${hostId}:${golden}`;
export const poolStatsKey = (prefix: string) => `${prefix}:poolstats`;
