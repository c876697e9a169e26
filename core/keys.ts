/**
 * The one home of boxd's Redis key layout. Every key of an instance starts with the hash tag
 * `{<prefix>}`, so on a Redis Cluster they all live in one slot: a Lua script or MULTI may touch
 * any of them together, and BullMQ (whose prefix is the same tag) keeps its queues there too.
 * Pub/sub channels are not keys; they keep the plain prefix.
 */
export class Keys {
  /** `{<prefix>}`: the hash tag every key starts with, and BullMQ's queue prefix. */
  readonly root: string;

  constructor(readonly prefix: string) {
    this.root = `{${prefix}}`;
  }

  /** Hash of one box record. */
  box(name: string): string {
    return `${this.root}:box:${name}`;
  }
  /** Set of every box name. */
  get boxes(): string {
    return `${this.root}:boxes`;
  }
  /** Set of an account's box names: its size is checked against the account's limit. */
  accountBoxes(account: string): string {
    return `${this.root}:acct:${account}:boxes`;
  }
  /** Set of an account's boxes in state `lost`: they do not count against its limit. */
  accountLost(account: string): string {
    return `${this.root}:acct:${account}:lost`;
  }
  /** Set of the box names a host owns. */
  hostBoxes(hostId: string): string {
    return `${this.root}:host:${hostId}:boxes`;
  }
  /** Hash state → number of boxes in it (pool boxes not counted). */
  get boxCounts(): string {
    return `${this.root}:boxcounts`;
  }
  /** Hash host id → HostInfo JSON (heartbeats). */
  get hosts(): string {
    return `${this.root}:hosts`;
  }
  /** Hash golden name → GoldenInfo JSON. */
  get goldens(): string {
    return `${this.root}:goldens`;
  }
  /** Lock held by whichever process sweeps dead hosts. */
  get sweepLock(): string {
    return `${this.root}:lock:sweep`;
  }
  apiKey(hash: string): string {
    return `${this.root}:apikey:${hash}`;
  }
  account(account: string): string {
    return `${this.root}:account:${account}`;
  }
  hook(id: string): string {
    return `${this.root}:hook:${id}`;
  }
  hooks(account: string): string {
    return `${this.root}:hooks:${account}`;
  }
  delivery(hookId: string, delivery: string): string {
    return `${this.root}:delivery:${hookId}:${delivery}`;
  }
  task(id: string): string {
    return `${this.root}:task:${id}`;
  }
  tasks(account: string): string {
    return `${this.root}:tasks:${account}`;
  }
  payload(taskId: string): string {
    return `${this.root}:payload:${taskId}`;
  }
  snapshots(account: string): string {
    return `${this.root}:snap:${account}`;
  }
  /** ZSET of an account's running exec ids (scored by when their slot lapses). */
  execs(account: string): string {
    return `${this.root}:execs:${account}`;
  }
  /** List of a host's ready pool boxes of one golden. */
  pool(hostId: string, golden: string): string {
    return `${this.root}:pool:${hostId}:${golden}`;
  }
  get poolStats(): string {
    return `${this.root}:poolstats`;
  }

  /** Channel of BoxEvents (not a key). */
  get events(): string {
    return `${this.prefix}:events`;
  }
  /** Channel of the hashes of API keys deleted or rewritten (not a key): gateways drop them from their caches. */
  get keysChanged(): string {
    return `${this.prefix}:keys:changed`;
  }
  /** Channel of one streaming exec (not a key). */
  exec(execId: string): string {
    return `${this.prefix}:exec:${execId}`;
  }
}

/** BullMQ's queue prefix: the instance's hash tag, as BullMQ requires on a Redis Cluster. */
export const queuePrefix = (prefix: string): string => new Keys(prefix).root;
