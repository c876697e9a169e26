import Docker from 'dockerode';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Base, Definitions, Golden } from './definitions.ts';

/** Progress lines of long builds (debootstrap, Dockerfile steps). */
export type Progress = (line: string) => void;

/**
 * Builds bases and goldens that are missing locally, dependencies first. Idempotent: an image
 * whose tag (content hash) exists is skipped, so a second run costs only image look-ups.
 * Returns the names of what was built.
 */
export async function buildGoldens(
  docker: Docker,
  defs: Definitions,
  names: string[],
  progress: Progress,
): Promise<string[]> {
  const built: string[] = [];
  const ensureGolden = async (golden: Golden): Promise<void> => {
    if (golden.parent) await ensureGolden(defs.goldens.get(golden.parent)!);
    else {
      const base = [...defs.bases.values()].find((b) => b.tag === golden.baseTag)!;
      if (!(await hasImage(docker, base.tag))) {
        await buildBase(docker, base, progress);
        built.push(base.tag);
      }
    }
    if (await hasImage(docker, golden.tag)) return;
    progress(`building golden ${golden.name} -> ${golden.tag}`);
    const started = Date.now();
    const stream = await docker.buildImage(
      { context: golden.dir, src: readdirSync(golden.dir) },
      { t: golden.tag, buildargs: { BASE: golden.baseTag }, labels: { 'boxd.golden': golden.name }, rm: true, forcerm: true },
    );
    await follow(docker, stream, (line) => progress(`  ${golden.name}: ${line}`));
    progress(`built ${golden.name} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    built.push(golden.tag);
  };
  for (const name of names) {
    const golden = defs.goldens.get(name);
    if (!golden) throw new Error(`unknown golden "${name}"; defined: ${[...defs.goldens.keys()].join(', ')}`);
    await ensureGolden(golden);
  }
  return built;
}

async function hasImage(docker: Docker, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 404) return false;
    throw e;
  }
}

async function buildBase(docker: Docker, base: Base, progress: Progress): Promise<void> {
  const started = Date.now();
  const work = mkdtempSync(join(tmpdir(), `boxd-base-${base.name}-`));
  try {
    if (base.def.kind === 'busybox') {
      progress(`building base ${base.name} from ${base.def.binary} -> ${base.tag}`);
      copyFileSync(base.def.binary, join(work, 'busybox'));
      writeFileSync(
        join(work, 'Dockerfile'),
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/root", "/etc"]\n' +
          'RUN ["/bin/busybox", "--install", "-s"]\nRUN echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd && echo "root:x:0:" > /etc/group && chmod 1777 /tmp\n',
      );
      const stream = await docker.buildImage({ context: work, src: ['Dockerfile', 'busybox'] }, { t: base.tag, rm: true, forcerm: true });
      await follow(docker, stream, (line) => progress(`  ${base.name}: ${line}`));
    } else {
      const { variant, include } = base.def;
      progress(`debootstrap ${base.suite} from ${base.mirror} (about a minute) -> ${base.tag}`);
      const root = join(work, 'root');
      await run('debootstrap', [`--variant=${variant}`, `--include=${include.join(',')}`, base.suite!, root, base.mirror!], progress);
      // Boxes need no apt caches; keep the base small.
      rmSync(join(root, 'var/cache/apt/archives'), { recursive: true, force: true });
      progress(`importing ${base.name} root filesystem`);
      const [repo, tag] = base.tag.split(':') as [string, string];
      const tar = spawn('tar', ['--numeric-owner', '-C', root, '-c', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const stream = await docker.importImage(tar.stdout as unknown as string, { repo, tag });
      await follow(docker, stream, () => undefined);
    }
    if (!(await hasImage(docker, base.tag))) throw new Error(`base ${base.name} was not created`);
    progress(`built base ${base.name} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

interface BuildEvent {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
}

function follow(docker: Docker, stream: NodeJS.ReadableStream, line: Progress): Promise<void> {
  return new Promise((resolve, reject) => {
    let failure: string | undefined;
    docker.modem.followProgress(
      stream,
      (err: Error | null) => (err ? reject(err) : failure ? reject(new Error(failure)) : resolve()),
      (event: BuildEvent) => {
        if (event.error) failure = event.errorDetail?.message ?? event.error;
        const text = (event.stream ?? event.status ?? '').trim();
        if (text) for (const l of text.split('\n')) line(l);
      },
    );
  });
}

function run(cmd: string, args: string[], progress: Progress): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let last = '';
    const onData = (chunk: Buffer) => {
      for (const l of chunk.toString().split('\n')) {
        const t = l.trim();
        if (t) {
          last = t;
          if (/^I: (Retrieving|Validating|Unpacking|Configuring|Installing|Base system)/.test(t)) progress(`  ${t}`);
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${last}`))));
  });
}
