import type { Request, RequestHandler } from 'express';
import type { Accounts } from '../core/accounts.ts';
import { BoxdError } from '../core/errors.ts';

/** The account of the caller, set by `requireKey`. */
export function accountOf(req: Request): string {
  const account = (req as Request & { account?: string }).account;
  if (!account) throw new BoxdError('UNAUTHORIZED', 'no account on request');
  return account;
}

/** `Authorization: Bearer <key>` → account; 401 otherwise. */
export function requireKey(accounts: Accounts): RequestHandler {
  return async (req, _res, next) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new BoxdError('UNAUTHORIZED', 'missing API key: send "Authorization: Bearer <key>"');
    const account = await accounts.accountOf(m[1]!);
    if (!account) throw new BoxdError('UNAUTHORIZED', 'unknown API key');
    (req as Request & { account?: string }).account = account;
    next();
  };
}
