import type { Socket } from 'node:net';

/** An unmasked WebSocket ping with an empty payload (server → client). */
const PING = Buffer.from([0x89, 0x00]);

/**
 * Follows the frames a box sends to a client (reading headers only, never changing a byte) so
 * that a ping can be slipped in between two frames and never inside one.
 */
export class FrameBoundary {
  /** Bytes left of the frame in progress: header bytes still to come (`header`) or payload. */
  private header = Buffer.alloc(0);
  private payloadLeft = 0;

  /** `onFrame` hears the opcode of every frame whose header is complete. */
  constructor(private readonly onFrame?: (opcode: number) => void) {}

  /** Whether the bytes seen so far end exactly at a frame boundary. */
  get atBoundary(): boolean {
    return this.payloadLeft === 0 && this.header.length === 0;
  }

  /** Feeds the next bytes sent to the client. */
  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, chunk.length - i);
        this.payloadLeft -= take;
        i += take;
        continue;
      }
      // Collect a header: 2 bytes, then 0/2/8 length bytes, then 0/4 mask bytes.
      const need = headerLength(this.header);
      const take = Math.min(need - this.header.length, chunk.length - i);
      this.header = Buffer.concat([this.header, chunk.subarray(i, i + take)]);
      i += take;
      if (this.header.length === headerLength(this.header)) {
        this.onFrame?.(this.header[0]! & 0x0f);
        this.payloadLeft = payloadLength(this.header);
        this.header = Buffer.alloc(0);
      }
    }
  }
}

function headerLength(h: Buffer): number {
  if (h.length < 2) return 2;
  const len7 = h[1]! & 0x7f;
  const masked = (h[1]! & 0x80) !== 0;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
}

function payloadLength(h: Buffer): number {
  const len7 = h[1]! & 0x7f;
  if (len7 === 126) return h.readUInt16BE(2);
  if (len7 === 127) return Number(h.readBigUInt64BE(2));
  return len7;
}

/**
 * Detects a dead WebSocket peer (a client gone without a close frame, a half-open TCP
 * connection) on a proxied WebSocket: every `intervalMs` it sends the client a ping between two
 * of the box's frames; a client that sent nothing at all (no pong, no message) for two intervals
 * is dropped, so the socket stops holding its box awake. Pongs reach the box as unsolicited pongs,
 * which RFC 6455 §5.5.3 says to ignore.
 *
 * `upstream` must already be piped to `client`: the tracker listens to the same chunks after the
 * pipe wrote them, so a ping written from here always lands after a whole frame.
 */
/** Opcode of a pong frame: the answer to our ping, not traffic of the app. */
export const PONG = 0x0a;

export function keepAlive(client: Socket, upstream: Socket, intervalMs: number, onDead: () => void): void {
  if (intervalMs <= 0) return;
  const frames = new FrameBoundary();
  let heardAt = Date.now();
  let pingWanted = false;
  const ping = () => {
    pingWanted = false;
    if (!client.destroyed && client.writable) client.write(PING);
  };
  client.on('data', () => (heardAt = Date.now()));
  upstream.on('data', (chunk: Buffer) => {
    frames.push(chunk);
    if (pingWanted && frames.atBoundary) ping();
  });
  const timer = setInterval(() => {
    if (Date.now() - heardAt > 2 * intervalMs) {
      clearInterval(timer);
      onDead();
      client.destroy();
      upstream.destroy();
      return;
    }
    if (frames.atBoundary) ping();
    else pingWanted = true; // in the middle of a frame: send it once the frame is through
  }, intervalMs);
  timer.unref();
  client.once('close', () => clearInterval(timer));
  upstream.once('close', () => clearInterval(timer));
}
