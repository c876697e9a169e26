import { Router } from 'express';
import { randomBytes } from 'node:crypto';
import { newPreviewToken, type Accounts } from '../core/accounts.ts';
import type { Redis } from 'ioredis';
import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import type { GoldenInfo } from '../host/goldens.ts';
import { claimPooled } from '../pool/claim.ts';
import { samePolicy } from '../core/network-policy.ts';
import type { HostClient } from '../core/host-client.ts';
import { forkImage, type Snapshots } from '../core/snapshots.ts';
import { BoxdError } from '../core/errors.ts';
import type { HostAgents } from './host-agents.ts';
import { accountOf } from './auth.ts';
import { agentEnv, isAgentEnv } from './agent-env.ts';
import { boxJson } from './box-view.ts';
import { forkBody, parse, parseName, snapshotBody } from './schemas.ts';
import type { SnapshotInfo } from '../sdk/types.ts';
import type { Urls } from './urls.ts';

/** `/v1/boxes/:name/fork`, `/v1/boxes/:name/snapshot`, `/v1/snapshots…`. */
export interface ForkApiDeps {
  store: BoxStore;
  accounts: Accounts;
  hosts: HostClient;
  snapshots: Snapshots;
  urls: Urls;
  /** With a pool source, forks of boxes whose golden has a warm pool take a pooled box. */
  pool?: { redis: Redis; prefix: string; golden: (key: string) => Promise<GoldenInfo | undefined> };
  /** For forks of agent boxes (each child gets its own box-scoped key). */
  redis?: Redis;
  prefix?: string;
  /** With agents, a fork whose parent's host is full goes to another host (the image moves there). */
  agents?: HostAgents;
}

/**
 * Which fork path a parent takes. A pool box can take the parent's changes only if it runs the
 * very image the parent was made from with the same ports, limits, disk and egress policy: boxes made from a golden
 * (claimed or cold) and forks made from the pool. Boxes from an image, a snapshot or a commit
 * fork, or with ports of their own, take the commit path.
 */
export function poolFor(parent: BoxRecord, g: GoldenInfo | undefined): GoldenInfo | undefined {
  if (!g || g.poolSize <= 0 || g.tag !== parent.imageRef) return undefined;
  if (parent.cpus !== g.cpus || parent.memoryMb !== g.memoryMb) return undefined;
  if (parent.diskMb !== g.diskMb || !samePolicy(parent.network, g.network)) return undefined;
  if (parent.ports.length !== g.ports.length || parent.ports.some((p, i) => p !== g.ports[i])) return undefined;
  return g;
}

export function forkApi(d: ForkApiDeps): Router {
  const r = Router();

  r.post('/boxes/:name/fork', async (req, res) => {
    const account = accountOf(req);
    const parent = await d.store.require(parseName(req.params.name), account);
    const body = parse(forkBody, req.body);
    const child = body.name ?? `${parent.name.slice(0, 50)}-${randomBytes(3).toString('hex')}`;
    const preview = parent.public ? undefined : newPreviewToken();
    // A fork of an agent box is an agent box with its own key (the parent's dies with the parent).
    const agent = isAgentEnv(parent.env) && d.redis && d.prefix ? await agentEnv({ redis: d.redis, accounts: d.accounts, prefix: d.prefix }, parent.hostId, account, child) : undefined;
    const limit = await d.accounts.maxBoxes(account);
    const extra = preview ? { previewToken: preview.token } : {};

    const g = d.pool && parent.golden ? poolFor(parent, await d.pool.golden(parent.golden)) : undefined;
    if (d.pool && g) {
      const now = Date.now();
      // The pool box must be on the parent's host: that is where the parent's filesystem is.
      const got = await claimPooled(d.pool.redis, d.pool.prefix, {
        hostId: parent.hostId, golden: g.name, name: child, account, limit,
        fields: {
          env: agent ? { ...parent.env, ...agent.env } : parent.env, idleTimeoutMs: parent.idleTimeoutMs, public: parent.public, tokenHash: preview?.tokenHash,
          parent: parent.name, origin: 'fork-pool', createdAt: now, lastActivityAt: now,
        },
      });
      if (got) {
        void d.hosts.enqueue(parent.hostId, { op: 'pool-fill', golden: g.name }).catch(() => undefined);
        try {
          await d.hosts.call(parent.hostId, { op: 'fork-pool', name: parent.name, child });
        } catch (e) {
          await d.hosts.call(parent.hostId, { op: 'destroy', name: child }).catch(() => undefined);
          await agent?.undo();
          throw e;
        }
        res.status(201).json({ ...boxJson(await d.store.require(child), d.urls), ...extra });
        return;
      }
    }
    // The child lives on the parent's host (that is where the parent's filesystem is), unless
    // that host is full and another can take it: then it is committed there, moved, made here.
    const elsewhere = await otherHost(d, parent, child);
    if (elsewhere) {
      await forkElsewhere(d, parent, child, account, elsewhere, { limit, tokenHash: preview?.tokenHash, env: agent ? { ...parent.env, ...agent.env } : parent.env }).catch(async (e: unknown) => {
        await agent?.undo();
        throw e;
      });
      res.status(201).json({ ...boxJson(await d.store.require(child), d.urls), ...extra });
      return;
    }
    await d.store.create(
      {
        name: child,
        account,
        golden: parent.golden,
        image: parent.image,
        snapshot: parent.snapshot,
        imageRef: '',
        ports: parent.ports,
        public: parent.public,
        tokenHash: preview?.tokenHash,
        parent: parent.name,
        env: agent ? { ...parent.env, ...agent.env } : parent.env,
        idleTimeoutMs: parent.idleTimeoutMs,
        cpus: parent.cpus,
        memoryMb: parent.memoryMb,
        diskMb: parent.diskMb,
        network: parent.network,
        hostId: parent.hostId,
      },
      limit,
    ).catch(async (e: unknown) => {
      await agent?.undo();
      throw e;
    });
    try {
      await d.hosts.call(parent.hostId, { op: 'fork', name: parent.name, child });
    } catch (e) {
      await d.store.remove(child).catch(() => undefined);
      throw e;
    }
    res.status(201).json({ ...boxJson(await d.store.require(child), d.urls), ...extra });
  });

  r.post('/boxes/:name/snapshot', async (req, res) => {
    const account = accountOf(req);
    const box = await d.store.require(parseName(req.params.name), account);
    const { snapshot } = parse(snapshotBody, req.body);
    const record = {
      name: snapshot,
      account,
      image: d.snapshots.imageFor(account, snapshot),
      box: box.name,
      hostId: box.hostId,
      ports: box.ports,
      golden: box.golden,
      createdAt: Date.now(),
    };
    await d.snapshots.reserve(record, (await d.accounts.accountLimits(account)).maxSnapshots);
    try {
      await d.hosts.call(box.hostId, { op: 'snapshot', name: box.name, snapshot, account });
    } catch (e) {
      await d.snapshots.remove(account, snapshot);
      throw e;
    }
    res.status(201).json({ snapshot: snapshotJson(record) });
  });

  r.get('/snapshots', async (req, res) => {
    res.json({ snapshots: (await d.snapshots.list(accountOf(req))).map(snapshotJson) });
  });

  r.delete('/snapshots/:snapshot', async (req, res) => {
    const account = accountOf(req);
    const { snapshot } = parse(snapshotBody, { snapshot: req.params.snapshot }, 'snapshot name');
    const s = await d.snapshots.require(account, snapshot);
    await d.snapshots.remove(account, snapshot);
    // The image goes now if no box uses it, else with the last box made from it; on every live
    // host, since copies of it may have been moved to others (images across hosts).
    const hosts = new Set([s.hostId, ...(await d.hosts.aliveHosts()).map((h) => h.id)]);
    await Promise.all([...hosts].map((h) => d.hosts.call(h, { op: 'deleteSnapshot', snapshot, account }).catch(() => undefined)));
    res.status(204).end();
  });

  return r;
}

