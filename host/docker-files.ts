import { request, type IncomingMessage } from 'node:http';
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { BoxdError, RuntimeError, ValidationError } from '../core/errors.ts';
import { archiveTrailer, fileHeader, parseHeader, TAR_BLOCK } from './tar.ts';

/**
 * Files in and out of a container through the Engine's archive API, streamed: an upload is
 * one tar entry whose header is written before the caller's bytes and whose padding after them;
 * a download parses the archive's first header and passes the file's bytes on. Memory stays flat
 * whatever the size. Raw HTTP on the engine's socket, so an aborted upload aborts the request.
 */
export class DockerFiles {
  constructor(
    private readonly socketPath: string,
    /** Runs a command in the box (mkdir, mv, rm); exit code and stderr. */
    private readonly run: (id: string, cmd: string[]) => Promise<{ exitCode: number; stderr: string }>,
    private readonly maxFileBytes: number,
  ) {}

  private call(method: string, path: string, headers: Record<string, string | number> = {}): { req: ReturnType<typeof request>; res: Promise<IncomingMessage> } {
    const req = request({ socketPath: this.socketPath, method, path, headers });
    const res = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
    });
    return { req, res };
  }

  async put(id: string, path: string, source: Readable, size: number, mode = 0o644): Promise<void> {
    if (size > this.maxFileBytes) throw new BoxdError('FILE_TOO_LARGE', `files are limited to ${this.maxFileBytes} bytes`);
    const dir = posix.dirname(path);
    const tmp = `.boxd-upload-${randomBytes(6).toString('hex')}`;
    const exists = this.call('HEAD', `/containers/${encodeURIComponent(id)}/archive?path=${encodeURIComponent(dir)}`);
    exists.req.end();
    const head = await exists.res.catch((e) => {
      throw new RuntimeError(`reaching the engine: ${(e as Error).message}`, { cause: e });
    });
    head.resume();
    if (head.statusCode === 404) {
      const made = await this.run(id, ['mkdir', '-p', dir]);
      if (made.exitCode !== 0) throw new ValidationError(`cannot create folder ${dir}: ${made.stderr.trim()}`);
    } else if (head.statusCode !== 200) {
      throw new RuntimeError(`checking folder ${dir} in ${id}: engine answered ${head.statusCode}`);
    }

    const header = fileHeader(tmp, size, mode);
    const trailer = archiveTrailer(size);
    const total = header.length + size + trailer.length;
    const put = this.call('PUT', `/containers/${encodeURIComponent(id)}/archive?path=${encodeURIComponent(dir)}`, {
      'Content-Type': 'application/x-tar',
      'Content-Length': total,
    });
    put.res.catch(() => undefined);
    const sent = new Promise<void>((resolve, reject) => {
      let seen = 0;
      let failed = false;
      const fail = (e: Error) => {
        if (failed) return;
        failed = true;
        source.unpipe?.();
        put.req.destroy(e);
        reject(e);
      };
      put.req.on('error', fail);
      put.req.write(header);
      source.on('data', (chunk: Buffer) => {
        seen += chunk.length;
        if (seen > size) return fail(new ValidationError(`the body is longer than the ${size} bytes announced`));
        if (!put.req.write(chunk)) {
          source.pause();
          put.req.once('drain', () => source.resume());
        }
      });
      source.once('end', () => {
        if (seen !== size) return fail(new ValidationError(`the body ended after ${seen} of ${size} bytes`));
        put.req.end(trailer);
        resolve();
      });
      source.once('error', (e) => fail(new ValidationError(`the upload broke off: ${e.message}`)));
      source.once('close', () => {
        if (seen !== size) fail(new ValidationError(`the upload broke off after ${seen} of ${size} bytes`));
      });
    });
    const tmpPath = posix.join(dir, tmp);
    try {
      await sent;
      const res = await put.res;
      const text = await readAll(res);
      if (res.statusCode !== 200) {
        if (res.statusCode === 404) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
        if (res.statusCode === 400 || res.statusCode === 403) throw new ValidationError(`${path}: ${engineMessage(text)}`);
        throw new RuntimeError(`writing ${path} in ${id}: ${engineMessage(text)}`);
      }
    } catch (e) {
      // The engine may have extracted part of the entry: never leave it behind.
      await this.run(id, ['rm', '-f', tmpPath]).catch(() => undefined);
      throw e;
    }
    const moved = await this.run(id, ['mv', '-f', tmpPath, path]);
    if (moved.exitCode !== 0) {
      await this.run(id, ['rm', '-f', tmpPath]).catch(() => undefined);
      throw new ValidationError(`cannot write ${path}: ${moved.stderr.trim()}`);
    }
  }

  async open(id: string, path: string): Promise<{ size: number; stream: Readable }> {
    const get = this.call('GET', `/containers/${encodeURIComponent(id)}/archive?path=${encodeURIComponent(path)}`);
    get.req.end();
    let res: IncomingMessage;
    try {
      res = await get.res;
    } catch (e) {
      throw new RuntimeError(`reaching the engine: ${(e as Error).message}`, { cause: e });
    }
    if (res.statusCode !== 200) {
      const msg = engineMessage(await readAll(res));
      if (/No such container/i.test(msg)) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
      if (res.statusCode === 404) throw new BoxdError('FILE_NOT_FOUND', `${path} not found`);
      if (res.statusCode === 400 || res.statusCode === 403) throw new ValidationError(`${path}: ${msg}`);
      throw new RuntimeError(`reading ${path} in ${id}: ${msg}`);
    }
    const stat = pathStat(res.headers['x-docker-container-path-stat']);
    if (stat) {
      const fail = (e: BoxdError) => {
        res.destroy();
        throw e;
      };
      if (stat.mode & MODE_DIR) fail(new ValidationError(`${path} is a folder, not a file`));
      if (stat.mode & MODE_TYPE && !stat.linkTarget) fail(new ValidationError(`${path} is not a regular file`));
      if (stat.size > this.maxFileBytes) fail(new BoxdError('FILE_TOO_LARGE', `${path} is larger than ${this.maxFileBytes} bytes`));
    }
    const it = firstFile(res, path);
    const first = await it.next();
    if (first.done) throw new BoxdError('FILE_NOT_FOUND', `${path} not found`);
    const size = first.value as number;
    if (size > this.maxFileBytes) {
      res.destroy();
      throw new BoxdError('FILE_TOO_LARGE', `${path} is larger than ${this.maxFileBytes} bytes`);
    }
    const body = Readable.from(
      (async function* () {
        for (;;) {
          const n = await it.next();
          if (n.done) return;
          yield n.value as Buffer;
        }
      })(),
      { objectMode: false },
    );
    body.once('close', () => res.destroy());
    return { size, stream: body };
  }
}

