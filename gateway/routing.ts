/**
 * Where a request goes, from its Host header alone. Pure: no I/O, tested as a table.
 *  - `<name>.<base>`         → box `name`, its first port
 *  - `<port>.<name>.<base>`  → box `name`, declared port `port`
 *  - `<base>`, `api.<base>`, `localhost`, an IP, anything else → the control API
 */
export type Target =
  | { kind: 'box'; box: string; port: number | null }
  | { kind: 'api' }
  | { kind: 'invalid'; reason: string };

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower-cases, drops the port and one trailing dot. Undefined for something that is no host name. */
export function canonicalHost(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  let host = raw.trim().toLowerCase();
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1) || undefined; // IPv6 literal
  const colon = host.lastIndexOf(':');
  if (colon >= 0) {
    const port = host.slice(colon + 1);
    if (!/^\d{0,5}$/.test(port)) return undefined;
    host = host.slice(0, colon);
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (!host || host.length > 253 || !/^[a-z0-9.-]+$/.test(host)) return undefined;
  return host;
}

export function resolveTarget(rawHost: string | undefined, baseDomain: string): Target {
  const host = canonicalHost(rawHost);
  if (host === undefined) return rawHost ? { kind: 'invalid', reason: 'malformed Host header' } : { kind: 'api' };
  const base = baseDomain.toLowerCase().replace(/\.$/, '');
  if (host === base || !host.endsWith(`.${base}`)) return { kind: 'api' };
  const labels = host.slice(0, -(base.length + 1)).split('.');
  if (labels.some((l) => !LABEL.test(l))) return { kind: 'invalid', reason: 'not a box host name' };
  if (labels.length === 1) {
    const [name] = labels as [string];
    return name === 'api' || name === 'www' ? { kind: 'api' } : { kind: 'box', box: name, port: null };
  }
  if (labels.length === 2 && /^\d{1,5}$/.test(labels[0]!)) {
    const port = Number(labels[0]);
    if (port < 1 || port > 65535) return { kind: 'invalid', reason: 'port out of range' };
    return { kind: 'box', box: labels[1]!, port };
  }
  return { kind: 'invalid', reason: 'not a box host name' };
}
