import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { DockerRuntime } from '../host/docker-runtime.ts';
import { EGRESS_CHAIN, Egress } from '../host/egress.ts';
import { networkPolicySchema, parseAllowEntry } from '../core/network-policy.ts';
import { manifestSchema } from '../golden-images/definitions.ts';
import { Redis } from 'ioredis';
import { BoxStore } from '../core/boxes.ts';
import { reconcile } from '../host/reconcile.ts';
import { docker, log, startStack, waitFor, type Stack } from './helpers.ts';

/**
 * Egress policies on the real stack. Every probe aims at a listener this test starts: a network
 * namespace it makes (a veth pair in a private /30), or another box. Nothing else is contacted.
 */
const ipt = (...args: string[]) => execFileSync('iptables', ['-w', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Connects from the host and returns what the listener sent. */
function tcpRead(ip: string, port: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const c = connect(port, ip);
    let data = '';
    c.setTimeout(5000, () => c.destroy(new Error('timeout')));
    c.on('data', (d) => (data += d));
    c.on('end', () => resolve(data));
    c.on('error', reject);
  });
}

/** A network namespace with one address in 10.213.0.0/16, reachable from the host through a veth pair. */
class TestNamespace {
  readonly tag = randomBytes(3).toString('hex');
  readonly ns = `bxe-${this.tag}`;
  readonly hostIf = `vbh${this.tag}`;
  readonly nsIf = `vbn${this.tag}`;
  readonly hostIp: string;
  readonly nsIp: string;
  private listeners: ChildProcess[] = [];

  constructor() {
    const routes = sh('ip', ['-4', 'route', 'show']);
    let third: number;
    do third = Math.floor(Math.random() * 250) + 1;
    while (routes.includes(`10.213.${third}.`));
    this.hostIp = `10.213.${third}.1`;
    this.nsIp = `10.213.${third}.2`;
  }

  up(): void {
    sh('ip', ['netns', 'add', this.ns]);
    sh('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf]);
    sh('ip', ['link', 'set', this.nsIf, 'netns', this.ns]);
    sh('ip', ['addr', 'add', `${this.hostIp}/30`, 'dev', this.hostIf]);
    sh('ip', ['link', 'set', this.hostIf, 'up']);
    sh('ip', ['netns', 'exec', this.ns, 'ip', 'addr', 'add', `${this.nsIp}/30`, 'dev', this.nsIf]);
    sh('ip', ['netns', 'exec', this.ns, 'ip', 'link', 'set', this.nsIf, 'up']);
    sh('ip', ['netns', 'exec', this.ns, 'ip', 'link', 'set', 'lo', 'up']);
    sh('ip', ['netns', 'exec', this.ns, 'ip', 'route', 'add', 'default', 'via', this.hostIp]);
  }

  /** A TCP listener in the namespace answering `pong <port>` to every connection. */
  async listen(port: number): Promise<void> {
    const code = `require('net').createServer((s) => s.end('pong ${port}\\n')).listen(${port}, '${this.nsIp}', () => console.log('up'))`;
    const child = spawn('ip', ['netns', 'exec', this.ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.listeners.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`listener exited ${c}`)));
    });
  }

  down(): void {
    for (const l of this.listeners) l.kill('SIGKILL');
    for (const args of [['link', 'del', this.hostIf], ['netns', 'del', this.ns]]) {
      try {
        sh('ip', args);
      } catch {
        /* already gone */
      }
    }
  }
}

