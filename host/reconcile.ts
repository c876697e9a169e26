import type { BoxRecord, BoxStore } from '../core/boxes.ts';
import type { Logger } from '../core/log.ts';
import type { BoxSpec, Runtime } from './runtime.ts';

export interface ReconcileReport {
  removedContainers: string[];
  erroredBoxes: string[];
  restarted: string[];
  /** Lost boxes taken back. */
  found: string[];
  /** Containers renamed to their box (claimed from a pool before the host stopped). */
  renamed: string[];
}

/**
 * Makes this host's containers and Redis records agree, at start-up and when it comes back after
 * being declared dead. Containers no record knows
 * are removed; records whose container vanished become `error`; a container stopped by an engine
 * restart is started again (its files survive, its processes do not) and paused if its record
 * says suspended.
 */
export async function reconcile(deps: {
  store: BoxStore;
  runtime: Pick<Runtime, 'list' | 'destroy' | 'create' | 'suspend' | 'resume' | 'inspect' | 'applyPolicy'>;
  labels: Record<string, string>;
  /** The spec a record's box is (re)created from; create is idempotent and starts a stopped box. */
  spec: (box: BoxRecord) => BoxSpec;
  /** Runtime id of a record's box. */
  idOf: (box: BoxRecord) => string;
  /** The runtime name a box's container should have (Lifecycle.runtimeName). */
  runtimeName?: (name: string) => string;
  /** Renames a container still under another name to its box's and records it (Lifecycle.adoptName). */
  adopt?: (name: string) => Promise<unknown>;
  hostId: string;
  log: Logger;
}): Promise<ReconcileReport> {
  const report: ReconcileReport = { removedContainers: [], erroredBoxes: [], restarted: [], found: [], renamed: [] };
  const containers = await deps.runtime.list(deps.labels);
  const records = await deps.store.list({ hostId: deps.hostId });
  // Matched by runtime id, not by label: a claimed pool box keeps its container under a new name.
  const byId = new Map(containers.map((c) => [c.id, c]));
  // A claimed box's container may already carry the box's name while its record still names the
  // pool one (the host stopped between the rename and the record): it is known under both.
  const named = (r: BoxRecord) => deps.runtimeName?.(r.name) ?? deps.idOf(r);
  const known = new Set(records.flatMap((r) => [deps.idOf(r), named(r)]));

  for (const c of containers) {
    if (!known.has(c.id)) {
      await deps.runtime.destroy(c.id);
      report.removedContainers.push(c.name);
    }
  }
  // Boxes declared lost while this host was away: the ones whose container is still here come
  // back in the state they had (and are then checked like every other); a create cut short
  // by the host's death is an error.
  for (const box of records) {
    if (box.state !== 'lost') continue;
    if (box.lostFrom === 'running' || box.lostFrom === 'suspended') {
      await deps.store.found(box.name, box.lostFrom);
      box.state = box.lostFrom;
      report.found.push(box.name);
    } else {
      await deps.store.transition(box.name, ['lost'], 'error', { error: `its host ${deps.hostId} died while it was ${box.lostFrom ?? 'changing state'}` });
      box.state = 'error';
      report.erroredBoxes.push(box.name);
    }
  }
  for (const box of records) {
    const c = byId.get(deps.idOf(box)) ?? byId.get(named(box));
    if (box.state === 'creating' || box.state === 'error') continue; // a creating box's job is still queued and will finish it
    if (!c) {
      if (box.state === 'running' || box.state === 'suspended') {
        await deps.store.transition(box.name, '*', 'error', { error: 'its container vanished while the host was down' });
        report.erroredBoxes.push(box.name);
      }
      continue;
    }
    if (c.state === 'stopped') {
      const inst = await deps.runtime.create({ ...deps.spec(box), name: c.id }).catch(() => undefined);
      if (!inst) {
        await deps.store.transition(box.name, '*', 'error', { error: 'its container could not be restarted' });
        report.erroredBoxes.push(box.name);
        continue;
      }
      // Ports may change when a container restarts; a transition publishes it so caches drop the old ones.
      await deps.store.transition(box.name, '*', box.state, { hostPorts: inst.ports });
      report.restarted.push(box.name);
      if (box.state === 'suspended') await deps.runtime.suspend(c.id);
      continue;
    }
    // Egress rules do not survive an iptables flush; put the box's back (idempotent).
    await deps.runtime.applyPolicy?.(c.id, deps.spec(box)).catch((err) => deps.log.warn({ box: box.name, err }, 'could not install egress rules'));
    if (box.state === 'suspended' && c.state === 'running') await deps.runtime.suspend(c.id);
    if (box.state === 'running' && c.state === 'paused') await deps.runtime.resume(c.id);
  }
  // Claimed pool boxes whose container was not renamed to the box yet.
  if (deps.adopt) {
    for (const box of records) {
      if ((box.state !== 'running' && box.state !== 'suspended') || deps.idOf(box) === named(box)) continue;
      if (await deps.adopt(box.name).then((r) => r !== false, (err) => void deps.log.warn({ box: box.name, err }, 'could not rename a container to its box'))) report.renamed.push(box.name);
    }
  }
  if (report.removedContainers.length || report.erroredBoxes.length || report.renamed.length || report.restarted.length || report.found.length) {
    deps.log.info(report, 'reconciled Docker with Redis');
  }
  return report;
}
