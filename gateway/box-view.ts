import { goldenDisplayName } from '../core/account-goldens.ts';
import type { BoxRecord } from '../core/boxes.ts';
import type { BoxJson } from '../sdk/types.ts';
import type { Urls } from './urls.ts';

/** A box as the API shows it: the SDK's wire type, so the two cannot drift. */
export type { BoxJson };

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
