import { Router } from 'express';
import { randomBytes } from 'node:crypto';
import { newPreviewToken, type Accounts } from '../core/accounts.ts';
import type { BoxStore } from '../core/boxes.ts';
import type { HostClient } from '../core/host-client.ts';
import type { Snapshots } from '../core/snapshots.ts';
import type { Redis } from 'ioredis';
import { accountOf } from './auth.ts';
import { agentEnv, isAgentEnv } from './agent-env.ts';
import { boxJson } from './box-view.ts';
import { forkBody, parse, parseName, snapshotBody } from './schemas.ts';
import type { SnapshotInfo } from '../sdk/types.ts';
import type { Urls } from './urls.ts';

/** `/v1/boxes/:name/fork`, `/v1/boxes/:name/snapshot`, `/v1/snapshots…`. */
export function forkApi(d: { store: BoxStore; accounts: Accounts; hosts: HostClient; snapshots: Snapshots; urls: Urls; redis?: Redis; prefix?: string }): Router {
  const r = Router();

  r.post('/boxes/:name/fork', async (req, res) => {
    const account = accountOf(req);
    const parent = await d.store.require(parseName(req.params.name), account);
    const body = parse(forkBody, req.body);
    const child = body.name ?? `${parent.name.slice(0, 50)}-${randomBytes(3).toString('hex')}`;
    const preview = parent.public ? undefined : newPreviewToken();
    // A fork of an agent box is an agent box with its own key (the parent's dies with the parent).
    const agent = isAgentEnv(parent.env) && d.redis && d.prefix ? await agentEnv({ redis: d.redis, accounts: d.accounts, prefix: d.prefix }, parent.hostId, account, child) : undefined;
    // The child lives on the parent's host: that is where the parent's filesystem is.
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
      await d.accounts.maxBoxes(account),
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
    res.status(201).json({ ...boxJson(await d.store.require(child), d.urls), ...(preview ? { previewToken: preview.token } : {}) });
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
    // The image goes now if no box uses it, else with the last box made from it.
    await d.hosts.call(s.hostId, { op: 'deleteSnapshot', snapshot, account }).catch(() => undefined);
    res.status(204).end();
  });

  return r;
}

function snapshotJson(s: { name: string; box: string; ports: number[]; golden?: string; createdAt: number }): SnapshotInfo {
  return { name: s.name, box: s.box, ports: s.ports, golden: s.golden, createdAt: new Date(s.createdAt).toISOString() };
}
