import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { startStack, type Stack } from './helpers.ts';

/** The python3 that has Debian's python3-httpx and python3-pytest (setup.sh installs them). */
export function debianPython(): string {
  for (const py of [process.env.BOXD_PYTHON, '/usr/bin/python3', 'python3']) {
    if (py && spawnSync(py, ['-c', 'import httpx, pytest'], { stdio: 'ignore' }).status === 0) return py;
  }
  throw new Error('no python3 with httpx and pytest: apt-get install python3-httpx python3-pytest (scripts/setup.sh does)');
}

/** Runs a command to its end without blocking the event loop (the stack lives in this process). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}) {
  return new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const p = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

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
