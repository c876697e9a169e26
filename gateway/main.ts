import { loadConfigOrExit } from '../core/config.ts';
import { createLogger } from '../core/log.ts';
import { createGateway } from './gateway.ts';

const config = loadConfigOrExit();
const log = createLogger(config.LOG_LEVEL, 'gateway');
const gateway = await createGateway(config, log);
gateway.server.listen(config.BOXD_PORT, config.BOXD_BIND, () => {
  log.info({ url: gateway.urls.api, previews: `*.${config.BOXD_BASE_DOMAIN}` }, 'gateway listening');
});
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    void gateway.close().then(() => process.exit(0));
  });
}
