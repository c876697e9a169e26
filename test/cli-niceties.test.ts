import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { startFailure } from '../host/exec-errors.ts';
import { startStack, type Stack } from './helpers.ts';

const run = promisify(execFile);

describe('CLI niceties and exec start failures, on the real stack', () => {
  let s: Stack;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    s = await startStack();
    env = { ...process.env, BOXD_URL: `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}`, BOXD_API_KEY: s.config.BOXD_API_KEY };
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'nice', golden: 'tiny' }).expect(201);
  });
  after(async () => {
    await s?.close();
  });
  const boxd = async (args: string[], extraEnv: NodeJS.ProcessEnv = {}) => {
    try {
      const r = await run('node', ['cli/boxd.js', ...args], { env: { ...env, ...extraEnv }, timeout: 120_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code: number; stdout: string; stderr: string };
      return { code: x.code, stdout: x.stdout, stderr: x.stderr };
    }
  };

  it('exec of a missing binary answers 127 with the reason on stderr (JSON and streaming)', async () => {
    const r = await s.api.post('/v1/boxes/nice/exec').set(s.auth).send({ cmd: ['no-such-binary', 'x'] }).expect(200);
    assert.equal(r.body.exitCode, 127);
    assert.equal(r.body.stdout, '');
    assert.match(r.body.stderr, /no-such-binary: (command )?not found/);
    const abs = await s.api.post('/v1/boxes/nice/exec').set(s.auth).send({ cmd: ['/nope/bin'] }).expect(200);
    assert.equal(abs.body.exitCode, 127);
    const dir = await s.api.post('/v1/boxes/nice/exec').set(s.auth).send({ cmd: ['/etc'] }).expect(200);
    assert.equal(dir.body.exitCode, 126, 'not executable stays 126');
    assert.match(dir.body.stderr, /permission denied/i);
    const streamed = await s.api.post('/v1/boxes/nice/exec').set(s.auth).set('Accept', 'application/x-ndjson').send({ cmd: ['no-such-binary'] }).expect(200);
    const lines = streamed.text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(lines.filter((l) => l.stream === 'stdout'), [], 'nothing on stdout');
    // Output may arrive in several chunks: join them.
    assert.match(lines.filter((l) => l.stream === 'stderr').map((l) => String(l.data)).join(''), /no-such-binary: (command )?not found/);
    assert.equal(lines.at(-1)!.exitCode, 127);
    // A command that runs keeps its own output and code, even one printing the same words.
    const same = await s.api.post('/v1/boxes/nice/exec').set(s.auth).send({ cmd: ['sh', '-c', 'echo "OCI runtime exec failed: x"; exit 126'] }).expect(200);
    assert.equal(same.body.exitCode, 126);
    assert.equal(same.body.stdout, 'OCI runtime exec failed: x\n');
    // the CLI passes it on
    const cli = await boxd(['exec', 'nice', '--', 'no-such-binary']);
    assert.equal(cli.code, 127);
    assert.match(cli.stderr, /no-such-binary: (command )?not found/);
  });

  it('reads a start failure from the runtime’s words only', () => {
    assert.deepEqual(startFailure(['x'], 126, 'OCI runtime exec failed: exec failed: unable to start container process: exec: "x": executable file not found in $PATH: unknown\r\n'), {
      exitCode: 127,
      message: 'boxd: x: command not found\n',
    });
    assert.equal(startFailure(['x'], 1, 'OCI runtime exec failed: exec: "x": executable file not found in $PATH: unknown'), undefined);
    assert.equal(startFailure(['x'], 126, 'something else'), undefined);
  });

  it('--json everywhere, exit codes follow the command, flags after -- belong to the command', async () => {
    const ex = await boxd(['exec', 'nice', '--json', '--', 'sh', '-c', 'echo out --json; exit 9']);
    assert.equal(ex.code, 9);
    assert.deepEqual({ ...JSON.parse(ex.stdout), durationMs: 0 }, { exitCode: 9, stdout: 'out --json\n', stderr: '', durationMs: 0, timedOut: false, truncated: false });
    const plain = await boxd(['exec', 'nice', '--', 'echo', '--json']);
    assert.equal(plain.stdout, '--json\n');
    for (const args of [['ls'], ['goldens'], ['pool'], ['hooks'], ['tasks'], ['url', 'nice'], ['suspend', 'nice'], ['resume', 'nice']]) {
      const r = await boxd([...args, '--json']);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotThrow(() => JSON.parse(r.stdout), `${args.join(' ')} prints JSON`);
      assert.equal(r.stderr, '', `${args.join(' ')}: no progress lines with --json`);
    }
    const missing = await boxd(['suspend', 'ghost', '--json']);
    assert.equal(missing.code, 1);
    assert.equal(JSON.parse(missing.stderr).error.code, 'BOX_NOT_FOUND');
  });

  it('prints progress lines on stderr for slow operations (and the result on stdout)', async () => {
    const made = await boxd(['create', 'nice-2', '--golden', 'tiny']);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stderr, /^creating nice-2…\ncreated nice-2 \(cold create\) in \d+\.\ds\n$/);
    assert.match(made.stdout, /^nice-2\s+running/);
    const forked = await boxd(['fork', 'nice-2', 'nice-3']);
    assert.match(forked.stderr, /forking nice-2…\nforked nice-2 into nice-3 in/);
    const snap = await boxd(['snapshot', 'nice-3', 'nice-snap']);
    assert.match(snap.stderr, /snapshotting nice-3…\nsnapshot nice-snap stored in/);
    const rm = await boxd(['rm', 'nice-2', 'nice-3', '--json']);
    assert.deepEqual(JSON.parse(rm.stdout), { removed: ['nice-2', 'nice-3'] });
    assert.equal((await boxd(['create', 'nice-4', '--golden', 'tiny', '--quiet'])).stderr, '');
    await boxd(['rm', 'nice-4']);
  });

  it('names the URL it could not reach (exit 3)', async () => {
    // A port nothing listens on: taken from the kernel, then released.
    const srv = createServer().listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as AddressInfo).port;
    await new Promise((r) => srv.close(r));
    const r = await boxd(['ls'], { BOXD_URL: `http://127.0.0.1:${port}` });
    assert.equal(r.code, 3);
    assert.match(r.stderr, new RegExp(`could not reach boxd at http://127\\.0\\.0\\.1:${port} .*ECONNREFUSED`));
  });

  it('completes commands and box names in bash', async () => {
    const script = (await boxd(['completion', 'bash'])).stdout;
    const complete = async (line: string) => {
      const words = line.split(' ');
      const bash = `${script}\nboxd() { node cli/boxd.js "$@"; }\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _boxd; printf '%s\\n' "\${COMPREPLY[@]}"`;
      return (await run('bash', ['-c', bash], { env, timeout: 60_000 })).stdout.trim().split('\n').sort();
    };
    assert.deepEqual(await complete('boxd sh'), ['shell']);
    assert.deepEqual(await complete('boxd s'), ['shell', 'snapshot', 'snapshots', 'suspend']);
    assert.deepEqual(await complete('boxd exec ni'), ['nice']);
    assert.deepEqual(await complete('boxd ls --js'), ['--json']);
  });
});
