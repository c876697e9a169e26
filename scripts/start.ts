/**
 * `npm start` after set-up: runs the Procfile's processes with one API key, waits until the
 * gateway answers with a host attached, then prints the URLs and the key.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadConfig } from '../core/config.ts';
import { apiKey as bootstrapKey, clusterSecret } from '../core/secrets.ts';

const stateDir = process.env.BOXD_STATE_DIR || '.boxd';
const keyFile = `${stateDir}/api-key`;
const apiKey = bootstrapKey({ BOXD_API_KEY: process.env.BOXD_API_KEY || undefined, BOXD_STATE_DIR: stateDir });
// Gateways authenticate to host agents with this; both processes get the same value.
const secret = clusterSecret({ BOXD_CLUSTER_SECRET: process.env.BOXD_CLUSTER_SECRET || undefined, BOXD_STATE_DIR: stateDir });
const env = { ...process.env, BOXD_API_KEY: apiKey, BOXD_CLUSTER_SECRET: secret };
// The banner says the key is saved in .boxd/api-key: true also for a key from the environment,
// and this checkout's CLI then finds it there.
if (process.env.BOXD_API_KEY && (mkdirSync(stateDir, { recursive: true }), !existsSync(keyFile) || readFileSync(keyFile, 'utf8').trim() !== apiKey)) {
  writeFileSync(keyFile, `${apiKey}\n`, { mode: 0o600 });
}
const config = loadConfig(env);

const procs = readFileSync('Procfile', 'utf8')
  .split('\n')
  .map((l) => /^([a-z0-9_-]+):\s*(.+)$/i.exec(l.trim()))
  .filter((m): m is RegExpExecArray => !!m)
  .map((m) => ({ name: m[1]!, cmd: m[2]! }));

const children: ChildProcess[] = [];
/** How long the processes get to stop after Ctrl-C before they are killed. */
const graceMs = Number(process.env.BOXD_STOP_GRACE_MS ?? 10_000);
let stopping = false;
const signalAll = (signal: NodeJS.Signals) => {
  // Each process runs in its own group so that the signal reaches tsx's child too.
  for (const c of children) {
    try {
      if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(-c.pid, signal);
    } catch {
      /* already gone */
    }
  }
};
const allExited = () => Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
/**
 * Stops every process this script started: SIGTERM (each answers what is in flight with an error
 * and closes), then SIGKILL for any still there after the grace. Redis and dockerd are system
 * services started detached by setup.sh and keep running, and so do the boxes. A second Ctrl-C
 * kills at once.
 */
const stop = (code: number) => {
  if (stopping) {
    signalAll('SIGKILL');
    return;
  }
  stopping = true;
  signalAll('SIGTERM');
  const killer = setTimeout(() => {
    console.error(`still running after ${graceMs} ms; killing`);
    signalAll('SIGKILL');
  }, graceMs);
  killer.unref();
  void allExited().then(() => {
    clearTimeout(killer);
    process.exit(code);
  });
};
const width = Math.max(...procs.map((p) => p.name.length));
for (const p of procs) {
  const child = spawn('bash', ['-c', `exec ${p.cmd}`], {
    env: { ...env, PATH: `${process.cwd()}/node_modules/.bin:${process.env.PATH}` },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const tag = `${p.name.padEnd(width)} | `;
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) process.stdout.write(tag + l + '\n');
    });
  }
  child.on('exit', (code) => {
    if (!stopping) {
      console.error(`${p.name} exited with ${code}; stopping everything`);
      stop(code || 1);
    }
  });
  children.push(child);
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

const api = `http://localhost:${config.BOXD_PORT}`;
for (let i = 0; i < 300 && !stopping; i++) {
  try {
    const health = (await (await fetch(`http://127.0.0.1:${config.BOXD_PORT}/healthz`)).json()) as { hosts: number };
    if (health.hosts > 0) {
      console.log(`
  boxd is up.
    API          ${api}          (Authorization: Bearer <key>)
    API key      ${apiKey}   (saved in ${keyFile})
    dashboard    ${api}/#key=${apiKey}
    previews     http://<box>.${config.BOXD_BASE_DOMAIN}:${config.BOXD_PORT}/

  export BOXD_URL=${api} BOXD_API_KEY=${apiKey}
  curl -s -H "Authorization: Bearer $BOXD_API_KEY" -X POST $BOXD_URL/v1/boxes -d '{"name":"try-1"}' -H 'Content-Type: application/json'
`);
      break;
    }
  } catch {
    /* not up yet */
  }
  await new Promise((r) => setTimeout(r, 200));
}
