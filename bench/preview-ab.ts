/**
 * Quick A/B of the preview gateway against nginx on a shared machine: one box, then nginx and the
 * gateway (each with BENCH_WORKERS processes, default 1) measured back to back AB_ROUNDS times
 * (default 5) with wrk, reporting medians and the median ratio. AB_FASTPATH=false measures the
 * HTTP path. Same setup as bench/preview.ts; BENCH_CPU_PROF=<dir> profiles the gateway processes.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
const stack = await benchStack('benchab', { BOXD_POOL: 'false' });
const { api, config, gateway } = stack;
const hostName = `web.${config.BOXD_BASE_DOMAIN}`;

async function wrk(port: number): Promise<number> {
  const args = ['-t1', `-c${CONNS}`, `-d${DURATION}`, '-H', `Host: ${hostName}`, `http://127.0.0.1:${port}/`];
  const { stdout } = await promisify(execFile)('wrk', args, { encoding: 'utf8' });
  if (/Non-2xx/.test(stdout) || /Socket errors/.test(stdout)) console.log(stdout);
  return parseFloat(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 'NaN');
}

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
  const gwPort = await freePort();
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const gw = spawn(process.execPath, [...prof, '--import', 'tsx', 'gateway/main.ts'], {
    env: { ...process.env, BOXD_PREFIX: config.BOXD_PREFIX, BOXD_PORT: String(gwPort), BOXD_GATEWAY_WORKERS: String(WORKERS), LOG_LEVEL: 'warn', BOXD_POOL: 'false', BOXD_PREVIEW_FASTPATH: FAST },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  procs.push(gw);
  await waitOk(gwPort, hostName);
  await wrk(gwPort); // warm-up
  await wrk(nginxPort);
  const n: number[] = [];
  const g: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const a = await wrk(nginxPort);
    const b = await wrk(gwPort);
    n.push(a);
    g.push(b);
    ratios.push(b / a);
    console.log(`round ${i + 1}: nginx ${a.toFixed(0)}  gateway(fastpath=${FAST}) ${b.toFixed(0)}  ratio ${(b / a).toFixed(2)}`);
  }
  console.log(`medians x${WORKERS}: nginx ${median(n).toFixed(0)} req/s, gateway ${median(g).toFixed(0)} req/s, ratio ${median(ratios).toFixed(2)}`);
} finally {
  for (const p of procs) if (p.exitCode === null && !p.signalCode) p.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  rmSync(work, { recursive: true, force: true });
  await stack.close();
}
