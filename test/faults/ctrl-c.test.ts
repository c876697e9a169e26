import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { docker, purge, waitFor } from '../helpers.ts';

/** Live processes whose environment carries `marker` (every process `npm start` started does). */
function processesWith(marker: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${d}/environ`, 'latin1').split('\0').includes(marker)) continue;
      if (/^State:\s+Z/m.test(readFileSync(`/proc/${d}/status`, 'utf8'))) continue; // a zombie is gone
      out.push(Number(d));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** `npm start`'s process tree (scripts/start.ts) gets Ctrl-C: SIGINT to its whole process group. */
describe('Ctrl-C on npm start', () => {
  const prefix = `t-${randomBytes(4).toString('hex')}`;
  const port = 8184;
  const state = mkdtempSync(join(tmpdir(), 'boxd-faults-start-'));
  const key = `key-${randomBytes(12).toString('hex')}`;
  let start: ChildProcess | undefined;
  after(async () => {
    if (start?.pid && start.exitCode === null) {
      try {
        process.kill(-start.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const pid of processesWith(`BOXD_PREFIX=${prefix}`)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await purge(prefix);
    rmSync(state, { recursive: true, force: true });
  });

  it('stops the gateway and the host within the grace, answers the exec in flight, leaves boxes running', async () => {
    const api = `http://127.0.0.1:${port}`;
    const auth = { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' };
    if (await fetch(`${api}/healthz`).then(() => true, () => false)) throw new Error(`port ${port} is taken; this test needs it`);
    start = spawn(process.execPath, ['--import', 'tsx', 'scripts/start.ts'], {
      detached: true, // its own process group, as a terminal's foreground job
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env, BOXD_PORT: String(port), BOXD_PREFIX: prefix, BOXD_HOST_ID: `h-${prefix}`, BOXD_STATE_DIR: state,
        BOXD_API_KEY: key, BOXD_POOL: 'false', BOXD_IDLE_TIMEOUT_MS: '0', LOG_LEVEL: 'warn', BOXD_STOP_GRACE_MS: '15000',
      },
    });
    let out = '';
    start.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    start.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((r) => start!.once('exit', (code) => r(code)));
    await waitFor(async () => out.includes('boxd is up'), 120_000, 250).catch(() => assert.fail(`npm start did not come up:\n${out}`));
    const started = processesWith(`BOXD_PREFIX=${prefix}`);
    assert.ok(started.length >= 3, `start.ts, the gateway and the host run (${started.length} processes)`);

    const created = await fetch(`${api}/v1/boxes`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'survivor', golden: 'tiny' }) });
    assert.equal(created.status, 201, await created.text());
    const inflight = fetch(`${api}/v1/boxes/survivor/exec`, { method: 'POST', headers: auth, body: JSON.stringify({ cmd: ['sh', '-c', 'touch /tmp/started; sleep 120'] }) })
      .then(async (r) => ({ status: r.status, body: await r.text() }), (e: Error) => ({ status: 0, body: `dropped: ${e.message}` }));
    await waitFor(async () => {
      const r = await fetch(`${api}/v1/boxes/survivor/exec`, { method: 'POST', headers: auth, body: JSON.stringify({ cmd: ['ls', '/tmp/started'] }) });
      return r.status === 200 && ((await r.json()) as { exitCode: number }).exitCode === 0;
    }, 30_000, 250);

    const t = Date.now();
    process.kill(-start.pid!, 'SIGINT');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 60_000))]);
    assert.notEqual(code, 'hung', `npm start did not exit:\n${out}`);
    const stopMs = Date.now() - t;
    assert.ok(stopMs < 15_000 + 5_000, `stopped in ${stopMs} ms (grace 15 s)`);

    const answer = await inflight;
    assert.ok(answer.status >= 500, `the exec in flight got an error answer, not a dropped connection: ${answer.status} ${answer.body}`);
    assert.match(answer.body, /"error"/);

    await waitFor(async () => processesWith(`BOXD_PREFIX=${prefix}`).length === 0, 10_000, 200).catch(() =>
      assert.fail(`left behind: ${processesWith(`BOXD_PREFIX=${prefix}`).join(', ')}`),
    );
    // Docker and the box keep running: they are not npm start's to stop.
    const info = await docker.getContainer(`${prefix}-survivor`).inspect();
    assert.equal(info.State.Running, true);
    assert.ok(existsSync('/var/run/docker.sock'));
  });
});
