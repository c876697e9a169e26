import { Router } from 'express';
import { z } from 'zod';
import { accountGoldenKey, type AccountGolden, type AccountGoldens } from '../core/account-goldens.ts';
import type { BoxStore } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import { BoxdError, LimitError } from '../core/errors.ts';
import type { HostClient } from '../core/host-client.ts';
import type { Snapshots } from '../core/snapshots.ts';
import type { GoldenInfo } from '../host/goldens.ts';
import { accountOf } from './auth.ts';
import { goldenName, parse, parseName } from './schemas.ts';

export const goldenBody = z
  .object({
    name: goldenName,
    fromBox: z.string().min(1).max(63).optional(),
    fromSnapshot: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'not a snapshot name').optional(),
    poolSize: z.number().int().min(0).max(50).default(1),
    ports: z.array(z.number().int().min(1).max(65535)).max(16).optional(),
    idleTimeoutMs: z.number().int().min(0).max(7 * 24 * 3600 * 1000).optional(),
  })
  .strict()
  .refine((b) => (b.fromBox === undefined) !== (b.fromSnapshot === undefined), 'give exactly one of fromBox and fromSnapshot');

export interface GoldensApiDeps {
  config: Config;
  store: BoxStore;
  hosts: HostClient;
  snapshots: Snapshots;
  accountGoldens: AccountGoldens;
  /** The operator's goldens (golden-images/), as published by hosts. */
  goldens: () => Promise<Map<string, GoldenInfo>>;
}

/**
 * `/v1/goldens`: the operator's goldens plus the account's own. An account promotes one of its
 * boxes (committed, like a snapshot) or snapshots (tagged, no copy) to a golden with a warm pool
 * on the host that holds the image. Pooled boxes are the host's until claimed: they do not count
 * as the account's live boxes, but an account keeps at most BOXD_ACCOUNT_POOL_MAX of them warm
 * over all its goldens. Deleting a golden drains its pool; boxes already made from it live on.
 */
export function goldensApi(d: GoldensApiDeps): Router {
  const r = Router();

  r.get('/goldens', async (req, res) => {
    const operator = [...(await d.goldens()).values()].map(({ hostId: _h, ...g }) => ({ ...g, owner: 'operator' as const }));
    const own = (await d.accountGoldens.list(accountOf(req))).map(goldenJson);
    res.json({ goldens: [...operator, ...own] });
  });

  r.post('/goldens', async (req, res) => {
    const account = accountOf(req);
    const body = parse(goldenBody, req.body);
    if ((await d.goldens()).has(body.name)) throw new BoxdError('GOLDEN_EXISTS', `"${body.name}" is an operator golden; pick another name`);
    const mine = await d.accountGoldens.list(account);
    const warm = mine.reduce((n, g) => n + g.poolSize, 0);
    if (warm + body.poolSize > d.config.BOXD_ACCOUNT_POOL_MAX) {
      throw new LimitError(`account "${account}" may keep ${d.config.BOXD_ACCOUNT_POOL_MAX} pooled boxes over its goldens (${warm} in use)`);
    }
    const image = d.accountGoldens.imageFor(account, body.name);
    const base = { name: body.name, account, key: accountGoldenKey(account, body.name), image, poolSize: body.poolSize, createdAt: Date.now(), ready: false };
    let golden: AccountGolden;
    let job: Parameters<HostClient['call']>[1];
    if (body.fromBox) {
      const box = await d.store.require(parseName(body.fromBox), account);
      golden = {
        ...base, hostId: box.hostId, ports: body.ports ?? box.ports, idleTimeoutMs: body.idleTimeoutMs ?? box.idleTimeoutMs,
        cpus: box.cpus, memoryMb: box.memoryMb, diskMb: box.diskMb, network: box.network, from: { box: box.name },
      };
      job = { op: 'golden-commit', name: box.name, image };
    } else {
      const snap = await d.snapshots.require(account, body.fromSnapshot!);
      golden = {
        ...base, hostId: snap.hostId, ports: body.ports ?? snap.ports, idleTimeoutMs: body.idleTimeoutMs ?? d.config.BOXD_IDLE_TIMEOUT_MS,
        cpus: d.config.BOXD_BOX_CPUS, memoryMb: d.config.BOXD_BOX_MEMORY_MB, from: { snapshot: snap.name },
      };
      job = { op: 'golden-tag', from: snap.image, image };
    }
    await d.accountGoldens.reserve(golden);
    try {
      await d.hosts.call(golden.hostId, job);
    } catch (e) {
      await d.accountGoldens.remove(golden.key);
      throw e;
    }
    golden.ready = true;
    await d.accountGoldens.save(golden);
    await d.hosts.enqueue(golden.hostId, { op: 'pool-fill', golden: golden.key }).catch(() => undefined);
    res.status(201).json(goldenJson(golden));
  });

  r.delete('/goldens/:name', async (req, res) => {
    const account = accountOf(req);
    const name = parse(goldenName, req.params.name, 'golden name');
    const g = await d.accountGoldens.get(accountGoldenKey(account, name));
    if (!g) {
      if ((await d.goldens()).has(name)) throw new BoxdError('FORBIDDEN', `"${name}" is an operator golden (golden-images/${name})`);
      throw new BoxdError('NOT_FOUND', `no golden "${name}" in this account`);
    }
    await d.accountGoldens.remove(g.key);
    // Its pool is on its host; copies of its image may be on any live host (images across hosts).
    const hosts = new Set([g.hostId, ...(await d.hosts.aliveHosts()).map((h) => h.id)]);
    await Promise.all([...hosts].map((h) => d.hosts.call(h, { op: 'golden-drop', golden: g.key, image: g.image }).catch(() => undefined)));
    res.status(204).end();
  });

  return r;
}

function goldenJson(g: AccountGolden) {
  return {
    name: g.name, tag: g.image, owner: 'account' as const, description: g.from.box ? `promoted from box ${g.from.box}` : `promoted from snapshot ${g.from.snapshot}`,
    poolSize: g.poolSize, ports: g.ports, cpus: g.cpus, memoryMb: g.memoryMb, idleTimeoutMs: g.idleTimeoutMs, built: g.ready,
    from: g.from, createdAt: new Date(g.createdAt).toISOString(),
  };
}
