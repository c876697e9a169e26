import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { BoxStore } from '../core/boxes.ts';
import type { Logger } from '../core/log.ts';
import type { Golden } from '../golden-images/definitions.ts';
import type { Lifecycle } from '../host/lifecycle.ts';
import type { Runtime } from '../host/runtime.ts';
import { POOL_ACCOUNT, poolListKey } from './keys.ts';

/** What a pool is kept for: an operator golden or an account's own (by its key). */
export interface PoolSpec {
  /** Golden name (operator) or `<account>/<name>`: the pool list's name and the boxes' `golden`. */
  key: string;
  tag: string;
  poolSize: number;
  ports: number[];
  idleTimeoutMs: number;
  cpus: number;
  memoryMb: number;
  diskMb?: number;
  network?: Golden['manifest']['network'];
}

export const poolSpecOf = (g: Golden): PoolSpec => ({
  key: g.name, tag: g.tag, poolSize: g.manifest.poolSize, ports: g.manifest.ports,
  idleTimeoutMs: g.manifest.idleTimeoutMs, cpus: g.manifest.cpus, memoryMb: g.manifest.memoryMb,
  diskMb: g.manifest.diskMb, network: g.manifest.network,
});

/**
 * Takes a pooled box back from the pool before removing it: unlists it and answers whether it
 * still belongs to the pool. The claim (pool/claim.ts) unlists and renames in one script too, so
 * of a refill and a claim racing for one box exactly one gets it; a refill never destroys a box
 * a claim renamed into a user's box.
 */
const TAKE_BACK = `
redis.call('LREM', KEYS[1], 0, ARGV[1])
if redis.call('HGET', KEYS[2], 'account') == ARGV[2] then return 1 end
return 0`;

/**
 * One host's warm pools: for each golden with a pool size, that many boxes created from the
 * golden's current image and suspended, listed in Redis for gateways to claim.
 *
 * Lifecycle: `reconcile` (after a restart: list what survived, drop what did not), `fill`
 * (idempotent; one fill runs at a time), `close` (waits for the fill in flight).
 * A golden whose definition changed has a new tag: boxes of the old tag are drained.
 */
