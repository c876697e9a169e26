/**
 * Placement follows deletes at once: two hosts in this process with room for one tiny box each,
 * a gateway, real Redis and Docker. Periodic heartbeats are a minute apart (and a host counts as
 * dead only after ten), so only the beat a host writes when its boxes change can tell the
 * gateway that a delete made room. A create right after a delete on the full cluster is placed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { loadConfig, type Config } from '../core/config.ts';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { startHost, type HostHandle } from '../host/host.ts';
import { log, purge, testConfig, waitFor } from './helpers.ts';

describe('capacity follows creates and deletes without waiting for the periodic heartbeat (real Docker, real Redis)', { timeout: 240_000 }, () => {
  let config: Config;
  const hosts: HostHandle[] = [];
  const ids = { a: '', b: '' };
  let gw: Gateway;
  let api: ReturnType<typeof supertest>;
  let auth: { Authorization: string };
  const hostOf = async (name: string) => (await gw.store.require(name)).hostId;

  before(async () => {
    const timing = { BOXD_HEARTBEAT_MS: '60000', BOXD_HOST_DEAD_MS: '600000', BOXD_IDLE_TIMEOUT_MS: '0' };
    config = testConfig({ ...timing, BOXD_OVERCOMMIT: '1', BOXD_CPU_OVERCOMMIT: '1', BOXD_BOX_CPUS: '1', BOXD_BOX_MEMORY_MB: '512' });
    ids.a = `${config.BOXD_PREFIX}-a`;
    ids.b = `${config.BOXD_PREFIX}-b`;
    // Each host fits exactly one tiny box (1 cpu / 512 MiB).
    for (const [id, addr] of [[ids.a, '127.0.0.4'], [ids.b, '127.0.0.5']] as const) {
      const c = loadConfig({ ...process.env, ...asEnv(config), BOXD_HOST_ID: id, BOXD_HOST_ADDR: addr, BOXD_HOST_CPUS: '1', BOXD_HOST_MEMORY_MB: '600' });
      hosts.push(await startHost(c, log));
    }
    gw = await createGateway(config, log);
    api = supertest(gw.server);
    auth = { Authorization: `Bearer ${config.BOXD_API_KEY}` };
    await waitFor(async () => (await gw.hosts.aliveHosts()).filter((h) => h.goldens?.includes('tiny')).length === 2, 30_000, 200);
  });

  after(async () => {
    await gw?.close();
    for (const h of hosts) await h.close().catch(() => undefined);
    if (config) await purge(config.BOXD_PREFIX);
  });

  it('fills both hosts, refuses a third box, and places a create made right after a delete', async () => {
    const one = await api.post('/v1/boxes').set(auth).send({ name: 'one', golden: 'tiny' });
    assert.equal(one.status, 201, JSON.stringify(one.body));
    const two = await api.post('/v1/boxes').set(auth).send({ name: 'two', golden: 'tiny' });
    assert.equal(two.status, 201, JSON.stringify(two.body));
    assert.deepEqual([await hostOf('one'), await hostOf('two')].sort(), [ids.a, ids.b].sort(), 'one box on each host');
    const committed = Object.fromEntries((await gw.hosts.aliveHosts()).map((h) => [h.id, h.committed?.cpus]));
    assert.deepEqual(committed, { [ids.a]: 1, [ids.b]: 1 }, 'both heartbeats already count their box');

    const full = await api.post('/v1/boxes').set(auth).send({ name: 'three', golden: 'tiny' });
    assert.equal(full.status, 503, JSON.stringify(full.body));
    assert.equal(full.body.error.code, 'NO_CAPACITY');

    // Each round frees one host and creates at once: the freed host, and only it, takes the box.
    let gone = 'one';
    for (const next of ['three', 'four', 'five']) {
      const freed = await hostOf(gone);
      await api.delete(`/v1/boxes/${gone}`).set(auth).expect(204);
      const made = await api.post('/v1/boxes').set(auth).send({ name: next, golden: 'tiny' });
      assert.equal(made.status, 201, `create right after deleting ${gone}: ${JSON.stringify(made.body)}`);
      assert.equal(await hostOf(next), freed, 'placed on the host the delete freed');
      gone = next;
    }
    const again = await api.post('/v1/boxes').set(auth).send({ name: 'six', golden: 'tiny' });
    assert.equal(again.status, 503, 'still full: no delete was counted twice');
    for (const n of ['two', 'five']) await api.delete(`/v1/boxes/${n}`).set(auth).expect(204);
  });

  it('spreads a burst of creates over the hosts with room, and refuses what does not fit', async () => {
    const names = ['p1', 'p2', 'p3'];
    const made = await Promise.all(names.map((name) => api.post('/v1/boxes').set(auth).send({ name, golden: 'tiny' })));
    const statuses = made.map((r) => r.status).sort();
    assert.deepEqual(statuses, [201, 201, 503], JSON.stringify(made.map((r) => r.body)));
    const placed = names.filter((_, i) => made[i]!.status === 201);
    assert.deepEqual((await Promise.all(placed.map(hostOf))).sort(), [ids.a, ids.b].sort(), 'one on each host');
    for (const n of placed) await api.delete(`/v1/boxes/${n}`).set(auth).expect(204);
    // Both hosts beat their deletes: the cluster is empty again without a periodic beat.
    const committed = Object.fromEntries((await gw.hosts.aliveHosts()).map((h) => [h.id, h.committed?.cpus]));
    assert.deepEqual(committed, { [ids.a]: 0, [ids.b]: 0 });
  });
});

function asEnv(c: Config): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(c)) if (v !== undefined) out[k] = String(v);
  return out;
}
