import type { Readable } from 'node:stream';
import type { NetworkPolicy } from '../core/network-policy.ts';

/**
 * What the host needs from a container runtime. Owned by its user (the host's job
 * handlers) and free of Docker types: DockerRuntime implements it with dockerode, the
 * fake in test/ implements it in memory. Every method throws BoxdError subclasses
 * (RUNTIME_ERROR for engine failures, FILE_NOT_FOUND, …) and never a raw engine error.
 */
export interface Runtime {
  /**
   * Creates and starts a box. Idempotent by `spec.name`: when a box of that name already
   * exists it is started if needed and returned, so a retried job never makes a second one.
   */
  create(spec: BoxSpec): Promise<BoxInstance>;
  /** Runs `cmd` in a running box. Output is streamed to `onOutput` and also collected (capped). */
  exec(id: string, req: ExecRequest): Promise<ExecResult>;
  /** Writes a file, creating missing parent folders. */
  putFile(id: string, path: string, data: Buffer, mode?: number): Promise<void>;
  /** Reads a file; FILE_NOT_FOUND when absent, INVALID_REQUEST for a folder. */
  getFile(id: string, path: string): Promise<Buffer>;
  /**
   * Writes `size` bytes read from `source` to `path`, streaming (flat memory). The bytes go to a
   * temporary name beside `path` first and are moved into place once complete, so a source that
   * errors or ends short never leaves a partial file. Creates missing parent folders.
   */
  putFileStream(id: string, path: string, source: Readable, size: number, mode?: number): Promise<void>;
  /** Opens a file for streaming: its size and its bytes. Errors as getFile. */
  getFileStream(id: string, path: string): Promise<{ size: number; stream: Readable }>;
  /** Freezes every process of the box (memory, processes and files survive). Idempotent. */
  suspend(id: string): Promise<void>;
  /** Thaws a suspended box. Idempotent. */
  resume(id: string): Promise<void>;
  /**
   * Copies the box's filesystem into image `ref` (processes are not copied). With `frozen`, the
   * caller has suspended the box for the copy and the runtime must neither pause nor thaw it;
   * otherwise the runtime freezes it itself for a consistent copy.
   */
  commit(id: string, ref: string, labels: Record<string, string>, opts?: { frozen?: boolean }): Promise<void>;
  /** Gives image `from` a second name `ref` (a golden promoted from a snapshot). */
  tagImage(from: string, ref: string): Promise<void>;
  /**
   * Writes the filesystem changes box `from` made to its image into box `to`, which runs the
   * same image and changed nothing yet: new, changed and deleted files, replaced folders, modes,
   * owners, links, xattrs. Both must be suspended by the caller. Throws NOT_SUPPORTED when the
   * runtime cannot do it faithfully (then commit and create instead); `to` may then hold part
   * of the copy and must be discarded.
   */
  copyChanges(from: string, to: string): Promise<{ written: number; deleted: number; bytes: number; ms: number }>;
  /** Removes an image; false when it is still used or already gone. */
  removeImage(ref: string): Promise<boolean>;
  /** Removes the box and its anonymous volumes. Idempotent: a missing box is not an error. */
  destroy(id: string): Promise<void>;
  /**
   * Gives box `id` the runtime name `spec.name` (a claimed pool box takes its user's name), with
   * whatever the runtime keys by name (disk image, egress rules) moved along; its labels stay as
   * made. Idempotent: when `id` is already gone and `spec.name` exists, only the moving is done
   * again. Throws BOX_NOT_FOUND when neither exists. Optional: without it boxes keep their name.
   */
  rename?(id: string, spec: BoxSpec): Promise<void>;
  /** Current state of a box, or undefined when it does not exist. */
  inspect(id: string): Promise<BoxInstance | undefined>;
  /** Every box carrying all of `labels`. */
  list(labels: Record<string, string>): Promise<BoxInstance[]>;
  /**
   * Calls `onChange` with the runtime name of a box carrying all of `labels` whose container the
   * engine reports changed (died or stopped, paused, unpaused, removed), until the returned
   * function is called; reconnects by itself. Lossy: callers still list now and then. Optional.
   */
  watch?(labels: Record<string, string>, onChange: (name: string) => void): () => void;
  /** Whether an image exists locally. */
  hasImage(ref: string): Promise<boolean>;
  /** `docker save` of one image as a tar stream (moving a snapshot's image to another host). Optional. */
  saveImage?(ref: string): Promise<Readable>;
  /** `docker load` of a tar stream made by saveImage; resolves once the image is loaded. Optional. */
  loadImage?(tar: Readable): Promise<void>;
  /**
   * Starts `cmd` on a pseudo-terminal in a running box (an interactive shell). Optional: a
   * runtime without it answers NOT_IMPLEMENTED for `GET /v1/boxes/:name/pty`.
   */
  pty?(id: string, req: PtyRequest): Promise<PtyProcess>;
  /**
   * Installs `spec.network` for a running box again (replacing what is there): a starting host
   * calls it for every box it keeps, so rules lost meanwhile come back. Optional; idempotent.
   */
  applyPolicy?(id: string, spec: BoxSpec): Promise<void>;
}

