import { Router } from 'express';
import { z } from 'zod';
import { DEFAULT_ACCOUNT, type Account, type Accounts } from '../core/accounts.ts';
import { BoxdError } from '../core/errors.ts';
import { requireAdmin } from './auth.ts';
import { parse } from './schemas.ts';
import type { AccountInfo, KeyCreated } from '../sdk/types.ts';

const limit = z.number().int().min(0).max(1_000_000);
export const accountBody = z
  .object({
    name: z.string().min(1).max(100),
    maxBoxes: limit.optional(),
    maxExecs: limit.optional(),
    maxSnapshots: limit.optional(),
    maxHooks: limit.optional(),
  })
  .strict();
export const keyBody = z.object({ role: z.enum(['admin', 'member']).default('member') }).strict();
/** Answers, for the OpenAPI document (gateway/api-spec.ts; proven equal to sdk/types.ts in gateway/responses.ts). */
export { account as accountAnswer, accountList as accountListAnswer, keyCreated as keyAnswer } from './responses.ts';

/** `/v1/accounts…` and `/v1/keys…`: admin keys only. Keys are answered once and stored hashed. */
export function accountsApi(accounts: Accounts): Router {
  const r = Router();
  r.use(['/accounts', '/keys'], requireAdmin);

  r.post('/accounts', async (req, res) => {
    const body = parse(accountBody, req.body);
    const { name, ...limits } = body;
    res.status(201).json(accountJson(await accounts.createAccount(name, limits)));
  });

  r.get('/accounts', async (_req, res) => {
    const all = await accounts.listAccounts();
    res.json({ accounts: await Promise.all(all.map(async (a) => ({ ...accountJson(a), limits: await accounts.accountLimits(a.id), keys: (await accounts.keyIds(a.id)).length }))) });
  });

  r.post('/accounts/:id/keys', async (req, res) => {
    const id = String(req.params.id);
    if (!(await accounts.account(id))) throw new BoxdError('ACCOUNT_NOT_FOUND', `no account ${id}`);
    const { role } = parse(keyBody, req.body);
    // Admin keys manage every account: they belong to the operator's own account only.
    if (role === 'admin' && id !== DEFAULT_ACCOUNT) throw new BoxdError('INVALID_REQUEST', `admin keys belong to the "${DEFAULT_ACCOUNT}" account only`);
    const { key, record } = await accounts.createKeyRecord(id, role);
    const created: KeyCreated = { id: record.id, account: id, role, key };
    res.status(201).json(created);
  });

  r.delete('/keys/:id', async (req, res) => {
    await accounts.deleteKey(String(req.params.id));
    res.status(204).end();
  });
  return r;
}

function accountJson(a: Account): AccountInfo {
  return {
    id: a.id,
    name: a.name,
    maxBoxes: a.maxBoxes,
    maxExecs: a.maxExecs,
    maxSnapshots: a.maxSnapshots,
    maxHooks: a.maxHooks,
    createdAt: new Date(a.createdAt).toISOString(),
  };
}
