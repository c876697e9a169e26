import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import ts from 'typescript';
import { z } from 'zod';
import { ROUTES, sharedErrors, type RouteSpec } from '../gateway/api-spec.ts';
import { openApiDocument, openApiPath } from '../gateway/openapi.ts';
import { startStack, type Stack } from './helpers.ts';

type Json = Record<string, any>;
const doc = openApiDocument() as Json;

/** Every (method, path) Express has mounted, mount prefixes included. */
function mountedRoutes(stack: any[], prefix = ''): { method: string; path: string }[] {
  const out: { method: string; path: string }[] = [];
  for (const layer of stack) {
    if (layer.route) {
      for (const m of Object.keys(layer.route.methods)) out.push({ method: m, path: prefix + layer.route.path });
    } else if (layer.handle?.stack) {
      const p = typeof layer.rawPath === 'string' && layer.rawPath !== '/' ? layer.rawPath : '';
      out.push(...mountedRoutes(layer.handle.stack, prefix + p));
    }
  }
  return out;
}

/** Follows a $ref and picks the object member of an `anyOf` (a nullable object). */
function objectSchema(s: Json): Json {
  if (s.$ref) return objectSchema(doc.components.schemas[s.$ref.split('/').pop()]);
  if (s.anyOf) return objectSchema(s.anyOf.find((x: Json) => x.type !== 'null'));
  assert.equal(s.type, 'object', `not an object schema: ${JSON.stringify(s).slice(0, 200)}`);
  return s;
}
const deref = (s: Json): Json => (s.$ref ? deref(doc.components.schemas[s.$ref.split('/').pop()]) : s);
const at = (component: string, ...props: string[]) => {
  let s: Json = { $ref: `#/components/schemas/${component}` };
  for (const p of props) s = p === '[]' ? deref(s).items : objectSchema(s).properties[p];
  return objectSchema(s);
};
const shape = (s: Json) => ({ props: Object.keys(s.properties ?? {}).sort(), required: [...(s.required ?? [])].sort() });

