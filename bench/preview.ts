/**
 * Issue 3 bench, in one run: requests/s and p50/p99 latency (wrk) to one upstream in a box —
 * direct to its published port, through the boxd gateway, and through nginx as a reverse proxy —
 * then first-byte latency of a request to a suspended box (wake) vs a running one.
 * `npm run bench:preview` (installs nginx-light and wrk when missing).
 */
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchStack } from './stack.ts';
import { median, pct, row } from './stats.ts';

const DURATION = process.env.BENCH_DURATION ?? '8s';
const CONNS = process.env.BENCH_CONNS ?? '32';
const N = Number(process.env.BENCH_N ?? 30);
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
let nginx: ReturnType<typeof spawn> | undefined;
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

  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const nginxPort = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  writeFileSync(join(work, 'nginx.conf'), `
worker_processes 1; daemon off; pid ${work}/nginx.pid; error_log ${work}/error.log;
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
  nginx = spawn('nginx', ['-c', join(work, 'nginx.conf'), '-p', work], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    if ((await fetch(`http://127.0.0.1:${nginxPort}/`, { headers: { Host: hostName } }).then((r) => r.status).catch(() => 0)) === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  await wrk(`http://127.0.0.1:${gwPort}/`, hostName); // warm-up
  const direct = await wrk(`http://127.0.0.1:${upstream}/`);
  const viaGateway = await wrk(`http://127.0.0.1:${gwPort}/`, hostName);
  const viaNginx = await wrk(`http://127.0.0.1:${nginxPort}/`, hostName);

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
  for (const [name, r] of [['direct', direct], ['boxd gateway', viaGateway], ['nginx', viaNginx]] as const) console.log(row([name, r.rps, r.p50, r.p99, r.errors], w));
  console.log(`\n  gateway/nginx throughput ${(viaGateway.rps / viaNginx.rps).toFixed(2)}x, gateway/direct ${(viaGateway.rps / direct.rps).toFixed(2)}x`);
  console.log(`  gateway/nginx p50 latency ${(viaGateway.p50 / viaNginx.p50).toFixed(2)}x, p99 ${(viaGateway.p99 / viaNginx.p99).toFixed(2)}x`);
  console.log(`\nfirst byte through the gateway, N=${N} (ms)\n`);
  console.log(row(['box', 'p50', 'p99'], [16, 10, 10]));
  console.log(row(['running', median(running), pct(running, 99)], [16, 10, 10]));
  console.log(row(['suspended(wake)', median(waking), pct(waking, 99)], [16, 10, 10]));
  console.log(`\n  wake adds ${(median(waking) - median(running)).toFixed(1)} ms at p50, ${(pct(waking, 99) - pct(running, 99)).toFixed(1)} ms at p99`);
} finally {
  nginx?.kill();
  rmSync(work, { recursive: true, force: true });
  await stack.close();
}