describe('egress policy parsing and rules (pure)', () => {
  it('parses and normalises allow entries, refuses the rest', () => {
    assert.deepEqual(parseAllowEntry('10.1.2.3/8:443'), { cidr: '10.0.0.0/8', port: 443 });
    assert.deepEqual(parseAllowEntry('1.2.3.4'), { cidr: '1.2.3.4/32' });
    assert.deepEqual(parseAllowEntry('0.0.0.0/0'), { cidr: '0.0.0.0/0' });
    for (const bad of ['10.0.0.0/33', '256.0.0.1', '10.0.0.0/8:0', '10.0.0.0/8:65536', 'a.b.c.d', '::1', '10.0.0/8', ' ']) {
      assert.equal(parseAllowEntry(bad), undefined, bad);
    }
    assert.equal(networkPolicySchema.safeParse({ allow: ['10.0.0.0/8:443'] }).success, true);
    assert.equal(networkPolicySchema.safeParse({ allow: ['10.0.0.0/8:443'], extra: 1 }).success, false);
    assert.equal(networkPolicySchema.safeParse('open').success, true);
  });

  it('golden manifests accept diskMb and network', () => {
    const m = manifestSchema.parse({ base: 'busybox', diskMb: 2048, network: { allow: ['10.0.0.0/8:443'] } });
    assert.equal(m.diskMb, 2048);
    assert.deepEqual(m.network, { allow: ['10.0.0.0/8:443'] });
    assert.equal('network' in manifestSchema.parse({ base: 'busybox' }), false, 'absent stays absent (golden tags unchanged)');
    assert.equal(manifestSchema.safeParse({ base: 'busybox', network: 'closed' }).success, false);
  });

  it('builds the chain of each policy', () => {
    const e = new Egress({ bridge: 'boxd0', deny: ['8.8.0.0/16'], log });
    const open = e.rules('C', 'open');
    assert.match(open[0]!, /ESTABLISHED -j RETURN$/);
    assert.ok(open.includes('-A C -d 10.0.0.0/8 -j REJECT --reject-with icmp-admin-prohibited'));
    assert.ok(open.includes('-A C -d 8.8.0.0/16 -j REJECT --reject-with icmp-admin-prohibited'), 'operator deny list');
    assert.ok(!open.some((l) => /^-A C -j REJECT/.test(l)), 'open ends without a catch-all');
    assert.equal(e.rules('C', 'none').at(-1), '-A C -j REJECT --reject-with icmp-admin-prohibited');
    const allow = e.rules('C', { allow: ['1.2.3.0/24:53'] });
    assert.ok(allow.includes('-A C -d 1.2.3.0/24 -p tcp --dport 53 -j RETURN') && allow.includes('-A C -d 1.2.3.0/24 -p udp --dport 53 -j RETURN'));
    assert.ok(allow.indexOf('-A C -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited') < allow.indexOf('-A C -d 1.2.3.0/24 -p tcp --dport 53 -j RETURN'), 'link-local first');
    assert.ok(e.chainOf('t-abc-some-long-container-name-0123456789').length <= 28);
  });
});

