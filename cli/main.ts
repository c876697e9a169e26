/**
 * `boxd` — the command line of boxd. Reads BOXD_URL and BOXD_API_KEY (or .boxd/api-key).
 * Human tables by default, `--json` for programs; a progress line on slow calls.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { BoxdApiError, Compute, type Box, type BoxInfo } from '../sdk/index.ts';

const HELP = `boxd — sandboxes for coding agents

usage: boxd <command> [args] [--json]

  up                         set up and run boxd here (same as npm start)
  ls                         list boxes
  create [NAME] [--golden G] [--image I] [--snapshot S] [--port P]… [--env K=V]… [--private]
         [--disk-mb N] [--network open|none|CIDR[:PORT],…]
  exec NAME -- CMD…          run a command, stream its output, exit with its code
  shell NAME [-- CMD…]       interactive terminal in the box (raw mode, resizes); exits with its code
  suspend NAME · resume NAME
  fork NAME [CHILD]          a child box from NAME's filesystem
  snapshot NAME SNAPSHOT     store NAME's filesystem as SNAPSHOT
  snapshots [ls] · snapshots rm SNAPSHOT
  rm NAME…                   destroy boxes
  url NAME                   the preview URL
  goldens · pool             golden images · warm pool state
  goldens build [NAME…]      build golden images on this machine (progress on stderr)
  golden create NAME (--from-box B | --from-snapshot S) [--pool-size N] [--port P]…
  golden ls · golden rm NAME  your goldens (promoted boxes/snapshots with a warm pool)
  hooks [ls] · hooks create NAME --golden G --step CMD… [--keep-ms N] [--signature timestamped] · hooks rm ID
  tasks [ID]                 list tasks, or show one
  completion bash            a bash completion script: eval "$(boxd completion bash)"
  accounts [ls] · accounts create NAME [--max-boxes N] [--max-execs N] [--max-snapshots N] [--max-hooks N]
  keys create ACCOUNT [--admin] · keys rm ID     (admin key only; a new key is shown once)

--json prints JSON on stdout (errors as {"error":{code,message}} on stderr) and no progress lines;
--quiet drops progress lines. Exit codes: exec and shell exit with the remote command's code;
otherwise 0 ok, 1 the API answered an error, 2 bad usage, 3 boxd could not be reached.

env: BOXD_URL (http://localhost:8080), BOXD_API_KEY (else .boxd/api-key in a checkout)`;

const argv = process.argv.slice(2);
// Our own flags count only before `--`: what follows is the remote command's.
const dashAt = argv.indexOf('--');
const own = dashAt >= 0 ? argv.slice(0, dashAt) : argv;
const json = own.includes('--json');
const quiet = json || own.includes('--quiet') || own.includes('-q');
const args = [...own.filter((a) => a !== '--json' && a !== '--quiet' && a !== '-q'), ...(dashAt >= 0 ? argv.slice(dashAt) : [])];
const [command, ...rest] = args;

/** `open`, `none`, or a comma-separated allowlist. */
function networkFlag(v: string | undefined): 'open' | 'none' | { allow: string[] } | undefined {
  if (v === undefined || v === 'open' || v === 'none') return v;
  return { allow: v.split(',').filter(Boolean) };
}

function flag(name: string): string | undefined {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : undefined;
}
function flags(name: string): string[] {
  const out: string[] = [];
  rest.forEach((a, i) => a === `--${name}` && rest[i + 1] !== undefined && out.push(rest[i + 1]!));
  return out;
}
function positional(): string[] {
  const out: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] === '--') break;
    if (rest[i]!.startsWith('--')) {
      if (!['private', 'admin'].includes(rest[i]!.slice(2))) i++;
      continue;
    }
    out.push(rest[i]!);
  }
  return out;
}

function client(): Compute {
  let apiKey = process.env.BOXD_API_KEY;
  if (!apiKey && existsSync('.boxd/api-key')) apiKey = readFileSync('.boxd/api-key', 'utf8').trim();
  return new Compute({ apiKey });
}

/**
 * Progress of a slow call on stderr (never with --json or --quiet): on a terminal a spinner with
 * the elapsed time, elsewhere (logs, CI) one line when it starts and one when it ends.
 */
