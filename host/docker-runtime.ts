import Docker from 'dockerode';
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join, posix, resolve } from 'node:path';
import type { Duplex } from 'node:stream';
import { BoxdError, RuntimeError, ValidationError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import {
  type BoxInstance,
  type BoxSpec,
  type ExecRequest,
  type ExecResult,
  type InstanceState,
  type PtyProcess,
  type PtyRequest,
  type Runtime,
} from './runtime.ts';
import type { Readable } from 'node:stream';
import { firstEntry, packFile } from './tar.ts';
import { dockerExec } from './docker-exec.ts';
import { withStartFailures } from './exec-errors.ts';
import { dockerPty } from './docker-pty.ts';
import { DockerFiles } from './docker-files.ts';
import { ContainerProcs } from './container-procs.ts';
import { Freezer } from './freezer.ts';
import { reason, status } from './engine-errors.ts';
import { copyOverlayDiff, CopyNotSupported, type CopyStats } from './overlay-copy.ts';
import { LoopDiskQuota, layerDirOf } from './disk-quota.ts';

const execFileP = promisify(execFile);
import { Egress } from './egress.ts';
import { BridgePins } from './bridge-pins.ts';

export interface DockerRuntimeOptions {
  /** Bridge network boxes join; created with inter-container traffic off. */
  network: string;
  /** OCI runtime name as the engine knows it (runc, runsc, kata-runtime). */
  ociRuntime: string;
  /** Largest file getFile reads. */
  maxFileBytes: number;
  /** Address box ports are published on: the host's own address, which gateways proxy to. */
  hostAddr?: string;
  /** Suspend through the cgroup freezer (false: always `docker pause`). */
  freezer?: boolean;
  socketPath?: string;
  /**
   * Instance prefix (label `boxd.instance`) this runtime serves; when set, `prepare` releases the
   * disk images and egress rules this prefix left for containers that are gone.
   */
  prefix?: string;
  /** Host state folder (default `.boxd`); disk images go to `<stateDir>/disks/<instance>/`. */
  stateDir?: string;
  /** Extra CIDRs the `open` egress policy refuses. */
  egressDeny?: string[];
  log: Logger;
  /** Host paths bound into every box (`host:box:ro`): the `boxd` command and the Python SDK. */
  binds?: string[];
}

/** A freeze that found a starting exec inside the box: retry shortly. */
export class BusyError extends BoxdError {
  constructor(message: string) {
    super('BOX_BUSY', message);
  }
}

/** How long an exec start may hold off a freeze at most, in ms (a start that never shows). */
const START_MAX_MS = 5000;

/** One exec start in flight: over when its process runs, its output came, or it failed. */
interface Start {
  started: () => Promise<boolean>;
  until: number;
  leave: () => void;
}

/** Boxes as Docker containers, driven through the Engine API by dockerode. */
export class DockerRuntime implements Runtime {
  /** Overlay layers of each box, read by every inspect: fixed for a container's life. */
  private readonly layerCache = new Map<string, Layers>();
  /** The freezer, when suspend/resume write it directly; undefined means `docker pause`. */
  readonly freezer: Freezer | undefined;
  readonly procs: ContainerProcs;
  private readonly files: DockerFiles;
  /** Exec starts in flight per container (a freeze waits for them to end). */
  private readonly starting = new Map<string, Set<Start>>();
  private readonly freezing = new Map<string, Promise<void>>();
  /** Boxes this process froze through the freezer (anything else frozen was paused by someone else). */
  private readonly frozeHere = new Set<string>();
  readonly quota: LoopDiskQuota;
  readonly egress: Egress;
  /** Static link-layer entries per box, so reaching one never floods the bridge. */
  private readonly pins: BridgePins;

  constructor(
    private readonly docker: Docker,
    private readonly opts: DockerRuntimeOptions,
  ) {
    const f = new Freezer();
    this.freezer = opts.freezer !== false && f.usable() && canWrite(f) ? f : undefined;
    this.procs = new ContainerProcs(docker, this.freezer);
    this.files = new DockerFiles(
      opts.socketPath ?? '/var/run/docker.sock',
      async (id, cmd) => {
        const r = await this.exec(id, { cmd });
        return { exitCode: r.exitCode, stderr: r.stderr.toString('utf8') };
      },
      opts.maxFileBytes,
    );
    opts.log.info({ mechanism: this.freezer ? `cgroup v${this.freezer.version} freezer` : 'docker pause' }, 'suspend/resume mechanism');
    this.quota = new LoopDiskQuota(join(resolve(opts.stateDir ?? '.boxd'), 'disks'), opts.log);
    this.egress = new Egress({ bridge: this.bridge, deny: opts.egressDeny ?? [], log: opts.log });
    this.pins = new BridgePins(this.bridge, async () => (await this.bridgeAddress()).ip, opts.log);
  }

  private get hostAddr(): string {
    return this.opts.hostAddr ?? '127.0.0.1';
  }

  /** Which mechanism suspend/resume use. */
  get suspendMechanism(): string {
    return this.freezer ? `freezer-v${this.freezer.version}` : 'docker-pause';
  }

  /**
   * Marks an exec start in flight; waits while the box is being frozen. The start ends when the
   * returned function is called, when `started` first answers true, or after START_MAX_MS.
   * `started` (a look at the host's /proc) is only asked while a freeze waits: execs pay nothing.
   */
  private async enterStart(id: string, started?: () => Promise<boolean>): Promise<() => void> {
    const dir = this.freezer ? (await this.procs.info(id))?.dir : undefined;
    for (let f = this.freezing.get(id); f; f = this.freezing.get(id)) await f.catch(() => undefined);
    // Synchronously from here: an exec never starts in a frozen cgroup (its runc init would
    // freeze half-way and wedge the engine); the caller resumes the box and tries again.
    if (dir && this.freezer!.state(dir) !== 'thawed') throw new BoxdError('BOX_STATE', `box ${id} is suspended`);
    let set = this.starting.get(id);
    if (!set) this.starting.set(id, (set = new Set()));
    const start: Start = { started: started ?? (async () => false), until: Date.now() + START_MAX_MS, leave: () => undefined };
    start.leave = () => {
      if (!set.delete(start)) return;
      if (!set.size && this.starting.get(id) === set) this.starting.delete(id);
    };
    set.add(start);
    return start.leave;
  }

  /** Resolves once no exec start is in flight in `id`, asking each whether its process runs yet. */
  private async startsSettled(id: string): Promise<void> {
    for (let set = this.starting.get(id); set?.size; set = this.starting.get(id)) {
      await Promise.all(
        [...set].map(async (s) => {
          if (Date.now() > s.until || (await s.started().catch(() => false))) s.leave();
        }),
      );
      if (set.size) await new Promise((r) => setTimeout(r, 1));
    }
  }

  private get bridge(): string {
    return `${this.opts.network}0`.slice(0, 15);
  }

  /**
   * Creates the boxes' bridge network when missing (ICC off, so boxes cannot reach each
   * other), drops new connections from it to the host's own services, installs the egress
   * chain, and releases disk images and egress rules this prefix left behind for containers
   * that are gone. Idempotent.
   */
  async prepare(): Promise<void> {
    const bridge = this.bridge;
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
    await this.egress.prepare();
    const prefix = this.opts.prefix;
    if (!prefix) return;
    const live = new Set((await this.list({ 'boxd.instance': prefix })).map((b) => b.name));
    const disks = await this.quota.sweep(prefix, live);
    const rules = await this.egress.sweep(prefix, live);
    if (disks.length || rules.length) this.opts.log.info({ disks, rules }, 'released disk images and egress rules of vanished boxes');
  }

  async create(spec: BoxSpec): Promise<BoxInstance> {
    const exposed: Record<string, object> = {};
    const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
    for (const port of spec.ports) {
      exposed[`${port}/tcp`] = {};
      bindings[`${port}/tcp`] = [{ HostIp: this.hostAddr, HostPort: '' }];
    }
    try {
      await this.docker.createContainer({
        name: spec.name,
        Image: spec.image,
        Hostname: (spec.labels['boxd.box'] ?? spec.labels['boxd.slot'])?.slice(0, 63) ?? undefined,
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
          Binds: this.opts.binds?.length ? this.opts.binds : undefined,
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
    const owner = spec.labels['boxd.instance'] ?? this.opts.prefix ?? 'boxd';
    try {
      if (spec.diskMb) await this.attachQuota(owner, spec.name, spec.diskMb);
      try {
        await container.start();
      } catch (e) {
        if (status(e) !== 304) throw new RuntimeError(`starting ${spec.name}: ${reason(e)}`, { cause: e });
      }
      // Nothing runs in the box before create returns (its command is `sleep infinity`), so the
      // policy is in place before any process of the box's owner can send a packet.
      const info = await container.inspect();
      const net = info.NetworkSettings?.Networks?.[this.opts.network];
      const ip = net?.IPAddress;
      if (!ip) throw new RuntimeError(`${spec.name} has no address on network ${this.opts.network}`);
      await Promise.all([
        this.egress.apply(owner, spec.name, ip, spec.network ?? 'open'),
        net.MacAddress && info.State.Pid > 0 ? this.pins.pin({ pid: info.State.Pid, ip, mac: net.MacAddress }) : undefined,
      ]);
    } catch (e) {
      await this.destroy(spec.name).catch(() => undefined);
      throw e instanceof BoxdError ? e : new RuntimeError(`creating ${spec.name}: ${reason(e)}`, { cause: e });
    }
    const instance = await this.inspect(spec.name);
    if (!instance) throw new RuntimeError(`${spec.name} vanished right after start`);
    return instance;
  }

  /** The boxes' bridge: its interface and the host's address on it (what a box reaches as its gateway). */
  async bridgeAddress(): Promise<{ iface: string; ip: string }> {
    const net = await this.docker.getNetwork(this.opts.network).inspect();
    const ip = (net.IPAM?.Config ?? []).map((c: { Gateway?: string }) => c.Gateway).find((g: string | undefined) => g && /^\d+\.\d+\.\d+\.\d+$/.test(g));
    if (!ip) throw new RuntimeError(`network ${this.opts.network} has no IPv4 gateway`);
    return { iface: this.bridge, ip };
  }

  async pty(id: string, req: PtyRequest): Promise<PtyProcess> {
    return dockerPty(this.docker, id, req);
  }

  async applyPolicy(id: string, spec: BoxSpec): Promise<void> {
    const info = await this.docker.getContainer(id).inspect();
    const ip = info.NetworkSettings?.Networks?.[this.opts.network]?.IPAddress;
    if (!ip) throw new RuntimeError(`${id} has no address on network ${this.opts.network}`);
    await this.egress.apply(spec.labels['boxd.instance'] ?? this.opts.prefix ?? 'boxd', info.Name.replace(/^\//, ''), ip, spec.network ?? 'open');
  }

  /**
   * `docker rename`, then the disk image and the egress rules (both keyed by container name)
   * follow, and what this process remembers of the box moves to the new name. Labels cannot
   * change after create: a pool box keeps its `boxd.slot` label and has no `boxd.box`.
   */
  async rename(id: string, spec: BoxSpec): Promise<void> {
    const to = spec.name;
    if (id !== to) {
      try {
        await this.docker.getContainer(id).rename({ name: to });
      } catch (e) {
        // Gone under `id` but there under `to`: renamed before (a retry); finish the moving.
        if (status(e) !== 404 || !(await this.inspect(to))) throw this.lifecycleError(e, id, 'rename');
      }
      await this.quota.rename(id, to);
      this.procs.alias(id, to);
      for (const set of [this.frozeHere, this.enginePaused]) if (set.delete(id)) set.add(to);
      this.layerCache.delete(id);
    }
    // The rules match the box's address; installing them under the new name drops the old ones.
    await this.applyPolicy(to, spec);
    const host = spec.labels['boxd.box']?.slice(0, 63);
    if (host) await this.setHostname(to, host).catch((e) => this.opts.log.warn({ box: to, err: reason(e) }, 'could not give a renamed box its hostname'));
  }

  /**
   * Gives a running (or frozen) container a new hostname: the kernel's (its UTS namespace, entered
   * from the host, so a frozen box needs no thaw) and the engine-written /etc/hostname and
   * /etc/hosts. A restart of the container by the engine brings back the name it was created with.
   */
  private async setHostname(id: string, host: string): Promise<void> {
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i.test(host)) return;
    const info = await this.docker.getContainer(id).inspect();
    const old = info.Config.Hostname;
    if (!old || old === host) return;
    if (info.HostnamePath) await writeFile(info.HostnamePath, `${host}\n`);
    if (info.HostsPath) {
      const hosts = await readFile(info.HostsPath, 'utf8').catch(() => undefined);
      const escaped = old.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      if (hosts !== undefined) await writeFile(info.HostsPath, hosts.replace(new RegExp(`(?<=\\s)${escaped}(?=\\s|$)`, 'gm'), host));
    }
    if (info.State.Pid > 0) await execFileP('nsenter', ['-t', String(info.State.Pid), '-u', 'hostname', host]);
  }

  /** Puts the container's writable layer on a `sizeMb` loop ext4 (see LoopDiskQuota). Before start. */
  private async attachQuota(instance: string, name: string, sizeMb: number): Promise<void> {
    const info = await this.docker.getContainer(name).inspect();
    // A running box (a retried create) keeps the layer it started on; swapping it now would hide
    // its files. So does a box that ran before without a quota (made before quotas were on).
    if (info.State.Running) return;
    const ranBefore = !!info.State.StartedAt && !info.State.StartedAt.startsWith('0001-');
    if (ranBefore && !(await this.quota.hasImage(instance, name))) return;
    const layer = layerDirOf(info.GraphDriver as { Name?: string; Data?: Record<string, string> });
    if (!layer) {
      throw new RuntimeError(`disk quotas need Docker's overlay2 storage driver (this engine uses ${info.GraphDriver?.Name}); set BOXD_BOX_DISK_MB=0 to run without quotas`);
    }
    await this.quota.attach(instance, name, layer, sizeMb);
  }

  async exec(id: string, req: ExecRequest): Promise<ExecResult> {
    return withStartFailures(req, (r) => dockerExec(this.docker, id, r, { procs: this.procs, enterStart: (c, started) => this.enterStart(c, started), log: this.opts.log }));
  }

  async putFileStream(id: string, path: string, source: Readable, size: number, mode?: number): Promise<void> {
    await this.files.put(id, path, source, size, mode);
  }

  async getFileStream(id: string, path: string): Promise<{ size: number; stream: Readable }> {
    return this.files.open(id, path);
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
    if (this.freezer) return this.freeze(id);
    try {
      await this.docker.getContainer(id).pause();
    } catch (e) {
      if ((await this.inspect(id))?.state === 'paused') return;
      throw this.lifecycleError(e, id, 'suspend');
    }
  }

  async resume(id: string): Promise<void> {
    if (this.freezer) {
      const info = await this.procs.info(id);
      if (!info?.dir) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is not running`);
      // Frozen by this process: thaw it (a write, idempotent). Frozen by someone else (a `docker
      // pause` by hand, or a host process before a restart): let Docker unpause, so it stops
      // refusing execs.
      if (this.frozeHere.delete(id)) return this.freezer.thaw(info.dir);
      if (this.freezer.state(info.dir) === 'thawed') return;
      this.enginePaused.delete(id);
      try {
        await this.docker.getContainer(id).unpause();
      } catch {
        // Not paused in Docker's eyes: the freezer alone holds it.
      }
      if (this.freezer.state(info.dir) !== 'thawed') this.freezer.thaw(info.dir);
      return;
    }
    try {
      await this.docker.getContainer(id).unpause();
    } catch (e) {
      if ((await this.inspect(id))?.state === 'running') return;
      throw this.lifecycleError(e, id, 'resume');
    }
  }

  /**
   * Freezes through the cgroup freezer. New exec starts wait meanwhile and those in flight are
   * waited for: a `runc init` frozen half-way wedges the engine's lock on the container. A
   * starting exec still caught (one the engine began on its own, e.g. another client) thaws the
   * box again and fails with BOX_BUSY, which callers retry.
   */
  private async freeze(id: string): Promise<void> {
    const freezer = this.freezer!;
    const info = await this.procs.info(id);
    if (!info?.dir) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is not running`);
    const dir = info.dir;
    if (freezer.state(dir) === 'frozen') return;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const prior = this.freezing.get(id);
    this.freezing.set(id, gate);
    try {
      if (prior) await prior.catch(() => undefined);
      for (let attempt = 0; ; attempt++) {
        await this.startsSettled(id);
        if (freezer.caughtRuncInit(dir) || !(await freezer.freeze(dir))) {
          freezer.thaw(dir);
        } else if (freezer.caughtRuncInit(dir)) {
          freezer.thaw(dir);
        } else {
          this.frozeHere.add(id);
          return;
        }
        if (attempt >= 20) throw new BusyError(`box ${id} is starting a command; try again`);
        await new Promise((r) => setTimeout(r, 5 + attempt * 5));
      }
    } finally {
      if (this.freezing.get(id) === gate) this.freezing.delete(id);
      release();
    }
  }

  /**
   * Boxes the engine itself reports paused (someone ran `docker pause`), as last seen by
   * inspect or list (the host's drift check lists every few seconds). Resume unpauses those
   * through the engine too; the freezer alone leaves the engine's flag set.
   */
  private readonly enginePaused = new Set<string>();

  private notePaused(name: string, paused: boolean): void {
    if (paused) this.enginePaused.add(name);
    else this.enginePaused.delete(name);
  }

  /** Whether the freezer holds the box frozen (Docker does not know). */
  private async frozen(id: string, pid?: number): Promise<boolean> {
    if (!this.freezer) return false;
    const dir = pid ? this.freezer.dirOf(pid) : (await this.procs.info(id))?.dir;
    return !!dir && this.freezer.state(dir) !== 'thawed';
  }

  private lifecycleError(e: unknown, id: string, what: string): BoxdError {
    if (status(e) === 404) return new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    return new RuntimeError(`${what} ${id}: ${reason(e)}`, { cause: e });
  }

  async commit(id: string, ref: string, labels: Record<string, string>, opts: { frozen?: boolean } = {}): Promise<void> {
    const [repo, tag] = splitRef(ref);
    try {
      // A frozen box gives a consistent copy. A suspended box is already frozen and must stay
      // so (as one the caller froze: `frozen`); a running one is frozen for the commit only, through the same (gated) freezer.
      const paused = opts.frozen || (await this.inspect(id))?.state === 'paused';
      if (this.freezer && !paused) {
        await this.freeze(id);
        try {
          await this.docker.getContainer(id).commit({ repo, tag, pause: false, changes: labelChanges(labels) });
        } finally {
          await this.resume(id).catch(() => undefined);
        }
        return;
      }
      await this.docker.getContainer(id).commit({ repo, tag, pause: !paused, changes: labelChanges(labels) });
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

  async saveImage(ref: string): Promise<Readable> {
    try {
      return (await this.docker.getImage(ref).get()) as unknown as Readable;
    } catch (e) {
      if (status(e) === 404) throw new BoxdError('IMAGE_NOT_FOUND', `no image ${ref} on this host`);
      throw new RuntimeError(`saving image ${ref}: ${reason(e)}`, { cause: e });
    }
  }

  async loadImage(tar: Readable): Promise<void> {
    let out: NodeJS.ReadableStream;
    try {
      out = await this.docker.loadImage(tar, { quiet: true });
    } catch (e) {
      throw new RuntimeError(`loading an image: ${reason(e)}`, { cause: e });
    }
    // The engine answers with a JSON progress stream; an error line means the load failed.
    const chunks: Buffer[] = [];
    for await (const c of out) chunks.push(Buffer.from(c as Buffer));
    const text = Buffer.concat(chunks).toString('utf8');
    const bad = /"error(?:Detail)?"\s*:\s*(?:\{[^}]*"message"\s*:\s*)?"([^"]*)"/.exec(text);
    if (bad) throw new RuntimeError(`loading an image: ${bad[1]}`);
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
    // Removing a frozen container can hang the engine: thaw first (its processes die at once anyway).
    if (this.freezer) {
      const info = await this.procs.info(id);
      if (info?.dir && this.freezer.state(info.dir) !== 'thawed') this.freezer.thaw(info.dir);
    }
    this.procs.forget(id);
    this.frozeHere.delete(id);
    // Disk images and egress rules are keyed by container name; callers may pass the engine's id.
    const info = await this.docker.getContainer(id).inspect().catch(() => undefined);
    const name = info?.Name.replace(/^\//, '') ?? id;
    // While the container still holds its address: once it is free, a new box may take it and pin it.
    const ip = info?.NetworkSettings?.Networks?.[this.opts.network]?.IPAddress;
    if (ip) await this.pins.unpin(ip);
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (e) {
      if (status(e) === 409 && /already in progress/i.test(reason(e))) return;
      if (status(e) !== 404) throw this.lifecycleError(e, id, 'destroy');
    }
    // After the container: the engine detaches the disk while removing its layer folder.
    await this.quota.release(name);
    await this.egress.remove(name);
  }

  async inspect(id: string): Promise<BoxInstance | undefined> {
    try {
      const info = await this.docker.getContainer(id).inspect();
      const ports: Record<number, number> = {};
      for (const [key, binds] of Object.entries(info.NetworkSettings?.Ports ?? {})) {
        const bind = (binds ?? []).find((b) => b.HostIp === this.hostAddr) ?? binds?.[0];
        if (bind?.HostPort) ports[parseInt(key, 10)] = parseInt(bind.HostPort, 10);
      }
      this.notePaused(info.Name.replace(/^\//, ''), info.State.Paused);
      const frozen = info.State.Running && (await this.frozen(id, info.State.Pid));
      const state: InstanceState = info.State.Paused || frozen ? 'paused' : info.State.Running ? 'running' : 'stopped';
      const layers = layersOf(info);
      if (layers) this.layerCache.set(info.Name.replace(/^\//, ''), layers);
      return { id: info.Name.replace(/^\//, ''), name: info.Name.replace(/^\//, ''), state, ports, labels: info.Config.Labels ?? {} };
    } catch (e) {
      if (status(e) === 404) return undefined;
      throw new RuntimeError(`inspecting ${id}: ${reason(e)}`, { cause: e });
    }
  }

  watch(labels: Record<string, string>, onChange: (name: string) => void): () => void {
    let stopped = false;
    let stream: NodeJS.ReadableStream | undefined;
    const connect = async (): Promise<void> => {
      if (stopped) return;
      try {
        stream = (await this.docker.getEvents({
          filters: { type: ['container'], label: Object.entries(labels).map(([k, v]) => `${k}=${v}`), event: ['die', 'pause', 'unpause', 'destroy'] },
        })) as NodeJS.ReadableStream;
      } catch {
        if (!stopped) setTimeout(() => void connect(), 1000).unref();
        return;
      }
      if (stopped) return void (stream as unknown as { destroy?: () => void }).destroy?.();
      let buf = '';
      stream.on('data', (chunk: Buffer) => {
        buf += chunk.toString('utf8');
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const name = (JSON.parse(line) as { Actor?: { Attributes?: { name?: string } } }).Actor?.Attributes?.name;
            if (name) onChange(name);
          } catch {
            /* not an event */
          }
        }
      });
      let retried = false;
      const again = () => {
        if (retried || stopped) return;
        retried = true;
        setTimeout(() => void connect(), 1000).unref();
      };
      stream.once('end', again);
      stream.once('error', again);
    };
    void connect();
    return () => {
      stopped = true;
      (stream as unknown as { destroy?: () => void } | undefined)?.destroy?.();
    };
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
    // Whether a running container is frozen is a read of its cgroup (sync): with a thousand
    // boxes, yield between slices so that a wake waiting on this loop is not held up.
    const out: BoxInstance[] = [];
    for (let i = 0; i < found.length; i++) {
      if (i > 0 && i % 64 === 0) await new Promise((r) => setImmediate(r));
      const c = found[i]!;
      const name = (c.Names[0] ?? c.Id).replace(/^\//, '');
      const ports: Record<number, number> = {};
      for (const p of c.Ports ?? []) if (p.PublicPort && p.IP === this.hostAddr) ports[p.PrivatePort] = p.PublicPort;
      this.notePaused(name, c.State === 'paused');
      const frozen = c.State === 'running' && (await this.frozen(name));
      const state: InstanceState = c.State === 'paused' || frozen ? 'paused' : c.State === 'running' ? 'running' : 'stopped';
      out.push({ id: name, name, state, ports, labels: c.Labels ?? {} });
    }
    return out;
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

/** Whether this process may write freezer files (root on a writable cgroup fs). */
function canWrite(f: Freezer): boolean {
  const dir = f.dirOf(process.pid);
  if (!dir) return false;
  try {
    accessSync(f.version === 1 ? `${dir}/freezer.state` : `${dir}/cgroup.freeze`, constants.W_OK);
    return true;
  } catch {
    // Our own cgroup may be the root one (no state file there): try the Docker parent.
    return existsSync('/sys/fs/cgroup/freezer/docker') || f.version === 2;
  }
}
