import type { Redis } from 'ioredis';
import type { ExecMessage } from '../core/jobs.ts';

/**
 * One Redis subscriber shared by all streaming execs of a gateway. The gateway subscribes to
 * an exec's channel before it enqueues the exec, so no output is missed.
 */
export class ExecStreams {
  private readonly handlers = new Map<string, (m: ExecMessage) => void>();

  constructor(private readonly sub: Redis) {
    sub.on('message', (channel: string, message: string) => {
      const h = this.handlers.get(channel);
      if (!h) return;
      try {
        h(JSON.parse(message) as ExecMessage);
      } catch {
        /* a malformed message is dropped */
      }
    });
  }

  async open(channel: string, onMessage: (m: ExecMessage) => void): Promise<() => Promise<void>> {
    this.handlers.set(channel, onMessage);
    await this.sub.subscribe(channel);
    return async () => {
      this.handlers.delete(channel);
      await this.sub.unsubscribe(channel).catch(() => undefined);
    };
  }
}