async function progress<T>(label: string, p: Promise<T>, done?: (v: T) => string): Promise<T> {
  if (quiet) return p;
  const started = Date.now();
  const secs = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
  let timer: NodeJS.Timeout | undefined;
  if (process.stderr.isTTY) {
    const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let i = 0;
    timer = setInterval(() => process.stderr.write(`\r${frames[i++ % frames.length]} ${label}… ${secs()}`), 80);
  } else process.stderr.write(`${label}…\n`);
  try {
    const v = await p;
    if (timer) process.stderr.write('\r\x1b[K');
    process.stderr.write(`${done ? done(v) : 'done'} in ${secs()}\n`);
    return v;
  } catch (e) {
    if (timer) process.stderr.write('\r\x1b[K');
    throw e;
  } finally {
    if (timer) clearInterval(timer);
  }
}

function table(rows: Record<string, unknown>[], cols: string[]): void {
  if (json) return void console.log(JSON.stringify(rows, null, 2));
  if (!rows.length) return void console.log('(none)');
  const cell = (v: unknown) => (v === undefined || v === null ? '-' : Array.isArray(v) ? v.join(',') : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  console.log(cols.map((c, i) => c.toUpperCase().padEnd(widths[i]!)).join('  '));
  for (const r of rows) console.log(cols.map((c, i) => cell(r[c]).padEnd(widths[i]!)).join('  '));
}

function show(box: BoxInfo): void {
  if (json) return void console.log(JSON.stringify(box, null, 2));
  console.log(`${box.name}  ${box.state}  ${box.url ?? '(no ports)'}${box.previewToken ? `\npreview token: ${box.previewToken}` : ''}`);
}

const need = (v: string | undefined, what: string): string => {
  if (!v) throw new BoxdApiError('USAGE', `missing ${what}; see boxd --help`, 2);
  return v;
};

async function main(): Promise<number> {
  const c = () => client();
  const [a, b] = positional();
  switch (command) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(HELP);
      return 0;
    case 'up': {
      const child = spawn('npm', ['start'], { stdio: 'inherit' });
      return new Promise((r) => child.on('exit', (code) => r(code ?? 1)));
    }
    case 'ls':
      table((await c().box.list()).map((x) => ({ ...x.info })), ['name', 'state', 'golden', 'url', 'parent', 'lastActivityAt']);
      return 0;
    case 'create': {
      const env = Object.fromEntries(flags('env').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      const ports = flags('port').map(Number);
      const box = await progress(`creating ${a ?? 'a box'}`, c().box.create({
        name: a, golden: flag('golden'), image: flag('image'), snapshot: flag('snapshot'),
        ports: ports.length ? ports : undefined, env: Object.keys(env).length ? env : undefined,
        public: rest.includes('--private') ? false : undefined,
        diskMb: flag('disk-mb') === undefined ? undefined : Number(flag('disk-mb')),
        network: networkFlag(flag('network')),
      }), (b) => `created ${b.name} ${b.info.pooled ? 'from the warm pool' : '(cold create)'}`);
      show(box.info);
      return 0;
    }
    case 'exec': {
      const dash = rest.indexOf('--');
      const cmd = dash >= 0 ? rest.slice(dash + 1) : rest.slice(1);
      if (!cmd.length) throw new BoxdApiError('USAGE', 'usage: boxd exec NAME -- CMD…', 2);
      const box = await c().box.get(need(a, 'box name'));
      if (json) {
        const r = await box.exec(cmd);
        console.log(JSON.stringify(r, null, 2));
        return r.exitCode;
      }
      let code = 1;
      for await (const e of box.stream(cmd)) {
        if ('stream' in e) (e.stream === 'stdout' ? process.stdout : process.stderr).write(e.data);
        else code = e.exitCode;
      }
      return code;
    }
    case 'suspend':
    case 'resume': {
      const box = await c().box.get(need(a, 'box name'));
      show((command === 'suspend' ? await box.suspend() : await box.resume()).info);
      return 0;
    }
    case 'fork': {
      const box = await c().box.get(need(a, 'box name'));
      show((await progress(`forking ${a}`, box.fork({ name: b }), (x) => `forked ${a} into ${x.name}`)).info);
      return 0;
    }
    case 'snapshot': {
      const box = await c().box.get(need(a, 'box name'));
      const s = await progress(`snapshotting ${a}`, box.snapshot(need(b, 'snapshot name')), (x) => `snapshot ${x.name} stored`);
      console.log(json ? JSON.stringify(s) : `snapshot ${s.name} of ${a}`);
      return 0;
    }
    case 'snapshots': {
      if (a === 'rm') {
        await c().snapshots.delete(need(b, 'snapshot name'));
        console.log(json ? JSON.stringify({ removed: b }) : `removed snapshot ${b}`);
        return 0;
      }
      table((await c().snapshots.list()) as unknown as Record<string, unknown>[], ['name', 'box', 'createdAt']);
      return 0;
    }
    case 'rm': {
      const names = positional();
      if (!names.length) need(undefined, 'box name');
      for (const n of names) {
        await (await c().box.get(n)).destroy();
        if (!json) console.log(`removed ${n}`);
      }
      if (json) console.log(JSON.stringify({ removed: names }));
      return 0;
    }
    case 'url': {
      const box = await c().box.get(need(a, 'box name'));
      console.log(json ? JSON.stringify({ url: box.url, urls: box.info.urls }) : box.url ?? '(no ports)');
      return 0;
    }
    case 'goldens':
      if (a === 'build') return buildGoldens(positional().slice(1));
      table((await c().goldens()) as unknown as Record<string, unknown>[], ['name', 'built', 'poolSize', 'ports', 'description']);
      return 0;
    case 'golden': {
      if (a === 'create') {
        const size = flag('pool-size');
        const ports = flags('port').map(Number);
        const g = await progress(`promoting to golden ${b}`, c().golden.create({
          name: need(b, 'golden name'), fromBox: flag('from-box'), fromSnapshot: flag('from-snapshot'),
          poolSize: size === undefined ? undefined : Number(size), ports: ports.length ? ports : undefined,
        }));
        console.log(json ? JSON.stringify(g) : `golden ${g.name} (pool of ${g.poolSize})`);
        return 0;
      }
      if (a === 'rm' || a === 'delete') {
        await c().golden.delete(need(b, 'golden name'));
        if (!json) console.log(`removed golden ${b}`);
        return 0;
      }
      table((await c().golden.list()) as unknown as Record<string, unknown>[], ['name', 'owner', 'built', 'poolSize', 'ports', 'description']);
      return 0;
    }
    case 'pool':
      table((await c().pool()) as unknown as Record<string, unknown>[], ['golden', 'target', 'ready', 'hits', 'misses', 'hitRate']);
      return 0;
    case 'hooks': {
      if (a === 'create') {
        const steps = flags('step').map((cmd) => ({ cmd }));
        const keep = flag('keep-ms');
        const signature = flag('signature');
        if (signature !== undefined && signature !== 'any' && signature !== 'timestamped') throw new Error('--signature is "any" or "timestamped"');
        const h = await c().hooks.create({ name: need(b, 'hook name'), golden: flag('golden'), steps, keepMs: keep ? Number(keep) : undefined, signature });
        console.log(json ? JSON.stringify(h, null, 2) : `hook ${h.id}\nurl     ${h.url}\nsecret  ${h.secret}  (shown once)`);
        return 0;
      }
      if (a === 'rm') {
        await c().hooks.delete(need(b, 'hook id'));
        console.log(json ? JSON.stringify({ removed: b }) : `removed ${b}`);
        return 0;
      }
      table((await c().hooks.list()) as unknown as Record<string, unknown>[], ['id', 'name', 'golden', 'url']);
      return 0;
    }
    case 'tasks': {
      if (a) {
        const t = await c().tasks.get(a);
        if (json) console.log(JSON.stringify(t, null, 2));
        else {
          console.log(`${t.id}  ${t.state}${t.error ? `  (${t.error})` : ''}${t.box?.url ? `  ${t.box.url}` : ''}`);
          for (const s of t.steps) console.log(`  [${s.exitCode}] ${s.cmd.join(' ')}  ${s.durationMs} ms\n${s.stdout.replace(/^/gm, '    ')}`);
        }
        return 0;
      }
      table((await c().tasks.list()).map((t) => ({ ...t, steps: t.steps.length })), ['id', 'state', 'steps', 'triggeredAt', 'error']);
      return 0;
    }
    case 'shell': {
      const dash = rest.indexOf('--');
      const cmd = dash >= 0 ? rest.slice(dash + 1) : undefined;
      return shell(await c().box.get(need(a, 'box name')), cmd);
    }
    case 'completion':
      if (a !== 'bash') throw new BoxdApiError('USAGE', 'usage: boxd completion bash', 2);
      process.stdout.write(BASH_COMPLETION);
      return 0;
    case 'accounts': {
      if (a === 'create') {
        const num = (f: string) => (flag(f) === undefined ? undefined : Number(flag(f)));
        const acct = await c().accounts.create({ name: need(b, 'account name'), maxBoxes: num('max-boxes'), maxExecs: num('max-execs'), maxSnapshots: num('max-snapshots'), maxHooks: num('max-hooks') });
        console.log(json ? JSON.stringify(acct, null, 2) : `account ${acct.id}  ${acct.name}`);
        return 0;
      }
      if (a && a !== 'ls') throw new BoxdApiError('USAGE', `unknown accounts command "${a}"; see boxd --help`, 2);
      const rows = (await c().accounts.list()).map((x) => ({ id: x.id, name: x.name, keys: x.keys, ...x.limits }));
      table(rows, ['id', 'name', 'keys', 'maxBoxes', 'maxExecs', 'maxSnapshots', 'maxHooks']);
      return 0;
    }
    case 'keys': {
      if (a === 'create') {
        const k = await c().keys.create(need(b, 'account id'), { role: rest.includes('--admin') ? 'admin' : 'member' });
        console.log(json ? JSON.stringify(k, null, 2) : `key ${k.id} of ${k.account}\n${k.key}  (shown once)`);
        return 0;
      }
      if (a === 'rm' || a === 'delete') {
        await c().keys.delete(need(b, 'key id'));
        if (!json) console.log(`removed ${b}`);
        return 0;
      }
      throw new BoxdApiError('USAGE', 'usage: boxd keys create ACCOUNT [--admin] | boxd keys rm ID', 2);
    }
    default:
      console.error(`unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

/** `boxd shell`: the local terminal in raw mode wired to a terminal in the box. */
async function shell(box: Box, cmd: string[] | undefined): Promise<number> {
  const out = process.stdout;
  // A box that is being frozen or a host that is starting answers BOX_BUSY / UNAVAILABLE for a moment.
  let term: Awaited<ReturnType<Box['pty']>> | undefined;
  for (let attempt = 1; !term; attempt++) {
    try {
      term = await box.pty({ cols: out.columns || 80, rows: out.rows || 24, cmd });
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (attempt >= 4 || (code !== 'BOX_BUSY' && code !== 'UNAVAILABLE')) throw e;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
  const stdin = process.stdin;
  const raw = stdin.isTTY;
  if (raw) stdin.setRawMode(true);
  const onInput = (d: Buffer) => term.write(d);
  const onResize = () => term.resize(out.columns || 80, out.rows || 24);
  stdin.on('data', onInput);
  stdin.resume();
  process.on('SIGWINCH', onResize);
  term.onData((d) => out.write(d));
  try {
    return await term.exited;
  } finally {
    process.off('SIGWINCH', onResize);
    stdin.off('data', onInput);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  }
}

/** `boxd goldens build`: runs the builder of this checkout (it prints its own progress lines). */
function buildGoldens(names: string[]): Promise<number> {
  const child = spawn('npx', ['tsx', 'golden-images/build.ts', ...names], { stdio: ['ignore', quiet ? 'ignore' : 2, 2] });
  return new Promise((r) => child.on('exit', (code) => r(code ?? 1)));
}

const COMMANDS = 'up ls create exec shell suspend resume fork snapshot snapshots rm url goldens pool hooks tasks completion help';
const BASH_COMPLETION = `# boxd bash completion: eval "$(boxd completion bash)"
_boxd() {
  local cur=\${COMP_WORDS[COMP_CWORD]} cmd=\${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${COMMANDS}" -- "$cur") ); return
  fi
  case "$cur" in -*) COMPREPLY=( $(compgen -W "--json --quiet --golden --image --snapshot --port --env --private --step --keep-ms --signature" -- "$cur") ); return;; esac
  case "$cmd" in
    exec|shell|suspend|resume|fork|snapshot|rm|url)
      COMPREPLY=( $(compgen -W "$(boxd ls --json 2>/dev/null | sed -n 's/^ *"name": "\\([^"]*\\)".*/\\1/p')" -- "$cur") );;
    hooks|snapshots) COMPREPLY=( $(compgen -W "ls rm$([ "$cmd" = hooks ] && echo ' create')" -- "$cur") );;
    goldens) COMPREPLY=( $(compgen -W "build" -- "$cur") );;
    completion) COMPREPLY=( $(compgen -W "bash" -- "$cur") );;
  esac
}
complete -F _boxd boxd
`;

try {
  process.exitCode = await main();
} catch (e) {
  if (e instanceof BoxdApiError) {
    if (json) console.error(JSON.stringify({ error: { code: e.code, message: e.message } }));
    else console.error(`boxd: ${e.message} (${e.code})`);
    process.exitCode = e.status === 2 ? 2 : e.code === 'NETWORK_ERROR' ? 3 : 1;
  } else throw e;
}
// Open handles (a terminal's socket) must not keep a finished command alive.
process.exit(process.exitCode ?? 0);
