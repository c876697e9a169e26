/**
 * The ceiling for a Node proxy in bench/preview-ab.ts (AB_PIPE=true): a TCP server that opens one
 * upstream connection per client connection and pipes both ways, with no HTTP work at all.
 * `PIPE_PORT`, `PIPE_UPSTREAM` (port on 127.0.0.1), `PIPE_WORKERS` processes via node:cluster.
 */
import cluster from 'node:cluster';
import { connect, createServer } from 'node:net';

const workers = Number(process.env.PIPE_WORKERS ?? 1);
if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    process.exit(0);
  });
} else {
  const upstream = Number(process.env.PIPE_UPSTREAM);
  createServer((client) => {
    client.setNoDelay(true);
    const up = connect({ host: '127.0.0.1', port: upstream, noDelay: true });
    client.pipe(up);
    up.pipe(client);
    client.on('error', () => up.destroy());
    up.on('error', () => client.destroy());
  }).listen(Number(process.env.PIPE_PORT), '127.0.0.1');
}
