import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { BoxdError } from './errors.ts';
import { Keys } from './keys.ts';

/**
 * Bytes in transit between a gateway and a host (file bodies, exec stdin): job data stays small
 * JSON and the bytes wait in a short-lived Redis key that the receiver takes (reads and deletes).
 */
export class Blobs {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** Stores `data` for `ttlMs` and returns its key. */
  async put(data: Buffer, ttlMs: number, id: string = randomUUID()): Promise<string> {
    const key = new Keys(this.prefix).blob(id);
    await this.redis.set(key, data, 'PX', ttlMs);
    return key;
  }

  /** Reads and deletes a blob; BLOB_EXPIRED when it is gone. */
  async take(key: string): Promise<Buffer> {
    const [[, data]] = (await this.redis.multi().getBuffer(key).del(key).exec()) as [[unknown, Buffer | null]];
    if (!data) throw new BoxdError('BLOB_EXPIRED', 'the data expired on its way between gateway and host; try again');
    return data;
  }
}
