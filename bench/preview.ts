/**
 * Issue 3 bench, in one run: requests/s and p50/p99 latency (wrk) to one upstream in a box —
 * direct to its published port, through the boxd gateway, and through nginx as a reverse proxy —
 * each with 1 worker and with N (BENCH_WORKERS, default one per core: BOXD_GATEWAY_WORKERS),
 * then first-byte latency of a request to a suspended box (wake) vs a running one.
 * `npm run bench:preview` (installs nginx-light and wrk when missing); BENCH_WORKERS, BENCH_CPU_PROF.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchStack } from './stack.ts';
import { median, pct, row } from './stats.ts';
import { freePort, waitOk } from './http.ts';

const DURATION = process.env.BENCH_DURATION ?? '8s';
const CONNS = process.env.BENCH_CONNS ?? '32';
const N = Number(process.env.BENCH_N ?? 30);
/** Processes of the N-worker runs (gateway workers and nginx workers alike). */
const WORKERS = Number(process.env.BENCH_WORKERS ?? availableParallelism());
const stack = await benchStack('benchp', { BOXD_POOL: 'false' });
const { api, config, gateway, port: gwPort } = stack;
const hostName = `web.${config.BOXD_BASE_DOMAIN}`;

/** Time to the first byte of a GET through the gateway. */
function firstByte(): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const req = request({ host: '127.0.0.1', port: gwPort, path: '/', headers: { Host: hostName }, agent: false }, (res) => {
      res.once('data', () => resolve(performance.now() - t));
      res.resume();
    });
    req.on('error', reject);
    req.end();
  });
}

interface WrkResult { rps: number; p50: number; p99: number; errors: string }
async function wrk(url: string, hostHeader?: string): Promise<WrkResult> {
  const args = ['-t1', `-c${CONNS}`, `-d${DURATION}`, '--latency', ...(hostHeader ? ['-H', `Host: ${hostHeader}`] : []), url];
  // Async: the gateway under test runs in this process and must keep serving.
  const { stdout: out } = await promisify(execFile)('wrk', args, { encoding: 'utf8' });
  const ms = (s: string) => (s.endsWith('us') ? parseFloat(s) / 1000 : s.endsWith('ms') ? parseFloat(s) : parseFloat(s) * 1000);
  const lat = (p: string) => ms(new RegExp(`^\\s+${p}%\\s+(\\S+)`, 'm').exec(out)?.[1] ?? 'NaN');
  const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? '0';
  return { rps: parseFloat(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 'NaN'), p50: lat('50'), p99: lat('99'), errors };
}

