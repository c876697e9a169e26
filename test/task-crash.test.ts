import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { sign } from '../core/hooks.ts';
import { createGateway, type Gateway } from '../gateway/gateway.ts';
import { startHost, type HostHandle } from '../host/host.ts';
import { log, purge, testConfig, waitFor } from './helpers.ts';

describe('a host that dies mid-task', () => {
  const config = testConfig({ BOXD_TASK_LOCK_MS: '1500' });
  let gateway: Gateway | undefined;
  let host: HostHandle | undefined;
  after(async () => {
    await gateway?.close();
    await host?.close();
    await purge(config.BOXD_PREFIX);
  });

  it('does not lose the task: another host runs it again to the end', async () => {
    // The first host is a real process we can kill -9.
    const env = { ...process.env, BOXD_PREFIX: config.BOXD_PREFIX, BOXD_HOST_ID: config.BOXD_HOST_ID, BOXD_TASK_LOCK_MS: '1500', BOXD_POOL: 'false', LOG_LEVEL: 'silent' };
    const first = spawn('node', ['--import', 'tsx', 'host/main.ts'], { env, stdio: 'ignore' });
    gateway = await createGateway(config, log);
    await new Promise<void>((r) => gateway!.server.listen(0, '127.0.0.1', () => r()));
    const base = `http://127.0.0.1:${(gateway.server.address() as { port: number }).port}`;
    const auth = { Authorization: `Bearer ${config.BOXD_API_KEY}`, 'Content-Type': 'application/json' };
    await waitFor(async () => (await gateway!.hosts.aliveHosts()).length === 1, 30_000);

    const hook = (await (await fetch(`${base}/v1/hooks`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'slow', golden: 'tiny', steps: [{ cmd: 'sleep 3; echo done' }] }) })).json()) as { id: string; secret: string };
    const res = await fetch(`${base}/hooks/${hook.id}`, { method: 'POST', headers: { 'X-Boxd-Signature': sign(hook.secret, '{}'), 'X-Boxd-Delivery': 'crash-1' }, body: '{}' });
    const { task } = (await res.json()) as { task: { id: string } };
    const get = async () => (await (await fetch(`${base}/v1/tasks/${task.id}`, { headers: auth })).json()) as { state: string; attempts: number; steps: { stdout: string }[]; box: { name: string } | null };
    await waitFor(async () => (await get()).state === 'running' && (await get()).box !== null, 30_000);
    first.kill('SIGKILL');

    host = await startHost(config, log);
    const done = await waitFor(async () => {
      const t = await get();
      return t.state === 'succeeded' || t.state === 'failed' ? t : undefined;
    }, 60_000);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.attempts, 2, 'the task ran again after the crash');
    assert.equal(done.steps[0]!.stdout, 'done\n');
  });
});
