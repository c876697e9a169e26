import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { sign } from '../core/hooks.ts';
import { startStack, type Stack } from './helpers.ts';

const run = promisify(execFile);

describe('boxd CLI against the real stack', () => {
  let s: Stack;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    s = await startStack();
    env = { ...process.env, BOXD_URL: `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}`, BOXD_API_KEY: s.config.BOXD_API_KEY };
  });
  after(async () => {
    await s?.close();
  });
  const boxd = async (...args: string[]) => {
    try {
      const r = await run('node', ['cli/boxd.js', ...args], { env, timeout: 120_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code: number; stdout: string; stderr: string };
      return { code: x.code, stdout: x.stdout, stderr: x.stderr };
    }
  };

  it('creates, lists, execs (streaming, exit code), suspends, forks, snapshots, shows urls and removes', async () => {
    const created = await boxd('create', 'cli-1', '--golden', 'tiny', '--env', 'WHO=cli', '--json');
    assert.equal(created.code, 0, created.stderr);
    assert.equal(JSON.parse(created.stdout).name, 'cli-1');

    const ls = await boxd('ls');
    assert.match(ls.stdout, /^NAME\s+STATE/m);
    assert.match(ls.stdout, /cli-1\s+running\s+tiny/);

    const ok = await boxd('exec', 'cli-1', '--', 'sh', '-c', 'echo hi $WHO; echo oops >&2; exit 4');
    assert.equal(ok.code, 4, 'exits with the command’s code');
    assert.equal(ok.stdout, 'hi cli\n');
    assert.equal(ok.stderr, 'oops\n');

    assert.match((await boxd('suspend', 'cli-1')).stdout, /cli-1\s+suspended/);
    assert.match((await boxd('resume', 'cli-1')).stdout, /cli-1\s+running/);
    assert.match((await boxd('fork', 'cli-1', 'cli-2')).stdout, /cli-2\s+running/);
    assert.match((await boxd('snapshot', 'cli-1', 'cli-snap')).stdout, /snapshot cli-snap of cli-1/);
    assert.match((await boxd('url', 'cli-1')).stdout.trim(), /^http:\/\/cli-1\.boxd\.localhost:\d+\/$/);
    assert.equal((await boxd('rm', 'cli-1', 'cli-2')).code, 0);
    const gone = await boxd('exec', 'cli-1', '--', 'true');
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /BOX_NOT_FOUND/);
  });

  it('creates and lists accounts, creates and deletes keys (admin key only)', async () => {
    const made = await boxd('accounts', 'create', 'team-cli', '--max-boxes', '3', '--json');
    assert.equal(made.code, 0, made.stderr);
    const acct = JSON.parse(made.stdout) as { id: string; name: string; maxBoxes: number };
    assert.equal(acct.name, 'team-cli');
    assert.equal(acct.maxBoxes, 3);
    const ls = await boxd('accounts');
    assert.match(ls.stdout, /^ID\s+NAME\s+KEYS\s+MAXBOXES/m);
    assert.match(ls.stdout, new RegExp(`^${acct.id}\\s+team-cli\\s+0\\s+3\\s`, 'm'));
    const key = await boxd('keys', 'create', acct.id, '--json');
    assert.equal(key.code, 0, key.stderr);
    const k = JSON.parse(key.stdout) as { id: string; key: string; account: string };
    assert.equal(k.account, acct.id);
    // The new key works, and as a member key it cannot manage accounts.
    const asMember = await run('node', ['cli/boxd.js', 'ls'], { env: { ...env, BOXD_API_KEY: k.key } });
    assert.equal(asMember.stdout, '(none)\n');
    const refused = await run('node', ['cli/boxd.js', 'accounts'], { env: { ...env, BOXD_API_KEY: k.key } }).then(() => 'ran', (e: { stderr: string }) => e.stderr);
    assert.match(refused, /FORBIDDEN/);
    assert.equal((await boxd('keys', 'rm', k.id)).code, 0);
    const gone = await run('node', ['cli/boxd.js', 'ls'], { env: { ...env, BOXD_API_KEY: k.key } }).then(() => 'ran', (e: { stderr: string }) => e.stderr);
    assert.match(gone, /UNAUTHORIZED/);
  });

  it('manages hooks and shows tasks; bad usage is a clear error', async () => {
    const made = await boxd('hooks', 'create', 'h1', '--golden', 'tiny', '--step', 'echo one', '--json');
    assert.equal(made.code, 0, made.stderr);
    const hook = JSON.parse(made.stdout) as { id: string; url: string; secret: string };
    assert.match(hook.url, /\/hooks\/hk_/);
    assert.match((await boxd('hooks')).stdout, new RegExp(hook.id));
    assert.equal((await boxd('tasks')).stdout, '(none)\n', 'no task yet: the empty table');
    const payload = '{"from":"cli-test"}';
    const fired = await fetch(`${env.BOXD_URL}/hooks/${hook.id}`, { method: 'POST', body: payload, headers: { 'X-Boxd-Signature': sign(hook.secret, payload), 'X-Boxd-Delivery': 'cli-1' } });
    assert.equal(fired.status, 202);
    const taskId = ((await fired.json()) as { task: { id: string } }).task.id;
    const tasks = (await boxd('tasks')).stdout;
    assert.match(tasks, /^ID\s+STATE\s+STEPS\s+TRIGGEREDAT/m, 'a header row');
    assert.match(tasks, new RegExp(`^${taskId}\\s+(queued|running|succeeded|failed)\\s`, 'm'), 'a row for the task just triggered');
    assert.equal((await boxd('hooks', 'rm', hook.id)).code, 0);
    const usage = await boxd('exec');
    assert.equal(usage.code, 2);
    assert.equal((await boxd('nonsense')).code, 2);
    assert.match((await boxd('--help')).stdout, /usage: boxd/);
  });
});
