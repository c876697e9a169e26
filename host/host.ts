import Docker from 'dockerode';
import type { Worker } from 'bullmq';
import { BoxStore } from '../core/boxes.ts';
import type { Config } from '../core/config.ts';
import { BoxdError } from '../core/errors.ts';
import type { HostJob } from '../core/jobs.ts';
import { HostSweeper } from '../core/sweeper.ts';
import { Heartbeat, hostCapacity } from './heartbeat.ts';
import type { Logger } from '../core/log.ts';
import { DockerRuntime } from './docker-runtime.ts';
import { publishGoldens, readGoldens } from './goldens.ts';
import { TaskRunner } from './task-runner.ts';
import { HookStore } from '../core/hooks.ts';
import { Accounts } from '../core/accounts.ts';
import { IdleSuspender } from './idle.ts';
import { Lifecycle } from './lifecycle.ts';
import { BoxLocks } from './locks.ts';
import { reconcile } from './reconcile.ts';
import { DriftWatch } from './drift.ts';
import { HostBoxIndex } from './box-index.ts';
import type { Runtime } from './runtime.ts';
import { startWorker } from './worker.ts';
import { startAgent, type AgentHandle } from './agent.ts';
import { clusterSecret } from '../core/secrets.ts';
import { forkImage, Snapshots } from '../core/snapshots.ts';
import { openApiDoor, type ApiDoor } from './api-door.ts';
import { fileURLToPath } from 'node:url';

/** `boxd` on PATH and the Python SDK it runs, bound read-only into boxes (see host/in-box/boxd). */
function inBoxBinds(): string[] {
  const at = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));
  return [`${at('../sdk/python/boxd')}:/opt/boxd/python/boxd:ro`, `${at('./in-box/boxd')}:/usr/local/bin/boxd:ro`];
}
import { WarmPool } from '../pool/warm-pool.ts';
import { AccountGoldens } from '../core/account-goldens.ts';
import { connectRedis } from '../core/redis.ts';

export interface HostHandle {
  lifecycle: Lifecycle;
  /** The data-plane endpoint gateways call. */
  agent: AgentHandle;
  runtime: Runtime;
  pool: WarmPool;
  idle: IdleSuspender;
  drift: DriftWatch;
  close(): Promise<void>;
}

/**
 * Starts a host: prepares the runtime, reconciles Docker with Redis, publishes the goldens,
 * heartbeats, runs the worker and the idle suspender. `close` stops taking jobs and waits for
 * the ones in flight.
 */
