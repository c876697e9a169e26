import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { loadConfigOrExit } from '../core/config.ts';
import { createLogger } from '../core/log.ts';
import { createGateway } from './gateway.ts';

/**
 * The gateway process. With BOXD_GATEWAY_WORKERS > 1 (default: one per core) this process is a
 * supervisor that forks that many gateway workers sharing the listening port (node:cluster) and
 * replaces any that dies; gateways are stateless apart from caches, so they need nothing else.
 */
const config = loadConfigOrExit();
const workers = config.BOXD_GATEWAY_WORKERS || availableParallelism();

if (cluster.isPrimary && workers > 1) {
  const log = createLogger(config.LOG_LEVEL, 'gateway');
  let stopping = false;
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    log.warn({ pid: worker.process.pid, code, signal }, 'gateway worker died; starting another');
    setTimeout(() => cluster.fork(), 500).unref();
  });
  log.info({ workers, port: config.BOXD_PORT }, 'gateway supervisor started');
  for (const s of ['SIGINT', 'SIGTERM'] as const) {
    process.on(s, () => {
      if (stopping) return;
      stopping = true;
      const all = Object.values(cluster.workers ?? {});
      for (const w of all) w?.process.kill('SIGTERM');
      const done = () => Object.values(cluster.workers ?? {}).length === 0 && process.exit(0);
      cluster.on('exit', done);
      done();
      setTimeout(() => process.exit(0), 10_000).unref();
    });
  }
} else {
  const log = createLogger(config.LOG_LEVEL, 'gateway').child(cluster.isWorker ? { worker: cluster.worker?.id } : {});
  const gateway = await createGateway(config, log);
  gateway.server.listen(config.BOXD_PORT, config.BOXD_BIND, () => {
    if (!cluster.isWorker || cluster.worker?.id === 1) {
      log.info({ url: gateway.urls.api, previews: `*.${config.BOXD_BASE_DOMAIN}`, workers: cluster.isWorker ? workers : 1 }, 'gateway listening');
    }
  });
  let stopping = false;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      stopping = true;
      void gateway.close().then(() => process.exit(0));
    });
  }
}
