import type Docker from 'dockerode';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { BoxdError, RuntimeError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { ContainerProcs } from './container-procs.ts';
import { reason, status } from './engine-errors.ts';
import { OutputBuffer, type ExecRequest, type ExecResult } from './runtime.ts';

/** How long a killed exec's output stream may stay open before the exec answers anyway, in ms. */
const KILL_GRACE_MS = 2000;

export interface ExecContext {
  procs: ContainerProcs;
  /**
   * Held from the exec's creation until the engine started it; a freeze waits for it. `started`
   * says whether the exec's process runs yet: asked only while a freeze waits.
   */
  enterStart(id: string, started: () => Promise<boolean>): Promise<() => void>;
  log: Logger;
}

/**
 * Runs one command in a container through the Engine's exec API: stdin, separate stdout and
 * stderr (demultiplexed from the engine's frames), a cap on kept output, a timeout, and a
 * cancel signal. Every process of the exec carries `BOXD_EXEC_ID`, so a timeout or a cancel
 * kills the whole tree, found from the host's /proc.
 *
 * When the box has /bin/sh, the command runs under a tiny shell wrapper that records its exit
 * status in a file: the answer comes when the command exits even if a background child keeps
 * stdout open (the engine itself holds the stream up to 2 s, and its exit status with it), and a
 * missing binary is the shell's exit 127 with its message on stderr.
 */
export async function dockerExec(docker: Docker, id: string, req: ExecRequest, ctx: ExecContext): Promise<ExecResult> {
  const container = docker.getContainer(id);
  const execId = req.execId ?? randomUUID();
  const hasStdin = req.stdin !== undefined;
  const stdout = new OutputBuffer(req.maxOutputBytes ?? 4 * 1024 * 1024);
  const stderr = new OutputBuffer(req.maxOutputBytes ?? 4 * 1024 * 1024);
  const root = await ctx.procs.root(id);
  const exitName = `/tmp/.boxd-exit-${execId}`;
  const wrapped = !!root && existsSync(`${root}/bin/sh`);
  const cmd = wrapped ? ['/bin/sh', '-c', `"$@"; c=$?; { echo $c > ${exitName}; } 2>/dev/null; exit $c`, 'sh', ...req.cmd] : req.cmd;
  const env = { ...req.env, BOXD_EXEC_ID: execId };
  if (req.signal?.aborted) throw new BoxdError('CANCELLED', 'the exec was cancelled before it started');

  let exec: Docker.Exec;
  let stream: Duplex;
  // The engine answers the start before runc has launched the process: the start is over only
  // once a process of this exec runs (or its output came or ended), so a freeze never lands on
  // it. Looking for the process costs a scan of the box's /proc entries: only a freeze that
  // waits for this start asks (DockerRuntime.startsSettled); an exec alone never scans.
  const leave = await ctx.enterStart(id, async () => (await ctx.procs.tagged(id, execId)).length > 0);
  try {
    exec = await container.exec({
      Cmd: cmd,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      WorkingDir: req.cwd,
      AttachStdin: hasStdin,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
    });
    stream = (await exec.start({ hijack: true, stdin: hasStdin })) as unknown as Duplex;
  } catch (e) {
    leave();
    if (status(e) === 404) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    if (status(e) === 409) throw new BoxdError('BOX_STATE', `box ${id} is not running: ${reason(e)}`);
    throw new RuntimeError(`exec in ${id}: ${reason(e)}`, { cause: e });
  }

  let timedOut = false;
  let killed = false;
  let exitFromFile: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let poll: NodeJS.Timeout | undefined;
  const readExitFile = (): number | undefined => {
    if (!wrapped || !root) return undefined;
    try {
      const text = readFileSync(`${root}${exitName}`, 'utf8').trim();
      return /^\d+$/.test(text) ? Number(text) : undefined;
    } catch {
      return undefined;
    }
  };
  let finish!: () => void;
  let backstop: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve) => {
    finish = resolve;
    let pending: Buffer = Buffer.alloc(0);
    stream.on('data', (chunk: Buffer) => {
      leave();
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      // Engine frames: [stream type, 0, 0, 0, size (uint32 BE)] then the payload.
      while (pending.length >= 8) {
        const size = pending.readUInt32BE(4);
        if (pending.length < 8 + size) break;
        const kind = pending[0] === 2 ? 'stderr' : 'stdout';
        const payload = pending.subarray(8, 8 + size);
        pending = pending.subarray(8 + size);
        (kind === 'stderr' ? stderr : stdout).push(payload);
        const wait = req.onOutput?.(kind, payload);
        if (wait) {
          stream.pause();
          void wait.finally(() => stream.resume());
        }
      }
    });
    const ended = () => {
      leave();
      resolve();
    };
    stream.once('end', ended);
    stream.once('close', ended);
    stream.once('error', ended);
    if (wrapped) {
      // The command may have exited while a background child holds stdout: look for the exit
      // file with a backoff. Once it is there, the answer waits for the stream to end while no
      // process of the exec is left (the engine is still delivering output: on a loaded machine
      // that can take longer than any fixed grace, and cutting it would lose output); only a
      // process that outlives the command (a background child) ends the wait after a moment.
      let every = 2;
      const settle = async () => {
        for (let i = 0; i < 10; i++) {
          const left = await ctx.procs.tagged(id, execId).catch(() => [] as number[]);
          if (!left.length) {
            setTimeout(resolve, 10_000).unref(); // bounded; the stream's end resolves first
            return;
          }
          await new Promise((r) => setTimeout(r, 10));
        }
        resolve();
      };
      const check = () => {
        exitFromFile = readExitFile();
        if (exitFromFile !== undefined) {
          void settle();
          return;
        }
        every = Math.min(every * 2, 250);
        poll = setTimeout(check, every);
        poll.unref();
      };
      poll = setTimeout(check, every);
      poll.unref();
    }
  });
  if (hasStdin) stream.end(req.stdin);
  // A killed exec answers even if some process we could not find keeps the stream open.
  const kill = () =>
    void ctx.procs
      .killTagged(id, execId)
      .catch((e) => ctx.log.warn({ err: reason(e) }, 'could not kill an exec'))
      .finally(() => {
        backstop ??= setTimeout(finish, KILL_GRACE_MS);
      });
  if (req.timeoutMs && req.timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, req.timeoutMs);
  }
  const onAbort = () => {
    killed = true;
    kill();
  };
  req.signal?.addEventListener('abort', onAbort, { once: true });
  await done;
  leave();
  if (backstop) clearTimeout(backstop);
  if (timer) clearTimeout(timer);
  if (poll) clearTimeout(poll);
  req.signal?.removeEventListener('abort', onAbort);
  stream.destroy();

  let exitCode: number;
  exitFromFile ??= readExitFile();
  if (timedOut || killed) exitCode = 137;
  else if (exitFromFile !== undefined) exitCode = exitFromFile;
  else exitCode = await exitCodeOf(exec);
  if (wrapped && root) {
    try {
      unlinkSync(`${root}${exitName}`);
    } catch {
      /* not written (killed) or already gone */
    }
  }
  // Without a shell the engine reports a missing binary on stdout with 126/127: keep one shape.
  if (!wrapped && (exitCode === 126 || exitCode === 127) && /executable file not found|no such file or directory/i.test(stdout.toBuffer().toString())) {
    stderr.push(stdout.toBuffer());
    return { exitCode: 127, stdout: Buffer.alloc(0), stderr: stderr.toBuffer(), timedOut, truncated: stderr.truncated, killed };
  }
  return {
    exitCode,
    stdout: stdout.toBuffer(),
    stderr: stderr.toBuffer(),
    timedOut,
    truncated: stdout.truncated || stderr.truncated,
    killed,
  };
}

async function exitCodeOf(exec: Docker.Exec): Promise<number> {
  for (let i = 0; i < 300; i++) {
    const info = await exec.inspect();
    if (!info.Running) return info.ExitCode ?? -1;
    await new Promise((r) => setTimeout(r, 10));
  }
  return -1;
}
