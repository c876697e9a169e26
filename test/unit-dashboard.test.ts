import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import vm from 'node:vm';
import { PAGE } from '../gateway/dashboard.ts';

/** Runs the dashboard's script against a tiny fake DOM and records the API calls it makes. */
async function runPage(confirmAnswer: boolean) {
  const script = /<script>([\s\S]*)<\/script>/.exec(PAGE)?.[1] ?? '';
  const elements = new Map<string, { value: string; textContent: string; innerHTML: string; onclick?: () => void }>();
  const el = (id: string) => {
    if (!elements.has(id)) elements.set(id, { value: '', textContent: '', innerHTML: '' });
    return elements.get(id)!;
  };
  const calls: string[] = [];
  const asked: string[] = [];
  let clickHandler: ((e: unknown) => void) | undefined;
  const body = (path: string) => (path === '/v1/boxes' ? { boxes: [{ name: 'b1', state: 'running', url: null, lastActivityAt: 0 }] } : path === '/v1/pool' ? { pools: [] } : { tasks: [] });
  const context = {
    document: { getElementById: el, addEventListener: (_t: string, h: (e: unknown) => void) => (clickHandler = h) },
    localStorage: { getItem: () => 'k', setItem: () => undefined },
    location: { hash: '', pathname: '/' },
    history: { replaceState: () => undefined },
    URLSearchParams,
    confirm: (q: string) => (asked.push(q), confirmAnswer),
    setInterval: () => 0,
    fetch: async (path: string, init: { method: string }) => {
      calls.push(`${init.method} ${path}`);
      return { status: init.method === 'DELETE' ? 204 : 200, ok: true, json: async () => body(path) };
    },
    Date,
    Math,
    String,
    Promise,
  };
  vm.runInNewContext(script, context);
  await new Promise((r) => setTimeout(r, 20));
  const button = { dataset: { box: 'b1', op: 'delete' } };
  clickHandler!({ target: { closest: () => button } });
  await new Promise((r) => setTimeout(r, 20));
  return { calls, asked, boxes: el('boxes').innerHTML };
}

describe('dashboard page', () => {
  it('asks before deleting a box and deletes nothing when the answer is no', async () => {
    const no = await runPage(false);
    assert.match(no.boxes, /b1/, 'the box is listed');
    assert.equal(no.asked.length, 1);
    assert.match(no.asked[0]!, /Delete box "b1"/);
    assert.ok(!no.calls.some((c) => c.startsWith('DELETE')), 'no DELETE without a yes');
    const yes = await runPage(true);
    assert.ok(yes.calls.includes('DELETE /v1/boxes/b1'));
  });

  it('fits a 1,200 px window: tables scroll inside their section and long cells wrap', () => {
    assert.match(PAGE, /main\{max-width:1200px/);
    assert.equal(PAGE.match(/<div class="scroll"><table>/g)?.length, 3, 'every table is in a scroll container');
    assert.match(PAGE, /td\.wrap\{white-space:normal;overflow-wrap:anywhere/);
    assert.match(PAGE, /<td class="wrap">' \+ \(b\.url/, 'the preview URL column wraps');
  });
});
