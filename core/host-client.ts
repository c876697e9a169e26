import { Job, Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import { BoxdError, fromWire, NoCapacityError, parseWire, TimeoutError, UnavailableError } from './errors.ts';
import { Keys } from './keys.ts';
import { isAlive, placeBox, type PlacementRequest } from './placement.ts';
import { ATTEMPTS, HOST_ALIVE_MS, hostQueueName, type HostInfo, type HostJob, type JobResult } from './jobs.ts';
import { queuePrefix } from './keys.ts';
import { connectRedis } from './redis.ts';

/** A placement this client made (HostClient.placed). */
interface Placed {
  box?: string;
  at: number;
  cpus: number;
  memoryMb: number;
}

/** How long a placement whose create never reached its host still counts, in ms. */
const PLACED_MS = 60_000;

interface HostChannel {
  queue: Queue;
  events: QueueEvents;
  ready: Promise<unknown>;
}

/**
 * Sends jobs to hosts and waits for their answers. Used by gateways (and by anything else
 * that drives boxes). Each host's queue and event stream are opened once and reused.
 */
export class HostClient {
  private readonly channels = new Map<string, HostChannel>();
  private readonly connections: Redis[] = [];

  constructor(
    private readonly redis: Redis,
    private readonly redisUrl: string,
    private readonly prefix: string,
    private readonly defaultTimeoutMs: number,
    private readonly placement: { deadMs: number; overcommit: number; cpuOvercommit?: number } = { deadMs: HOST_ALIVE_MS, overcommit: 4, cpuOvercommit: 16 },
    /** How often a waiting call checks that its host still beats. */
    private readonly watchEveryMs = 2000,
  ) {
    this.keys = new Keys(prefix);
  }
  private readonly keys: Keys;
  /**
   * Boxes this client placed per host that the host's heartbeat may not count yet. One ends when
   * the heartbeat lists it as `creating`, when its create or fork job answers (the host answers
   * only after a beat that counts it), or, if neither comes (the create failed before its job),
   * after PLACED_MS. Entries without a box name end at the first beat a second after them.
   */
  private readonly placed = new Map<string, Placed[]>();
  private channel(hostId: string): HostChannel {
    let ch = this.channels.get(hostId);
    if (!ch) {
      const name = hostQueueName(hostId);
      const eventsConn = connectRedis(this.redisUrl, { maxRetriesPerRequest: null });
      this.connections.push(eventsConn);
      const queue = new Queue(name, { connection: this.redis, prefix: queuePrefix(this.prefix) });
      const events = new QueueEvents(name, { connection: eventsConn, prefix: queuePrefix(this.prefix) });
      events.on('error', () => undefined);
      queue.on('error', () => undefined);
      ch = { queue, events, ready: events.waitUntilReady() };
      this.channels.set(hostId, ch);
    }
    return ch;
  }

  /** Every host's last heartbeat, live or not. */
  async allHosts(): Promise<HostInfo[]> {
    const all = await this.redis.hgetall(this.keys.hosts);
    return Object.values(all).map((v) => JSON.parse(v) as HostInfo);
  }

  /** Hosts that sent a heartbeat within BOXD_HOST_DEAD_MS. */
  async aliveHosts(): Promise<HostInfo[]> {
    const now = Date.now();
    return (await this.allHosts()).filter((h) => isAlive(h, now, this.placement.deadMs));
  }

  /**
   * The live host with the most free capacity that holds the box's golden (core/placement.ts).
   * UnavailableError when no host runs or holds the golden; NoCapacityError when all are full.
   */
  async pickHost(req: PlacementRequest = { cpus: 0, memoryMb: 0 }, o: { box?: string; probe?: boolean } = {}): Promise<string> {
    const now = Date.now();
    // Heartbeats lag: add what this gateway placed and the host does not count yet, so a burst
    // of creates spreads instead of piling onto the host that looked emptiest.
    const hosts = (await this.allHosts()).map((h) => {
      const creating = new Set(h.creating ?? []);
      const mine = (this.placed.get(h.id) ?? []).filter((p) =>
        p.box ? !creating.has(p.box) && now - p.at < PLACED_MS : p.at >= h.heartbeatAt - 1000,
      );
      this.placed.set(h.id, mine);
      if (!mine.length || !h.committed) return h;
      const c = { ...h.committed };
      for (const p of mine) (c.cpus += p.cpus), (c.memoryMb += p.memoryMb);
      return { ...h, committed: c };
    });
    const placed = placeBox(hosts, req, { now, ...this.placement });
    if (placed.ok) {
      // A probe (is there room?) places nothing.
      if (o.probe) return placed.hostId;
      const p: Placed = { box: o.box, at: now, cpus: req.cpus, memoryMb: req.memoryMb };
      this.placed.get(placed.hostId)?.push(p) ?? this.placed.set(placed.hostId, [p]);
      return placed.hostId;
    }
    if (placed.reason === 'NO_CAPACITY') throw new NoCapacityError(placed.message, 5);
    throw new UnavailableError(placed.message);
  }

  /**
   * Forgets the placement of `box` on `hostId` (its create or fork answered, or failed before it
   * was asked): from now on the host's heartbeat alone counts it.
   */
  unplace(hostId: string, box: string): void {
    const mine = this.placed.get(hostId);
    if (mine) this.placed.set(hostId, mine.filter((p) => p.box !== box));
  }

  async assertAlive(hostId: string): Promise<void> {
    const raw = await this.redis.hget(this.keys.hosts, hostId);
    if (!raw || !isAlive(JSON.parse(raw) as HostInfo, Date.now(), this.placement.deadMs)) {
      throw new UnavailableError(`host ${hostId}, which runs this box, is not answering`);
    }
  }

  /** Enqueues without waiting. */
  async enqueue(hostId: string, job: HostJob, jobId?: string): Promise<Job> {
    const ch = this.channel(hostId);
    return ch.queue.add(job.op, job, {
      jobId,
      attempts: ATTEMPTS[job.op],
      backoff: { type: 'exponential', delay: 300 },
      removeOnComplete: { age: 600, count: 2000 },
      removeOnFail: { age: 3600, count: 2000 },
    });
  }

  /**
   * Runs `job` on `hostId` and returns its value. Domain errors come back as BoxdError with the
   * host's code; a job that failed after its retries is RUNTIME_ERROR; no answer in time is TIMEOUT.
   */
  async call<T>(hostId: string, job: HostJob, timeoutMs = this.defaultTimeoutMs): Promise<T> {
    try {
      return await this.callOnce<T>(hostId, job, timeoutMs);
    } finally {
      // Answered (after a beat that counts it) or failed: the heartbeat alone counts it now.
      if (job.op === 'create') this.unplace(hostId, job.name);
      else if (job.op === 'fork') this.unplace(hostId, job.child);
    }
  }

  private async callOnce<T>(hostId: string, job: HostJob, timeoutMs: number): Promise<T> {
    await this.assertAlive(hostId);
    const ch = this.channel(hostId);
    await ch.ready;
    const added = await this.enqueue(hostId, job);
    let result: JobResult<T>;
    const watch = this.watchHost(hostId, job.op);
    try {
      result = (await Promise.race([added.waitUntilFinished(ch.events, timeoutMs), watch.lost])) as JobResult<T>;
    } catch (e) {
      if (e instanceof BoxdError) throw e;
      const msg = (e as Error).message ?? '';
      if (/timed out/i.test(msg)) throw new TimeoutError(`host ${hostId} did not finish ${job.op} within ${timeoutMs} ms`);
      const wire = parseWire(msg);
      if (wire) throw fromWire(wire);
      throw new BoxdError('RUNTIME_ERROR', `${job.op} failed on ${hostId}: ${msg}`);
    } finally {
      watch.stop();
    }
    if (!result || typeof result !== 'object') throw new BoxdError('RUNTIME_ERROR', `${job.op} returned nothing`);
    if (!result.ok) throw fromWire(result.error);
    return result.value;
  }

  /**
   * Rejects `lost` with HOST_LOST once `hostId` stops sending heartbeats (killed, or stopped)
   * while a job of `op` waits for it, so the caller gets an answer instead of a hang until the
   * job's time-out. A Redis error while checking is not taken as a lost host.
   */
  private watchHost(hostId: string, op: string): { lost: Promise<never>; stop: () => void } {
    let timer: NodeJS.Timeout | undefined;
    const lost = new Promise<never>((_, reject) => {
      timer = setInterval(() => {
        this.assertAlive(hostId).catch((e: unknown) => {
          if (!(e instanceof UnavailableError)) return;
          clearInterval(timer);
          reject(new BoxdError('HOST_LOST', `host ${hostId} stopped while running ${op}; it did not finish`));
        });
      }, this.watchEveryMs);
    });
    lost.catch(() => undefined);
    return { lost, stop: () => clearInterval(timer) };
  }

  async close(): Promise<void> {
    for (const ch of this.channels.values()) {
      await ch.events.close().catch(() => undefined);
      await ch.queue.close().catch(() => undefined);
    }
    this.channels.clear();
    await Promise.all(this.connections.map((c) => c.quit().catch(() => undefined)));
  }
}
