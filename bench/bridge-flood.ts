/**
 * Why boxd pins each box's link-layer addresses (host/bridge-pins.ts), measured without Docker:
 * N network namespaces on one Linux bridge of this bench's own (like N boxes on boxd's bridge),
 * a busybox httpd in the first, and the time of a request to it on a fresh connection
 *  - "unknown": the host has no neighbour entry and the bridge no forwarding entry for it
 *    (a box suspended for more than 300 s, or never reached yet): the ARP request and the first
 *    frames go to every port;
 *  - "pinned": permanent neighbour entries both ways and a static forwarding entry, as boxd sets;
 *  - "learned": right after a request (what a box in use has).
 * at 10, at BENCH_PORTS (1,000) and at 10 again (the machine's load moves meanwhile). Traffic goes only to the namespaces it creates.
 *   npx tsx bench/bridge-flood.ts            BENCH_N (samples, 60), BENCH_PORTS (1000)
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median, pct, row } from './stats.ts';

const N = Number(process.env.BENCH_N ?? 60);
const PORTS = Number(process.env.BENCH_PORTS ?? 1000);
const tag = `bf${process.pid % 100000}`;
const bridge = `${tag}br`;
const ns = (i: number) => `${tag}n${i}`;
const veth = (i: number) => `${tag}v${i}`;
const ipOf = (i: number) => `10.251.${Math.floor(i / 250)}.${(i % 250) + 2}`;
const x = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const batch = (lines: string[]) => {
  const f = join(www, 'batch');
  writeFileSync(f, lines.join('\n') + '\n');
  x('ip', ['-force', '-batch', f]);
};

const www = mkdtempSync(join(tmpdir(), 'boxd-flood-'));
writeFileSync(join(www, 'index.html'), 'ok\n');
let made = 0;

/** Brings the number of namespaces on the bridge to n. */
function grow(n: number): void {
  const lines: string[] = [];
  for (let i = made; i < n; i++) lines.push(`netns add ${ns(i)}`, `link add ${veth(i)} type veth peer name eth0 netns ${ns(i)}`, `link set ${veth(i)} master ${bridge} up`);
  batch(lines);
  const inside: string[] = [];
  for (let i = made; i < n; i++) inside.push(`-n ${ns(i)} addr add ${ipOf(i)}/16 dev eth0`, `-n ${ns(i)} link set eth0 up`, `-n ${ns(i)} link set lo up`);
  // `ip -batch` takes no -n per line: one `ip -n` per command.
  for (const l of inside) x('ip', l.split(' '));
  made = n;
}

function cleanup(): void {
  const lines: string[] = [];
  for (let i = 0; i < made; i++) lines.push(`netns del ${ns(i)}`);
  try {
    if (lines.length) batch(lines);
  } catch {
    /* already gone */
  }
  try {
    x('ip', ['link', 'del', bridge]);
  } catch {
    /* already gone */
  }
  rmSync(www, { recursive: true, force: true });
}

function get(ip: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const req = request({ host: ip, port: 8088, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(performance.now() - t));
    });
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(n: number): Promise<{ unknown: number[]; pinned: number[]; learned: number[] }> {
  const ip = ipOf(0);
  const mac = (JSON.parse(x('ip', ['-j', '-n', ns(0), 'link', 'show', 'eth0'])) as { address: string }[])[0]!.address;
  const brMac = (JSON.parse(x('ip', ['-j', 'link', 'show', bridge])) as { address: string }[])[0]!.address;
  const forget = () => {
    x('ip', ['link', 'set', bridge, 'type', 'bridge', 'fdb_flush']);
    for (const args of [['neigh', 'del', ip, 'dev', bridge], ['-n', ns(0), 'neigh', 'del', '10.251.0.1', 'dev', 'eth0']]) {
      try {
        x('ip', args);
      } catch {
        /* not there */
      }
    }
    try {
      x('bridge', ['fdb', 'del', mac, 'dev', veth(0), 'master']);
    } catch {
      /* not there */
    }
  };
  const out = { unknown: [] as number[], pinned: [] as number[], learned: [] as number[] };
  for (let i = 0; i < N; i++) {
    forget();
    out.unknown.push(await get(ip));
    await sleep(5);
    out.learned.push(await get(ip));
    forget();
    x('ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', bridge, 'nud', 'permanent']);
    x('bridge', ['fdb', 'replace', mac, 'dev', veth(0), 'master', 'static']);
    x('ip', ['-n', ns(0), 'neigh', 'replace', '10.251.0.1', 'lladdr', brMac, 'dev', 'eth0', 'nud', 'permanent']);
    out.pinned.push(await get(ip));
    await sleep(5);
  }
  console.log(`  ${n} namespaces: unknown p50 ${median(out.unknown).toFixed(2)} ms, pinned ${median(out.pinned).toFixed(2)} ms, learned ${median(out.learned).toFixed(2)} ms`);
  return out;
}

process.once('SIGINT', () => {
  cleanup();
  process.exit(130);
});
try {
  x('ip', ['link', 'add', bridge, 'type', 'bridge']);
  x('ip', ['addr', 'add', '10.251.0.1/16', 'dev', bridge]);
  x('ip', ['link', 'set', bridge, 'up']);
  grow(10);
  const httpd = spawn('ip', ['netns', 'exec', ns(0), 'busybox', 'httpd', '-f', '-p', '8088', '-h', www], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (await get(ipOf(0)).then(() => true, () => false)) break;
    await sleep(100);
  }
  console.log(`bridge flood bench: ${N} samples per case; one bridge, up to ${PORTS} namespaces`);
  const small = await measure(10);
  grow(PORTS);
  await sleep(2000); // let the new ports settle (IPv6 DAD and the like)
  const big = await measure(PORTS);
  // Back to 10, to tell the ports' cost from a machine whose load moved meanwhile.
  batch(Array.from({ length: PORTS - 10 }, (_, k) => `netns del ${ns(k + 10)}`));
  made = 10;
  for (let i = 0; i < 300 && readdirSync(`/sys/class/net/${bridge}/brif`).length > 10; i++) await sleep(100);
  const again = await measure(10);
  httpd.kill();
  const w = [12, 10, 10, 10, 10, 10, 10];
  console.log(`\nfirst request on a fresh connection to a namespace on the bridge (ms)\n`);
  console.log(row(['ports', 'unknown50', 'unknown99', 'pinned50', 'pinned99', 'learned50', 'learned99'], w));
  for (const [n, r] of [['10', small], [String(PORTS), big], ['10 again', again]] as const) {
    console.log(row([n, median(r.unknown), pct(r.unknown, 99), median(r.pinned), pct(r.pinned, 99), median(r.learned), pct(r.learned, 99)], w));
  }
  const ten = (k: 'unknown' | 'pinned' | 'learned') => (median(small[k]) + median(again[k])) / 2;
  console.log(`\n  at ${PORTS} / at 10 (mean of before and after), p50: unknown ${(median(big.unknown) / ten('unknown')).toFixed(2)}x, pinned ${(median(big.pinned) / ten('pinned')).toFixed(2)}x, learned ${(median(big.learned) / ten('learned')).toFixed(2)}x`);
  console.log(`  at ${PORTS}: pinned / unknown ${(median(big.pinned) / median(big.unknown)).toFixed(2)}x`);
} finally {
  cleanup();
}
