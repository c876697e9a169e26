/**
 * What the density benches (bench/density.ts, bench/density-passes.ts) share: a bridge network
 * of the run's own (the shared `boxd` bridge may hold other boxes, and a Linux bridge takes at most
 * 1,024 ports), suspended `tiny` boxes serving HTTP on it, and their removal — at the end, on
 * Ctrl-C, or on failure, once.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import Docker from 'dockerode';
import { benchStack, type BenchStack } from './stack.ts';

export const docker = new Docker({ socketPath: '/var/run/docker.sock' });

export class DensityBoxes {
  readonly network: string;
  readonly bridge: string;
  stack: BenchStack | undefined;
  private closing: Promise<void> | undefined;

  constructor(tag: string) {
    this.network = `${tag}${randomBytes(3).toString('hex')}`;
    this.bridge = `${this.network}0`;
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        console.error(`\n  ${sig}: stopping`);
        void this.cleanup().finally(() => process.exit(130));
      });
    }
  }

  /** Gateway and host in this process, boxes on this run's network, no pool, no idle suspend. */
  async start(name: string, maxBoxes: number): Promise<BenchStack> {
    this.stack = await benchStack(name, { BOXD_POOL: 'false', BOXD_MAX_BOXES: String(maxBoxes + 10), BOXD_IDLE_TIMEOUT_MS: '0', BOXD_NETWORK: this.network });
    return this.stack;
  }

  /** Creates box `name` (busybox httpd on 8080) and suspends it; the create's answer time in ms. */
  async suspendedBox(name: string): Promise<number> {
    const { api } = this.stack!;
    const t = performance.now();
    await api('POST', '/v1/boxes', { name, golden: 'tiny', ports: [8080], idleTimeoutMs: 0 });
    const createMs = performance.now() - t;
    await api('POST', `/v1/boxes/${name}/exec`, { cmd: ['sh', '-c', 'echo ok > /tmp/index.html && httpd -p 8080 -h /tmp'] });
    await api('POST', `/v1/boxes/${name}/suspend`);
    return createMs;
  }

  /**
   * Removes containers through the host's runtime, six at a time: it thaws a frozen box first, and
   * a thousand parallel force-removes of frozen containers once coincided with dockerd and
   * containerd going down.
   */
  async remove(containers: string[]): Promise<void> {
    const names = [...containers];
    const runtime = this.stack!.host.runtime;
    let done = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        for (let name = names.shift(); name; name = names.shift()) {
          await runtime.destroy(name).catch((e) => console.error(`  removing ${name}: ${(e as Error).message.slice(0, 200)}`));
          if (++done % 200 === 0) console.log(`    ${done} removed`);
        }
      }),
    );
  }

  /** Removes every box of the run, its network and the host rule for its bridge. Once. */
  cleanup(): Promise<void> {
    this.closing ??= (async () => {
      console.log('  cleaning up: removing boxes…');
      const stack = this.stack;
      if (stack) {
        const mine = await docker.listContainers({ all: true, filters: { label: [`boxd.instance=${stack.config.BOXD_PREFIX}`] } }).catch(() => []);
        await this.remove(mine.map((c) => (c.Names[0] ?? c.Id).replace(/^\//, '')));
      }
      await stack?.close().catch((e) => console.error(`  close: ${(e as Error).message}`));
      const left = await docker.listContainers({ all: true, filters: { network: [this.network] } }).catch(() => []);
      for (const c of left) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
      await docker.getNetwork(this.network).remove().catch(() => undefined);
      await new Promise((r) => execFile('iptables', ['-w', '-D', 'INPUT', '-i', this.bridge, '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP'], r));
      console.log('  cleaned up');
    })();
    return this.closing;
  }
}

/** `n` distinct elements of `all`, chosen at random. */
export function pick<T>(all: T[], n: number): T[] {
  const a = [...all];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, n);
}