const MODE_DIR = 2 ** 31;
// Go's os.ModeType without ModeDir: symlink, device, named pipe, socket, char device, irregular.
const MODE_TYPE = (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

function pathStat(raw: string | string[] | undefined): { size: number; mode: number; linkTarget?: string } | undefined {
  if (typeof raw !== 'string') return undefined;
  try {
    const v = JSON.parse(Buffer.from(raw, 'base64').toString('utf8')) as { size: number; mode: number; linkTarget?: string };
    return { size: v.size, mode: v.mode >>> 0, linkTarget: v.linkTarget };
  } catch {
    return undefined;
  }
}

/**
 * Yields the first regular file of a tar stream: first its size, then its bytes as they come.
 * Extension headers (pax, GNU long names) are skipped; a folder or a link is refused.
 */
async function* firstFile(src: AsyncIterable<Buffer>, path: string): AsyncGenerator<number | Buffer> {
  let buf: Buffer = Buffer.alloc(0);
  let skip = 0;
  let left = -1;
  for await (const chunk of src) {
    let c: Buffer = chunk;
    if (left >= 0) {
      const take = c.subarray(0, left);
      left -= take.length;
      if (take.length) yield take;
      if (left === 0) return;
      continue;
    }
    buf = buf.length ? Buffer.concat([buf, c]) : c;
    for (;;) {
      if (skip) {
        const n = Math.min(skip, buf.length);
        buf = buf.subarray(n);
        skip -= n;
        if (skip) break;
      }
      if (buf.length < TAR_BLOCK) break;
      const h = parseHeader(buf.subarray(0, TAR_BLOCK));
      buf = buf.subarray(TAR_BLOCK);
      if (!h) return;
      const padded = Math.ceil(h.size / TAR_BLOCK) * TAR_BLOCK;
      if ('xgLK'.includes(h.flag)) {
        skip = padded;
        continue;
      }
      if (h.flag === '5') throw new ValidationError(`${path} is a folder, not a file`);
      if (h.flag !== '0' && h.flag !== '\0') throw new ValidationError(`${path} is not a regular file`);
      yield h.size;
      if (h.size === 0) return;
      left = h.size;
      c = buf;
      buf = Buffer.alloc(0);
      const take = c.subarray(0, left);
      left -= take.length;
      if (take.length) yield take;
      if (left === 0) return;
      break;
    }
  }
  if (left > 0) throw new RuntimeError(`${path}: the archive ended early`);
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.length < 64 && chunks.push(c));
    res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.once('error', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function engineMessage(text: string): string {
  try {
    return (JSON.parse(text) as { message?: string }).message ?? text;
  } catch {
    return text.trim();
  }
}
