import type { Redis } from 'ioredis';
import { BoxdError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { frame, PTY_SILENCE_MS, ptyChannels, PtyTag } from '../core/pty-wire.ts';
import type { Lifecycle } from './lifecycle.ts';
import type { PtyProcess } from './runtime.ts';

export interface PtyOpen {
  name: string;
  ptyId: string;
  cmd: string[];
  cols: number;
  rows: number;
  env?: Record<string, string>;
}

/**
 * The terminals a host runs. `open` starts the command and subscribes to its input channel
 * before it returns, so the gateway may send keystrokes as soon as the job answers. A terminal
 * ends when its command exits, when the gateway closes it, or when the gateway falls silent
 * (no ping for PTY_SILENCE_MS: it died), and it keeps its box awake while open.
 */
export class PtySessions {
  private readonly open_ = new Map<string, { proc: PtyProcess; name: string; lastSeen: number; queue: Promise<void> }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly d: { redis: Redis; sub: Redis; prefix: string; lifecycle: Lifecycle; touch: (name: string) => Promise<void>; log: Logger },
  ) {
    d.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.input(channel.toString(), message));
    this.timer = setInterval(() => this.sweep(), 5_000);
    this.timer.unref();
  }

  get size(): number {
    return this.open_.size;
  }

  async open(job: PtyOpen): Promise<{ ptyId: string }> {
    if (this.open_.has(job.ptyId)) return { ptyId: job.ptyId };
    const ch = ptyChannels(this.d.prefix, job.ptyId);
    const proc = await this.d.lifecycle.pty(job.name, { cmd: job.cmd, cols: job.cols, rows: job.rows, env: job.env });
    this.open_.set(ch.input, { proc, name: job.name, lastSeen: Date.now(), queue: Promise.resolve() });
    const publish = (b: Buffer) => void this.d.redis.publish(ch.output, b).catch(() => undefined);
    proc.onData((data) => publish(frame(PtyTag.data, data)));
    void proc.exited.then(
      async (exitCode) => {
        this.open_.delete(ch.input);
        await this.d.sub.unsubscribe(ch.input).catch(() => undefined);
        await this.d.touch(job.name).catch(() => undefined);
        publish(frame(PtyTag.control, { exitCode }));
      },
      (e: unknown) => publish(frame(PtyTag.end, e instanceof BoxdError ? e.toWire() : { code: 'RUNTIME_ERROR', message: String(e) })),
    );
    try {
      await this.d.sub.subscribe(ch.input);
    } catch (e) {
      await proc.kill();
      throw e;
    }
    return { ptyId: job.ptyId };
  }

  private input(channel: string, m: Buffer): void {
    const s = this.open_.get(channel);
    if (!s || m.length === 0) return;
    s.lastSeen = Date.now();
    // In order: keys typed after a resize must reach a terminal that already has the new size.
    s.queue = s.queue.then(() => this.apply(s.proc, m)).catch(() => undefined);
  }

  private async apply(proc: PtyProcess, m: Buffer): Promise<void> {
    const payload = m.subarray(1);
    switch (m[0]) {
      case PtyTag.data:
        proc.write(payload);
        break;
      case PtyTag.control: {
        let size: { cols: number; rows: number } | undefined;
        try {
          size = JSON.parse(payload.toString()) as { cols: number; rows: number };
        } catch {
          return; // a malformed resize is dropped
        }
        const { cols, rows } = size;
        if (Number.isInteger(cols) && Number.isInteger(rows) && cols > 0 && rows > 0) await proc.resize(Math.min(cols, 1000), Math.min(rows, 1000));
        break;
      }
      case PtyTag.end:
        await proc.kill();
        break;
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of this.open_.values()) {
      void this.d.touch(s.name).catch(() => undefined);
      if (now - s.lastSeen > PTY_SILENCE_MS) {
        this.d.log.info({ box: s.name }, 'closing a terminal whose gateway went silent');
        void s.proc.kill();
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.open_.values()].map((s) => s.proc.kill()));
  }
}
