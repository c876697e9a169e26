/** Median / percentiles of samples in ms, and a printer for bench tables. */
export function pct(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export const median = (s: number[]) => pct(s, 50);

export async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

export function row(cols: (string | number)[], widths: number[]): string {
  return cols.map((c, i) => (typeof c === 'number' ? c.toFixed(c < 10 ? 2 : 1) : c).padStart(widths[i] ?? 10)).join(' ');
}
