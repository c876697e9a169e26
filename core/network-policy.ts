import { z } from 'zod';

/**
 * A box's egress policy, as the API and golden manifests spell it:
 * - `"open"` (default): the internet, but not the host, private/LAN ranges, link-local
 *   (cloud metadata) or other boxes;
 * - `"none"`: no new outbound connection at all (inbound preview traffic still works);
 * - `{ allow: ["10.0.0.0/8:443", "1.2.3.4/32", "5.6.7.8"] }`: only these IPv4 CIDRs, each
 *   optionally limited to one port (TCP and UDP).
 * Link-local (169.254.0.0/16) is refused under every policy.
 */
export type NetworkPolicy = 'open' | 'none' | { allow: string[] };

/** One parsed allowlist entry. */
export interface AllowRule {
  cidr: string;
  port?: number;
}

const ENTRY = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?(?::(\d{1,5}))?$/;

/** Parses `a.b.c.d[/len][:port]`; undefined when it is not one. The CIDR is normalised (host bits cleared). */
export function parseAllowEntry(entry: string): AllowRule | undefined {
  const m = ENTRY.exec(entry.trim());
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  if (octets.some((o) => o > 255)) return undefined;
  const len = m[5] === undefined ? 32 : Number(m[5]);
  if (len > 32) return undefined;
  const port = m[6] === undefined ? undefined : Number(m[6]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  const ip = octets.reduce((a, o) => (a * 256 + o) >>> 0, 0);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (ip & mask) >>> 0;
  const cidr = `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${len}`;
  return port === undefined ? { cidr } : { cidr, port };
}

const allowEntry = z
  .string()
  .max(64)
  .refine((s) => parseAllowEntry(s) !== undefined, 'not an IPv4 CIDR with an optional port, like 10.0.0.0/8:443 or 1.2.3.4/32');

export const networkPolicySchema: z.ZodType<NetworkPolicy, NetworkPolicy> = z.union([
  z.literal('open'),
  z.literal('none'),
  z.object({ allow: z.array(allowEntry).max(64, 'at most 64 allow entries') }).strict(),
]);

/** Two policies that install the same rules. */
export function samePolicy(a: NetworkPolicy | undefined, b: NetworkPolicy | undefined): boolean {
  return JSON.stringify(a ?? 'open') === JSON.stringify(b ?? 'open');
}

/**
 * Destinations `open` refuses: "this" network, RFC 1918, carrier-grade NAT, loopback,
 * link-local, IETF protocol assignments, the documentation and benchmarking ranges (often
 * used as lab LANs), multicast and reserved space.
 */
export const PRIVATE_RANGES = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '240.0.0.0/4',
];

/** Refused under every policy, allowlists included: instance metadata lives there. */
export const LINK_LOCAL = '169.254.0.0/16';
