import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { debianPython, run, startStack, type Stack } from './helpers.ts';

describe('Python SDK (pytest against the real stack)', () => {
  let s: Stack;
  before(async () => {
    s = await startStack();
  });
  after(async () => {
    await s?.close();
  });

  it('passes sdk/python/tests', async () => {
    const port = (s.gateway.server.address() as { port: number }).port;
    const env = { ...process.env, BOXD_URL: `http://127.0.0.1:${port}`, BOXD_API_KEY: s.config.BOXD_API_KEY, PYTHONDONTWRITEBYTECODE: '1' };
    const r = await run(debianPython(), ['-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'sdk/python/tests'], { env });
    assert.equal(r.code, 0, `pytest failed:\n${r.out}`);
    assert.match(r.out, /\d+ passed/);
    assert.doesNotMatch(r.out, /skipped|xfail/, 'no test may be skipped');
  });
});
