import type { BoxStore } from '../core/boxes.ts';

/** Counters kept by one gateway, rendered with box counts as Prometheus text. */
export class Metrics {
  private readonly counters = new Map<string, number>();

  inc(name: string, labels: Record<string, string> = {}, by = 1): void {
    const key = `${name}${labelText(labels)}`;
    this.counters.set(key, (this.counters.get(key) ?? 0) + by);
  }

  async render(store: BoxStore): Promise<string> {
    const lines: string[] = [];
    const byState = new Map<string, number>();
    for (const b of await store.list('all')) byState.set(b.state, (byState.get(b.state) ?? 0) + 1);
    lines.push('# HELP boxd_boxes Boxes by state.', '# TYPE boxd_boxes gauge');
    for (const s of ['creating', 'running', 'suspended', 'error']) lines.push(`boxd_boxes{state="${s}"} ${byState.get(s) ?? 0}`);
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