describe('OpenAPI document (GET /v1/openapi.json)', () => {
  let s: Stack;
  let base: string;
  before(async () => {
    s = await startStack();
    base = `http://127.0.0.1:${(s.gateway.server.address() as { port: number }).port}`;
  });
  after(async () => {
    await s?.close();
  });

  it('is valid OpenAPI 3.1 by @seriousme/openapi-schema-validator (which rejects a broken one)', async () => {
    const v = new Validator();
    const res = await v.validate(structuredClone(doc));
    assert.deepEqual(res, { valid: true });
    const broken = structuredClone(doc);
    broken.paths['/v1/boxes'].post.responses = 'nope';
    assert.equal((await new Validator().validate(broken)).valid, false);
    assert.equal(doc.openapi, '3.1.0');
  });

  it('is served without a key, with this server as its server', async () => {
    const res = await s.api.get('/v1/openapi.json').expect(200);
    assert.equal(res.body.servers[0].url, s.gateway.urls.api);
    assert.deepEqual({ ...res.body, servers: undefined }, { ...JSON.parse(JSON.stringify(doc)), servers: undefined });
  });

  it('has an entry for every route Express mounts, and every entry is mounted', () => {
    const mounted = mountedRoutes((s.gateway.app as any).router.stack);
    assert.ok(mounted.length >= ROUTES.length - 1, 'the walk finds the routes');
    const missing = mounted.filter((r) => !doc.paths[openApiPath(r.path)]?.[r.method]);
    assert.deepEqual(
      missing.map((r) => `${r.method.toUpperCase()} ${r.path}`),
      [],
      'mounted without an OpenAPI entry. Add one line per route to ROUTES in gateway/api-spec.ts, e.g.\n' +
        missing.map((r) => `  { method: '${r.method}', path: '${r.path}', summary: '…', body: <zod schema of the body, if any>, ok: { 200: <zod schema of the answer> }, errors: [<its error codes>] },`).join('\n'),
    );
    const unmounted = ROUTES.filter((r) => !r.upgrade && !mounted.some((m) => m.method === r.method && m.path === r.path));
    assert.deepEqual(unmounted.map((r) => `${r.method} ${r.path}`), [], 'in gateway/api-spec.ts but not mounted (a WebSocket route served on upgrade takes `upgrade: true`)');
  });

  it("covers every call of the README's API table", () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const table = readme.slice(readme.indexOf('| call | body | answer |')).split('\n\n')[0]!;
    const calls: string[] = [];
    for (const row of table.split('\n').slice(2)) {
      const cell = row.split('|')[1]!;
      let methods: string[] = [];
      let last = '';
      for (const [, code] of cell.matchAll(/`([^`]+)`/g)) {
        let [m, p] = code!.includes(' ') ? code!.split(' ') : [undefined, code!];
        if (m) methods = m.split('/');
        p = p!.split('?')[0]!;
        if (!m && last) p = last.slice(0, last.lastIndexOf('/')) + p;
        last = p;
        for (const method of methods) calls.push(`${method.toLowerCase()} ${p}`);
      }
    }
    assert.ok(calls.length >= 20, `parsed the table: ${calls.join(', ')}`);
    // Parameter names may differ between the table and the routes (`:name` vs `:snapshot`).
    const shapeOf = (p: string) => openApiPath(p).replace(/\{[^}]+\}/g, '{}');
    const documented = new Set(Object.entries<Json>(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${shapeOf(p)}`)));
    const missing = calls.filter((c) => !documented.has(`${c.split(' ')[0]} ${shapeOf(c.split(' ')[1]!)}`));
    assert.deepEqual(missing, []);
  });

  it('lists each error code under the status the error handler answers it with', () => {
    for (const [path, ops] of Object.entries<Json>(doc.paths)) {
      for (const [method, op] of Object.entries<Json>(ops)) {
        const route = ROUTES.find((r) => r.method === method && openApiPath(r.path) === path)!;
        for (const code of new Set([...route.errors, ...sharedErrors(route)])) {
          const codesOf = (sc: Json | undefined): string[] => (sc?.anyOf ? sc.anyOf.flatMap(codesOf) : (sc?.properties?.error?.properties?.code?.enum ?? []));
          const listed = Object.entries<Json>(op.responses).find(([, r]) => codesOf(r.content?.['application/json']?.schema).includes(code));
          assert.ok(listed, `${method} ${path}: ${code} is documented`);
        }
      }
    }
  });

  it("matches the real answers (each checked against its route's schemas, strictly)", async () => {
    const answered: string[] = [];
    const check = (route: RouteSpec, status: number, body: unknown) => {
      const c = route.ok[status];
      if (status >= 400) {
        const code = (body as { error: { code: string } }).error.code;
        assert.ok([...route.errors, ...sharedErrors(route)].includes(code as never), `${route.method} ${route.path}: undocumented error ${code}`);
      } else {
        assert.ok(c !== undefined, `${route.method} ${route.path}: undocumented status ${status}`);
        const schema = c instanceof z.ZodType ? c : c?.['application/json'];
        // Non-JSON answers (bytes, NDJSON) are checked by the caller.
        const parsed = schema instanceof z.ZodType && typeof body !== 'string' ? schema.safeParse(body) : undefined;
        assert.ok(!parsed || parsed.success, `${route.method} ${route.path} ${status}: ${parsed?.error?.message} in ${JSON.stringify(body)}`);
      }
      answered.push(`${route.method} ${route.path} ${status}`);
    };
    const find = (method: string, path: string) => ROUTES.find((r) => r.method === method && r.path === path)!;
    const call = async (method: string, spec: string, url: string, body?: object, headers: Record<string, string> = {}) => {
      const res = await fetch(base + url, { method: method.toUpperCase(), headers: { Authorization: `Bearer ${s.config.BOXD_API_KEY}`, 'Content-Type': 'application/json', ...headers }, body: body && JSON.stringify(body) });
      const text = await res.text();
      check(find(method, spec), res.status, text && res.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : text);
      return text;
    };
    await call('post', '/v1/boxes', '/v1/boxes', { name: 'oa-1', golden: 'tiny', public: false });
    await call('post', '/v1/boxes', '/v1/boxes', { name: 'oa-1', golden: 'tiny' });
    await call('post', '/v1/boxes', '/v1/boxes', { nme: 'typo' });
    await call('get', '/v1/boxes', '/v1/boxes');
    await call('get', '/v1/boxes/:name', '/v1/boxes/oa-1');
    await call('get', '/v1/boxes/:name', '/v1/boxes/oa-none');
    await call('post', '/v1/boxes/:name/exec', '/v1/boxes/oa-1/exec', { cmd: ['sh', '-c', 'echo hi; exit 2'] });
    const lines = (await call('post', '/v1/boxes/:name/exec', '/v1/boxes/oa-1/exec', { cmd: ['echo', 'x'] }, { Accept: 'application/x-ndjson' })).trim().split('\n');
    const ndjson = (find('post', '/v1/boxes/:name/exec').ok[200] as Record<string, z.ZodType>)['application/x-ndjson']!;
    assert.ok(lines.length >= 2);
    for (const l of lines) ndjson.parse(JSON.parse(l));
    await call('post', '/v1/boxes/:name/suspend', '/v1/boxes/oa-1/suspend');
    await call('post', '/v1/boxes/:name/resume', '/v1/boxes/oa-1/resume');
    await call('put', '/v1/boxes/:name/files', '/v1/boxes/oa-1/files?path=/tmp/a', undefined, { 'Content-Type': 'application/octet-stream' });
    await call('get', '/v1/boxes/:name/files', '/v1/boxes/oa-1/files?path=/tmp/none');
    await call('post', '/v1/boxes/:name/fork', '/v1/boxes/oa-1/fork', { name: 'oa-2' });
    await call('post', '/v1/boxes/:name/snapshot', '/v1/boxes/oa-1/snapshot', { snapshot: 'oa-snap' });
    await call('get', '/v1/snapshots', '/v1/snapshots');
    await call('delete', '/v1/snapshots/:snapshot', '/v1/snapshots/oa-snap');
    await call('post', '/v1/hooks', '/v1/hooks', { name: 'oa', golden: 'tiny', steps: [{ cmd: 'true' }] });
    await call('get', '/v1/hooks', '/v1/hooks');
    await call('get', '/v1/tasks', '/v1/tasks');
    await call('get', '/v1/tasks/:id', '/v1/tasks/tk-none');
    await call('get', '/v1/goldens', '/v1/goldens');
    await call('get', '/v1/pool', '/v1/pool');
    await call('get', '/healthz', '/healthz');
    await call('get', '/readyz', '/readyz');
    await call('get', '/metrics', '/metrics');
    await call('post', '/v1/accounts', '/v1/accounts', { name: 'oa-team', maxBoxes: 3 });
    const accounts = JSON.parse(await call('get', '/v1/accounts', '/v1/accounts')) as { accounts: { id: string; name: string }[] };
    const team = accounts.accounts.find((a) => a.name === 'oa-team')!;
    const key = JSON.parse(await call('post', '/v1/accounts/:id/keys', `/v1/accounts/${team.id}/keys`, {})) as { id: string; key: string };
    await call('post', '/v1/accounts/:id/keys', '/v1/accounts/nobody/keys', {});
    await call('get', '/v1/accounts', '/v1/accounts', undefined, { Authorization: `Bearer ${key.key}` });
    await call('delete', '/v1/keys/:id', `/v1/keys/${key.id}`);
    await call('delete', '/v1/boxes/:name', '/v1/boxes/oa-2');
    await call('delete', '/v1/boxes/:name', '/v1/boxes/oa-1');
    assert.ok(answered.length >= 25);
  });

  it("the TypeScript SDK's wire types (sdk/types.ts) have the document's fields", () => {
    const program = ts.createProgram([new URL('../sdk/types.ts', import.meta.url).pathname], { strict: true, noEmit: true });
    const checker = program.getTypeChecker();
    const file = program.getSourceFile(new URL('../sdk/types.ts', import.meta.url).pathname)!;
    const declared = new Map<string, ts.Type>();
    ts.forEachChild(file, (n) => {
      if ((ts.isInterfaceDeclaration(n) || ts.isTypeAliasDeclaration(n)) && n.name) declared.set(n.name.text, checker.getTypeAtLocation(n.name));
    });
    const tsShape = (name: string) => {
      const t = declared.get(name);
      assert.ok(t, `sdk/types.ts declares ${name}`);
      const props = checker.getPropertiesOfType(t);
      return { props: props.map((p) => p.name).sort(), required: props.filter((p) => !(p.flags & ts.SymbolFlags.Optional)).map((p) => p.name).sort() };
    };
    const pairs: [string, Json][] = [
      ['BoxJson', at('Box')], ['BoxInfo', at('CreatedBox')], ['CreateBoxBody', at('CreateBoxBody')], ['ExecBody', at('ExecBody')],
      ['ExecOutcome', at('ExecResult')], ['ExecOutput', at('ExecOutput')], ['ExecExit', at('ExecExit')], ['ForkBody', at('ForkBody')],
      ['SnapshotBody', at('SnapshotBody')], ['SnapshotInfo', at('Snapshot')], ['HookBody', at('HookBody')], ['HookStep', at('HookBody', 'steps', '[]')],
      ['HookInfo', at('Hook')], ['TaskInfo', at('Task')], ['TaskStep', at('Task', 'steps', '[]')], ['TaskBox', at('Task', 'box')],
      ['GoldenInfo', at('Golden')], ['PoolStats', at('PoolStats')], ['ApiError', at('Error')],
      ['AccountBody', at('AccountBody')], ['AccountInfo', at('Account')], ['AccountListed', at('AccountListed')], ['AccountLimits', at('AccountLimits')],
      ['KeyBody', at('KeyBody')], ['KeyCreated', at('KeyCreated')],
    ];
    for (const [name, schema] of pairs) assert.deepEqual(tsShape(name), shape(schema), `sdk/types.ts ${name} vs the OpenAPI schema`);
    const objectTypes = [...declared.keys()].filter((n) => declared.get(n)!.flags & ts.TypeFlags.Object);
    assert.deepEqual(objectTypes.filter((n) => !pairs.some(([p]) => p === n)), [], 'every wire type of sdk/types.ts is checked');
  });
});
