import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { networkPolicySchema } from '../core/network-policy.ts';

/**
 * Golden image definitions: `golden-images/<name>/{Dockerfile,manifest.json}` plus the bases
 * in `bases.json`. Tags are content hashes of the definitions, so any process computes the
 * same tag without building, and a golden is rebuilt exactly when its definition changes.
 */
/** Golden names: short DNS labels (they become image names). */
export const GOLDEN_NAME = /^[a-z0-9][a-z0-9-]{0,30}$/;

export const manifestSchema = z.object({
  description: z.string().default(''),
  /** `debian`, `busybox` (from bases.json) or `golden:<name>` to build on another golden. */
  base: z.string(),
  /** Boxes kept created and suspended, ready to hand out. */
  poolSize: z.number().int().min(0).max(50).default(0),
  /** Ports a box serves; the first is the preview URL's. */
  ports: z.array(z.number().int().min(1).max(65535)).max(16).default([]),
  cpus: z.number().positive().max(64).default(2),
  memoryMb: z.number().int().min(64).default(8192),
  idleTimeoutMs: z.number().int().min(0).default(30_000),
  // No defaults for these two: a defaulted field would change every golden's tag.
  /** Disk quota of its boxes in MiB (capped by the host's BOXD_BOX_DISK_MB). */
  diskMb: z.number().int().min(16).optional(),
  /** Egress policy of its boxes (default `open`). */
  network: networkPolicySchema.optional(),
  /** Its boxes are agent boxes (BOXD_URL, a box-scoped key, `boxd`) unless a create says `"agent": false`. */
  agent: z.boolean().optional(),
});
export type GoldenManifest = z.infer<typeof manifestSchema>;

const baseSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('debootstrap'), variant: z.string().default('minbase'), include: z.array(z.string()) }),
  z.object({ kind: z.literal('busybox'), binary: z.string() }),
]);
export type BaseDefinition = z.infer<typeof baseSchema>;

export interface Base {
  name: string;
  def: BaseDefinition;
  /** For debootstrap bases: the Debian suite and the mirror read from the apt configuration. */
  suite?: string;
  mirror?: string;
  tag: string;
}

export interface Golden {
  name: string;
  dir: string;
  manifest: GoldenManifest;
  /** Image the Dockerfile builds on (a base tag or another golden's tag). */
  baseTag: string;
  /** Golden this one builds on, if any. */
  parent?: string;
  tag: string;
}

export interface Definitions {
  bases: Map<string, Base>;
  goldens: Map<string, Golden>;
}

const sha = (...parts: (string | Buffer)[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 12);
};

/** Reads every definition in `dir`. Throws with the file name on any invalid definition. */
export function loadDefinitions(dir: string): Definitions {
  const rawBases = JSON.parse(readFileSync(join(dir, 'bases.json'), 'utf8')) as Record<string, unknown>;
  const bases = new Map<string, Base>();
  for (const [name, raw] of Object.entries(rawBases)) {
    const parsed = baseSchema.safeParse(raw);
    if (!parsed.success) throw new Error(`bases.json: ${name}: ${parsed.error.issues[0]?.message}`);
    const def = parsed.data;
    if (def.kind === 'busybox') {
      const binary = existsSync(def.binary) ? readFileSync(def.binary) : Buffer.from('missing');
      bases.set(name, { name, def, tag: `boxd-base/${name}:${sha(JSON.stringify(def), binary)}` });
    } else {
      const { suite, mirror } = aptSource();
      bases.set(name, { name, def, suite, mirror, tag: `boxd-base/${name}:${sha(JSON.stringify(def), suite, mirror)}` });
    }
  }

  const raw = new Map<string, { dir: string; manifest: GoldenManifest; dockerfile: string }>();
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const gdir = join(dir, entry.name);
    if (!existsSync(join(gdir, 'manifest.json'))) continue;
    if (!GOLDEN_NAME.test(entry.name)) throw new Error(`golden name "${entry.name}" is not a DNS label`);
    const parsed = manifestSchema.safeParse(JSON.parse(readFileSync(join(gdir, 'manifest.json'), 'utf8')));
    if (!parsed.success) throw new Error(`${entry.name}/manifest.json: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    raw.set(entry.name, { dir: gdir, manifest: parsed.data, dockerfile: readFileSync(join(gdir, 'Dockerfile'), 'utf8') });
  }

  const goldens = new Map<string, Golden>();
  const resolve = (name: string, seen: string[]): Golden => {
    const done = goldens.get(name);
    if (done) return done;
    const r = raw.get(name);
    if (!r) throw new Error(`golden "${name}" is not defined (needed by ${seen.at(-1) ?? 'a request'})`);
    if (seen.includes(name)) throw new Error(`golden cycle: ${[...seen, name].join(' -> ')}`);
    let baseTag: string;
    let parent: string | undefined;
    if (r.manifest.base.startsWith('golden:')) {
      parent = r.manifest.base.slice('golden:'.length);
      baseTag = resolve(parent, [...seen, name]).tag;
    } else {
      const base = bases.get(r.manifest.base);
      if (!base) throw new Error(`${name}/manifest.json: unknown base "${r.manifest.base}"`);
      baseTag = base.tag;
    }
    const golden: Golden = {
      name,
      dir: r.dir,
      manifest: r.manifest,
      baseTag,
      parent,
      tag: `boxd-golden/${name}:${sha(r.dockerfile, JSON.stringify(r.manifest), baseTag)}`,
    };
    goldens.set(name, golden);
    return golden;
  };
  for (const name of raw.keys()) resolve(name, []);
  return { bases, goldens };
}

/**
 * The Debian suite of this machine and the first apt mirror serving it, read from
 * /etc/apt/sources.list and sources.list.d (one-line and deb822 formats). Never hard-coded.
 */
export function aptSource(root = '/etc/apt'): { suite: string; mirror: string } {
  const osRelease = safeRead('/etc/os-release');
  const suite = /^VERSION_CODENAME=(.+)$/m.exec(osRelease)?.[1]?.replace(/"/g, '') ?? 'bookworm';
  const files = [join(root, 'sources.list')];
  const listDir = join(root, 'sources.list.d');
  if (existsSync(listDir)) for (const f of readdirSync(listDir).sort()) files.push(join(listDir, f));
  for (const file of files) {
    const text = safeRead(file);
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (k: string) => new RegExp(`^${k}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim();
        const enabled = field('Enabled') !== 'no';
        const types = field('Types')?.split(/\s+/) ?? [];
        const suites = field('Suites')?.split(/\s+/) ?? [];
        const uri = field('URIs')?.split(/\s+/)[0];
        if (enabled && types.includes('deb') && suites.includes(suite) && uri) return { suite, mirror: uri };
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s/.exec(line);
        if (m && m[2] === suite) return { suite, mirror: m[1]! };
      }
    }
  }
  throw new Error(`no apt source for Debian "${suite}" in ${root}: cannot debootstrap the Debian base`);
}

function safeRead(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
