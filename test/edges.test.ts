import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { POOL_ACCOUNT } from '../core/boxes.ts';
import { sign, signTimestamped } from '../core/hooks.ts';
import { goldenTag, startStack, waitFor, type Stack } from './helpers.ts';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A request to the gateway with any Host header (fetch cannot set Host). */
function get(port: number, host: string, path = '/', headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { Host: host, ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** An app inside the box: echoes request headers on /headers, sets cookies for many domains on /cookies. */
const APP = `
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        host = self.headers.get('Host', '').split(':')[0]
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        if self.path.startswith('/cookies'):
            for c in ['base=1; Domain=boxd.localhost; Path=/', 'dotted=2; Domain=.boxd.localhost', 'parent=3; domain=localhost',
                      'boxd_token_other=4; Domain=.BOXD.localhost.', 'hostonly=5; Path=/; HttpOnly', 'own=6; Domain=' + host]:
                self.send_header('Set-Cookie', c)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(('0.0.0.0', int(sys.argv[1])), H).serve_forever()
`;

describe('edges: credentials, cookies, slow clients, webhooks, metrics, bodies, pool boxes', () => {
  let s: Stack;
  let port: number;
  const base = 'boxd.localhost';
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;

  const startApp = async (name: string, opts: Record<string, unknown> = {}) => {
    const created = await s.api.post('/v1/boxes').set(s.auth).send({ name, golden: 'default', ports: [3000], idleTimeoutMs: 0, ...opts }).expect(201);
    await s.api.put(`/v1/boxes/${name}/files`).query({ path: '/opt/app.py' }).set(s.auth).set('Content-Type', 'application/octet-stream').send(APP).expect(204);
    await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd: ['bash', '-c', 'nohup python3 /opt/app.py 3000 >/tmp/app.log 2>&1 &'] }).expect(200);
    const headers: Record<string, string> = created.body.previewToken ? { 'x-boxd-token': created.body.previewToken } : {};
    await waitFor(async () => (await get(port, `${name}.${base}`, '/headers', headers)).status === 200, 30_000);
    return created.body as { previewToken?: string };
  };

  before(async () => {
    s = await startStack({ BOXD_HEADERS_TIMEOUT_MS: '1000' });
    port = (s.gateway.server.address() as { port: number }).port;
  });
  after(async () => {
    await s?.close();
  });

  it('strips Authorization toward the box whenever it carries a boxd key, in any form; the app’s own tokens pass', async () => {
    await startApp('auth');
    const admin = s.config.BOXD_API_KEY!;
    const acct = await s.api.post('/v1/accounts').set(s.auth).send({ name: 'edge' }).expect(201);
    const member = (await s.api.post(`/v1/accounts/${acct.body.id}/keys`).set(s.auth).send({}).expect(201)).body.key as string;
    const boxKey = await s.gateway.accounts.issueBoxKey('default', 'auth');
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    const carrying = [
      `Bearer ${admin}`,
      `bearer ${member}`,
      `BEARER   ${boxKey}  `,
      admin,
      `token ${member}`,
      `Token token="${admin}"`,
      `Basic ${b64(`${member}:`)}`,
      `Basic ${b64(`x:${admin}`)}`,
      `basic ${b64(`someone:${boxKey}`)}`,
      `Basic ${member}`,
    ];
    for (const auth of carrying) {
      const seen = JSON.parse((await get(port, `auth.${base}`, '/headers', { Authorization: auth, 'Proxy-Authorization': auth })).body) as Record<string, string>;
      assert.equal(seen.authorization, undefined, `forwarded: ${auth.replace(/[A-Za-z0-9_-]{12,}/g, '…')}`);
      assert.equal(seen['proxy-authorization'], undefined);
    }
    for (const auth of ['Bearer the-apps-own-token-0123456789', `Basic ${b64('alice:wonderland-password')}`, 'token short']) {
      const seen = JSON.parse((await get(port, `auth.${base}`, '/headers', { Authorization: auth })).body) as Record<string, string>;
      assert.equal(seen.authorization, auth, 'an app’s own credentials pass');
    }
  });

  it('drops Set-Cookie for the base domain or a parent from box responses; the box’s own cookies pass', async () => {
    const res = await get(port, `auth.${base}`, '/cookies');
    assert.equal(res.status, 200);
    const names = ((res.headers['set-cookie'] as string[] | undefined) ?? []).map((c) => c.split('=')[0]);
    assert.deepEqual(names.sort(), ['hostonly', 'own']);
  });

  it('names the preview-token cookie per box, so one box’s cookie cannot open or shadow another’s', async () => {
    const { previewToken } = await startApp('priv', { public: false });
    assert.ok(previewToken);
    const redirect = await get(port, `priv.${base}`, `/headers?boxd_token=${previewToken}`);
    assert.equal(redirect.status, 302);
    const cookie = (redirect.headers['set-cookie'] as string[])[0]!.split(';')[0]!;
    assert.equal(cookie, `boxd_token_priv=${encodeURIComponent(previewToken)}`);
    assert.equal((await get(port, `priv.${base}`, '/headers', { Cookie: cookie })).status, 200);
    // The right token under another box's (or the old shared) cookie name opens nothing.
    assert.equal((await get(port, `priv.${base}`, '/headers', { Cookie: `boxd_token=${previewToken}` })).status, 401);
    assert.equal((await get(port, `priv.${base}`, '/headers', { Cookie: `boxd_token_auth=${previewToken}` })).status, 401);
    // No token cookie of any box reaches the app.
    const seen = JSON.parse((await get(port, `priv.${base}`, '/headers', { Cookie: `${cookie}; boxd_token_auth=x; theme=dark` })).body) as Record<string, string>;
    assert.equal(seen.cookie, 'theme=dark');
  });

  it('closes connections that do not finish their headers within BOXD_HEADERS_TIMEOUT_MS (slowloris)', async () => {
    const open = (): Promise<{ sock: Socket; closed: Promise<string> }> =>
      new Promise((resolve, reject) => {
        const sock = connect(port, '127.0.0.1', () => {
          sock.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n`); // never the blank line
          let got = '';
          sock.on('data', (c) => (got += c.toString()));
          resolve({ sock, closed: new Promise((r) => sock.on('close', () => r(got))) });
        });
        sock.on('error', () => undefined);
        sock.once('error', reject);
      });
    const slow = await Promise.all(Array.from({ length: 50 }, open));
    const drip = setInterval(() => slow.forEach(({ sock }) => !sock.destroyed && sock.write('X-More: 1\r\n')), 300);
    try {
      const timeout = new Promise<string>((_, reject) => setTimeout(() => reject(new Error('slow connections still open after 20 s')), 20_000).unref());
      const answers = await Promise.race([Promise.all(slow.map((c) => c.closed)), timeout]);
      for (const a of answers) assert.ok(a === '' || a.startsWith('HTTP/1.1 408'), `closed with ${JSON.stringify(a.slice(0, 40))}`);
    } finally {
      clearInterval(drip);
      slow.forEach(({ sock }) => sock.destroy());
    }
    const ok = await fetch(url('/healthz'));
    assert.equal(ok.status, 200, 'normal requests are still served');
  });

  it('webhooks: timestamped signatures within 5 minutes, a required delivery id, replays dropped', async () => {
    const hook = (await s.api.post('/v1/hooks').set(s.auth).send({ name: 'edge', golden: 'tiny', steps: [{ cmd: 'true' }] }).expect(201)).body as { id: string; secret: string };
    const fire = (body: string, headers: Record<string, string>) => fetch(url(`/hooks/${hook.id}`), { method: 'POST', body, headers });
    const body = '{"ref":"main"}';

    const first = await fire(body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body), 'X-Boxd-Delivery': 'dl-1' });
    assert.equal(first.status, 202);
    const task = ((await first.json()) as { task: { id: string } }).task.id;
    const replay = await fire(body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body), 'X-Boxd-Delivery': 'dl-1' });
    assert.equal(replay.status, 200);
    assert.deepEqual(await replay.json(), { task, duplicate: true });

    const noDelivery = await fire(body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body) });
    assert.equal(noDelivery.status, 400);
    assert.match(((await noDelivery.json()) as { error: { message: string } }).error.message, /X-Boxd-Delivery/);

    const old = await fire(body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body, Date.now() - 6 * 60_000), 'X-Boxd-Delivery': 'dl-2' });
    assert.equal(old.status, 401, 'a signature older than 5 minutes is refused');
    assert.match(((await old.json()) as { error: { message: string } }).error.message, /tolerance/);
    const future = await fire(body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body, Date.now() + 6 * 60_000), 'X-Boxd-Delivery': 'dl-3' });
    assert.equal(future.status, 401);
    const t = Math.floor(Date.now() / 1000);
    const wrongT = signTimestamped(hook.secret, body, (t - 10) * 1000).replace(/^t=\d+/, `t=${t}`);
    assert.equal((await fire(body, { 'X-Boxd-Signature': wrongT, 'X-Boxd-Delivery': 'dl-4' })).status, 401, 'the timestamp is signed');
    const recent = await fire(body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body, Date.now() - 60_000), 'X-Boxd-Delivery': 'dl-5' });
    assert.equal(recent.status, 202, 'a minute old is within tolerance');
    const plain = await fire(body, { 'X-Boxd-Signature': sign(hook.secret, body), 'X-Boxd-Delivery': 'dl-6' });
    assert.equal(plain.status, 202, 'sha256= signatures still work');
    const tasks = (await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks as unknown[];
    assert.equal(tasks.length, 3, 'dl-1, dl-5 and dl-6 ran; nothing else was enqueued');
    // Let the task boxes come and go before the next test counts boxes.
    await waitFor(async () => ((await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks as { state: string }[]).every((x) => x.state === 'succeeded' || x.state === 'failed'), 60_000, 200);
    await waitFor(async () => (await s.gateway.store.list('all')).every((b) => b.name === 'auth' || b.name === 'priv'), 30_000, 200);
  });

  it('webhooks: a signed body replayed under a new delivery id runs nothing; a timestamped-only hook refuses sha256=', async () => {
    const taskIds = async () => ((await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks as { id: string }[]).map((t) => t.id);
    const before = await taskIds();
    const hook = (await s.api.post('/v1/hooks').set(s.auth).send({ name: 'replay', golden: 'tiny', steps: [{ cmd: 'true' }] }).expect(201)).body as { id: string; secret: string; signature: string };
    assert.equal(hook.signature, 'any', 'both forms by default');
    const fire = (id: string, body: string, headers: Record<string, string>) => fetch(url(`/hooks/${id}`), { method: 'POST', body, headers });
    const body = '{"ref":"main","after":"replayed"}';
    const captured = sign(hook.secret, body);
    const first = await fire(hook.id, body, { 'X-Boxd-Signature': captured, 'X-Boxd-Delivery': 'rp-1' });
    assert.equal(first.status, 202);
    const task = ((await first.json()) as { task: { id: string } }).task.id;
    // The attacker has the body and its signature, and makes up a fresh delivery id.
    const replay = await fire(hook.id, body, { 'X-Boxd-Signature': captured, 'X-Boxd-Delivery': 'rp-attacker-2' });
    assert.equal(replay.status, 200);
    assert.deepEqual(await replay.json(), { task, duplicate: true }, 'the replay answers the first task');
    const viaGithub = await fire(hook.id, body, { 'X-Hub-Signature-256': captured, 'X-GitHub-Delivery': 'rp-attacker-3' });
    assert.deepEqual(await viaGithub.json(), { task, duplicate: true });
    // Another body is another delivery; a timestamped signature of the same body is too.
    const other = await fire(hook.id, '{"ref":"dev"}', { 'X-Boxd-Signature': sign(hook.secret, '{"ref":"dev"}'), 'X-Boxd-Delivery': 'rp-4' });
    assert.equal(other.status, 202);
    const stamped = await fire(hook.id, body, { 'X-Boxd-Signature': signTimestamped(hook.secret, body), 'X-Boxd-Delivery': 'rp-5' });
    assert.equal(stamped.status, 202);

    const strict = (await s.api.post('/v1/hooks').set(s.auth).send({ name: 'strict', golden: 'tiny', steps: [{ cmd: 'true' }], signature: 'timestamped' }).expect(201)).body as { id: string; secret: string; signature: string };
    assert.equal(strict.signature, 'timestamped');
    const listed = (await s.api.get('/v1/hooks').set(s.auth).expect(200)).body.hooks as { id: string; signature: string }[];
    assert.equal(listed.find((h) => h.id === strict.id)?.signature, 'timestamped');
    const bare = await fire(strict.id, body, { 'X-Boxd-Signature': sign(strict.secret, body), 'X-Boxd-Delivery': 'st-1' });
    assert.equal(bare.status, 401, 'a valid sha256= signature is refused');
    assert.match(((await bare.json()) as { error: { code: string; message: string } }).error.message, /only timestamped signatures.*t=<unix seconds>,v1=/);
    const good = await fire(strict.id, body, { 'X-Boxd-Signature': signTimestamped(strict.secret, body), 'X-Boxd-Delivery': 'st-2' });
    assert.equal(good.status, 202);
    await s.api.post('/v1/hooks').set(s.auth).send({ name: 'bad', golden: 'tiny', steps: [{ cmd: 'true' }], signature: 'none' }).expect(400);

    const added = (await taskIds()).filter((id) => !before.includes(id));
    assert.equal(added.length, 4, 'rp-1, rp-4, rp-5 and st-2 ran; the replays and the refused bare signature queued nothing');
    await waitFor(async () => ((await s.api.get('/v1/tasks').set(s.auth).expect(200)).body.tasks as { state: string }[]).every((x) => x.state === 'succeeded' || x.state === 'failed'), 60_000, 200);
    await waitFor(async () => (await s.gateway.store.list('all')).every((b) => b.name === 'auth' || b.name === 'priv'), 30_000, 200);
  });

  it('/metrics needs an admin key and counts boxes from counters, leaving pool boxes out', async () => {
    assert.equal((await fetch(url('/metrics'))).status, 401);
    const metric = async (state: string) => {
      const text = (await s.api.get('/metrics').set(s.auth).expect(200)).text;
      return Number(new RegExp(`^boxd_boxes\\{state="${state}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
    };
    const running = await metric('running');
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'm1', golden: 'tiny' }).expect(201);
    await s.api.post('/v1/boxes').set(s.auth).send({ name: 'm2', golden: 'tiny' }).expect(201);
    assert.equal(await metric('running'), running + 2);
    const suspended = await metric('suspended');
    await s.api.post('/v1/boxes/m1/suspend').set(s.auth).expect(200);
    assert.equal(await metric('running'), running + 1);
    assert.equal(await metric('suspended'), suspended + 1);
    // A warm-pool box (the pool's account) is not counted in any state.
    await s.gateway.store.create({ name: 'pool-tiny-edge', account: POOL_ACCOUNT, golden: 'tiny', imageRef: '', ports: [8080], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 64, hostId: s.config.BOXD_HOST_ID }, -1);
    await s.gateway.store.transition('pool-tiny-edge', ['creating'], 'running');
    await s.gateway.store.transition('pool-tiny-edge', ['running'], 'suspended');
    assert.equal(await metric('suspended'), suspended + 1);
    assert.equal(await metric('creating'), 0);
    await s.gateway.store.remove('pool-tiny-edge');
    await s.api.delete('/v1/boxes/m1').set(s.auth).expect(204);
    await s.api.delete('/v1/boxes/m2').set(s.auth).expect(204);
    assert.equal(await metric('running'), running);
    assert.equal(await metric('suspended'), suspended);
  });

  it('refuses a JSON body sent without Content-Type: application/json with 415 naming the header', async () => {
    for (const headers of [{ 'Content-Type': 'text/plain' }, { 'Content-Type': 'application/x-www-form-urlencoded' }, {} as Record<string, string>]) {
      const res = await fetch(url('/v1/boxes'), { method: 'POST', headers: { Authorization: s.auth.Authorization, ...headers }, body: new Blob([JSON.stringify({ name: 'typed', golden: 'tiny' })]) });
      assert.equal(res.status, 415, JSON.stringify(headers));
      const err = ((await res.json()) as { error: { code: string; message: string } }).error;
      assert.equal(err.code, 'UNSUPPORTED_MEDIA_TYPE');
      assert.match(err.message, /Content-Type: application\/json/);
    }
    await s.api.get('/v1/boxes/typed').set(s.auth).expect(404);
    const typed = await s.api.post('/v1/boxes').set(s.auth).set('Content-Type', 'application/json; charset=utf-8').send(JSON.stringify({ name: 'typed', golden: 'tiny' })).expect(201);
    assert.equal(typed.body.name, 'typed');
    await s.api.post('/v1/boxes/typed/suspend').set(s.auth).expect(200); // no body, no Content-Type: fine
    await s.api.delete('/v1/boxes/typed').set(s.auth).expect(204);
  });

  it('keeps warm-pool boxes invisible: a preview of pool-… is a 404 page and wakes nothing; the API does not see them', async () => {
    const name = 'pool-tiny-hidden';
    await s.gateway.store.create({ name, account: POOL_ACCOUNT, golden: 'tiny', imageRef: goldenTag('tiny'), ports: [8080], public: true, env: {}, idleTimeoutMs: 0, cpus: 1, memoryMb: 64, hostId: s.config.BOXD_HOST_ID }, -1);
    await s.gateway.hosts.call(s.config.BOXD_HOST_ID, { op: 'create', name });
    await s.gateway.agents.json(s.config.BOXD_HOST_ID, { method: 'POST', path: `/v1/boxes/${name}/suspend` });
    const page = await get(port, `${name}.${base}`, '/');
    assert.equal(page.status, 404);
    assert.match(page.headers['content-type'] as string, /text\/html/);
    assert.equal((await get(port, `8080.${name}.${base}`, '/')).status, 404);
    assert.equal((await s.gateway.store.get(name))?.state, 'suspended', 'not woken');
    await s.api.get(`/v1/boxes/${name}`).set(s.auth).expect(404);
    await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd: ['true'] }).expect(404);
    assert.ok(!(await s.api.get('/v1/boxes').set(s.auth).expect(200)).body.boxes.some((b: { name: string }) => b.name === name));
    await s.gateway.hosts.call(s.config.BOXD_HOST_ID, { op: 'destroy', name });
  });
});
