import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * A secret from the environment, or else from `<stateDir>/<file>`, generated (mode 0600) the
 * first time. Processes of one machine started without the variable thus share one value.
 */
export function stateSecret(stateDir: string, file: string, fromEnv: string | undefined, make: () => string): string {
  if (fromEnv) return fromEnv;
  const path = `${stateDir}/${file}`;
  mkdirSync(stateDir, { recursive: true });
  if (!existsSync(path)) {
    try {
      writeFileSync(path, `${make()}\n`, { mode: 0o600, flag: 'wx' });
    } catch {
      /* another process wrote it first */
    }
  }
  return readFileSync(path, 'utf8').trim();
}

/** The cluster secret gateways present to host agents (`BOXD_CLUSTER_SECRET` or `.boxd/cluster-secret`). */
export function clusterSecret(config: { BOXD_CLUSTER_SECRET?: string; BOXD_STATE_DIR: string }): string {
  return stateSecret(config.BOXD_STATE_DIR, 'cluster-secret', config.BOXD_CLUSTER_SECRET, () => randomBytes(32).toString('base64url'));
}

/** The bootstrap API key (`BOXD_API_KEY` or `.boxd/api-key`). */
export function apiKey(config: { BOXD_API_KEY?: string; BOXD_STATE_DIR: string }): string {
  return stateSecret(config.BOXD_STATE_DIR, 'api-key', config.BOXD_API_KEY, () => `bxd_${randomBytes(24).toString('base64url')}`);
}
