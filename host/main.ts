import { ConfigError, loadConfig } from '../core/config.ts';
import { createLogger } from '../core/log.ts';
import { startHost } from './host.ts';

let config;
try {
  config = loadConfig();
} catch (e) {
  console.error(e instanceof ConfigError ? e.message : e);
  process.exit(2);
}
const log = createLogger(config.LOG_LEVEL, 'host');
const host = await startHost(config, log);
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'host stopping');
    void host.close().then(() => process.exit(0));
  });
}
