import type { Request, RequestHandler } from 'express';
import type { Accounts, KeyRole } from '../core/accounts.ts';
import { BoxdError } from '../core/errors.ts';

interface Authed {
  account?: string;
  keyRole?: KeyRole;
}

/** The account of the caller, set by `requireKey`. */
export function accountOf(req: Request): string {
  const account = (req as Request & Authed).account;
  if (!account) throw new BoxdError('UNAUTHORIZED', 'no account on request');
  return account;
}

export function roleOf(req: Request): KeyRole {
  return (req as Request & Authed).keyRole ?? 'member';
}

/** `Authorization: Bearer <key>` → account and role; 401 otherwise. */
export function requireKey(accounts: Pick<Accounts, 'lookup'>): RequestHandler {
  return async (req, _res, next) => {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m) throw new BoxdError('UNAUTHORIZED', 'missing API key: send "Authorization: Bearer <key>"');
    const key = await accounts.lookup(m[1]!);
    if (!key) throw new BoxdError('UNAUTHORIZED', 'unknown API key');
    Object.assign(req, { account: key.account, keyRole: key.role } satisfies Authed);
    next();
  };
}

/** Only admin keys (the bootstrap key) manage accounts and keys. */
export const requireAdmin: RequestHandler = (req, _res, next) => {
  if (roleOf(req) !== 'admin') throw new BoxdError('FORBIDDEN', 'only an admin key (BOXD_API_KEY) manages accounts and keys');
  next();
};

/**
 * Box-scoped keys (handed to an agent inside a box) reach boxes and the read-only catalogue
 * (goldens, pool) only: no hooks, tasks, snapshots listing, accounts or keys.
 */
export const limitBoxKeys: RequestHandler = (req, _res, next) => {
  if (roleOf(req) !== 'box') return next();
  const p = req.path;
  const allowed = p === '/boxes' || p.startsWith('/boxes/') || (req.method === 'GET' && (p === '/goldens' || p === '/pool'));
  if (!allowed) throw new BoxdError('FORBIDDEN', 'a box-scoped key may only create, fork, exec in, use files of and destroy boxes');
  next();
};
