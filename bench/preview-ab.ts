/**
 * Quick A/B of the preview gateway against nginx on a shared machine: one box, then nginx and the
 * gateway (each with BENCH_WORKERS processes, default 1) measured back to back AB_ROUNDS times
 * (default 5) with wrk, reporting medians, the median of the per-round ratios, and each proxy's
 * CPU time per request (user + system of its processes, from /proc: steadier than req/s when
 * other work shares the cores). AB_FASTPATH=false measures the HTTP path. AB_PIPE=true adds a
 * minimal Node pipe proxy (bench/pipe-proxy.ts), the ceiling for any Node proxy;
 * AB_BASELINE=<checkout> adds that checkout's gateway (before/after in one run); AB_NODE_FLAGS
 * adds node flags to this checkout's gateway (not the baseline's); AB_HOLD=<s> waits after warm-up with the ports and
 * pids printed (for strace or perf). Same setup as bench/preview.ts; BENCH_CPU_PROF=<dir>
 * profiles the gateway processes.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchStack } from './stack.ts';
import { median } from './stats.ts';
import { freePort, waitOk } from './http.ts';

const DURATION = process.env.BENCH_DURATION ?? '4s';
const CONNS = process.env.BENCH_CONNS ?? '32';
const ROUNDS = Number(process.env.AB_ROUNDS ?? 5);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 1);
const FAST = process.env.AB_FASTPATH ?? 'true';
/** AB_PIPE=true: also a minimal Node pipe proxy (bench/pipe-proxy.ts), the ceiling for Node. */
const PIPE = process.env.AB_PIPE === 'true';
const stack = await benchStack('benchab', { BOXD_POOL: 'false' });
const { api, config, gateway } = stack;
const hostName = `web.${config.BOXD_BASE_DOMAIN}`;

/** CPU seconds (user + system) used so far by `pid` and its children (nginx and cluster workers). */
function cpuOf(pid: number): number {
  const ticks = (p: number) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(f[11]) + Number(f[12]);
    } catch {
      return 0;
    }
  };
  let t = ticks(pid);
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    for (const k of kids ? kids.split(' ') : []) t += ticks(Number(k));
  }
  return t / 100;
}

/** Requests/s, and the CPU µs per request of process `pid` (with its children) during the run. */
async function wrk(port: number, pid = 0): Promise<number> {
  const args = ['-t1', `-c${CONNS}`, `-d${DURATION}`, '-H', `Host: ${hostName}`, `http://127.0.0.1:${port}/`];
  const before = pid ? cpuOf(pid) : 0;
  const { stdout } = await promisify(execFile)('wrk', args, { encoding: 'utf8' });
  if (pid) cpu.set(pid, (cpuOf(pid) - before) * 1e6 / Number(/(\d+) requests in/.exec(stdout)?.[1] ?? NaN));
  if (/Non-2xx/.test(stdout) || /Socket errors/.test(stdout)) console.log(stdout);
  return parseFloat(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 'NaN');
}
const cpu = new Map<number, number>();