export interface PtyRequest {
  cmd: string[];
  env?: Record<string, string>;
  cwd?: string;
  cols: number;
  rows: number;
}

/** A command running on a terminal. Output is one stream (a TTY merges stdout and stderr). */
export interface PtyProcess {
  /** Called for every output chunk, in order; chunks before the first call are kept and delivered then. */
  onData(cb: (data: Buffer) => void): void;
  write(data: Buffer): void;
  resize(cols: number, rows: number): Promise<void>;
  /** Stops and restarts output (backpressure from a slow reader). */
  pause?(): void;
  resume?(): void;
  /** Ends the command and its process group. Idempotent. */
  kill(): Promise<void>;
  /** The exit code, once the command ended (128+signal when killed). */
  readonly exited: Promise<number>;
}

export interface BoxSpec {
  /** Unique runtime name (also the idempotency key of create). */
  name: string;
  image: string;
  /** Ports the box serves; each is published on 127.0.0.1 on a port the engine picks. */
  ports: number[];
  env: Record<string, string>;
  labels: Record<string, string>;
  cpus: number;
  memoryMb: number;
  pidsLimit: number;
  /** Quota of the box's whole writable filesystem in MiB (writes past it fail with ENOSPC); 0 or unset: none. */
  diskMb?: number;
  /** Egress policy (unset: `open`), installed before create returns and removed by destroy. */
  network?: NetworkPolicy;
}

export type InstanceState = 'running' | 'paused' | 'stopped';

export interface BoxInstance {
  id: string;
  name: string;
  state: InstanceState;
  /** Box port → port on 127.0.0.1. */
  ports: Record<number, number>;
  labels: Record<string, string>;
}

export type OutputStream = 'stdout' | 'stderr';

export interface ExecRequest {
  cmd: string[];
  /** Tags every process of the exec (env BOXD_EXEC_ID) so the whole tree can be found and killed. */
  execId?: string;
  /** Aborting kills the command's whole process tree; the result then has `killed: true`. */
  signal?: AbortSignal;
  cwd?: string;
  env?: Record<string, string>;
  stdin?: Buffer;
  /** Kill the command after this long; the result then has `timedOut: true`. */
  timeoutMs?: number;
  /** Called for every chunk as it arrives, in order. A returned promise pauses the output until it settles (backpressure). */
  onOutput?: (stream: OutputStream, data: Buffer) => void | Promise<void>;
  /** Bytes of each stream kept in the result; the rest is dropped (`truncated`). */
  maxOutputBytes?: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  truncated: boolean;
  /** The command was killed because `signal` aborted. */
  killed?: boolean;
}

/** Collects one output stream up to a cap. */
export class OutputBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  constructor(private readonly max: number) {}
  push(data: Buffer): void {
    const room = this.max - this.size;
    if (room <= 0) {
      this.truncated ||= data.length > 0;
      return;
    }
    const kept = data.length > room ? data.subarray(0, room) : data;
    if (kept.length < data.length) this.truncated = true;
    this.chunks.push(kept);
    this.size += kept.length;
  }
  toBuffer(): Buffer {
    return Buffer.concat(this.chunks);
  }
}
