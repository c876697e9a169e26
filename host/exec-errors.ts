import type { ExecRequest, ExecResult } from './runtime.ts';

/**
 * A command that could not be started (missing binary, not executable) answers like a shell
 * would: exit 127 for "not found", 126 for "not executable", and the reason on stderr — not the
 * OCI runtime's "OCI runtime exec failed…" line on stdout with 126 for everything. Runtime-agnostic:
 * it wraps whichever function runs the exec, so a rewrite of that function keeps the behaviour.
 */
const START_FAILURE = /^OCI runtime exec failed: .*?exec: (".*?": )?(.*?)(: unknown)?\s*$/s;

export interface StartFailure {
  exitCode: 126 | 127;
  message: string;
}

/** The start failure described by an exec's output, or undefined for a command that ran. */
export function startFailure(cmd: string[], exitCode: number, stdout: string): StartFailure | undefined {
  if (exitCode !== 126 && exitCode !== 127) return undefined;
  const m = START_FAILURE.exec(stdout);
  if (!m) return undefined;
  const why = m[2]!.replace(/^stat [^:]*: /, '');
  const notFound = /not found|no such file/i.test(why);
  return { exitCode: notFound ? 127 : 126, message: `boxd: ${cmd[0] ?? ''}: ${notFound ? 'command not found' : why}\n` };
}

/**
 * Runs `run(req)` and rewrites a start failure into exit 127/126 with the reason on stderr.
 * Streamed stdout is held back only while it could still be the runtime's start-failure line
 * (the first chunk begins with "OCI runtime exec failed"), so normal output streams as before.
 */
export async function withStartFailures(req: ExecRequest, run: (req: ExecRequest) => Promise<ExecResult>): Promise<ExecResult> {
  let held: Buffer | undefined;
  let first = true;
  const onOutput = req.onOutput;
  const wrapped: ExecRequest = {
    ...req,
    onOutput: onOutput
      ? (stream, data) => {
          if (first && stream === 'stdout') {
            first = false;
            if (data.toString('utf8').startsWith('OCI runtime exec failed')) {
              held = data;
              return;
            }
          } else if (stream === 'stdout') first = false;
          if (held && stream === 'stdout') {
            onOutput(stream, held);
            held = undefined;
          }
          onOutput(stream, data);
        }
      : undefined,
  };
  const result = await run(wrapped);
  const failure = startFailure(req.cmd, result.exitCode, result.stdout.toString('utf8'));
  if (!failure) {
    if (held) onOutput?.('stdout', held);
    return result;
  }
  const stderr = Buffer.from(failure.message);
  onOutput?.('stderr', stderr);
  return { ...result, exitCode: failure.exitCode, stdout: Buffer.alloc(0), stderr };
}