function snapshotJson(s: { name: string; box: string; ports: number[]; golden?: string; createdAt: number }): SnapshotInfo {
  return { name: s.name, box: s.box, ports: s.ports, golden: s.golden, createdAt: new Date(s.createdAt).toISOString() };
}

/**
 * Another host for a fork when the parent's host has no room for the child: undefined when the
 * parent's host has room, or when no other live host does either (the fork then stays on the
 * parent's host as before, within its overcommit).
 */
async function otherHost(d: ForkApiDeps, parent: BoxRecord, child: string): Promise<string | undefined> {
  if (!d.agents || !d.prefix) return undefined;
  const need = { cpus: parent.cpus, memoryMb: parent.memoryMb };
  const alive = (await d.hosts.aliveHosts()).map((h) => h.id);
  if (alive.length < 2 || !alive.includes(parent.hostId)) return undefined;
  try {
    await d.hosts.pickHost({ ...need, exclude: alive.filter((h) => h !== parent.hostId) }, { probe: true });
    return undefined;
  } catch (e) {
    if (!(e instanceof BoxdError) || e.code !== 'NO_CAPACITY') return undefined;
  }
  return d.hosts.pickHost({ ...need, exclude: [parent.hostId] }, { box: child }).catch(() => undefined);
}

/**
 * A fork on another host: the parent's host commits it to the child's fork image, the image is
 * streamed agent to agent (HostAgents.ensureImage), the child is created on `hostId` from it,
 * and the parent's host drops its copy. On failure the record and both copies go.
 */
async function forkElsewhere(
  d: ForkApiDeps,
  parent: BoxRecord,
  child: string,
  account: string,
  hostId: string,
  o: { limit: number; tokenHash?: string; env: Record<string, string> },
): Promise<void> {
  const image = forkImage(d.prefix!, account, child);
  // The child was placed on `hostId` (otherHost); if its record is refused, that placement ends here.
  await d.store.create(
    {
      name: child, account, golden: parent.golden, image: parent.image, snapshot: parent.snapshot, imageRef: image, origin: 'fork-commit',
      ports: parent.ports, public: parent.public, tokenHash: o.tokenHash, parent: parent.name, env: o.env, idleTimeoutMs: parent.idleTimeoutMs,
      cpus: parent.cpus, memoryMb: parent.memoryMb, diskMb: parent.diskMb, network: parent.network, hostId,
    },
    o.limit,
  ).catch((e: unknown) => {
    d.hosts.unplace(hostId, child);
    throw e;
  });
  let made = false;
  try {
    await d.hosts.call(parent.hostId, { op: 'fork-image', name: parent.name, child, account });
    await d.agents!.ensureImage(image, hostId, [parent.hostId]);
    await d.hosts.call(hostId, { op: 'create', name: child });
    made = true;
  } catch (e) {
    await d.store.remove(child).catch(() => undefined);
    if (!made) await d.hosts.call(parent.hostId, { op: 'drop-image', image }).catch(() => undefined);
    await d.hosts.call(hostId, { op: 'drop-image', image }).catch(() => undefined);
    throw e;
  }
  // The child runs from its own host's copy (which goes with the child); the parent's host's goes now.
  if (made) await d.hosts.call(parent.hostId, { op: 'drop-image', image }).catch(() => undefined);
}
