/**
 * Prototype, bench only: a process supervisor inside the box, reached over a unix socket in a
 * bind-mounted folder, that runs commands without `docker exec`. Measures `true` through it next
 * to `docker exec true` on the same box, in the same run. Not used by boxd itself.
 */
import Docker from 'dockerode';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { median, pct, time } from './stats.ts';

const SUPERVISOR = `
import json, os, socket, subprocess, threading
path = '/run/boxd/sup.sock'
try: os.unlink(path)
except FileNotFoundError: pass
s = socket.socket(socket.AF_UNIX); s.bind(path); os.chmod(path, 0o600); s.listen(64)
def serve(c):
    f = c.makefile('rwb')
    for line in f:
        req = json.loads(line)
        p = subprocess.run(req['cmd'], capture_output=True)
        f.write((json.dumps({'exitCode': p.returncode, 'stdout': p.stdout.decode(errors='replace'), 'stderr': p.stderr.decode(errors='replace')}) + '\\n').encode())
        f.flush()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

export async function benchSupervisor(image: string, label: Record<string, string>, n: number): Promise<{ socket: number[]; dockerExec: number[] }> {
  const docker = new Docker({ socketPath: '/var/run/docker.sock' });
  const dir = mkdtempSync(join(tmpdir(), 'boxd-sup-'));
  writeFileSync(join(dir, 'sup.py'), SUPERVISOR);
  const c = await docker.createContainer({
    Image: image, Entrypoint: ['python3', '-B', '/run/boxd/sup.py'], Cmd: [], Labels: label,
    HostConfig: { Init: true, Binds: [`${dir}:/run/boxd`] },
  });
  try {
    await c.start();
    const sock = join(dir, 'sup.sock');
    // One connection per command, as a host would open per exec.
    const call = (cmd: string[]) =>
      new Promise<{ exitCode: number }>((resolve, reject) => {
        const s = connect(sock);
        let buf = '';
        s.on('error', reject);
        s.on('data', (d) => {
          buf += d.toString();
          if (buf.includes('\n')) {
            s.end();
            resolve(JSON.parse(buf) as { exitCode: number });
          }
        });
        s.write(JSON.stringify({ cmd }) + '\n');
      });
    for (let i = 0; i < 100; i++) {
      try {
        await call(['true']);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const socket: number[] = [];
    const dockerExec: number[] = [];
    for (let i = 0; i < n; i++) {
      socket.push(await time(async () => {
        if ((await call(['true'])).exitCode !== 0) throw new Error('supervisor: true failed');
      }));
      dockerExec.push(await time(async () => {
        const e = await c.exec({ Cmd: ['true'], AttachStdout: true, AttachStderr: true });
        const stream = await e.start({ hijack: true, stdin: false });
        await new Promise((r) => stream.on('end', r).resume());
        await e.inspect();
      }));
    }
    return { socket, dockerExec };
  } finally {
    await c.remove({ force: true }).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

export const summary = (xs: number[]) => `p50 ${median(xs).toFixed(1)} ms, p95 ${pct(xs, 95).toFixed(1)} ms`;
