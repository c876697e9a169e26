/**
 * The Redis pub/sub protocol between a gateway holding a terminal WebSocket and the host running
 * the terminal's command. Terminal traffic is keystrokes and screen output: small, ordered per
 * channel, and never stored (pub/sub keeps nothing), so it needs no job record. Each message is
 * one tag byte and a payload.
 */
export const ptyChannels = (prefix: string, ptyId: string) => ({
  /** gateway → host: stdin, resize, close, ping. */
  input: `${prefix}:pty:${ptyId}:in`,
  /** host → gateway: output, exit, error. */
  output: `${prefix}:pty:${ptyId}:out`,
});

export const PtyTag = {
  data: 1,
  /** input: `{cols, rows}`; output: `{exitCode}`. */
  control: 2,
  /** input: close the terminal; output: `{code, message}` error. */
  end: 3,
  /** input: the gateway still holds the socket. */
  ping: 4,
} as const;

export const frame = (tag: number, payload: Buffer | string | object = Buffer.alloc(0)): Buffer =>
  Buffer.concat([Buffer.from([tag]), Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload))]);

/** A terminal whose gateway sent nothing (not even a ping) for this long is closed by its host. */
export const PTY_SILENCE_MS = 45_000;
export const PTY_PING_MS = 10_000;