const work = mkdtempSync(join(tmpdir(), 'boxd-ab-'));
const procs: ChildProcess[] = [];
try {
  await api('POST', '/v1/boxes', { name: 'web', golden: 'node', ports: [3000], idleTimeoutMs: 0 });
  const server = "require('http').createServer((q,s)=>{s.setHeader('content-type','text/plain');s.end('hello from the box\\n')}).listen(3000)";
  await api('POST', '/v1/boxes/web/exec', { cmd: ['bash', '-c', `nohup node -e "${server}" >/tmp/srv.log 2>&1 &`] });
  const upstream = (await gateway.store.require('web')).hostPorts[3000]!;
  const nginxPort = await freePort();
  writeFileSync(join(work, 'nginx.conf'), `
worker_processes ${WORKERS}; daemon off; pid ${work}/nginx.pid; error_log ${work}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream box { server 127.0.0.1:${upstream}; keepalive 64; }
  server {
    listen 127.0.0.1:${nginxPort};
    location / { proxy_pass http://box; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr; }
  }
}`);
  mkdirSync(join(work, 'logs'), { recursive: true });
  procs.push(spawn('nginx', ['-c', join(work, 'nginx.conf'), '-p', work], { stdio: 'ignore' }));
  await waitOk(nginxPort, hostName);
  /** What is measured against nginx, in this order each round. */
  const rivals: { name: string; port: number; pid: number }[] = [];
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const startGateway = async (name: string, cwd: string, flags: string[] = [], env: Record<string, string> = {}) => {
    const port = await freePort();
    const gw = spawn(process.execPath, [...prof, ...flags, '--import', 'tsx', 'gateway/main.ts'], {
      cwd,
      env: { ...process.env, BOXD_PREFIX: config.BOXD_PREFIX, BOXD_PORT: String(port), BOXD_GATEWAY_WORKERS: String(WORKERS), LOG_LEVEL: 'warn', BOXD_POOL: 'false', BOXD_PREVIEW_FASTPATH: FAST, ...env },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    procs.push(gw);
    await waitOk(port, hostName);
    rivals.push({ name, port, pid: gw.pid! });
  };
  // AB_NODE_FLAGS: node/V8 flags for this checkout's gateway only (against AB_BASELINE=. to compare).
  // AB_GATEWAY_ENV="K=V ...": environment for this checkout's gateway only (e.g. NODE_CLUSTER_SCHED_POLICY=none).
  const env = Object.fromEntries((process.env.AB_GATEWAY_ENV ?? '').split(' ').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  await startGateway(`gateway(fastpath=${FAST})`, process.cwd(), process.env.AB_NODE_FLAGS ? process.env.AB_NODE_FLAGS.split(' ') : [], env);
  // AB_BASELINE=<another checkout>: its gateway too, for a before/after in the same run.
  if (process.env.AB_BASELINE) await startGateway('baseline', process.env.AB_BASELINE);
  if (PIPE) {
    const port = await freePort();
    const proc = spawn(process.execPath, ['--import', 'tsx', 'bench/pipe-proxy.ts'], {
      env: { ...process.env, PIPE_PORT: String(port), PIPE_UPSTREAM: String(upstream), PIPE_WORKERS: String(WORKERS) },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    procs.push(proc);
    await waitOk(port, hostName);
    rivals.push({ name: 'pipe', port, pid: proc.pid! });
  }
  for (const r of rivals) await wrk(r.port); // warm-up
  if (process.env.AB_HOLD) {
    console.log(JSON.stringify({ nginx: { port: nginxPort, pid: procs[0]!.pid }, rivals }));
    await new Promise((r) => setTimeout(r, Number(process.env.AB_HOLD) * 1000));
  }
  await wrk(nginxPort);
  const nginxPid = procs[0]!.pid!;
  const rps: number[][] = rivals.map(() => []);
  const ratios: number[][] = rivals.map(() => []);
  const cpus: number[][] = [[], ...rivals.map(() => [])];
  const nrps: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const a = await wrk(nginxPort, nginxPid);
    nrps.push(a);
    cpus[0]!.push(cpu.get(nginxPid)!);
    let line = `round ${i + 1}: nginx ${a.toFixed(0)} (${cpu.get(nginxPid)!.toFixed(0)} µs CPU/req)`;
    for (const [k, r] of rivals.entries()) {
      const b = await wrk(r.port, r.pid);
      rps[k]!.push(b);
      ratios[k]!.push(b / a);
      cpus[k + 1]!.push(cpu.get(r.pid)!);
      line += `  ${r.name} ${b.toFixed(0)} (${cpu.get(r.pid)!.toFixed(0)} µs) ${(b / a).toFixed(2)}x`;
    }
    console.log(line);
  }
  console.log(`medians x${WORKERS} (${ROUNDS} rounds): nginx ${median(nrps).toFixed(0)} req/s, ${median(cpus[0]!).toFixed(1)} µs CPU/req` +
    rivals.map((r, k) => `; ${r.name} ${median(rps[k]!).toFixed(0)} req/s, ${median(cpus[k + 1]!).toFixed(1)} µs, ratio ${median(ratios[k]!).toFixed(2)}`).join(''));
} finally {
  for (const p of procs) if (p.exitCode === null && !p.signalCode) p.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  rmSync(work, { recursive: true, force: true });
  await stack.close();
}
