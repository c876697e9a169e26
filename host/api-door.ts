import { execFile } from 'node:child_process';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { Redis } from 'ioredis';
import type { Logger } from '../core/log.ts';

/**
 * The one host service a box may reach: the control API, for agents running inside boxes
 * (`"agent": true`). Boxes cannot reach the host (DockerRuntime.prepare drops every new
 * connection from the bridge in INPUT); the door is a TCP relay listening on the host's address
 * on that bridge, at one port, to the gateway, and one iptables rule above that drop accepts
 * exactly `-i <bridge> -d <bridge address> -p tcp --dport <port>`. Nothing else on the host
 * opens up. Its URL (`http://<bridge address>:<port>`) is advertised in Redis for the gateways,
 * which put it in agent boxes' `BOXD_URL`.
 */
export interface ApiDoor {
  url: string;
  close(): Promise<void>;
}

export const boxApiUrlKey = (prefix: string, hostId: string): string => `{${prefix}}:box-api-url:${hostId}`;

export async function openApiDoor(o: {
  bridge: { iface: string; ip: string };
  port: number;
  upstream: { host: string; port: number };
  redis: Redis;
  prefix: string;
  hostId: string;
  log: Logger;
}): Promise<ApiDoor> {
  const sockets = new Set<Socket>();
  let server: Server | undefined = createServer((inbound) => {
    const outbound = createConnection(o.upstream);
    sockets.add(inbound).add(outbound);
    const drop = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    inbound.on('error', drop).on('close', drop);
    outbound.on('error', drop).on('close', drop);
    inbound.pipe(outbound).pipe(inbound);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(o.port, o.bridge.ip, () => resolve());
    });
  } catch (e) {
    // A gateway bound to every address (BOXD_BIND=0.0.0.0) on this port already answers there.
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
    o.log.info({ addr: `${o.bridge.ip}:${o.port}` }, 'the API port on the box bridge is taken (a gateway bound to all addresses?): no relay');
    server = undefined;
  }
  const rule = ['INPUT', '-i', o.bridge.iface, '-d', `${o.bridge.ip}/32`, '-p', 'tcp', '--dport', String(o.port), '-m', 'comment', '--comment', `boxd-api ${o.prefix}`, '-j', 'ACCEPT'];
  // Above the drop rule: delete ours if present, then insert it first.
  while (await iptables(['-D', ...rule])) {
    /* remove duplicates */
  }
  if (!(await iptables(['-I', 'INPUT', '1', ...rule.slice(1)]))) o.log.warn({ rule: rule.join(' ') }, 'could not open the API to boxes (iptables)');
  const url = `http://${o.bridge.ip}:${o.port}`;
  await o.redis.set(boxApiUrlKey(o.prefix, o.hostId), url);
  o.log.info({ url }, 'boxes reach the API here');
  return {
    url,
    async close() {
      await o.redis.del(boxApiUrlKey(o.prefix, o.hostId)).catch(() => undefined);
      while (await iptables(['-D', ...rule])) {
        /* every copy */
      }
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    },
  };
}

function iptables(args: string[]): Promise<boolean> {
  return new Promise((resolve) => execFile('iptables', ['-w', ...args], { timeout: 30_000 }, (err) => resolve(!err)));
}
