import Docker from 'dockerode';
import { execFile } from 'node:child_process';
import { posix } from 'node:path';
import type { Duplex } from 'node:stream';
import { BoxdError, RuntimeError, ValidationError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import {
  type BoxInstance,
  type BoxSpec,
  type ExecRequest,
  type ExecResult,
  type InstanceState,
  type Runtime,
} from './runtime.ts';
import { firstEntry, packFile } from './tar.ts';
import { dockerExec } from './docker-exec.ts';
import { reason, status } from './engine-errors.ts';
import { copyOverlayDiff, CopyNotSupported, type CopyStats } from './overlay-copy.ts';

export interface DockerRuntimeOptions {
  /** Bridge network boxes join; created with inter-container traffic off. */
  network: string;
  /** OCI runtime name as the engine knows it (runc, runsc, kata-runtime). */
  ociRuntime: string;
  /** Largest file getFile reads. */
  maxFileBytes: number;
  log: Logger;
}

/** Boxes as Docker containers, driven through the Engine API by dockerode. */
export class DockerRuntime implements Runtime {
  /** Overlay layers of each box, read by every inspect: fixed for a container's life. */
  private readonly layerCache = new Map<string, Layers>();

  constructor(
    private readonly docker: Docker,
    private readonly opts: DockerRuntimeOptions,
  ) {}

  /**
   * Creates the boxes' bridge network when missing (ICC off, so boxes cannot reach each
   * other) and drops new connections from it to the host's own services. Idempotent.
   */
  async prepare(): Promise<void> {
    const bridge = `${this.opts.network}0`.slice(0, 15);
    const existing = await this.docker.listNetworks({ filters: { name: [this.opts.network] } });
    if (!existing.some((n) => n.Name === this.opts.network)) {
      try {
        await this.docker.createNetwork({
          Name: this.opts.network,
          Driver: 'bridge',
          CheckDuplicate: true,
          Labels: { 'boxd.managed': 'true' },
          Options: {
            'com.docker.network.bridge.enable_icc': 'false',
            'com.docker.network.bridge.name': bridge,
          },
        });
      } catch (e) {
        if (status(e) !== 409) throw new RuntimeError(`creating network ${this.opts.network}: ${reason(e)}`, { cause: e });
      }
    }
    // Replies to the gateway's connections are ESTABLISHED; only connections a box opens
    // towards the host itself are refused.
    const rule = ['INPUT', '-i', bridge, '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP'];
    const ok = await run('iptables', ['-C', ...rule]);
    if (!ok && !(await run('iptables', ['-I', ...rule]))) {
      this.opts.log.warn({ bridge }, 'could not add the iptables rule that keeps boxes off host services');
    }
  }

  async create(spec: BoxSpec): Promise<BoxInstance> {
    const exposed: Record<string, object> = {};
    const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
    for (const port of spec.ports) {
      exposed[`${port}/tcp`] = {};
      bindings[`${port}/tcp`] = [{ HostIp: '127.0.0.1', HostPort: '' }];
    }
    try {
      await this.docker.createContainer({
        name: spec.name,
        Image: spec.image,
        Hostname: spec.labels['boxd.box']?.slice(0, 63) ?? undefined,
        // The box lives as long as we want it to, whatever the image's own command does.
        Entrypoint: ['sleep', 'infinity'],
        Cmd: [],
        Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
        Labels: spec.labels,
        ExposedPorts: exposed,
        HostConfig: {
          Init: true,
          NanoCpus: Math.round(spec.cpus * 1e9),
          Memory: spec.memoryMb * 1024 * 1024,
          PidsLimit: spec.pidsLimit,
          SecurityOpt: ['no-new-privileges'],
          CapDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE'],
          PortBindings: bindings,
          NetworkMode: this.opts.network,
          Runtime: this.opts.ociRuntime,
          RestartPolicy: { Name: 'no' },
        },
      });
    } catch (e) {
      if (status(e) === 404) throw new BoxdError('IMAGE_NOT_FOUND', `image "${spec.image}" does not exist on this host`);
      if (status(e) !== 409) throw new RuntimeError(`creating ${spec.name}: ${reason(e)}`, { cause: e });
      // 409: a retried job; the box exists already.
    }
    const container = this.docker.getContainer(spec.name);
    try {
      await container.start();
    } catch (e) {
      if (status(e) !== 304) {
        await this.destroy(spec.name).catch(() => undefined);
        throw new RuntimeError(`starting ${spec.name}: ${reason(e)}`, { cause: e });
      }
    }
    const instance = await this.inspect(spec.name);
    if (!instance) throw new RuntimeError(`${spec.name} vanished right after start`);
    return instance;
  }

  async exec(id: string, req: ExecRequest): Promise<ExecResult> {
    return dockerExec(this.docker, id, req, this.opts.log);
  }

  async putFile(id: string, path: string, data: Buffer, mode = 0o644): Promise<void> {
    const dir = posix.dirname(path);
    const archive = packFile(posix.basename(path), data, mode);
    const container = this.docker.getContainer(id);
    try {
      await container.putArchive(archive, { path: dir });
      return;
    } catch (e) {
      if (status(e) !== 404) throw this.fileError(e, id, path);
      if (/No such container:/.test(reason(e))) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    }
    const made = await this.exec(id, { cmd: ['mkdir', '-p', dir] });
    if (made.exitCode !== 0) {
      throw new ValidationError(`cannot create folder ${dir}: ${made.stderr.toString().trim()}`);
    }
    try {
      await container.putArchive(archive, { path: dir });
    } catch (e) {
      throw this.fileError(e, id, path);
    }
  }

  async getFile(id: string, path: string): Promise<Buffer> {
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.getContainer(id).getArchive({ path });
    } catch (e) {
      throw this.fileError(e, id, path);
    }
    const max = this.opts.maxFileBytes;
    const chunks: Buffer[] = [];
    let size = 0;
    const readable = stream as unknown as Duplex;
    await new Promise<void>((resolve, reject) => {
      readable.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        size += chunk.length;
        if (chunks.length === 1 || size >= 512) {
          const head = firstEntry(Buffer.concat(chunks));
          if (head?.type === 'directory') {
            readable.destroy();
            return reject(new ValidationError(`${path} is a folder, not a file`));
          }
        }
        if (size > max + 64 * 1024) {
          readable.destroy();
          reject(new BoxdError('FILE_TOO_LARGE', `${path} is larger than ${max} bytes`));
        }
      });
      readable.once('end', resolve);
      readable.once('error', reject);
    });
    const entry = firstEntry(Buffer.concat(chunks));
    if (!entry) throw new BoxdError('FILE_NOT_FOUND', `${path} not found`);
    if (entry.type !== 'file') throw new ValidationError(`${path} is not a regular file`);
    return entry.data;
  }

  private fileError(e: unknown, id: string, path: string): BoxdError {
    if (e instanceof BoxdError) return e;
    const msg = reason(e);
    if (/No such container:/.test(msg)) return new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    if (status(e) === 404) return new BoxdError('FILE_NOT_FOUND', `${path} not found`);
    if (status(e) === 400 || status(e) === 403) return new ValidationError(`${path}: ${msg}`);
    if (status(e) === 409) return new BoxdError('BOX_STATE', `box ${id} cannot take files now: ${msg}`);
    return new RuntimeError(`file ${path} in ${id}: ${msg}`, { cause: e });
  }

  async suspend(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).pause();
    } catch (e) {
      if ((await this.inspect(id))?.state === 'paused') return;
      throw this.lifecycleError(e, id, 'suspend');
    }
  }

  async resume(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).unpause();
    } catch (e) {
      if ((await this.inspect(id))?.state === 'running') return;
      throw this.lifecycleError(e, id, 'resume');
    }
  }

  private lifecycleError(e: unknown, id: string, what: string): BoxdError {
    if (status(e) === 404) return new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    return new RuntimeError(`${what} ${id}: ${reason(e)}`, { cause: e });
  }

  async commit(id: string, ref: string, labels: Record<string, string>, opts: { frozen?: boolean } = {}): Promise<void> {
    const [repo, tag] = splitRef(ref);
    try {
      // pause gives a consistent copy of a running box (it resumes right after); a box the
      // caller froze, or one docker already paused, must stay frozen.
      const pause = opts.frozen ? false : (await this.inspect(id))?.state !== 'paused';
      await this.docker.getContainer(id).commit({ repo, tag, pause, changes: labelChanges(labels) });
    } catch (e) {
      throw this.lifecycleError(e, id, 'commit');
    }
  }

  async tagImage(from: string, ref: string): Promise<void> {
    const [repo, tag] = splitRef(ref);
    try {
      await this.docker.getImage(from).tag({ repo, tag });
    } catch (e) {
      if (status(e) === 404) throw new BoxdError('IMAGE_NOT_FOUND', `image "${from}" does not exist on this host`);
      throw new RuntimeError(`tagging ${from} as ${ref}: ${reason(e)}`, { cause: e });
    }
  }

  async copyChanges(from: string, to: string): Promise<CopyStats> {
    const [src, dst] = await Promise.all([this.layers(from), this.layers(to)]);
    if (src.image !== dst.image) throw new CopyNotSupported(`${from} and ${to} run different images`);
    return copyOverlayDiff({ upper: src.upper, merged: src.merged }, dst.merged, [...new Set([...src.mounts, ...dst.mounts])]);
  }

  /** Host paths of a box's overlay layers (overlay2 storage only). */
  private async layers(id: string): Promise<Layers> {
    const cached = this.layerCache.get(id);
    if (cached) return cached;
    let info: Docker.ContainerInspectInfo;
    try {
      info = await this.docker.getContainer(id).inspect();
    } catch (e) {
      throw this.lifecycleError(e, id, 'inspect');
    }
    const layers = layersOf(info);
    if (!layers) throw new CopyNotSupported(`storage driver ${info.GraphDriver?.Name ?? 'unknown'} does not expose an overlay upper dir`);
    return layers;
  }

  async removeImage(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).remove();
      return true;
    } catch (e) {
      if (status(e) === 404 || status(e) === 409) return false;
      throw new RuntimeError(`removing image ${ref}: ${reason(e)}`, { cause: e });
    }
  }

  async hasImage(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (e) {
      if (status(e) === 404) return false;
      throw new RuntimeError(`inspecting image ${ref}: ${reason(e)}`, { cause: e });
    }
  }

  async destroy(id: string): Promise<void> {
    this.layerCache.delete(id);
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (e) {
      if (status(e) === 404) return;
      if (status(e) === 409 && /already in progress/i.test(reason(e))) return;
      throw this.lifecycleError(e, id, 'destroy');
    }
  }

  async inspect(id: string): Promise<BoxInstance | undefined> {
    try {
      const info = await this.docker.getContainer(id).inspect();
      const ports: Record<number, number> = {};
      for (const [key, binds] of Object.entries(info.NetworkSettings?.Ports ?? {})) {
        const bind = (binds ?? []).find((b) => b.HostIp === '127.0.0.1') ?? binds?.[0];
        if (bind?.HostPort) ports[parseInt(key, 10)] = parseInt(bind.HostPort, 10);
      }
      const state: InstanceState = info.State.Paused ? 'paused' : info.State.Running ? 'running' : 'stopped';
      const layers = layersOf(info);
      if (layers) this.layerCache.set(info.Name.replace(/^\//, ''), layers);
      return { id: info.Name.replace(/^\//, ''), name: info.Name.replace(/^\//, ''), state, ports, labels: info.Config.Labels ?? {} };
    } catch (e) {
      if (status(e) === 404) return undefined;
      throw new RuntimeError(`inspecting ${id}: ${reason(e)}`, { cause: e });
    }
  }

  async list(labels: Record<string, string>): Promise<BoxInstance[]> {
    let found: Docker.ContainerInfo[];
    try {
      found = await this.docker.listContainers({
        all: true,
        filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) },
      });
    } catch (e) {
      throw new RuntimeError(`listing boxes: ${reason(e)}`, { cause: e });
    }
    return found.map((c) => {
      const name = (c.Names[0] ?? c.Id).replace(/^\//, '');
      const ports: Record<number, number> = {};
      for (const p of c.Ports ?? []) if (p.PublicPort && p.IP === '127.0.0.1') ports[p.PrivatePort] = p.PublicPort;
      const state: InstanceState = c.State === 'paused' ? 'paused' : c.State === 'running' ? 'running' : 'stopped';
      return { id: name, name, state, ports, labels: c.Labels ?? {} };
    });
  }
}

interface Layers {
  image: string;
  upper: string;
  merged: string;
  /** What the engine mounts over the box's own files: never copied, never replaced. */
  mounts: string[];
}

function layersOf(info: Docker.ContainerInspectInfo): Layers | undefined {
  const data = (info.GraphDriver?.Data ?? {}) as Record<string, string>;
  if (info.GraphDriver?.Name !== 'overlay2' || !data.UpperDir || !data.MergedDir) return undefined;
  const mounts = ['/etc/hostname', '/etc/hosts', '/etc/resolv.conf', '/.dockerenv', ...(info.Mounts ?? []).map((m) => m.Destination)];
  if (info.HostConfig?.Init) mounts.push('/sbin/docker-init');
  return { image: info.Image, upper: data.UpperDir, merged: data.MergedDir, mounts };
}

function splitRef(ref: string): [string, string] {
  const at = ref.lastIndexOf(':');
  return at > ref.lastIndexOf('/') ? [ref.slice(0, at), ref.slice(at + 1)] : [ref, 'latest'];
}

function labelChanges(labels: Record<string, string>): string | undefined {
  const lines = Object.entries(labels).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);
  return lines.length ? lines.join('\n') : undefined;
}

function run(cmd: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => execFile(cmd, args, (err) => resolve(!err)));
}
