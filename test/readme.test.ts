import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startStack, type Stack } from './helpers.ts';

/** The README's fenced blocks of one language, in order, minus those marked `# not run in tests`. */
export function readmeBlocks(markdown: string, lang: string): string[] {
  const out: string[] = [];
  const re = new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm');
  for (const m of markdown.matchAll(re)) {
    const body = m[1]!;
    if (/^(#|\/\/) not run in tests/.test(body)) continue;
    out.push(body);
  }
  return out;
}

async function freePort(): Promise<number> {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

function sh(script: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', script], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      out += `\n[killed after ${timeoutMs} ms]`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/**
 * Runs the README as a new user would, top to bottom, against a real stack: every ```sh block in
 * order in one shell (so `export`s carry on), `localhost:8080` pointing at this test's gateway.
 * Then the TypeScript SDK example, saved as the README says. Afterwards nothing may be left over.
 */
describe('README runs clean top to bottom', () => {
  let s: Stack;
  let port: number;
  const readme = readFileSync('README.md', 'utf8');
  before(async () => {
    port = await freePort();
    s = await startStack({ BOXD_PORT: String(port) });
    await new Promise((r) => s.gateway.server.close(r));
    s.gateway.server.listen(port, '127.0.0.1');
    await once(s.gateway.server, 'listening');
  });
  after(async () => {
    await s?.close();
  });

  const env = () => ({ ...process.env, BOXD_URL: `http://localhost:${port}`, BOXD_API_KEY: s.config.BOXD_API_KEY! });
  const adapt = (text: string) =>
    text.replaceAll('localhost:8080', `localhost:${port}`).replaceAll('$(cat .boxd/api-key)', s.config.BOXD_API_KEY!);

  it('has blocks to run, and marks the ones it skips', () => {
    assert.ok(readmeBlocks(readme, 'sh').length >= 5);
    assert.match(readme, /```sh\n# not run in tests\nnpm start/);
  });

  it('runs every shell block in order without an error answer, and leaves nothing behind', async () => {
    // No `set -e`: the README shows commands that exit non-zero on purpose (`exit 3`); errors are
    // caught from the output instead, and by what is left over at the end.
    const script = ['set -o pipefail', ...readmeBlocks(readme, 'sh').map((b, i) => `echo "=== README block ${i + 1}"\n${adapt(b)}`)].join('\n');
    const { code, out } = await sh(script, env(), 240_000);
    assert.equal(code, 0, out);
    assert.doesNotMatch(out, /command not found|No such file/, 'every command exists');
    assert.doesNotMatch(out, /"error":\{"code"/, 'no API call answered an error');
    assert.doesNotMatch(out, /^boxd: /m, 'the CLI reported no error');
    for (const expected of ['hello file', 'hello from web-1', '"state":"suspended"', 'attempt 1', 'attempt 2', '"stdout":"base\\n"', '"state":"succeeded"', 'hi\n3\n', 'removed cli-1', 'removed snapshot cli-snap', '"stdout":"agent-1-try\\n"']) {
      assert.ok(out.includes(expected), `the README's output shows ${expected}:\n${out}`);
    }
    await assertClean();
  });

  it('runs the TypeScript SDK example as the README says (saved as a .mts in the checkout)', async () => {
    const ts = readmeBlocks(readme, 'ts')[0];
    assert.ok(ts, 'the README has a TypeScript example');
    const file = `.readme-example-${randomBytes(3).toString('hex')}.mts`;
    writeFileSync(file, ts.replace(/from '@boxd\/sdk'/, "from './sdk/index.ts'"));
    try {
      const { code, out } = await sh(`npx tsx ${file}`, env(), 120_000);
      assert.equal(code, 0, out);
      assert.match(out, /http:\/\/task-[a-z0-9]+-try\.boxd\.localhost:\d+\//);
    } finally {
      rmSync(file, { force: true });
    }
    await assertClean();
  });

  async function assertClean(): Promise<void> {
    const auth = s.auth;
    assert.deepEqual((await s.api.get('/v1/boxes').set(auth).expect(200)).body.boxes.map((b: { name: string }) => b.name), [], 'no boxes left');
    assert.deepEqual((await s.api.get('/v1/snapshots').set(auth).expect(200)).body.snapshots, [], 'no snapshots left');
    assert.deepEqual((await s.api.get('/v1/hooks').set(auth).expect(200)).body.hooks, [], 'no hooks left');
  }
});
