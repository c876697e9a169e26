import { execFile } from 'node:child_process';
import { chmod, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';

/**
 * Disk quotas for boxes on Docker's overlay2 when the backing filesystem has no project quotas
 * (ext4 here) and dockerd must not be reconfigured.
 *
 * Per box: a sparse file formatted ext4 (`<root>/<instance>/<container>.ext4`), loop-mounted OVER the
 * container's overlay2 layer folder (the parent of its `diff` upper dir and `work` dir) after
 * the container is created and before it starts. The engine then mounts the box's root overlay
 * with its upper and work dirs on that ext4: every write the box makes to its filesystem lands
 * there, so writing past the quota fails with ENOSPC, and `df /` in the box shows the quota
 * (overlayfs reports the upper filesystem's sizes). Pause, commit (fork, snapshot) and restarts
 * read the same folders and work unchanged.
 *
 * `docker rm` empties the folder, detaches the mount and the loop device goes with it
 * (autoclear); `release` then deletes the image. Deleted files give their blocks back to the
 * host (mounted with `discard`: the loop device punches holes in the sparse file).
 */
export class LoopDiskQuota {
  constructor(
    /** Folder of the images, one subfolder per instance (prefix). */
    readonly root: string,
    private readonly log: Logger,
  ) {}

  imagePath(instance: string, container: string): string {
    return join(this.root, instance, `${container}.ext4`);
  }

  hasImage(instance: string, container: string): Promise<boolean> {
    return exists(this.imagePath(instance, container));
  }

  /**
   * Puts a `sizeMb` ext4 under `layerDir` (the container's overlay2 layer folder). Idempotent: a
   * layer already mounted is left alone, and an existing image (a box restarted after a reboot)
   * is mounted again as it is, never reformatted. Throws RuntimeError when a step fails.
   */
  async attach(instance: string, container: string, layerDir: string, sizeMb: number): Promise<void> {
    if (await isMountpoint(layerDir)) return;
    const image = this.imagePath(instance, container);
    if (!(await exists(image))) {
      await mkdir(dirname(image), { recursive: true });
      const partial = `${image}.new`;
      const f = await open(partial, 'w');
      await f.truncate(sizeMb * 1024 * 1024);
      await f.close();
      // -d copies the layer folder as it is (link, lower, diff/, work/): the engine reads them at start.
      // Lazy init and no discard at mkfs keep formatting a 100 GiB sparse file in tens of ms.
      await sh('mkfs.ext4', ['-q', '-F', '-m', '0', '-L', 'boxd', '-d', layerDir, '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', partial]);
      await rename(partial, image);
    }
    await sh('mount', ['-o', 'loop,discard,nodev,nosuid', image, layerDir]);
    await chmod(layerDir, 0o710);
  }

  /**
   * Gives the image of container `from` (whatever its instance) the name of `to`: a renamed
   * container keeps its disk (a mounted loop file may be renamed). Idempotent; no image: nothing.
   */
  async rename(from: string, to: string): Promise<void> {
    for (const instance of await readdir(this.root).catch(() => [] as string[])) {
      const image = this.imagePath(instance, from);
      if (await exists(image)) await rename(image, this.imagePath(instance, to));
    }
  }

  /** Unmounts (if still mounted), frees the loop device and deletes the image, whatever its instance. Idempotent. */
  async release(container: string): Promise<void> {
    for (const instance of await readdir(this.root).catch(() => [] as string[])) {
      for (const image of [this.imagePath(instance, container), `${this.imagePath(instance, container)}.new`]) {
        if (await exists(image)) await this.releaseImage(image);
      }
    }
  }

  private async releaseImage(image: string): Promise<void> {
    const devices = (await out('losetup', ['-j', image]).catch(() => ''))
      .split('\n')
      .map((l) => l.split(':')[0]!.trim())
      .filter(Boolean);
    for (const dev of devices) {
      const targets = (await out('findmnt', ['-rn', '-S', dev, '-o', 'TARGET']).catch(() => '')).split('\n').filter(Boolean);
      for (const t of targets) await sh('umount', ['-l', t]).catch((e) => this.log.warn({ err: String(e), target: t }, 'could not unmount a box disk'));
      await sh('losetup', ['-d', dev]).catch(() => undefined);
    }
    await rm(image, { force: true });
  }

  /** Releases the images of `instance`'s containers that no longer exist (`live`: names that do). */
  async sweep(instance: string, live: Set<string>): Promise<string[]> {
    const files = await readdir(join(this.root, instance)).catch(() => [] as string[]);
    const gone: string[] = [];
    for (const f of files) {
      const container = f.replace(/\.ext4(\.new)?$/, '');
      if (container === f || live.has(container)) continue;
      await this.release(container);
      gone.push(container);
    }
    return gone;
  }
}

/** The overlay2 layer folder of a container (parent of its upper dir), or undefined for another storage driver. */
export function layerDirOf(graphDriver: { Name?: string; Data?: Record<string, string> | null } | undefined): string | undefined {
  if (graphDriver?.Name !== 'overlay2') return undefined;
  const upper = graphDriver.Data?.UpperDir;
  const work = graphDriver.Data?.WorkDir;
  if (!upper || !work || dirname(upper) !== dirname(work)) return undefined;
  return dirname(upper);
}

async function isMountpoint(dir: string): Promise<boolean> {
  const [a, b] = await Promise.all([stat(dir), stat(dirname(dir))]);
  return a.dev !== b.dev;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function out(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => (err ? reject(new RuntimeError(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout))),
  );
}

async function sh(cmd: string, args: string[]): Promise<void> {
  await out(cmd, args);
}
