import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../core/config.ts';
import { silentLogger as log } from '../core/log.ts';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { startHost, type HostHandle } from '../host/host.ts';

export interface BenchStack {
  config: Config;
  gateway: Gateway;
  host: HostHandle;
  port: number;
  /** JSON call to the API; throws on a status of 300 or more. */
  api: (method: string, path: string, body?: unknown) => Promise<any>;
  close(): Promise<void>;
}

/** A host and a listening gateway in this process under a fresh prefix, for one bench run. */
export async function benchStack(name: string, env: Record<string, string> = {}): Promise<BenchStack> {
  const prefix = `${name}-${randomBytes(3).toString('hex')}`;
  const key = `bench-${randomBytes(12).toString('hex')}`;
  const config = loadConfig({ ...process.env, BOXD_PREFIX: prefix, BOXD_HOST_ID: prefix, BOXD_API_KEY: key, BOXD_MAX_BOXES: '1000', LOG_LEVEL: 'silent', ...env });
  const host = await startHost(config, log);
  const gateway = await createGateway(config, log);
  await new Promise<void>((r) => gateway.server.listen(0, '127.0.0.1', () => r()));
  const port = (gateway.server.address() as { port: number }).port;
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return res.status === 204 ? null : res.json();
  };
  return {
    config, gateway, host, port, api,
    async close() {
      await gateway.close();
      await host.close();
      const { purge } = await import('../test/helpers.ts');
      await purge(prefix);
    },
  };
}