export async function startHost(config: Config, log: Logger, opts: { runtime?: Runtime; idleIntervalMs?: number } = {}): Promise<HostHandle> {
  const redis = connectRedis(config.REDIS_URL, { maxRetriesPerRequest: null });
  const workerConn = connectRedis(config.REDIS_URL, { maxRetriesPerRequest: null });
  for (const c of [redis, workerConn]) c.on('error', (err) => log.warn({ err: err.message }, 'redis error'));
  const prefix = config.BOXD_PREFIX;
  const hostId = config.BOXD_HOST_ID;
  let runtime = opts.runtime;
  let door: ApiDoor | undefined;
  const openDoor = async (dr: DockerRuntime) => {
    const [upHost, upPort] = (config.BOXD_BOX_API_UPSTREAM ?? `127.0.0.1:${config.BOXD_PORT}`).split(':') as [string, string];
    try {
      return await openApiDoor({
        bridge: await dr.bridgeAddress(), port: config.BOXD_BOX_API_PORT || config.BOXD_PORT, upstream: { host: upHost, port: Number(upPort) },
        redis, prefix, hostId, log: log.child({ part: 'api-door' }),
      });
    } catch (err) {
      log.warn({ err }, 'boxes cannot reach the API: agent boxes get no BOXD_URL');
      return undefined;
    }
  };
  if (!runtime) {
    const docker = new Docker({ socketPath: '/var/run/docker.sock' });
    const dr = new DockerRuntime(docker, {
      network: config.BOXD_NETWORK,
      ociRuntime: config.BOXD_OCI_RUNTIME,
      maxFileBytes: config.BOXD_MAX_FILE_BYTES,
      hostAddr: config.BOXD_HOST_ADDR,
      freezer: config.BOXD_FREEZER,
      prefix,
      stateDir: config.BOXD_STATE_DIR,
      egressDeny: config.BOXD_EGRESS_DENY,
      log: log.child({ part: 'runtime' }),
      binds: config.BOXD_BOX_CLI ? inBoxBinds() : undefined,
    });
    await dr.prepare();
    runtime = dr;
    door = await openDoor(dr);
  }
  const store = new BoxStore(redis, prefix);
  const locks = new BoxLocks();
  const snapshots = new Snapshots(redis, prefix);
  const accounts = new Accounts(redis, prefix, config.BOXD_MAX_BOXES);
  const accountGoldens = new AccountGoldens(redis, prefix);
  const lifecycle = new Lifecycle({
    store, runtime, redis, locks, prefix, hostId, pidsLimit: config.BOXD_BOX_PIDS, diskMb: config.BOXD_BOX_DISK_MB, snapshots, accountGoldens, log,
    revokeBoxKeys: (account, box) => accounts.revokeBoxKeys(account, box),
  });

  const hostLabels = { 'boxd.managed': 'true', 'boxd.instance': prefix, 'boxd.host': hostId };
  // The periodic passes read this host's boxes from memory, kept by box events (issue 11: a
  // thousand suspended boxes read every second stalled wakes).
  const indexConn = connectRedis(config.REDIS_URL, { maxRetriesPerRequest: null });
  indexConn.on('error', (err) => log.warn({ err: err.message }, 'redis error'));
  // A change to this host's boxes is a change to what it commits: the heartbeat follows soon
  // (declared below; the index reports changes only once started, after it exists).
  const index = new HostBoxIndex({ store, sub: indexConn, hostId, fullMs: config.BOXD_INDEX_FULL_MS, onChange: () => void heartbeat.soon(), log: log.child({ part: 'index' }) });
  const indexed = { summaries: async () => index.list() };
  const drift = new DriftWatch({
    store: { summaries: indexed.summaries, get: (n) => store.get(n), transition: (...a) => store.transition(...a) }, runtime, locks, labels: hostLabels, spec: (box) => lifecycle.spec(box), idOf: (box) => lifecycle.idOf(box), hostId,
    misnamed: (box) => lifecycle.misnamed(box), adopt: (name) => lifecycle.adoptName(name),
    log: log.child({ part: 'drift' }),
  });
  const goldens = await publishGoldens(redis, prefix, config.BOXD_GOLDEN_DIR, runtime);
  const reconcileNow = () =>
    reconcile({
      store,
      runtime,
      labels: hostLabels,
      spec: (box) => lifecycle.spec(box),
      idOf: (box) => lifecycle.idOf(box),
      runtimeName: (name) => lifecycle.runtimeName(name),
      adopt: (name) => lifecycle.adoptName(name),
      hostId,
      log,
    });
  let agentPort: number | undefined;
  // Reconcile before the first beat, so that a host seen alive again has taken its lost boxes
  // back. A sweeper that still saw the old heartbeat may lose one again in between: the next
  // beat sees it and reconciles again (onLost).
  const heartbeat = new Heartbeat({
    redis, store: indexed, runtime, prefix, hostId, goldens: () => goldens, log,
    capacity: hostCapacity(config.BOXD_HOST_CPUS, config.BOXD_HOST_MEMORY_MB),
    suspendedWeight: config.BOXD_SUSPENDED_WEIGHT,
    deadMs: config.BOXD_HOST_DEAD_MS,
    debounceMs: config.BOXD_HEARTBEAT_DEBOUNCE_MS,
    // Where gateways reach this host's agent (its port is known once the agent listens).
    extra: () => ({ addr: config.BOXD_HOST_ADDR, ...(agentPort ? { agentPort } : {}) }),
    // Back after being declared dead without a restart (a partition, a long pause): take the
    // boxes back, and drop containers of boxes deleted meanwhile.
    onLost: () => void locks.exclusive('\0reconcile', () => reconcileNow()).catch((err) => log.warn({ err }, 'reconcile after return failed')),
  });
  // Resolves once a heartbeat counts box `name` as it is now. A create or destroy answers only
  // then, so the gateway that asked (and any other) places the next box on what is really
  // committed; gateways count their own placements until then (core/host-client.ts).
  const counted = (name: string) => index.seen(name).then(() => heartbeat.soon());
  const agent = await startAgent({
    lifecycle,
    touch: (n) => store.touch(n),
    secret: clusterSecret(config),
    addr: config.BOXD_HOST_ADDR,
    port: config.BOXD_HOST_AGENT_PORT,
    maxFileBytes: config.BOXD_MAX_FILE_BYTES,
    log: log.child({ part: 'agent' }),
    prefix,
    images: {
      has: (ref) => runtime.hasImage(ref),
      save: runtime.saveImage ? (ref) => runtime.saveImage!(ref) : undefined,
      load: runtime.loadImage ? (tar) => runtime.loadImage!(tar) : undefined,
    },
  });

  agentPort = agent.port;
  await reconcileNow();
  await index.start();
  await heartbeat.beat();
  // Account goldens whose image is on this host get pools too, under their `<account>/<name>` key.
  const accountPools = async () =>
    (await accountGoldens.all())
      .filter((g) => g.ready && g.hostId === hostId)
      .map((g) => ({
        key: g.key, tag: g.image, poolSize: g.poolSize, ports: g.ports, idleTimeoutMs: g.idleTimeoutMs,
        cpus: g.cpus, memoryMb: g.memoryMb, diskMb: g.diskMb, network: g.network,
      }));
  const pool = new WarmPool({ redis, store, lifecycle, runtime, goldens: () => goldens, extra: accountPools, prefix, hostId, log: log.child({ part: 'pool' }) });
  await pool.reconcile();


  heartbeat.start(config.BOXD_HEARTBEAT_MS);
  const sweeper = new HostSweeper({ redis, store, prefix, deadMs: config.BOXD_HOST_DEAD_MS, log: log.child({ part: 'sweeper' }) });
  sweeper.start();

  const handle = async (job: HostJob, finalAttempt: boolean): Promise<unknown> => {
    switch (job.op) {
      case 'create': {
        // The record says `creating`: counted while the container starts, so rarely waited for.
        const beat = counted(job.name);
        const made = view(await lifecycle.create(job.name, finalAttempt));
        await beat;
        return made;
      }
      case 'destroy': {
        const gone = await lifecycle.destroy(job.name);
        await counted(job.name);
        return gone;
      }
      case 'fork': {
        const beat = counted(job.child);
        const made = view(await lifecycle.fork(job.name, job.child, finalAttempt));
        await beat;
        return made;
      }
      case 'fork-pool':
        return view(await lifecycle.forkFromPool(job.name, job.child));
      case 'fork-image':
        await lifecycle.snapshot(job.name, forkImage(prefix, job.account, job.child), { 'boxd.fork-of': job.name });
        return { image: forkImage(prefix, job.account, job.child) };
      case 'drop-image':
        if (!job.image.startsWith(forkImage(prefix, '', '').split(':')[0]!)) throw new BoxdError('IMAGE_NOT_ALLOWED', `not a fork image of this installation: ${job.image}`);
        return { removed: await runtime.removeImage(job.image) };
      case 'golden-commit':
        return lifecycle.snapshot(job.name, job.image, { 'boxd.golden-of': job.name });
      case 'golden-tag':
        return runtime.tagImage(job.from, job.image);
      case 'golden-drop': {
        const drained = await pool.drain(job.golden);
        // Boxes made from it keep the image; the last one to go removes it.
        return { drained, removed: await runtime.removeImage(job.image) };
      }
      case 'snapshot':
        return lifecycle.snapshot(job.name, snapshots.imageFor(job.account, job.snapshot));
      case 'deleteSnapshot':
        return { removed: await runtime.removeImage(snapshots.imageFor(job.account, job.snapshot)) };
      case 'pool-fill':
        // Gateways ask after every claim and golden; a host with pools off makes none.
        if (config.BOXD_POOL) void pool.fill();
        return null;
      default:
        throw new BoxdError('NOT_IMPLEMENTED', `operation ${job.op} is not available on this host yet`);
    }
  };
  const worker: Worker = startWorker({ connection: workerConn, prefix, hostId, concurrency: 64, handle, log });
  await worker.waitUntilReady();

  const taskConn = connectRedis(config.REDIS_URL, { maxRetriesPerRequest: null });
  taskConn.on('error', (err) => log.warn({ err: err.message }, 'redis error'));
  const tasks = new TaskRunner({
    connection: taskConn, redis, prefix, hostId, store, hooks: new HookStore(redis, prefix), lifecycle,
    goldens: () => readGoldens(redis, prefix), accountGoldens, maxBoxes: (a) => accounts.maxBoxes(a), lockMs: config.BOXD_TASK_LOCK_MS, log: log.child({ part: 'tasks' }),
  });
  await tasks.start();

  const idle = new IdleSuspender({ store: { summaries: () => index.running() }, lifecycle, hostId, intervalMs: opts.idleIntervalMs ?? config.BOXD_IDLE_CHECK_MS, log });
  idle.start();
  drift.start(config.BOXD_DRIFT_CHECK_MS);
  if (config.BOXD_POOL) pool.start(config.BOXD_POOL_FILL_MS);
  log.info({ hostId, prefix, pool: config.BOXD_POOL }, 'host ready');

  return {
    lifecycle,
    runtime,
    pool,
    idle,
    agent,
    drift,
    async close() {
      await sweeper.stop();
      await drift.stop();
      await agent.close();
      await pool.close();
      await idle.stop();
      await tasks.close();
      await worker.close();
      await door?.close();
      await heartbeat.stop();
      index.stop();
      await Promise.all([redis.quit(), workerConn.quit(), taskConn.quit(), indexConn.quit()].map((p) => p.catch(() => undefined)));
    },
  };
}

/** Records are returned by name only; the gateway reads the record itself. */
function view(box: { name: string; state: string }): { name: string; state: string } {
  return { name: box.name, state: box.state };
}
