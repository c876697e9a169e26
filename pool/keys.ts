import { Keys } from '../core/keys.ts';

/** Redis keys of the warm pool (spelled in core/keys.ts). */
export { POOL_ACCOUNT } from '../core/boxes.ts';
export const poolListKey = (prefix: string, hostId: string, golden: string) => new Keys(prefix).pool(hostId, golden);
export const poolStatsKey = (prefix: string) => new Keys(prefix).poolStats;
