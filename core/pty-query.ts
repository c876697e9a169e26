import { BoxdError } from './errors.ts';

/**
 * The query of a terminal request (`?cols=&rows=&cmd=…`), read the same way by the gateway's
 * public route and the host agent's. Without `cmd`, `defaultCmd` runs; with none given either,
 * INVALID_REQUEST.
 */
export function parsePtyQuery(q: URLSearchParams, defaultCmd?: string[]): { cols: number; rows: number; cmd: string[] } {
  const dim = (key: string, def: number) => {
    const raw = q.get(key);
    if (raw === null || raw === '') return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 1000) throw new BoxdError('INVALID_REQUEST', `${key} must be an integer from 1 to 1000`);
    return n;
  };
  const given = q.getAll('cmd');
  if (given.some((c) => c.length > 4096) || given.length > 256) throw new BoxdError('INVALID_REQUEST', 'cmd is too long');
  const cmd = given.length ? given : defaultCmd ?? [];
  if (!cmd.length || !cmd[0]) throw new BoxdError('INVALID_REQUEST', 'cmd must name a program');
  return { cols: dim('cols', 80), rows: dim('rows', 24), cmd };
}
