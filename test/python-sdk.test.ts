import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { debianPython, run, startStack, type Stack } from './helpers.ts';

// One node test per pytest file, so each has its own time budget on a loaded machine.
const FILES = readdirSync(new URL('../sdk/python/tests', import.meta.url)).filter((f) => /^test_.*\.py$/.test(f)).sort();

describe('Python SDK (pytest against the real stack)', () => {
  let s: Stack;
  let env: NodeJS.ProcessEnv;
  let python: string;
  before(async () => {
    // A loaded CI machine can hold a Redis answer past the 1.5 s default; these tests are not about a frozen Redis.
    s = await startStack({ BOXD_REDIS_TIMEOUT_MS: '20000' });
    python = debianPython();
    const port = (s.gateway.server.address() as { port: number }).port;
    env = { ...process.env, BOXD_URL: `http://127.0.0.1:${port}`, BOXD_API_KEY: s.config.BOXD_API_KEY, PYTHONDONTWRITEBYTECODE: '1' };
  });
  after(async () => {
    await s?.close();
  });

  it('finds the pytest files', () => {
    assert.ok(FILES.length >= 5, FILES.join(', '));
  });

  for (const file of FILES) {
    it(`passes sdk/python/tests/${file}`, async () => {
      const r = await run(python, ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', '--durations=3', `sdk/python/tests/${file}`], { env, timeoutMs: 285_000 });
      assert.equal(r.code, 0, `pytest failed:\n${r.out}`);
      assert.match(r.out, /\d+ passed/);
      assert.doesNotMatch(r.out, /skipped|xfail|deselected/, 'no test may be skipped');
      if (process.env.BOXD_TEST_VERBOSE) console.log(r.out);
    });
  }
});