const work = mkdtempSync(join(tmpdir(), 'boxd-nginx-'));
const nginxes: ChildProcess[] = [];
const gateways: ChildProcess[] = [];
try {
  await api('POST', '/v1/boxes', { name: 'web', golden: 'node', ports: [3000], idleTimeoutMs: 0 });
  const server = "require('http').createServer((q,s)=>{s.setHeader('content-type','text/plain');s.end('hello from the box\\n')}).listen(3000)";
  await api('POST', '/v1/boxes/web/exec', { cmd: ['bash', '-c', `nohup node -e "${server}" >/tmp/srv.log 2>&1 &`] });
  const box = (await api('GET', '/v1/boxes/web')) as { name: string };
  const record = await gateway.store.require(box.name);
  const upstream = record.hostPorts[3000]!;
  for (let i = 0; i < 100; i++) {
    if ((await fetch(`http://127.0.0.1:${upstream}/`).then((r) => r.status).catch(() => 0)) === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  /** nginx as a reverse proxy to the same upstream, with `workers` worker processes. */
  const startNginx = async (workers: number) => {
    const port = await freePort();
    const dir = join(work, `w${workers}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'nginx.conf'), `
worker_processes ${workers}; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream box { server 127.0.0.1:${upstream}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location / { proxy_pass http://box; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr; }
  }
}`);
    const proc = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' });
    nginxes.push(proc);
    await waitOk(port, hostName);
    return { port, proc };
  };
  /** The gateway as `npm start` runs it: gateway/main.ts with `workers` processes sharing a port. */
  const startGateway = async (workers: number, fastpath = false) => {
    const port = await freePort();
    // BENCH_CPU_PROF=<dir>: every gateway process writes a V8 profile there (see bench/flame.ts).
    const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
    const proc = spawn(process.execPath, [...prof, '--import', 'tsx', 'gateway/main.ts'], {
      env: { ...process.env, BOXD_PREFIX: config.BOXD_PREFIX, BOXD_PORT: String(port), BOXD_GATEWAY_WORKERS: String(workers), LOG_LEVEL: 'warn', BOXD_POOL: 'false', BOXD_PREVIEW_FASTPATH: String(fastpath) },
      stdio: 'ignore',
    });
    gateways.push(proc);
    await waitOk(port, hostName);
    return { port, proc };
  };
  const stop = async (proc: ChildProcess) => {
    if (proc.exitCode !== null || proc.signalCode) return;
    const gone = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await gone;
  };

  const nginx1 = await startNginx(1);
  await wrk(`http://127.0.0.1:${gwPort}/`, hostName); // warm-up
  const direct = await wrk(`http://127.0.0.1:${upstream}/`);
  const viaGateway = await wrk(`http://127.0.0.1:${gwPort}/`, hostName);
  const viaNginx = await wrk(`http://127.0.0.1:${nginx1.port}/`, hostName);
  await stop(nginx1.proc);

  // The same with N processes each: gateway workers (node:cluster) and nginx workers.
  const gwN = await startGateway(WORKERS);
  await wrk(`http://127.0.0.1:${gwN.port}/`, hostName); // warm-up (every worker compiles its code)
  const viaGatewayN = await wrk(`http://127.0.0.1:${gwN.port}/`, hostName);
  await stop(gwN.proc);
  // The experimental raw-socket fast path (BOXD_PREVIEW_FASTPATH=true), 1 and N processes.
  const fast1 = await startGateway(1, true);
  await wrk(`http://127.0.0.1:${fast1.port}/`, hostName); // warm-up
  const viaFast = await wrk(`http://127.0.0.1:${fast1.port}/`, hostName);
  await stop(fast1.proc);
  const fastN = await startGateway(WORKERS, true);
  await wrk(`http://127.0.0.1:${fastN.port}/`, hostName); // warm-up
  const viaFastN = await wrk(`http://127.0.0.1:${fastN.port}/`, hostName);
  await stop(fastN.proc);
  const nginxN = await startNginx(WORKERS);
  const viaNginxN = await wrk(`http://127.0.0.1:${nginxN.port}/`, hostName);
  await stop(nginxN.proc);

  const running: number[] = [];
  const waking: number[] = [];
  for (let i = 0; i < N; i++) {
    running.push(await firstByte());
    await api('POST', '/v1/boxes/web/suspend');
    waking.push(await firstByte());
  }

  const w = [16, 12, 10, 10, 10];
  console.log(`\nthroughput: wrk -t1 -c${CONNS} -d${DURATION}, node http server in a box (2 cores shared by everything)\n`);
  console.log(row(['path', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx'], w));
  const rows = [['direct', direct], ['gateway x1', viaGateway], ['nginx x1', viaNginx], [`gateway x${WORKERS}`, viaGatewayN], [`nginx x${WORKERS}`, viaNginxN], ['fastpath x1', viaFast], [`fastpath x${WORKERS}`, viaFastN]] as const;
  for (const [name, r] of rows) console.log(row([name, r.rps, r.p50, r.p99, r.errors], w));
  console.log(`\n  gateway/nginx throughput ${(viaGateway.rps / viaNginx.rps).toFixed(2)}x with 1 worker each, ${(viaGatewayN.rps / viaNginxN.rps).toFixed(2)}x with ${WORKERS} each`);
  console.log(`  fastpath/nginx throughput ${(viaFast.rps / viaNginx.rps).toFixed(2)}x with 1 worker each, ${(viaFastN.rps / viaNginxN.rps).toFixed(2)}x with ${WORKERS} each; fastpath/gateway x1 ${(viaFast.rps / viaGateway.rps).toFixed(2)}x`);
  console.log(`  gateway x${WORKERS} / gateway x1 ${(viaGatewayN.rps / viaGateway.rps).toFixed(2)}x; gateway/direct ${(viaGateway.rps / direct.rps).toFixed(2)}x`);
  console.log(`  gateway/nginx p50 latency ${(viaGateway.p50 / viaNginx.p50).toFixed(2)}x, p99 ${(viaGateway.p99 / viaNginx.p99).toFixed(2)}x`);
  console.log(`\nfirst byte through the gateway, N=${N} (ms)\n`);
  console.log(row(['box', 'p50', 'p99'], [16, 10, 10]));
  console.log(row(['running', median(running), pct(running, 99)], [16, 10, 10]));
  console.log(row(['suspended(wake)', median(waking), pct(waking, 99)], [16, 10, 10]));
  console.log(`\n  wake adds ${(median(waking) - median(running)).toFixed(1)} ms at p50, ${(pct(waking, 99) - pct(running, 99)).toFixed(1)} ms at p99`);
} finally {
  for (const p of [...nginxes, ...gateways]) if (p.exitCode === null && !p.signalCode) p.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
  await stack.close();
}
