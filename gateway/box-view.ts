import { goldenDisplayName } from '../core/account-goldens.ts';
import type { BoxOrigin, BoxRecord, BoxState } from '../core/boxes.ts';
import type { Urls } from './urls.ts';
import type { NetworkPolicy } from '../core/network-policy.ts';

/** A box as the API shows it. */
export interface BoxJson {
  name: string;
  state: BoxState;
  golden?: string;
  image?: string;
  snapshot?: string;
  url: string | null;
  urls: Record<string, string>;
  ports: number[];
  public: boolean;
  parent?: string;
  idleTimeoutMs: number;
  /** Disk quota in MiB, when the box asked for one (else the host's default applies). */
  diskMb?: number;
  network: NetworkPolicy;
  createdAt: string;
  lastActivityAt: string;
  error?: string;
  /** `pool`, `fork-pool` or `fork-commit` when the box was not a plain create. */
  origin?: BoxOrigin;
}

export function boxJson(box: BoxRecord, urls: Urls): BoxJson {
  const out: BoxJson = {
    name: box.name,
    state: box.state,
    url: box.ports.length ? urls.box(box.name) : null,
    urls: Object.fromEntries(box.ports.map((p, i) => [String(p), i === 0 ? urls.box(box.name) : urls.port(box.name, p)])),
    ports: box.ports,
    public: box.public,
    idleTimeoutMs: box.idleTimeoutMs,
    network: box.network ?? 'open',
    createdAt: new Date(box.createdAt).toISOString(),
    lastActivityAt: new Date(box.lastActivityAt).toISOString(),
  };
  if (box.golden) out.golden = goldenDisplayName(box.golden);
  if (box.image) out.image = box.image;
  if (box.snapshot) out.snapshot = box.snapshot;
  if (box.parent) out.parent = box.parent;
  if (box.error) out.error = box.error;
  if (box.origin) out.origin = box.origin;
  if (box.diskMb !== undefined) out.diskMb = box.diskMb;
  return out;
}
