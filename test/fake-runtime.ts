import { BoxdError, ValidationError } from '../core/errors.ts';
import { Readable } from 'node:stream';
import { OutputBuffer, type BoxInstance, type BoxSpec, type ExecRequest, type ExecResult, type Runtime } from '../host/runtime.ts';

interface FakeBox {
  spec: BoxSpec;
  state: 'running' | 'paused' | 'stopped';
  files: Map<string, Buffer>;
  ports: Record<number, number>;
}

/**
 * An in-memory Runtime for fast tests of host and pool logic. Commands understood by exec:
 * `echo ARGS…`, `cat` (stdin), `sh -c 'exit N'`, `sleep SECONDS`, `rm PATH`, `ls PATH`, `true`, `false`.
 */
export class FakeRuntime implements Runtime {
  readonly boxes = new Map<string, FakeBox>();
  readonly images = new Map<string, Map<string, Buffer>>([['fake/base:1', new Map()]]);
  private nextPort = 40000;
  calls: string[] = [];

  private need(id: string): FakeBox {
    const box = this.boxes.get(id);
    if (!box) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    return box;
  }

  async create(spec: BoxSpec): Promise<BoxInstance> {
    this.calls.push(`create ${spec.name}`);
    const existing = this.boxes.get(spec.name);
    if (existing) {
      if (existing.state === 'stopped') existing.state = 'running';
      return this.view(spec.name, existing);
    }
    const image = this.images.get(spec.image);
    if (!image) throw new BoxdError('IMAGE_NOT_FOUND', `image "${spec.image}" does not exist on this host`);
    const ports: Record<number, number> = {};
    for (const p of spec.ports) ports[p] = this.nextPort++;
    const box: FakeBox = { spec, state: 'running', files: new Map(image), ports };
    this.boxes.set(spec.name, box);
    return this.view(spec.name, box);
  }

  async exec(id: string, req: ExecRequest): Promise<ExecResult> {
    const box = this.need(id);
    if (box.state !== 'running') throw new BoxdError('BOX_STATE', `box ${id} is not running`);
    const out = new OutputBuffer(req.maxOutputBytes ?? 1 << 20);
    const err = new OutputBuffer(req.maxOutputBytes ?? 1 << 20);
    const emit = (stream: 'stdout' | 'stderr', text: string) => {
      const b = Buffer.from(text);
      (stream === 'stdout' ? out : err).push(b);
      req.onOutput?.(stream, b);
    };
    const [cmd, ...args] = req.cmd;
    let exitCode = 0;
    let timedOut = false;
    switch (cmd) {
      case 'echo':
        emit('stdout', args.join(' ') + '\n');
        break;
      case 'cat':
        emit('stdout', req.stdin?.toString() ?? '');
        break;
      case 'true':
        break;
      case 'false':
        exitCode = 1;
        break;
      case 'sleep': {
        const ms = Number(args[0]) * 1000;
        if (req.timeoutMs && req.timeoutMs < ms) {
          await new Promise((r) => setTimeout(r, req.timeoutMs));
          timedOut = true;
          exitCode = 137;
        } else await new Promise((r) => setTimeout(r, ms));
        break;
      }
      case 'sh':
        exitCode = Number(/exit (\d+)/.exec(args.join(' '))?.[1] ?? 0);
        break;
      case 'rm':
        box.files.delete(args[0]!);
        break;
      case 'ls':
        if (box.files.has(args[0]!)) emit('stdout', args[0] + '\n');
        else {
          emit('stderr', `ls: ${args[0]}: No such file or directory\n`);
          exitCode = 1;
        }
        break;
      default:
        emit('stdout', `exec: "${cmd}": executable file not found in $PATH\n`);
        exitCode = 126;
    }
    return { exitCode, stdout: out.toBuffer(), stderr: err.toBuffer(), timedOut, truncated: out.truncated || err.truncated };
  }

  async putFile(id: string, path: string, data: Buffer): Promise<void> {
    this.need(id).files.set(path, Buffer.from(data));
  }

  async putFileStream(id: string, path: string, source: Readable, size: number, mode?: number): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of source) chunks.push(c as Buffer);
    const data = Buffer.concat(chunks);
    if (data.length !== size) throw new ValidationError(`the body ended after ${data.length} of ${size} bytes`);
    void mode;
    await this.putFile(id, path, data);
  }

  async getFileStream(id: string, path: string): Promise<{ size: number; stream: Readable }> {
    const data = await this.getFile(id, path);
    return { size: data.length, stream: Readable.from([data]) };
  }

  async getFile(id: string, path: string): Promise<Buffer> {
    const box = this.need(id);
    const data = box.files.get(path);
    if (data) return Buffer.from(data);
    if ([...box.files.keys()].some((k) => k.startsWith(path + '/'))) throw new ValidationError(`${path} is a folder, not a file`);
    throw new BoxdError('FILE_NOT_FOUND', `${path} not found`);
  }

  async suspend(id: string): Promise<void> {
    this.calls.push(`suspend ${id}`);
    this.need(id).state = 'paused';
  }

  async resume(id: string): Promise<void> {
    this.calls.push(`resume ${id}`);
    this.need(id).state = 'running';
  }

  async commit(id: string, ref: string): Promise<void> {
    this.images.set(ref, new Map(this.need(id).files));
  }

  async tagImage(from: string, ref: string): Promise<void> {
    const image = this.images.get(from);
    if (!image) throw new BoxdError('IMAGE_NOT_FOUND', `image "${from}" does not exist on this host`);
    this.images.set(ref, new Map(image));
  }

  async copyChanges(from: string, to: string): Promise<{ written: number; deleted: number; bytes: number; ms: number }> {
    const src = this.need(from);
    const dst = this.need(to);
    if (src.spec.image !== dst.spec.image) throw new BoxdError('NOT_SUPPORTED', 'different images');
    dst.files = new Map(src.files);
    return { written: src.files.size, deleted: 0, bytes: 0, ms: 0 };
  }

  async removeImage(ref: string): Promise<boolean> {
    if ([...this.boxes.values()].some((b) => b.spec.image === ref)) return false;
    return this.images.delete(ref);
  }

  async hasImage(ref: string): Promise<boolean> {
    return this.images.has(ref);
  }

  async destroy(id: string): Promise<void> {
    this.calls.push(`destroy ${id}`);
    this.boxes.delete(id);
  }

  async rename(id: string, spec: BoxSpec): Promise<void> {
    this.calls.push(`rename ${id} ${spec.name}`);
    const box = this.boxes.get(id);
    if (!box) {
      if (this.boxes.has(spec.name)) return;
      throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    }
    if (id === spec.name) return;
    if (this.boxes.has(spec.name)) throw new BoxdError('RUNTIME_ERROR', `${spec.name} exists`);
    this.boxes.delete(id);
    this.boxes.set(spec.name, box);
  }

  async inspect(id: string): Promise<BoxInstance | undefined> {
    const box = this.boxes.get(id);
    return box ? this.view(id, box) : undefined;
  }

  async list(labels: Record<string, string>): Promise<BoxInstance[]> {
    return [...this.boxes.entries()]
      .filter(([, b]) => Object.entries(labels).every(([k, v]) => b.spec.labels[k] === v))
      .map(([id, b]) => this.view(id, b));
  }

  private view(id: string, b: FakeBox): BoxInstance {
    return { id, name: id, state: b.state, ports: { ...b.ports }, labels: { ...b.spec.labels } };
  }
}
