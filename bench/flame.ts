/**
 * Turns a V8 `.cpuprofile` (from `node --cpu-prof`) into a self-contained SVG flame graph and a
 * top-of-profile table (self time per function). No dependencies.
 * `tsx bench/flame.ts <profile.cpuprofile> <out.svg> [title]` — prints the table as Markdown.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const [file, out, title = 'gateway CPU profile'] = process.argv.slice(2);
if (!file || !out) {
  console.error('usage: tsx bench/flame.ts <profile.cpuprofile> <out.svg> [title]');
  process.exit(2);
}
const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const label = (n: Node) => {
  const f = n.callFrame;
  const where = f.url ? `${basename(f.url.replace(/^file:\/\//, ''))}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
};

// Self time per node from the samples (timeDeltas[i] is the time before sample i).
// Idle samples (waiting in epoll) are left out: percentages are of busy time.
const self = new Map<number, number>();
let idle = 0;
for (let i = 0; i < p.samples.length; i++) {
  const id = p.samples[i]!;
  const us = p.timeDeltas[i] ?? 0;
  if (byId.get(id)?.callFrame.functionName === '(idle)') idle += us;
  else self.set(id, (self.get(id) ?? 0) + us);
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

// Tree of frames (merged by label along the stack) with inclusive time.
interface Frame { name: string; value: number; children: Map<string, Frame> }
const root: Frame = { name: 'all', value: 0, children: new Map() };
for (const [id, us] of self) {
  const stack: string[] = [];
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const n = byId.get(cur)!;
    if (n.callFrame.functionName === '(root)') break;
    stack.unshift(label(n));
  }
  let f = root;
  f.value += us;
  for (const name of stack) {
    let c = f.children.get(name);
    if (!c) f.children.set(name, (c = { name, value: 0, children: new Map() }));
    c.value += us;
    f = c;
  }
}

// SVG: one row per depth, widths proportional to time.
const W = 1200;
const H = 16;
const rects: string[] = [];
let depthMax = 0;
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const color = (name: string) => {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  const node = /node:|internal|\(program\)|\(garbage/.test(name);
  return node ? `hsl(${200 + (h % 40)},55%,${60 + (h % 15)}%)` : `hsl(${10 + (h % 40)},75%,${55 + (h % 15)}%)`;
};
const draw = (f: Frame, x: number, depth: number) => {
  depthMax = Math.max(depthMax, depth);
  const w = (f.value / total) * W;
  if (w < 0.3) return;
  const pct = ((100 * f.value) / total).toFixed(1);
  const text = w > 40 ? `<text x="${(x + 3).toFixed(1)}" y="${depth * H + 12}" font-size="11" font-family="monospace">${esc(f.name.slice(0, Math.floor(w / 7)))}</text>` : '';
  rects.push(`<g><title>${esc(f.name)} — ${pct}%</title><rect x="${x.toFixed(1)}" y="${depth * H}" width="${w.toFixed(1)}" height="${H - 1}" fill="${color(f.name)}"/>${text}</g>`);
  let cx = x;
  for (const c of [...f.children.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    draw(c, cx, depth + 1);
    cx += (c.value / total) * W;
  }
};
draw(root, 0, 1);
const height = (depthMax + 2) * H;
writeFileSync(
  out,
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}">` +
    `<text x="4" y="12" font-size="12" font-family="sans-serif">${esc(title)} — ${(total / 1000).toFixed(0)} ms sampled; hover for names</text>` +
    // Root at the top, callees below (an icicle graph).
    rects.join('') +
    '</svg>\n',
);

// Top of profile: self time by function (merged over call sites).
const byName = new Map<string, number>();
for (const [id, us] of self) {
  const name = label(byId.get(id)!);
  byName.set(name, (byName.get(name) ?? 0) + us);
}
// Coarse buckets by where the code lives.
const bucket = (n: Node) => {
  const { url, functionName } = n.callFrame;
  if (functionName === '(garbage collector)') return 'garbage collection';
  if (/tsx|lexer|loader|esm|cjs\/|compile|resolve/.test(url) || /compile|parseSource|parseCJS|wrapSafe|waitForWorker|makeSyncRequest|makeAsyncRequest/.test(functionName)) return 'start-up: loading and compiling modules';
  if (url.includes('http-proxy-3')) return 'http-proxy-3';
  if (/\/(gateway|core)\//.test(url)) return 'boxd gateway code';
  if (url.includes('node_modules')) return 'other dependencies';
  return 'Node internals (http parser, streams, sockets) and natives';
};
const buckets = new Map<string, number>();
for (const [id, us] of self) {
  const b = bucket(byId.get(id)!);
  buckets.set(b, (buckets.get(b) ?? 0) + us);
}
console.log(`busy ${(total / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms\n`);
console.log('| where | share of busy time |\n|---|---:|');
for (const [b, us] of [...buckets.entries()].sort((a, b) => b[1] - a[1])) console.log(`| ${b} | ${((100 * us) / total).toFixed(1)} % |`);
console.log('');
const top = [...byName.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25);
console.log('| self % | self ms | function |\n|---:|---:|---|');
for (const [name, us] of top) console.log(`| ${((100 * us) / total).toFixed(1)} | ${(us / 1000).toFixed(0)} | \`${name}\` |`);
