/**
 * Issue 10 bench, in one run (BENCH_N, default 10; golden `default`):
 * - create → first exec answered: from the warm pool vs a cold create, split into its parts
 *   (create answer, exec answer, the API's own job round trip, Redis, and `docker exec` itself);
 * - the same from an account's own golden (promoted from a box) vs the operator's golden;
 * - fork of a running box with a small change and with a 100 MB change: pool path (parent's
 *   overlay diff copied onto a pooled box) vs commit path (docker commit + cold create);
 * - snapshot of a small change: boxd's freeze + commit vs `docker commit` with its own pause;
 * - prototype: a supervisor in the box over a bind-mounted unix socket vs `docker exec`.
 * `npm run bench:pool`.
 */
import Docker from 'dockerode';
import { loadDefinitions } from '../golden-images/definitions.ts';
import { benchStack } from './stack.ts';
import { median, pct, row, time } from './stats.ts';
import { benchSupervisor } from './supervisor.ts';

const N = Number(process.env.BENCH_N ?? 10);
const golden = 'default';
const image = loadDefinitions('golden-images').goldens.get(golden)!.tag;
const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const stack = await benchStack('benchp', { BOXD_POOL: 'true', BOXD_POOL_FILL_MS: '200', BOXD_IDLE_TIMEOUT_MS: '0' });
const { api, config, gateway } = stack;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const poolReady = async (g: string, owner?: string) =>
  ((await api('GET', '/v1/pool')) as { pools: { golden: string; ready: number; owner?: string }[] }).pools.find((p) => p.golden === g && p.owner === owner)?.ready ?? 0;
const waitPool = async (g: string, owner?: string) => {
  for (let w = 0; w < 600 && (await poolReady(g, owner)) < 1; w++) await sleep(100);
};
const out: string[] = [];
const w = [44, 9, 9];
const line = (label: string, xs: number[]) => out.push(row([label, median(xs), pct(xs, 95)], w));

