import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A small HTML error page for people; `X-Boxd-Error` carries the code for programs. */
export function sendPage(res: ServerResponse, status: number, code: string, title: string, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = pageBody(status, code, title, message);
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', 'X-Boxd-Error': code, ...headers });
  res.end(body);
}

/** The same page as a whole HTTP/1.1 response that closes the connection, for a raw socket. */
export function rawPage(status: number, code: string, title: string, message: string, headers: Record<string, string> = {}): string {
  const body = pageBody(status, code, title, message);
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nX-Boxd-Error: ${code}\r\n${extra}Connection: close\r\n\r\n${body}`;
}

function pageBody(status: number, code: string, title: string, message: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${status} ${escape(title)}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}code{background:#f3f3f3;padding:.1rem .3rem}</style></head>
<body><h1>${escape(title)}</h1><p>${escape(message)}</p><p><small>boxd · ${status} · <code>${code}</code></small></p></body></html>\n`;
}

/** The same for a raw socket (a refused WebSocket upgrade). */
export function refuseUpgrade(socket: Socket, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Boxd-Error: ${code}\r\n${extra}Connection: close\r\n\r\n${body}`,
  );
}
