import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { RuntimeError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { LINK_LOCAL, PRIVATE_RANGES, parseAllowEntry, type NetworkPolicy } from '../core/network-policy.ts';

/** The chain every boxd instance shares, jumped from Docker's DOCKER-USER (FORWARD) chain. */
export const EGRESS_CHAIN = 'BOXD-EGRESS';
const REJECT = ['-j', 'REJECT', '--reject-with', 'icmp-admin-prohibited'];

/**
 * Egress policies as iptables rules. Outbound traffic of a box crosses the host's FORWARD chain,
 * whose first stop is DOCKER-USER; boxd puts one jump there to `BOXD-EGRESS`, and in it one rule
 * per box: `-s <box ip> -i <bridge> -m comment --comment boxd:<instance>:<container> -j BOXD-E-<hash>`,
 * the box's own chain holding its policy. Allowed traffic RETURNs (Docker's own rules then apply,
 * ICC off included); refused traffic gets REJECT (admin-prohibited), so a blocked connect fails at
 * once instead of hanging. Replies to inbound connections (previews) are always let through.
 *
 * Traffic to the host itself goes through INPUT, not FORWARD: DockerRuntime.prepare refuses it
 * there for the whole bridge. Rules carry the instance prefix so parallel instances (tests)
 * only ever touch their own.
 */
export class Egress {
  constructor(
    private readonly o: {
      /** Linux name of the boxes' bridge. */
      bridge: string;
      /** Extra CIDRs `open` refuses. */
      deny: string[];
      log: Logger;
    },
  ) {}

  /** Chain of one box: short (iptables allows 28 characters) and stable for its container. */
  chainOf(container: string): string {
    return `BOXD-E-${createHash('sha256').update(container).digest('hex').slice(0, 16)}`;
  }

  private comment(instance: string, container: string): string {
    return `boxd:${instance}:${container}`;
  }

  /** Creates BOXD-EGRESS and its jump from DOCKER-USER when missing. Idempotent, safe to race. */
  async prepare(): Promise<void> {
    if (!(await ok(['-S', EGRESS_CHAIN]))) await ok(['-N', EGRESS_CHAIN]);
    if (!(await ok(['-C', 'DOCKER-USER', '-j', EGRESS_CHAIN]))) {
      if (!(await ok(['-N', 'DOCKER-USER'])) && !(await ok(['-S', 'DOCKER-USER']))) {
        throw new RuntimeError('iptables has no DOCKER-USER chain and it cannot be made: egress policies cannot be enforced');
      }
      if (!(await ok(['-I', 'DOCKER-USER', '1', '-j', EGRESS_CHAIN]))) {
        throw new RuntimeError(`could not add the jump from DOCKER-USER to ${EGRESS_CHAIN}`);
      }
    }
  }

  /** The rules of one box's chain for `policy`, as iptables-restore lines. */
  rules(chain: string, policy: NetworkPolicy): string[] {
    const lines = [`-A ${chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN`, `-A ${chain} -d ${LINK_LOCAL} ${REJECT.join(' ')}`];
    if (policy === 'open') {
      for (const cidr of [...PRIVATE_RANGES, ...this.o.deny]) if (cidr !== LINK_LOCAL) lines.push(`-A ${chain} -d ${cidr} ${REJECT.join(' ')}`);
      return lines;
    }
    if (policy !== 'none') {
      for (const entry of policy.allow) {
        const rule = parseAllowEntry(entry);
        if (!rule) continue; // validated at the API; never reached
        if (rule.port === undefined) lines.push(`-A ${chain} -d ${rule.cidr} -j RETURN`);
        else for (const proto of ['tcp', 'udp']) lines.push(`-A ${chain} -d ${rule.cidr} -p ${proto} --dport ${rule.port} -j RETURN`);
      }
    }
    lines.push(`-A ${chain} ${REJECT.join(' ')}`);
    return lines;
  }

  /**
   * Installs `policy` for the box `container` at `ip`, replacing its previous rules and any stale
   * rule for the same address (an address Docker handed out again). `instance` is the box's
   * prefix, kept in the rule's comment. One iptables-restore: atomic.
   */
  async apply(instance: string, container: string, ip: string, policy: NetworkPolicy): Promise<void> {
    const chain = this.chainOf(container);
    // A concurrent destroy may delete a stale rule between the listing and the batch (the batch
    // then fails as a whole and changes nothing): list again and retry.
    for (let attempt = 1; ; attempt++) {
      const stale = (await this.listed()).filter((r) => r.container === container || (r.source === `${ip}/32` && r.bridge === this.o.bridge));
      const batch = [
        '*filter',
        `:${chain} - [0:0]`, // declared again: flushed
        ...stale.map((r) => r.line.replace(/^-A /, '-D ')),
        ...this.rules(chain, policy),
        `-A ${EGRESS_CHAIN} -s ${ip}/32 -i ${this.o.bridge} -m comment --comment "${this.comment(instance, container)}" -j ${chain}`,
        'COMMIT',
        '',
      ];
      try {
        await restore(batch.join('\n'));
      } catch (e) {
        if (attempt >= 3) throw e;
        continue;
      }
      // Chains of stale rules that belonged to other containers are now unreferenced.
      for (const r of stale) if (r.target !== chain) await this.dropChain(r.target);
      return;
    }
  }

  /** Removes a box's rules and chain (container names are unique on an engine). Idempotent. */
  async remove(container: string): Promise<void> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      const mine = (await this.listed()).filter((r) => r.container === container);
      if (!mine.length) break;
      try {
        await restore(['*filter', ...mine.map((r) => r.line.replace(/^-A /, '-D ')), 'COMMIT', ''].join('\n'));
        break;
      } catch (e) {
        if (attempt === 3) this.o.log.warn({ err: String(e), container }, 'could not remove egress rules');
      }
    }
    await this.dropChain(this.chainOf(container));
  }

  /** Removes the rules of `instance`'s containers that no longer exist (`live`: names that do). */
  async sweep(instance: string, live: Set<string>): Promise<string[]> {
    const gone = new Set<string>();
    for (const r of await this.listed()) {
      if (r.instance === instance && r.container && !live.has(r.container)) gone.add(r.container);
    }
    for (const c of gone) await this.remove(c);
    return [...gone];
  }

  /** Rules in BOXD-EGRESS of every instance, parsed. */
  async listed(): Promise<{ line: string; source?: string; bridge?: string; instance?: string; container?: string; target: string }[]> {
    const text = await iptables(['-S', EGRESS_CHAIN]).catch(() => '');
    return text
      .split('\n')
      .filter((l) => l.startsWith(`-A ${EGRESS_CHAIN} `))
      .map((line) => {
        const comment = /--comment "?boxd:([^:"\s]+):([^"\s]+)"?/.exec(line);
        return {
          line,
          source: /-s (\S+)/.exec(line)?.[1],
          bridge: /-i (\S+)/.exec(line)?.[1],
          instance: comment?.[1],
          container: comment?.[2],
          target: /-j (\S+)\s*$/.exec(line)?.[1] ?? '',
        };
      });
  }

  private async dropChain(chain: string): Promise<void> {
    if (!chain.startsWith('BOXD-E-')) return;
    if (await ok(['-F', chain])) await ok(['-X', chain]);
  }
}

function iptables(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('iptables', ['-w', ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new RuntimeError(`iptables ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    ),
  );
}

function ok(args: string[]): Promise<boolean> {
  return iptables(args).then(
    () => true,
    () => false,
  );
}

function restore(batch: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('iptables-restore', ['-w', '--noflush'], { timeout: 30_000 }, (err, _out, stderr) =>
      err ? reject(new RuntimeError(`iptables-restore: ${stderr.trim() || err.message}`)) : resolve(),
    );
    child.stdin?.end(batch);
  });
}
