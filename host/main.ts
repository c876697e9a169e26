import { loadConfigOrExit } from '../core/config.ts';
import { createLogger } from '../core/log.ts';
import { startHost } from './host.ts';

const config = loadConfigOrExit();
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
