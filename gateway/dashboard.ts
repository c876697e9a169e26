import { Router } from 'express';

/**
 * The dashboard at `/` of the API host: one static page that asks for an API key (kept in the
 * browser's localStorage) and uses the same JSON API as everyone else. No server-side session.
 */
export function dashboard(): Router {
  const r = Router();
  r.get('/', (_req, res) => {
    res.setHeader('Content-Security-Policy', "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
    res.type('html').send(PAGE);
  });
  return r;
}

/** The page itself (exported for tests that run its script). */
export const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>boxd</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{display:flex;gap:1rem;align-items:center;padding:.8rem 1.5rem;background:#111;color:#fff}
header h1{font-size:1.1rem;margin:0}header input{flex:1;max-width:28rem;padding:.35rem .5rem;border-radius:4px;border:0}
main{padding:1rem 1.5rem}section{margin-bottom:1.8rem}h2{font-size:1rem;margin:.2rem 0 .6rem}
body{min-width:0}main{max-width:1200px;box-sizing:border-box}.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #eee;white-space:nowrap}
td.wrap{white-space:normal;overflow-wrap:anywhere;max-width:22rem}
th{font-weight:600;color:#555;font-size:.8rem;text-transform:uppercase}.state{padding:.1rem .45rem;border-radius:9px;font-size:.8rem}
.running{background:#d9f7e0}.suspended{background:#e4e9ff}.creating{background:#fff3cd}.error{background:#fde2e2}
button{font:inherit;font-size:.8rem;margin-right:.3rem;cursor:pointer}#msg{color:#b00020}
</style></head><body>
<header><h1>boxd</h1><input id="key" type="password" placeholder="API key (Bearer)" autocomplete="off"><button id="save">Use key</button><span id="msg"></span></header>
<main>
<section><h2>Boxes</h2><div class="scroll"><table><thead><tr><th>name</th><th>state</th><th>from</th><th>preview</th><th>parent</th><th>last activity</th><th></th></tr></thead><tbody id="boxes"></tbody></table></div></section>
<section><h2>Warm pools</h2><div class="scroll"><table><thead><tr><th>golden</th><th>ready</th><th>target</th><th>hits</th><th>misses</th><th>hit rate</th></tr></thead><tbody id="pools"></tbody></table></div></section>
<section><h2>Tasks</h2><div class="scroll"><table><thead><tr><th>id</th><th>state</th><th>steps</th><th>triggered</th><th>box</th><th>error</th></tr></thead><tbody id="tasks"></tbody></table></div></section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? '-').replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
// \`#key=<api key>\` (never sent to a server) saves the key and is then removed from the address bar.
const fromHash = new URLSearchParams(location.hash.slice(1)).get('key');
if (fromHash) { localStorage.setItem('boxd-key', fromHash); history.replaceState(null, '', location.pathname); }
let key = localStorage.getItem('boxd-key') || '';
$('key').value = key;
$('save').onclick = () => { key = $('key').value.trim(); localStorage.setItem('boxd-key', key); refresh(); };
async function api(method, path) {
  const res = await fetch(path, { method, headers: { Authorization: 'Bearer ' + key } });
  if (res.status === 204) return null;
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ? body.error.code + ': ' + body.error.message : res.statusText);
  return body;
}
async function act(name, op) {
  // Deleting a box loses its files: ask first (suspend and resume are harmless).
  if (op === 'delete' && !confirm('Delete box "' + name + '"? Its files and processes are lost.')) return;
  try { await api(op === 'delete' ? 'DELETE' : 'POST', '/v1/boxes/' + encodeURIComponent(name) + (op === 'delete' ? '' : '/' + op)); } catch (e) { $('msg').textContent = e.message; }
  refresh();
}
async function refresh() {
  if (!key) { $('msg').textContent = 'enter an API key (npm start prints it; also in .boxd/api-key)'; return; }
  try {
    const [{ boxes }, { pools }, { tasks }] = await Promise.all([api('GET', '/v1/boxes'), api('GET', '/v1/pool'), api('GET', '/v1/tasks')]);
    $('msg').textContent = '';
    $('boxes').innerHTML = boxes.map((b) => '<tr><td>' + esc(b.name) + '</td><td><span class="state ' + esc(b.state) + '">' + esc(b.state) + '</span></td><td>' +
      esc(b.golden || b.snapshot || b.image) + '</td><td class="wrap">' + (b.url ? '<a href="' + esc(b.url) + '" target="_blank">' + esc(b.url) + '</a>' : '-') + '</td><td>' + esc(b.parent) +
      '</td><td>' + esc(new Date(b.lastActivityAt).toLocaleTimeString()) + '</td><td>' +
      ['suspend', 'resume', 'delete'].map((op) => '<button data-box="' + esc(b.name) + '" data-op="' + op + '">' + op + '</button>').join('') + '</td></tr>').join('') ||
      '<tr><td colspan="7">no boxes</td></tr>';
    $('pools').innerHTML = pools.map((p) => '<tr><td>' + esc(p.golden) + '</td><td>' + p.ready + '</td><td>' + p.target + '</td><td>' + p.hits + '</td><td>' + p.misses + '</td><td>' +
      (p.hitRate === null ? '-' : Math.round(p.hitRate * 100) + '%') + '</td></tr>').join('');
    $('tasks').innerHTML = tasks.slice(0, 20).map((t) => '<tr><td>' + esc(t.id) + '</td><td><span class="state ' + (t.state === 'succeeded' ? 'running' : t.state === 'failed' ? 'error' : 'creating') + '">' +
      esc(t.state) + '</span></td><td>' + t.steps.length + '</td><td>' + esc(new Date(t.triggeredAt).toLocaleString()) + '</td><td>' + esc(t.box && t.box.name) + '</td><td class="wrap">' + esc(t.error) + '</td></tr>').join('') ||
      '<tr><td colspan="6">no tasks</td></tr>';
  } catch (e) { $('msg').textContent = e.message; }
}
document.addEventListener('click', (e) => { const b = e.target.closest('button[data-op]'); if (b) act(b.dataset.box, b.dataset.op); });
refresh();
setInterval(refresh, 3000);
</script></body></html>`;
