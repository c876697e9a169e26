import type Docker from 'dockerode';
import type { Duplex } from 'node:stream';
import { BoxdError, RuntimeError } from '../core/errors.ts';
import { reason, status } from './engine-errors.ts';
import type { PtyProcess, PtyRequest } from './runtime.ts';

/**
 * A command on a pseudo-terminal through the Engine's exec API (`Tty: true`): one raw byte
 * stream each way, resized with the exec resize call. The engine cannot stop an exec, so `kill`
 * signals the exec's process group from the host (the host process owns this machine).
 */
export async function dockerPty(docker: Docker, id: string, req: PtyRequest): Promise<PtyProcess> {
  let exec: Docker.Exec;
  let stream: Duplex;
  try {
    exec = await docker.getContainer(id).exec({
      Cmd: req.cmd,
      Env: Object.entries({ TERM: 'xterm-256color', ...req.env }).map(([k, v]) => `${k}=${v}`),
      WorkingDir: req.cwd,
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      Tty: true,
    });
    stream = (await exec.start({ hijack: true, stdin: true, Tty: true })) as unknown as Duplex;
  } catch (e) {
    if (status(e) === 404) throw new BoxdError('BOX_NOT_FOUND', `box ${id} is gone`);
    if (status(e) === 409) throw new BoxdError('BOX_STATE', `box ${id} is not running: ${reason(e)}`);
    throw new RuntimeError(`pty in ${id}: ${reason(e)}`, { cause: e });
  }
  const early: Buffer[] = [];
  let sink: ((data: Buffer) => void) | undefined;
  stream.on('data', (chunk: Buffer) => (sink ? sink(chunk) : early.push(chunk)));
  stream.on('error', () => undefined);
  const ended = new Promise<void>((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
  });
  let killed = false;
  const exited = ended.then(async () => {
    for (let i = 0; i < 100; i++) {
      const info = await exec.inspect().catch(() => undefined);
      if (!info) break;
      if (!info.Running) return info.ExitCode ?? (killed ? 129 : -1);
      await new Promise((r) => setTimeout(r, 20));
    }
    return killed ? 129 : -1;
  });
  const resize = async (cols: number, rows: number): Promise<boolean> =>
    exec.resize({ h: rows, w: cols }).then(() => true, () => false);
  // The engine refuses a resize until the process runs, which is shortly after start answers.
  for (let i = 0; i < 40 && !(await resize(req.cols, req.rows)); i++) await new Promise((r) => setTimeout(r, 25));
  return {
    onData(cb) {
      sink = cb;
      for (const c of early.splice(0)) cb(c);
    },
    write(data) {
      if (stream.writable) stream.write(data);
    },
    async resize(cols, rows) {
      await resize(cols, rows);
    },
    pause() {
      stream.pause();
    },
    resume() {
      stream.resume();
    },
    async kill() {
      if (killed) return;
      killed = true;
      const info = await exec.inspect().catch(() => undefined);
      const pid = (info as unknown as { Pid?: number } | undefined)?.Pid;
      if (info?.Running && pid && pid > 1) {
        for (const target of [-pid, pid]) {
          try {
            process.kill(target, 'SIGHUP');
          } catch {
            /* not a group leader, or already gone */
          }
        }
        setTimeout(async () => {
          // Only the same exec, still running: its pid may belong to someone else by now.
          const again = await exec.inspect().catch(() => undefined);
          if (!again?.Running || (again as unknown as { Pid?: number }).Pid !== pid) return;
          for (const target of [-pid, pid]) {
            try {
              process.kill(target, 'SIGKILL');
            } catch {
              /* gone */
            }
          }
        }, 2000).unref();
      }
      setTimeout(() => stream.destroy(), 3000).unref();
    },
    exited,
  };
}