export class WarmPool {
  private filling: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly d: {
      redis: Redis;
      store: BoxStore;
      lifecycle: Pick<Lifecycle, 'create' | 'suspend' | 'destroy'>;
      runtime: Pick<Runtime, 'hasImage'>;
      goldens: () => Map<string, Golden>;
      /** Pools beyond the operator's goldens (account goldens whose image is on this host). */
      extra?: () => Promise<PoolSpec[]>;
      prefix: string;
      hostId: string;
      pidsLimit?: number;
      log: Logger;
    },
  ) {}

  private async specs(): Promise<PoolSpec[]> {
    const own = [...this.d.goldens().values()].map(poolSpecOf);
    return this.d.extra ? [...own, ...(await this.d.extra())] : own;
  }

  private key(golden: string): string {
    return poolListKey(this.d.prefix, this.d.hostId, golden);
  }

  /** Ready box names of a golden, in claim order. */
  ready(golden: string): Promise<string[]> {
    return this.d.redis.lrange(this.key(golden), 0, -1);
  }

  /** After a restart: pooled boxes that survived are listed once, half-made ones removed. */
  async reconcile(): Promise<void> {
    const mine = (await this.d.store.list({ account: POOL_ACCOUNT })).filter((b) => b.hostId === this.d.hostId);
    const specs = await this.specs();
    const goldens = new Set(specs.map((g) => g.key));
    for (const golden of goldens) {
      for (const name of await this.ready(golden)) {
        if (!mine.some((b) => b.name === name)) await this.d.redis.lrem(this.key(golden), 0, name);
      }
    }
    for (const box of mine) {
      const listed = (await this.ready(box.golden ?? '')).includes(box.name);
      if (listed && box.state === 'suspended') continue;
      if (box.state === 'running') await this.d.lifecycle.suspend(box.name).catch(() => undefined);
      const now = await this.d.store.get(box.name);
      if (now?.state === 'suspended' && box.golden && goldens.has(box.golden)) {
        if (!listed) await this.d.redis.rpush(this.key(box.golden), box.name);
      } else {
        await this.remove(box.golden ?? '', box.name);
      }
    }
  }

  /** Tops every pool up to its size and drains stale boxes. Concurrent calls share one run. */
  fill(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.filling) {
      this.again = true;
      return this.filling;
    }
    this.filling = (async () => {
      do {
        this.again = false;
        let specs: PoolSpec[] = [];
        try {
          specs = await this.specs();
        } catch (e) {
          this.d.log.warn({ err: e }, 'cannot read the pools to fill');
        }
        for (const golden of specs) {
          if (this.closed) return;
          try {
            await this.fillOne(golden);
          } catch (e) {
            this.d.log.warn({ golden: golden.key, err: e }, 'pool fill failed');
          }
        }
      } while (this.again && !this.closed);
    })().finally(() => (this.filling = undefined));
    return this.filling;
  }

  private async fillOne(golden: PoolSpec): Promise<void> {
    const names = await this.ready(golden.key);
    // Drain boxes of an older build of this golden, and any beyond the size.
    for (const name of names) {
      const box = await this.d.store.get(name);
      // No record: claimed since we listed (its container now serves the claimer, renamed to
      // the claimer's box once woken, so it must not be destroyed by this name) or deleted.
      if (!box) await this.d.redis.lrem(this.key(golden.key), 0, name);
      else if (box.imageRef !== golden.tag || box.state !== 'suspended') await this.remove(golden.key, name);
    }
    let ready = await this.d.redis.llen(this.key(golden.key));
    while (ready > golden.poolSize) {
      const extra = await this.d.redis.rpop(this.key(golden.key));
      if (extra) await this.remove(golden.key, extra);
      ready--;
    }
    if (ready >= golden.poolSize || !(await this.d.runtime.hasImage(golden.tag))) return;
    while (ready < golden.poolSize && !this.closed) {
      await this.addOne(golden);
      ready++;
    }
  }

  private async addOne(golden: PoolSpec): Promise<void> {
    const name = `pool-${golden.key.replace(/[^a-z0-9-]/g, '-').slice(0, 40)}-${randomBytes(4).toString('hex')}`;
    await this.d.store.create(
      {
        name,
        account: POOL_ACCOUNT,
        golden: golden.key,
        imageRef: golden.tag,
        ports: golden.ports,
        public: true,
        env: {},
        idleTimeoutMs: golden.idleTimeoutMs,
        cpus: golden.cpus,
        memoryMb: golden.memoryMb,
        diskMb: golden.diskMb,
        network: golden.network,
        hostId: this.d.hostId,
      },
      -1,
    );
    try {
      await this.d.lifecycle.create(name, true);
      await this.d.lifecycle.suspend(name);
      await this.d.redis.rpush(this.key(golden.key), name);
      this.d.log.debug({ golden: golden.key, box: name }, 'pool box ready');
    } catch (e) {
      await this.d.lifecycle.destroy(name).catch(() => undefined);
      throw e;
    }
  }

  /** Removes every ready box of a pool (a deleted account golden). */
  async drain(golden: string): Promise<number> {
    const names = await this.ready(golden);
    for (const name of names) await this.remove(golden, name);
    return names.length;
  }

  private async remove(golden: string, name: string): Promise<void> {
    const ours = await this.d.redis.eval(TAKE_BACK, 2, this.key(golden), this.d.store.key(name), name, POOL_ACCOUNT);
    if (ours !== 1) return; // claimed meanwhile: it is a user's box now
    await this.d.lifecycle.destroy(name).catch((err) => this.d.log.warn({ box: name, err }, 'could not remove pool box'));
  }

  /** Fills now and then every `intervalMs`. */
  start(intervalMs: number): void {
    void this.fill();
    this.timer = setInterval(() => void this.fill(), intervalMs);
    this.timer.unref();
  }

  /** Stops filling and waits for the fill in flight. Boxes stay (they survive restarts). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.filling;
  }
}