try {
  // --- create → first exec -------------------------------------------------------------------
  const firstExec = async (name: string, body: object) => {
    let pooled = false;
    const create = await time(async () => (pooled = !!((await api('POST', '/v1/boxes', { name, ...body })) as { pooled?: boolean }).pooled));
    const exec = await time(() => api('POST', `/v1/boxes/${name}/exec`, { cmd: ['true'] }));
    return { create, exec, total: create + exec, pooled };
  };
  const pool = { create: [] as number[], exec: [] as number[], total: [] as number[], hits: 0 };
  const cold = { create: [] as number[], exec: [] as number[], total: [] as number[] };
  const floor: number[] = [];
  const noop: number[] = [];
  const ping: number[] = [];
  await waitPool(golden);
  await firstExec('warmup', { golden }); // first calls open queues and connections
  for (let i = 0; i < N; i++) {
    await waitPool(golden);
    const p = await firstExec(`w${i}`, { golden });
    pool.create.push(p.create), pool.exec.push(p.exec), pool.total.push(p.total), (pool.hits += p.pooled ? 1 : 0);
    // Declaring ports skips the pool: a cold create of the same image.
    const c = await firstExec(`c${i}`, { golden, ports: [3000, 8080] });
    cold.create.push(c.create), cold.exec.push(c.exec), cold.total.push(c.total);
    // The parts: a job that does nothing on the host (resume of a running box), Redis, docker exec.
    noop.push(await time(() => api('POST', `/v1/boxes/w${i}/resume`)));
    ping.push(await time(() => gateway.redis.ping()));
    const id = (await gateway.store.require(`w${i}`)).runtimeId!;
    floor.push(await time(async () => {
      const e = await docker.getContainer(id).exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
      const s = await e.start({ hijack: true, stdin: false });
      await new Promise((r) => s.on('end', r).resume());
      await e.inspect();
    }));
    await api('DELETE', `/v1/boxes/w${i}`);
    await api('DELETE', `/v1/boxes/c${i}`);
  }
  await api('DELETE', '/v1/boxes/warmup');

  // --- own golden vs operator golden -----------------------------------------------------------
  await api('POST', '/v1/boxes', { name: 'prep', golden });
  await api('POST', '/v1/boxes/prep/exec', { cmd: ['bash', '-c', "printf '#!/bin/sh\\necho ok\\n' > /usr/local/bin/mytool && chmod 755 /usr/local/bin/mytool"] });
  await api('POST', '/v1/goldens', { name: 'mine', fromBox: 'prep', poolSize: 2 });
  await api('DELETE', '/v1/boxes/prep');
  const own: number[] = [];
  let ownHits = 0;
  for (let i = 0; i < N; i++) {
    await waitPool('mine', 'account');
    const p = await firstExec(`o${i}`, { golden: 'mine' });
    own.push(p.total);
    ownHits += p.pooled ? 1 : 0;
    await api('DELETE', `/v1/boxes/o${i}`);
  }
  await api('DELETE', '/v1/goldens/mine');

  // --- forks -----------------------------------------------------------------------------------
  await api('POST', '/v1/boxes', { name: 'pp', golden });
  // Ports of its own: no pool box fits it, so its forks take the commit path.
  await api('POST', '/v1/boxes', { name: 'cp', golden, ports: [3000] });
  const small = 'mkdir -p /workspace/src && for i in $(seq 1 50); do head -c 1024 /dev/urandom > /workspace/src/f$i; done && rm -f /etc/issue && chmod 600 /etc/shells';
  const big = 'head -c 100M /dev/urandom > /workspace/blob.bin';
  const forks = async (parent: string, k: number, origin: string) => {
    const xs: number[] = [];
    for (let i = 0; i < k; i++) {
      if (origin === 'fork-pool') await waitPool(golden);
      let got = '';
      xs.push(await time(async () => (got = ((await api('POST', `/v1/boxes/${parent}/fork`, { name: `${parent}-f${i}` })) as { origin: string }).origin)));
      if (got !== origin) throw new Error(`fork of ${parent} took ${got}, expected ${origin}`);
      await api('DELETE', `/v1/boxes/${parent}-f${i}`);
    }
    return xs;
  };
  for (const b of ['pp', 'cp']) await api('POST', `/v1/boxes/${b}/exec`, { cmd: ['bash', '-c', small] });
  const smallPool = await forks('pp', N, 'fork-pool');
  const smallCommit = await forks('cp', N, 'fork-commit');
  for (const b of ['pp', 'cp']) await api('POST', `/v1/boxes/${b}/exec`, { cmd: ['bash', '-c', big] });
  const bigPool = await forks('pp', N, 'fork-pool');
  const bigCommit = await forks('cp', N, 'fork-commit');

  // --- snapshots of a small change -------------------------------------------------------------
  await api('POST', '/v1/boxes', { name: 'sp', golden, ports: [3000] });
  await api('POST', '/v1/boxes/sp/exec', { cmd: ['bash', '-c', small] });
  const spId = (await gateway.store.require('sp')).runtimeId!;
  const snapApi: number[] = [];
  const snapDocker: number[] = [];
  const snapFrozen: number[] = [];
  for (let i = 0; i < N; i++) {
    snapApi.push(await time(() => api('POST', '/v1/boxes/sp/snapshot', { snapshot: `s${i}` })));
    await api('DELETE', `/v1/snapshots/s${i}`);
    const repo = `boxd-test/${config.BOXD_PREFIX}-snap`;
    snapDocker.push(await time(() => docker.getContainer(spId).commit({ repo, tag: `p${i}`, pause: true })));
    await stack.host.runtime.suspend(spId);
    snapFrozen.push(await time(() => docker.getContainer(spId).commit({ repo, tag: `f${i}`, pause: false })));
    await stack.host.runtime.resume(spId);
    await docker.getImage(`${repo}:p${i}`).remove().catch(() => undefined);
    await docker.getImage(`${repo}:f${i}`).remove().catch(() => undefined);
  }

  // --- supervisor prototype --------------------------------------------------------------------
  const sup = await benchSupervisor(image, { 'boxd.managed': 'true', 'boxd.instance': config.BOXD_PREFIX }, Math.max(N, 20));

  out.push(`\nboxd bench:pool, golden "${golden}", N=${N} (ms; 2 shared cores, machine loaded by other work)\n`);
  out.push(row(['', 'p50', 'p95'], w));
  out.push('create → first exec answered');
  line(`  warm pool total (${pool.hits}/${N} from the pool)`, pool.total);
  line('    create answer (claim + resume)', pool.create);
  line('    first exec answer', pool.exec);
  line('  cold create total', cold.total);
  line('    create answer', cold.create);
  line('    first exec answer', cold.exec);
  line('  own golden, pool total' + ` (${ownHits}/${N})`, own);
  out.push('  parts of an answer');
  line('    API job that does nothing (resume running)', noop);
  line('    Redis PING', ping);
  line('    docker exec `true` (dockerode, floor)', floor);
  out.push('fork of a running box');
  line('  small change, pool path', smallPool);
  line('  small change, commit path', smallCommit);
  line('  100 MB change, pool path', bigPool);
  line('  100 MB change, commit path', bigCommit);
  out.push('snapshot of a small change');
  line('  API (freeze, commit without pause)', snapApi);
  line('  docker commit, pause: true', snapDocker);
  line('  docker commit of a frozen box, pause: false', snapFrozen);
  out.push('prototype: run `true` in a box');
  line('  supervisor over a unix socket', sup.socket);
  line('  docker exec', sup.dockerExec);
  out.push('');
  out.push(`pool/cold create→first exec p50: ${(median(pool.total) / median(cold.total)).toFixed(2)}x`);
  out.push(`own golden / operator golden p50: ${(median(own) / median(pool.total)).toFixed(2)}x`);
  out.push(`fork pool/commit p50: small ${(median(smallPool) / median(smallCommit)).toFixed(2)}x, 100 MB ${(median(bigPool) / median(bigCommit)).toFixed(2)}x`);
  out.push(`supervisor/docker exec p50: ${(median(sup.socket) / median(sup.dockerExec)).toFixed(3)}x`);
  console.log(out.join('\n'));
} finally {
  await stack.close();
}
