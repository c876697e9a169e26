import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { lstat, readdir, readlink, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { BoxdError } from '../core/errors.ts';

/** What one diff copy did. */
export interface CopyStats {
  /** Entries (files, folders, links) written into the target. */
  written: number;
  /** Entries removed from the target (the parent's deletions and replaced folders). */
  deleted: number;
  bytes: number;
  ms: number;
}

/** The copy cannot be done faithfully here; the caller takes the commit path instead. */
export class CopyNotSupported extends BoxdError {
  constructor(message: string) {
    super('NOT_SUPPORTED', message);
  }
}

/**
 * Applies the changes a box made to its image onto another box of the same image, from the
 * host's side of their overlay mounts:
 *
 * - `upper` is the source box's writable layer (overlay upper dir): exactly what it changed;
 * - `merged` is the source box's view (its whole filesystem);
 * - `target` is the view of a box of the same image that changed nothing yet.
 *
 * Deletions are not read from overlay's own marks (whiteout devices, the opaque xattr, which
 * Node cannot read) but from the views, which say the same thing: for every folder the source
 * changed, whatever the target has and the source's view lacks was deleted (a whiteout) or
 * hidden (a folder deleted and made again: opaque). An entry the source's view shows that is
 * neither in its upper layer nor in the image means overlay merged in a renamed folder
 * (redirect_dir): that, and metacopy layers, are refused with CopyNotSupported.
 *
 * Everything in the upper layer but whiteouts is then copied by GNU tar (mode, owner, symlinks,
 * hard links, xattrs except overlay's own, mtimes). Folders are walked parents first and every
 * target entry of another type is removed before anything is written under its path, so a
 * symlink in the target is never followed. Both boxes must be frozen by the caller.
 */
export async function copyOverlayDiff(src: { upper: string; merged: string }, target: string, mountpoints: string[] = []): Promise<CopyStats> {
  const started = performance.now();
  if (metacopyOn()) throw new CopyNotSupported('overlay metacopy is on: upper files may lack their data');
  const stats = { written: 0, deleted: 0, bytes: 0 };
  // Files the engine bind-mounts over (docker-init, /etc/hosts…) have an empty placeholder in
  // the upper layer: replacing the child's would cut its mount. Neither is touched.
  const skip = new Set<string>();
  for (const m of mountpoints) skip.add(await resolveIn(src.merged, m));
  const members: string[] = ['.'];
  const sizes = new Map<string, number>();

  const names = async (dir: string): Promise<string[]> => readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return [];
    throw e;
  });
  const lstatOrNone = (p: string) => lstat(p).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });

  const walk = async (rel: string): Promise<void> => {
    const [upperNames, viewNames, targetNames] = await Promise.all([
      names(join(src.upper, rel)),
      names(join(src.merged, rel)),
      names(join(target, rel)),
    ]);
    const upperSet = new Set(upperNames);
    const viewSet = new Set(viewNames);
    const targetSet = new Set(targetNames);
    for (const n of viewNames) {
      if (!upperSet.has(n) && !targetSet.has(n)) {
        throw new CopyNotSupported(`/${join(rel, n)} comes from a renamed folder (overlay redirect_dir)`);
      }
    }
    for (const n of targetNames) {
      if (!viewSet.has(n) && !skip.has(rel === '.' ? n : `${rel}/${n}`)) {
        await rm(join(target, rel, n), { recursive: true, force: true });
        stats.deleted++;
      }
    }
    const dirs: string[] = [];
    for (const n of upperNames) {
      const p = rel === '.' ? n : `${rel}/${n}`;
      if (skip.has(p)) continue;
      const st = await lstat(join(src.upper, p));
      if (st.isCharacterDevice() && st.rdev === 0) continue; // whiteout: removed above
      const there = viewSet.has(n) && targetSet.has(n) ? await lstatOrNone(join(target, p)) : undefined;
      if (there && (!there.isDirectory() || !st.isDirectory())) {
        await rm(join(target, p), { recursive: true, force: true });
      }
      members.push(p);
      stats.written++;
      if (st.isDirectory()) dirs.push(p);
      else stats.bytes += st.size;
      if (st.isFile() && st.nlink === 1) sizes.set(p, st.size);
    }
    for (const d of dirs) await walk(d);
  };
  await walk('.');
  // Big files with one name go by cp (copy_file_range / reflink in the kernel, about 3x faster
  // than a tar pipe for 100 MB), before tar, whose folder times then come last.
  const big: string[] = [];
  const rest: string[] = [];
  for (const m of members) (sizes.get(m) ?? 0) >= BIG_FILE ? big.push(m) : rest.push(m);
  if (big.length) await cpParents(src.upper, target, big);
  await tarCopy(src.upper, target, rest);
  return { ...stats, ms: Math.round(performance.now() - started) };
}

/**
 * `path` (absolute, inside a box) with its symlinks resolved inside `root` (never on the host),
 * relative to the root: `/sbin/docker-init` is `usr/sbin/docker-init` on a merged-/usr Debian.
 */
export async function resolveIn(root: string, path: string): Promise<string> {
  const todo = path.split('/').filter(Boolean);
  const done: string[] = [];
  for (let hops = 0; todo.length && hops < 64; hops++) {
    const part = todo.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const target = await readlink(join(root, ...done, part)).catch(() => undefined);
    if (target === undefined) {
      done.push(part);
      continue;
    }
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/').filter(Boolean));
  }
  return posix.join(...done, ...todo) || '.';
}

let metacopy: boolean | undefined;
function metacopyOn(): boolean {
  if (metacopy === undefined) {
    try {
      metacopy = readFileSync('/sys/module/overlay/parameters/metacopy', 'utf8').trim() === 'Y';
    } catch {
      metacopy = false;
    }
  }
  return metacopy;
}

const BIG_FILE = 1024 * 1024;

/** `cp -a --parents` of regular files: data copied in the kernel, mode, owner, times, xattrs kept. */
function cpParents(from: string, to: string, files: string[]): Promise<void> {
  // Overlay refuses its own trusted.overlay.* xattrs on the target; cp -a does not fail on xattrs.
  return finished(spawn('cp', ['-a', '--parents', '--reflink=auto', '-t', to, '--', ...files.map((f) => `./${f}`)], { cwd: from, stdio: ['ignore', 'ignore', 'pipe'] }), 'cp (big files)');
}

function finished(p: ReturnType<typeof spawn>, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let err = '';
    p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new BoxdError('RUNTIME_ERROR', `${what} exited ${code}: ${err.trim().slice(0, 500)}`))));
  });
}

/** `tar -c` of exactly `members` (no recursion) piped into `tar -x` in `to`. */
function tarCopy(from: string, to: string, members: string[]): Promise<void> {
  const xattrs = ['--xattrs', '--xattrs-include=*', '--xattrs-exclude=trusted.overlay.*'];
  const pack = spawn('tar', ['-C', from, ...xattrs, '--no-recursion', '--null', '-T', '-', '-cf', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const unpack = spawn('tar', ['-C', to, ...xattrs, '--numeric-owner', '--same-owner', '-xpf', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
  pack.stdout.pipe(unpack.stdin);
  pack.stdin.end(members.map((m) => `./${m === '.' ? '' : m}`).join('\0') + '\0');
  return Promise.all([finished(pack, 'tar (read the parent)'), finished(unpack, 'tar (write the child)')]).then(() => undefined);
}
