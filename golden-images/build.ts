/**
 * `tsx golden-images/build.ts [name…]`: builds the golden images that are missing or whose
 * definition changed. With no names it builds those in BOXD_GOLDENS (comma-separated), or all.
 */
import Docker from 'dockerode';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGoldens } from './builder.ts';
import { loadDefinitions } from './definitions.ts';

const dir = dirname(fileURLToPath(import.meta.url));
const defs = loadDefinitions(dir);
const argv = process.argv.slice(2);
const wanted = argv.length
  ? argv
  : process.env.BOXD_GOLDENS
    ? process.env.BOXD_GOLDENS.split(',').map((s) => s.trim()).filter(Boolean)
    : [...defs.goldens.keys()];

const docker = new Docker({ socketPath: '/var/run/docker.sock' });
const started = Date.now();
const verbose = process.stderr.isTTY || process.env.BOXD_BUILD_VERBOSE === '1';
let lastStep = '';
try {
  const built = await buildGoldens(docker, defs, wanted, (line) => {
    // Docker step output is noisy; show step headers and our own lines, everything when verbose.
    if (verbose || !line.startsWith('  ') || /Step \d+\/\d+|I: /.test(line)) console.error(`[golden] ${line}`);
    lastStep = line;
  });
  const summary = wanted.map((n) => `${n}=${defs.goldens.get(n)!.tag}`).join(' ');
  console.error(`[golden] ${built.length ? `built ${built.length}` : 'up to date'} (${((Date.now() - started) / 1000).toFixed(1)} s): ${summary}`);
} catch (e) {
  console.error(`[golden] build failed: ${(e as Error).message}${lastStep ? `\n[golden] last step: ${lastStep}` : ''}`);
  process.exit(1);
}
