import { posix } from 'node:path';
import { z } from 'zod';
import { ValidationError } from '../core/errors.ts';
import { GOLDEN_NAME } from '../golden-images/definitions.ts';
import { networkPolicySchema } from '../core/network-policy.ts';

export const BOX_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const boxName = z.string().regex(BOX_NAME, 'must be a DNS label: a-z, 0-9 and "-", at most 63, not starting or ending with "-"');
const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;
const noNul = (s: string) => !s.includes('\0');
const env = z
  .record(z.string().regex(envName, 'environment variable names are letters, digits and _'), z.string().max(32_768).refine(noNul, 'no NUL bytes'))
  .refine((r) => Object.keys(r).length <= 200, 'at most 200 variables');
export const goldenName = z.string().regex(GOLDEN_NAME, 'golden names are lowercase letters, digits and "-"');
const snapshotName = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'snapshot names are lowercase letters, digits, ".", "_" and "-"');
const imageRef = z.string().min(1).max(255).regex(/^[a-zA-Z0-9][a-zA-Z0-9._\-/:@]*$/, 'not an image reference');

export const createBoxBody = z
  .object({
    name: boxName.optional(),
    golden: goldenName.optional(),
    image: imageRef.optional(),
    snapshot: snapshotName.optional(),
    ports: z.array(z.number().int().min(1).max(65535)).max(16).optional(),
    env: env.optional(),
    idleTimeoutMs: z.number().int().min(0).max(7 * 24 * 3600 * 1000).optional(),
    public: z.boolean().optional(),
    /** Disk quota in MiB, at most the host's BOXD_BOX_DISK_MB (checked by the API). */
    diskMb: z.number().int().min(16, 'diskMb must be at least 16').optional(),
    network: networkPolicySchema.optional(),
    /** Put BOXD_URL, a box-scoped BOXD_API_KEY and BOXD_BOX in the box's env (`boxd` is on PATH). */
    agent: z.boolean().optional(),
  })
  .strict()
  .refine((b) => [b.golden, b.image, b.snapshot].filter((x) => x !== undefined).length <= 1, 'give at most one of golden, image and snapshot');
export type CreateBoxBody = z.infer<typeof createBoxBody>;

export const execBody = z
  .object({
    cmd: z.array(z.string().max(131_072).refine(noNul, 'no NUL bytes')).min(1).max(4096),
    cwd: z.string().startsWith('/', 'cwd must be an absolute path').max(4096).refine(noNul).optional(),
    env: env.optional(),
    stdin: z.string().max(16 * 1024 * 1024).optional(),
    timeoutMs: z.number().int().min(1).optional(),
    /** Keep the command running when the client disconnects from the stream. */
    detach: z.boolean().optional(),
  })
  .strict();

export type ExecBody = z.infer<typeof execBody>;

export const forkBody = z.object({ name: boxName.optional() }).strict();
export const snapshotBody = z.object({ snapshot: snapshotName }).strict();

/** Parses with a schema; the first problems become one INVALID_REQUEST message. */
export function parse<T>(schema: z.ZodType<T>, value: unknown, what = 'request body'): T {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  const issues = r.error.issues.slice(0, 3).map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message));
  throw new ValidationError(`invalid ${what}: ${issues.join('; ')}`);
}

export function parseName(raw: unknown): string {
  return parse(boxName, raw, 'box name');
}

/** An absolute, normalised path inside the box; no "..", no NUL. */
export function parseBoxPath(raw: unknown): string {
  if (typeof raw !== 'string' || raw === '') throw new ValidationError('query parameter "path" is required (an absolute path in the box)');
  if (!raw.startsWith('/')) throw new ValidationError(`path must be absolute: ${raw}`);
  if (raw.includes('\0') || raw.length > 4096) throw new ValidationError('path has a NUL byte or is too long');
  if (raw.split('/').includes('..')) throw new ValidationError('path must not contain ".." segments');
  const normal = posix.normalize(raw);
  if (normal === '/' || normal.endsWith('/')) throw new ValidationError('path must name a file, not a folder');
  return normal;
}
