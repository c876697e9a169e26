import type Docker from 'dockerode';
import type { Duplex } from 'node:stream';
import { BoxdError, RuntimeError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { reason, status } from './engine-errors.ts';
import { OutputBuffer, type ExecRequest, type ExecResult } from './runtime.ts';

/**
 * Runs one command in a container through the Engine's exec API: stdin, separate stdout and
 * stderr (demultiplexed from the engine's frames), a cap on kept output, and a timeout.
 */
export async function dockerExec(docker: Docker, id: string, req: ExecRequest, log: Logger): Promise<ExecResult> {
  const container = docker.getContainer(id);
  const hasStdin = req.stdin !== undefined;
  const stdout = new OutputBuffer(req.maxOutputBytes ?? 4 * 1024 * 1024);
  const stderr = new OutputBuffer(req.maxOutputBytes ?? 4 * 1024 * 1024);
  let exec: Docker.Exec;
  let stream: Duplex;
  try {
    exec = await container.exec({
      Cmd: req.cmd,
      Env: req.env ? Object.entries(req.env).map(([k, v]) => `${k}=${v}`) : undefined,
      WorkingDir: req.cwd,
      AttachStdin: hasStdin,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
    });
    stream = (await exec.start({ hijack: true, stdin: hasStdin })) as unknown as Duplex;
  } catch (e) {
    if (status(e) === 404) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    if (status(e) === 409) throw new BoxdError('BOX_STATE', `box ${id} is not running: ${reason(e)}`);
    throw new RuntimeError(`exec in ${id}: ${reason(e)}`, { cause: e });
  }

  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve) => {
    let pending: Buffer = Buffer.alloc(0);
    stream.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      // Engine frames: [stream type, 0, 0, 0, size (uint32 BE)] then the payload.
      while (pending.length >= 8) {
        const size = pending.readUInt32BE(4);
        if (pending.length < 8 + size) break;
        const kind = pending[0] === 2 ? 'stderr' : 'stdout';
        const payload = pending.subarray(8, 8 + size);
        pending = pending.subarray(8 + size);
        (kind === 'stderr' ? stderr : stdout).push(payload);
        req.onOutput?.(kind, payload);
      }
    });
    stream.once('end', () => resolve());
    stream.once('close', () => resolve());
    stream.once('error', () => resolve());
  });
  if (hasStdin) stream.end(req.stdin);
  if (req.timeoutMs && req.timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      void killExec(exec, log).finally(() => setTimeout(() => stream.destroy(), 1000).unref());
    }, req.timeoutMs);
  }
  await done;
  if (timer) clearTimeout(timer);
  const exitCode = timedOut ? 137 : await exitCodeOf(exec);
  return {
    exitCode,
    stdout: stdout.toBuffer(),
    stderr: stderr.toBuffer(),
    timedOut,
    truncated: stdout.truncated || stderr.truncated,
  };
}

async function exitCodeOf(exec: Docker.Exec): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const info = await exec.inspect();
    if (!info.Running) return info.ExitCode ?? -1;
    await new Promise((r) => setTimeout(r, 10));
  }
  return -1;
}

/** The engine has no API to stop an exec; the host owns the machine, so signal its pid. */
async function killExec(exec: Docker.Exec, log: Logger): Promise<void> {
  try {
    const info = await exec.inspect();
    const pid = (info as unknown as { Pid?: number }).Pid;
    if (info.Running && pid && pid > 1) {
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          /* not a group leader, or already gone */
        }
      }
    }
  } catch (e) {
    log.warn({ err: reason(e) }, 'could not kill a timed-out exec');
  }
}
