import type { BoxStore } from '../core/boxes.ts';

/**
 * Counters kept by one gateway, rendered with the box counts as Prometheus text. Box counts come
 * from the per-state counters the store's scripts keep in Redis (one HGETALL per scrape), never
 * from reading every record; pool boxes are not counted.
 */
export class Metrics {
  private readonly counters = new Map<string, number>();

  inc(name: string, labels: Record<string, string> = {}, by = 1): void {
    const key = `${name}${labelText(labels)}`;
    this.counters.set(key, (this.counters.get(key) ?? 0) + by);
  }

  async render(store: Pick<BoxStore, 'counts'>): Promise<string> {
    const lines: string[] = [];
    const byState = await store.counts();
    lines.push('# HELP boxd_boxes Boxes by state (warm-pool boxes not counted).', '# TYPE boxd_boxes gauge');
    const states = new Set(['creating', 'running', 'suspended', 'error', ...Object.keys(byState).filter((k) => /^[a-z]+$/.test(k) && k !== 'destroyed')]);
    for (const s of states) lines.push(`boxd_boxes{state="${s}"} ${byState[s] ?? 0}`);
    const names = new Set([...this.counters.keys()].map((k) => k.replace(/\{.*$/, '')));
    for (const n of [...names].sort()) {
      lines.push(`# TYPE ${n} counter`);
      for (const [k, v] of this.counters) if (k.replace(/\{.*$/, '') === n) lines.push(`${k} ${v}`);
    }
    return lines.join('\n') + '\n';
  }
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}
