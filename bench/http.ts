/** Small HTTP helpers the benches share. */
import { createServer, request } from 'node:http';

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  return port;
}

/** Waits (up to 30 s) until GET / on `port` with Host `host` answers 200. */
export async function waitOk(port: number, host: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if ((await fetch(`http://127.0.0.1:${port}/`, { headers: { Host: host } }).then((r) => r.status).catch(() => 0)) === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answers on ${port}`);
}

/** Time to the first byte of GET / (a fresh connection), in ms; rejects on a status other than 200. */
export function firstByte(port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { Host: host }, agent: false }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`${host}: status ${res.statusCode}`));
      res.once('data', () => resolve(performance.now() - t));
      res.once('end', () => resolve(performance.now() - t));
      res.resume();
    });
    req.on('error', reject);
    req.end();
  });
}
