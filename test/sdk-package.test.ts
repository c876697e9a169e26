import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { run, startStack, type Stack } from './helpers.ts';

/**
 * The example of the product page ("What the integration looks like"), verbatim. Only the package
 * name is changed below; the page leaves `id` to the surrounding code, so the test defines it as a
 * global before the example runs.
 */
const PRODUCT_PAGE_EXAMPLE = `import { Compute } from "@boxd-sh/sdk";

const c = new Compute({ apiKey: process.env.BOXD_API_KEY });

// One VM per task / workspace / session
const box = await c.box.create({ name: \`task-\${id}\` });

await box.exec(["bash", "-lc", "git clone ..."]);
await box.exec(["bash", "-lc", "npm test"]);

// Warm-suspend between agent turns -- sub-ms resume on the next call
await box.suspend();
await box.resume();

// Clean up
await box.destroy();
`;

const ROOT = resolve(import.meta.dirname, '..');
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

describe('@boxd/sdk as a package (npm pack, install in an empty project, product page example)', () => {
  let s: Stack;
  let dir: string;
  before(async () => {
    // A loaded CI machine can hold a Redis answer past the 1.5 s default; these tests are not about a frozen Redis.
    s = await startStack({ BOXD_REDIS_TIMEOUT_MS: '20000' });
    dir = await mkdtemp(join(tmpdir(), 'boxd-sdk-'));
  });
  after(async () => {
    await s?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('imports nothing from the server', async () => {
    const sources = (await readdir(join(ROOT, 'sdk'))).filter((f) => f.endsWith('.ts'));
    assert.ok(sources.includes('index.ts') && sources.includes('types.ts'));
    for (const f of sources) {
      const src = await readFile(join(ROOT, 'sdk', f), 'utf8');
      const from = [...src.matchAll(/\b(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)].map((m) => m[1]!);
      // Only the SDK's own files, named as built (`./x.js`: a `.ts` name would survive into the .d.ts).
      const bad = from.filter((p) => p.startsWith('.') && !/^\.\/[a-z-]+\.js$/.test(p));
      assert.deepEqual(bad, [], `sdk/${f} may import only sibling SDK files as ./name.js, got ${bad.join(', ')}`);
    }
    const pkg = JSON.parse(await readFile(join(ROOT, 'sdk', 'package.json'), 'utf8'));
    assert.equal(pkg.name, '@boxd/sdk');
    assert.equal(pkg.dependencies, undefined, 'zero runtime dependencies');
  });

  it('packs, installs offline into an empty project and runs the product page example unchanged', async () => {
    const pack = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: join(ROOT, 'sdk') });
    assert.equal(pack.code, 0, pack.out);
    const packed = JSON.parse(pack.out.slice(pack.out.indexOf('[')))[0] as { filename: string; files: { path: string }[] };
    const files = packed.files.map((f) => f.path).sort();
    const sources = (await readdir(join(ROOT, 'sdk'))).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
    const built = sources.flatMap((n) => [`dist/${n}.d.ts`, `dist/${n}.js`]);
    assert.deepEqual(files, ['README.md', ...built, 'package.json'].sort());

    const app = join(dir, 'app');
    await run('mkdir', [app]);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'example', private: true, type: 'module' }));
    const inst = await run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(dir, packed.filename)], { cwd: app });
    assert.equal(inst.code, 0, inst.out);
    assert.deepEqual((await readdir(join(app, 'node_modules'))).sort(), ['.package-lock.json', '@boxd'], 'nothing but the SDK is installed');

    const example = PRODUCT_PAGE_EXAMPLE.replace('"@boxd-sh/sdk"', '"@boxd/sdk"');
    assert.equal(example.split('\n').filter((l, i) => l !== PRODUCT_PAGE_EXAMPLE.split('\n')[i]).length, 1, 'only the import line differs');
    await writeFile(join(app, 'example.mjs'), example);
    await writeFile(join(app, 'define-id.mjs'), 'globalThis.id = process.env.EXAMPLE_ID;\n');

    // The example type-checks against the package's .d.ts.
    await writeFile(join(app, 'example.mts'), example);
    await writeFile(join(app, 'globals.d.ts'), 'declare var id: string;\n');
    const tsc = await run(process.execPath, [TSC, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck',
      '--typeRoots', join(ROOT, 'node_modules', '@types'), '--types', 'node', 'example.mts', 'globals.d.ts'], { cwd: app });
    assert.equal(tsc.code, 0, tsc.out);

    const seen: string[] = [];
    s.gateway.server.prependListener('request', (req) => seen.push(`${req.method} ${req.url}`));
    const id = randomBytes(4).toString('hex');
    const port = (s.gateway.server.address() as { port: number }).port;
    const env = { ...process.env, BOXD_URL: `http://127.0.0.1:${port}`, BOXD_API_KEY: s.config.BOXD_API_KEY, EXAMPLE_ID: id };
    const r = await run(process.execPath, ['--import', './define-id.mjs', 'example.mjs'], { cwd: app, env });
    assert.equal(r.code, 0, r.out);
    const name = `task-${id}`;
    assert.deepEqual(seen, [
      'POST /v1/boxes',
      `POST /v1/boxes/${name}/exec`,
      `POST /v1/boxes/${name}/exec`,
      `POST /v1/boxes/${name}/suspend`,
      `POST /v1/boxes/${name}/resume`,
      `DELETE /v1/boxes/${name}`,
    ]);
    await s.api.get(`/v1/boxes/${name}`).set(s.auth).expect(404);
  });
});
