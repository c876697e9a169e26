import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { hostQueueName } from '../core/jobs.ts';
import { queuePrefix } from '../core/keys.ts';
import { parseControl } from '../gateway/pty.ts';
import { Compute, type Pty } from '../sdk/index.ts';
import { startStack, waitFor, type Stack } from './helpers.ts';

const run = promisify(execFile);

/** Everything a terminal printed, as text, until `until` matches it. */
function collect(term: Pty): { text: () => string; wait: (re: RegExp, ms?: number) => Promise<string> } {
  let out = '';
  term.onData((d) => (out += Buffer.from(d).toString('utf8')));
  const wait = async (re: RegExp, ms = 20_000) => {
    try {
      return await waitFor(async () => (re.test(out) ? out : ''), ms, 50);
    } catch {
      return assert.fail(`${re} never came; the terminal printed:\n${out}`);
    }
  };
  return { text: () => out, wait };
}

describe('interactive terminals (GET /v1/boxes/:name/pty)', () => {
  let s: Stack;
  let url: string;
  let c: Compute;
  before(async () => {
    s = await startStack();
    url = `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}`;
    c = new Compute({ apiKey: s.config.BOXD_API_KEY, baseUrl: url });
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'term', golden: 'default' }).expect(201);
  });
  after(async () => {
    await s?.close();
  });

  it('runs a shell on a TTY: input, resize, output, exit code', async () => {
    const box = await c.box.get('term');
    const term = await box.pty({ cols: 91, rows: 33 });
    const out = collect(term);
    term.write('tty; stty size\n');
    await out.wait(/\/dev\/pts\/\d+[\s\S]*33 91/);
    term.resize(120, 40);
    term.write('stty size; echo "mark-$((6*7))"\n');
    await out.wait(/40 120[\s\S]*mark-42/);
    term.write('exit 7\n');
    assert.equal(await term.exited, 7);
  });

  it('runs a given command, resumes a suspended box first, and keeps it awake while open', async () => {
    await s.api.post('/v1/boxes/term/suspend').set(s.auth).expect(200);
    const box = await c.box.get('term');
    const term = await box.pty({ cmd: ['sh', '-c', 'read line; echo "got:$line"; exit 3'] });
    const out = collect(term);
    assert.equal((await s.api.get('/v1/boxes/term').set(s.auth).expect(200)).body.state, 'running');
    term.write('hello\r');
    await out.wait(/got:hello/);
    assert.equal(await term.exited, 3);
  });

  it('carries nothing of a terminal through Redis: no pub/sub message, no command, no job', async () => {
    const [cmdToken, typed] = [`cmd${randomBytes(6).toString('hex')}`, `typed${randomBytes(6).toString('hex')}`];
    const marker = `${cmdToken}${typed}`; // printed by the box only: neither side sends it as one piece
    const sentinel = `sentinel-${randomBytes(6).toString('hex')}`;
    const seen: string[] = [];
    const psub = new Redis(s.config.REDIS_URL, { lazyConnect: true });
    const base = new Redis(s.config.REDIS_URL);
    const mon = await base.monitor(); // a connection of its own: `base` must be closed too
    const probe = new Redis(s.config.REDIS_URL);
    const queue = new Queue(hostQueueName(s.config.BOXD_HOST_ID), { connection: probe, prefix: queuePrefix(s.config.BOXD_PREFIX) });
    try {
      await psub.connect();
      psub.on('pmessageBuffer', (_p: Buffer, channel: Buffer, message: Buffer) => seen.push(`${channel.toString('latin1')} ${message.toString('latin1')}`));
      await psub.psubscribe('*');
      mon.on('monitor', (_time: string, args: unknown[]) => seen.push(args.map(String).join(' ')));
      const box = await c.box.get('term');
      const term = await box.pty({ cmd: ['sh', '-c', `read line; printf '%s%s\\n' ${cmdToken} "$line"; exit 4`] });
      const out = collect(term);
      term.write(`${typed}\r`);
      await out.wait(new RegExp(marker));
      assert.equal(await term.exited, 4);
      // Redis runs commands in order: once the sentinel shows on both, anything before it did too.
      await probe.publish(`${s.config.BOXD_PREFIX}:pty-test`, sentinel);
      await waitFor(async () => seen.filter((m) => m.includes(sentinel)).length >= 2, 20_000, 50);
      assert.ok(seen.length > 2, 'the probes saw Redis traffic');
      for (const token of [cmdToken, typed, marker]) {
        assert.equal(seen.find((m) => m.includes(token)), undefined, `${token} passed through Redis`);
      }
      const jobs = await queue.getJobs(['active', 'completed', 'failed', 'waiting', 'delayed', 'prioritized']);
      assert.equal(jobs.find((j) => j.name.includes('pty') || JSON.stringify(j.data).includes(cmdToken)), undefined, 'no job opened the terminal');
    } finally {
      await queue.close().catch(() => undefined);
      for (const r of [psub, mon, base, probe]) r.disconnect();
    }
  });

  it('hangs up the command when the client closes the socket', async () => {
    const box = await c.box.get('term');
    const marker = `pty-${randomBytes(3).toString('hex')}`;
    const term = await box.pty({ cmd: ['bash', '-c', `exec -a ${marker} sleep 600`] });
    await waitFor(async () => (await box.exec(['sh', '-c', `ps -eo args | grep -c "^${marker}"`])).stdout.trim() === '1');
    term.close();
    await assert.rejects(term.exited); // no exit code: we hung up
    await waitFor(async () => (await box.exec(['sh', '-c', `ps -eo args | grep -c "^${marker}" || true`])).stdout.trim() === '0', 20_000, 200);
  });

  it('refuses bad keys, unknown boxes and bad sizes before upgrading; accepts ?token=', async () => {
    const open = (path: string, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; code?: string }>((resolve) => {
        const ws = new WebSocket(url.replace('http', 'ws') + path, { headers });
        ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, code: String(res.headers['x-boxd-error']) }));
        ws.on('open', () => {
          ws.close();
          resolve({ status: 101 });
        });
        ws.on('error', () => undefined);
      });
    assert.deepEqual(await open('/v1/boxes/term/pty'), { status: 401, code: 'UNAUTHORIZED' });
    assert.deepEqual(await open('/v1/boxes/term/pty', { Authorization: 'Bearer nope-nope-nope-nope' }), { status: 401, code: 'UNAUTHORIZED' });
    assert.deepEqual(await open('/v1/boxes/ghost/pty', s.auth), { status: 404, code: 'BOX_NOT_FOUND' });
    assert.deepEqual(await open('/v1/boxes/term/pty?cols=0', s.auth), { status: 400, code: 'INVALID_REQUEST' });
    assert.equal((await open(`/v1/boxes/term/pty?token=${s.config.BOXD_API_KEY}&cmd=true`)).status, 101);
    await assert.rejects(c.box.get('ghost').then((b) => b.pty()), { code: 'BOX_NOT_FOUND' });
  });

  it('tells resize messages from typed text', () => {
    assert.deepEqual(parseControl(Buffer.from('{"type":"resize","cols":10,"rows":5}')), { cols: 10, rows: 5 });
    assert.equal(parseControl(Buffer.from('ls -la\n')), undefined);
    assert.equal(parseControl(Buffer.from('{"type":"resize","cols":"x"}')), undefined);
  });

  it('`boxd shell` in tmux: raw mode, typed commands, window resize, remote exit code', async () => {
    const session = `boxd-pty-${randomBytes(4).toString('hex')}`;
    const tmux = (...a: string[]) => run('tmux', a, { timeout: 20_000 });
    const screen = async () => (await tmux('capture-pane', '-p', '-J', '-t', session)).stdout;
    const until = async (re: RegExp, ms = 30_000) => {
      try {
        await waitFor(async () => re.test(await screen()), ms, 100);
      } catch {
        assert.fail(`${re} never showed in tmux; the screen:\n${await screen()}`);
      }
    };
    const cli = `BOXD_URL=${url} BOXD_API_KEY=${s.config.BOXD_API_KEY} node cli/boxd.js shell term; echo "local-exit=$?"; sleep 600`;
    await tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '30', 'bash', '--norc', '--noprofile');
    try {
      await until(/^bash-[\d.]+# *$/m); // type only once the local shell is ready
      await tmux('send-keys', '-t', session, '-l', cli);
      await tmux('send-keys', '-t', session, 'Enter');
      // The CLI starts through tsx, which compiles on a cold cache: give a loaded machine time.
      // A prompt printed before the terminal was fully wired could be missed on a loaded machine:
      // after a while press Enter, as a person would, and bash prints a fresh one.
      const prompt = /root@term[^\n]*# *$/m;
      const early = await waitFor(async () => prompt.test(await screen()), 20_000, 100).then(() => true, () => false);
      if (!early) {
        await tmux('send-keys', '-t', session, 'Enter');
        await until(prompt, 70_000);
      }
      // Raw mode: Ctrl-C goes to the remote shell (it stops the sleep), not to the local CLI,
      // which would otherwise die and print local-exit. Wait for the next prompt before typing:
      // the terminal drops typed-ahead input on a SIGINT.
      await tmux('send-keys', '-t', session, '-l', 'sleep 30');
      await tmux('send-keys', '-t', session, 'Enter');
      await until(/sleep 30\s*$/m);
      await tmux('send-keys', '-t', session, 'C-c');
      await until(/sleep 30[\s\S]*root@term[^\n]*# *$/m);
      assert.doesNotMatch(await screen(), /local-exit=\d/);
      await tmux('send-keys', '-t', session, '-l', 'stty size; echo "in-box-$((40+2))"');
      await tmux('send-keys', '-t', session, 'Enter');
      await until(/^30 100\s*$[\s\S]*in-box-42/m);
      await tmux('resize-window', '-t', session, '-x', '120', '-y', '35');
      await waitFor(async () => {
        await tmux('send-keys', '-t', session, '-l', 'stty size');
        await tmux('send-keys', '-t', session, 'Enter');
        await new Promise((r) => setTimeout(r, 300));
        return /^35 120\s*$/m.test(await screen());
      }, 30_000, 200);
      await tmux('send-keys', '-t', session, '-l', 'exit 5');
      await tmux('send-keys', '-t', session, 'Enter');
      await until(/local-exit=5/);
    } finally {
      await tmux('kill-session', '-t', session).catch(() => undefined);
    }
  });
});
