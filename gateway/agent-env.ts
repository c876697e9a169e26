import type { Redis } from 'ioredis';
import type { Accounts } from '../core/accounts.ts';
import { UnavailableError } from '../core/errors.ts';
import { boxApiUrlKey } from '../host/api-door.ts';

/** Names of the variables an agent box gets (and a fork of it gets again, with its own key). */
export const AGENT_ENV = ['BOXD_URL', 'BOXD_API_KEY', 'BOXD_BOX'] as const;

/**
 * What `"agent": true` adds to a box's environment: `BOXD_URL` (the API as the box reaches it,
 * through its host's API door), `BOXD_API_KEY` (a key scoped to this box: it may create, fork,
 * exec in and destroy boxes of the account, counted against the same limit, never keys, accounts
 * or hooks; revoked when the box is destroyed) and `BOXD_BOX` (the box's own name).
 * `undo` deletes the key again when the box is not made after all.
 */
export async function agentEnv(
  d: { redis: Redis; accounts: Pick<Accounts, 'issueBoxKey' | 'lookup' | 'deleteKey'>; prefix: string },
  hostId: string,
  account: string,
  box: string,
): Promise<{ env: Record<string, string>; undo: () => Promise<void> }> {
  const url = await d.redis.get(boxApiUrlKey(d.prefix, hostId));
  if (!url) throw new UnavailableError(`host ${hostId} offers no API door to its boxes (see BOXD_BOX_API_PORT and the host's log); "agent": true needs one`);
  const key = await d.accounts.issueBoxKey(account, box);
  return {
    env: { BOXD_URL: url, BOXD_API_KEY: key, BOXD_BOX: box },
    undo: async () => {
      const rec = await d.accounts.lookup(key);
      if (rec) await d.accounts.deleteKey(rec.id).catch(() => undefined);
    },
  };
}

/** Whether a box's env came from `agentEnv` (a fork of such a box is an agent box too). */
export const isAgentEnv = (env: Record<string, string>): boolean => typeof env.BOXD_API_KEY === 'string' && typeof env.BOXD_BOX === 'string' && typeof env.BOXD_URL === 'string';