describe('egress policies (iptables, real Docker)', () => {
  let s: Stack;
  const ns = new TestNamespace();
  const P_OPEN = 7301;
  const P_OTHER = 7302;

  const exec = async (name: string, cmd: string[]) =>
    (await s.api.post(`/v1/boxes/${name}/exec`).set(s.auth).send({ cmd, timeoutMs: 20_000 }).expect(200)).body as { exitCode: number; stdout: string; stderr: string };
  /** Connects from a box to ip:port; the answer, or undefined when the connection failed. */
  const probe = async (box: string, ip: string, port: number): Promise<string | undefined> => {
    const r = await exec(box, ['sh', '-c', `nc -w 5 ${ip} ${port} </dev/null`]);
    return r.exitCode === 0 && r.stdout.includes('pong') ? r.stdout.trim() : undefined;
  };
  const create = async (name: string, network?: unknown) =>
    (await s.api.post('/v1/boxes').set(s.auth).send({ name, golden: 'tiny', ...(network === undefined ? {} : { network }) }).expect(201)).body;
  const container = (box: string) => `${s.config.BOXD_PREFIX}-${box}`;
  const ruleOf = (box: string) => ipt('-S', EGRESS_CHAIN).split('\n').find((l) => l.includes(`boxd:${s.config.BOXD_PREFIX}:${container(box)}`));
  const chainRules = (chain: string) => ipt('-S', chain);
  const ipOf = async (box: string) => (await docker.getContainer(container(box)).inspect()).NetworkSettings.Networks[s.config.BOXD_NETWORK]!.IPAddress;

  before(async () => {
    ns.up();
    await ns.listen(P_OPEN);
    await ns.listen(P_OTHER);
    s = await startStack({ BOXD_MAX_BOXES: '20', BOXD_BOX_DISK_MB: '0' });
  });
  after(async () => {
    await s?.close();
    ns.down();
  });

  it('the namespace listener answers from the host (the fixture works)', async () => {
    const answer = await tcpRead(ns.nsIp, P_OPEN);
    assert.equal(answer, `pong ${P_OPEN}\n`);
  });

  it('open (default): private ranges, link-local and other boxes are refused; the rules say so', async () => {
    const box = await create('open-1');
    assert.equal(box.network, 'open');
    assert.equal(await probe('open-1', ns.nsIp, P_OPEN), undefined, 'a private address is refused');

    const rule = ruleOf('open-1');
    assert.ok(rule, 'a rule for the box in BOXD-EGRESS');
    assert.match(rule, new RegExp(`-s ${(await ipOf('open-1')).replace(/\./g, '\\.')}/32`));
    const chain = /-j (\S+)$/.exec(rule)![1]!;
    const rules = chainRules(chain);
    for (const cidr of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '100.64.0.0/10']) {
      assert.match(rules, new RegExp(`-d ${cidr.replace(/\./g, '\\.')} -j REJECT`), `${cidr} refused`);
    }
    assert.doesNotMatch(rules, /-A \S+ -j REJECT/, 'no catch-all refusal: the internet stays open');
    assert.match(ipt('-S', 'DOCKER-USER'), new RegExp(`-j ${EGRESS_CHAIN}`));

    // Another box listening: unreachable from this one.
    await create('listener');
    await exec('listener', ['sh', '-c', `echo 'echo pong 9000' > /pong.sh && chmod +x /pong.sh && (nc -ll -p 9000 -e /pong.sh </dev/null >/dev/null 2>&1 &)`]);
    const lip = await ipOf('listener');
    // The listener answers the host (so a failed probe below is the policy, not the listener).
    await waitFor(() => tcpRead(lip, 9000).then((a) => a === 'pong 9000\n', () => false), 10_000);
    assert.equal(await probe('open-1', lip, 9000), undefined, 'box-to-box is refused');
  });

  it('an allowlist lets exactly its CIDR:port through; link-local stays refused', async () => {
    const box = await create('allow-1', { allow: [`${ns.nsIp}/32:${P_OPEN}`, '203.0.113.0/24'] });
    assert.deepEqual(box.network, { allow: [`${ns.nsIp}/32:${P_OPEN}`, '203.0.113.0/24'] });
    assert.equal(await probe('allow-1', ns.nsIp, P_OPEN), `pong ${P_OPEN}`, 'the listed port answers');
    assert.equal(await probe('allow-1', ns.nsIp, P_OTHER), undefined, 'another port of the same address is refused');

    const chain = /-j (\S+)$/.exec(ruleOf('allow-1')!)![1]!;
    const rules = chainRules(chain);
    assert.match(rules, new RegExp(`-d ${ns.nsIp.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport ${P_OPEN} -j RETURN`));
    assert.match(rules, /-d 203\.0\.113\.0\/24 -j RETURN/);
    assert.match(rules, /-d 169\.254\.0\.0\/16 -j REJECT/);
    assert.match(rules.trim().split('\n').at(-1)!, /-j REJECT/, 'everything else is refused');

    // A whole /30 without a port: both listeners answer.
    await create('allow-2', { allow: [`${ns.nsIp.replace(/\.2$/, '.0')}/30`] });
    assert.equal(await probe('allow-2', ns.nsIp, P_OTHER), `pong ${P_OTHER}`);
  });

  it('none refuses every new outbound connection', async () => {
    const box = await create('none-1', 'none');
    assert.equal(box.network, 'none');
    assert.equal(await probe('none-1', ns.nsIp, P_OPEN), undefined);
    const rules = chainRules(/-j (\S+)$/.exec(ruleOf('none-1')!)![1]!);
    assert.match(rules.trim().split('\n').at(-1)!, /^-A \S+ -j REJECT/);
  });

  it('a fork keeps its parent\'s policy', async () => {
    const child = (await s.api.post('/v1/boxes/allow-1/fork').set(s.auth).send({ name: 'allow-1-child' }).expect(201)).body;
    assert.deepEqual(child.network, { allow: [`${ns.nsIp}/32:${P_OPEN}`, '203.0.113.0/24'] });
    assert.equal(await probe('allow-1-child', ns.nsIp, P_OPEN), `pong ${P_OPEN}`);
    assert.equal(await probe('allow-1-child', ns.nsIp, P_OTHER), undefined);
  });

  it('rejects bad policies with 400', async () => {
    for (const network of [{ allow: ['10.0.0.0/33'] }, { allow: ['999.1.1.1/32'] }, { allow: ['10.0.0.0/8:70000'] }, { allow: ['example.com'] }, { allow: ['::1/128'] }, 'closed', { deny: [] }, 7]) {
      const r = await s.api.post('/v1/boxes').set(s.auth).send({ golden: 'tiny', network }).expect(400);
      assert.equal(r.body.error.code, 'INVALID_REQUEST', JSON.stringify(network));
    }
  });

  it('destroy removes the box\'s rules and chain', async () => {
    const rule = ruleOf('none-1')!;
    const chain = /-j (\S+)$/.exec(rule)![1]!;
    await s.api.delete('/v1/boxes/none-1').set(s.auth).expect(204);
    assert.equal(ruleOf('none-1'), undefined);
    assert.throws(() => ipt('-S', chain), 'the chain is gone');
  });

  it('host start-up removes stale rules of its own prefix only', async () => {
    const egress = new Egress({ bridge: `${s.config.BOXD_NETWORK}0`, deny: [], log });
    const otherPrefix = `t-other-${randomBytes(3).toString('hex')}`;
    // 192.0.2.x addresses: never handed to a box on this bridge.
    await egress.apply(s.config.BOXD_PREFIX, `${s.config.BOXD_PREFIX}-ghost`, '192.0.2.201', 'none');
    await egress.apply(otherPrefix, `${otherPrefix}-ghost`, '192.0.2.202', 'none');
    try {
      const runtime = new DockerRuntime(docker, { network: s.config.BOXD_NETWORK, ociRuntime: 'runc', maxFileBytes: 1 << 20, prefix: s.config.BOXD_PREFIX, log });
      await runtime.prepare();
      const rules = ipt('-S', EGRESS_CHAIN);
      assert.doesNotMatch(rules, new RegExp(`${s.config.BOXD_PREFIX}-ghost`), 'the stale rule of this prefix is gone');
      assert.match(rules, new RegExp(`${otherPrefix}-ghost`), 'another prefix\'s rule is left alone');
      assert.ok(ruleOf('open-1'), 'live boxes keep their rules');
    } finally {
      await egress.sweep(otherPrefix, new Set());
    }
    assert.doesNotMatch(ipt('-S', EGRESS_CHAIN), new RegExp(otherPrefix));
  });

  it('a starting host puts back the rules of the boxes it keeps (after an iptables flush)', async () => {
    const egress = new Egress({ bridge: `${s.config.BOXD_NETWORK}0`, deny: [], log });
    await egress.remove(container('open-1'));
    assert.equal(ruleOf('open-1'), undefined, 'rules lost');
    const redis = new Redis(s.config.REDIS_URL);
    try {
      await reconcile({
        store: new BoxStore(redis, s.config.BOXD_PREFIX),
        runtime: s.host.runtime,
        labels: { 'boxd.managed': 'true', 'boxd.instance': s.config.BOXD_PREFIX, 'boxd.host': s.config.BOXD_HOST_ID },
        spec: (b) => s.host.lifecycle.spec(b),
        idOf: (b) => s.host.lifecycle.idOf(b),
        hostId: s.config.BOXD_HOST_ID,
        log,
      });
    } finally {
      await redis.quit();
    }
    assert.ok(ruleOf('open-1'), 'the rule is back');
    assert.equal(await probe('open-1', ns.nsIp, P_OPEN), undefined, 'and enforced');
  });
});
