import { Agent, request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import { BoxdError, fromWire, UnavailableError } from '../core/errors.ts';
import { HOST_ALIVE_MS, type HostInfo } from '../core/jobs.ts';
import { Keys } from '../core/keys.ts';

/** How long a call waits for a starting host to advertise its agent, in ms. */
const STARTING_WAIT_MS = 5000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Target {
  addr: string;
  port: number;
  at: number;
}

export interface AgentRequest {
  method: string;
  path: string;
  headers?: Record<string, string | number>;
  /** A buffer is sent (and may be re-sent after a stale connection); a stream is piped once. */
  body?: Buffer | Readable;
  /**
   * Not idempotent (an exec): sent again only when the connection was refused, never after a
   * reset, since the host may have run it before it went away. At most once, not at least once.
   */
  once?: boolean;
}

/**
 * The gateway's side of the data plane: finds the host agent that owns a box (its heartbeat
 * record in Redis gives the address and port) and calls it over keep-alive connections with
 * the cluster secret. A host that restarted on another port is re-read on a connection error.
 */
export class HostAgents {
  private readonly targets = new Map<string, Target>();
  // Idle sockets are dropped well before the agent's own 65 s keep-alive timeout closes them, so a
  // pooled socket is not found dead on reuse (which an exec, sent at most once, would not survive).
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 32, keepAliveMsecs: 1000, timeout: 30_000 });

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly secret: string,
    /** How long a host's address is trusted without re-reading its heartbeat, in ms. */
    private readonly ttlMs = 5000,
    /** BOXD_HOST_DEAD_MS: an older heartbeat means the host is dead. */
    private readonly deadMs = HOST_ALIVE_MS,
  ) {}

  /** The agent address of `hostId`; UnavailableError when the host is silent or too old to have one. */
  async target(hostId: string, fresh = false): Promise<Target> {
    const hit = this.targets.get(hostId);
    if (hit && !fresh && Date.now() - hit.at < this.ttlMs) return hit;
    let info: HostInfo | undefined;
    // A host that is starting beats (and takes its boxes back) before its agent listens: give it
    // a few seconds to advertise the agent's port.
    for (const until = Date.now() + STARTING_WAIT_MS; ; await sleep(100)) {
      const raw = await this.redis.hget(new Keys(this.prefix).hosts, hostId);
      info = raw ? (JSON.parse(raw) as HostInfo) : undefined;
      if (!info || Date.now() - info.heartbeatAt > this.deadMs) {
        this.targets.delete(hostId);
        throw new UnavailableError(`host ${hostId}, which runs this box, is not answering`);
      }
      if (info.agentPort) break;
      if (Date.now() > until) throw new UnavailableError(`host ${hostId} has no data-plane endpoint yet (starting, or an older version)`);
    }
    const t = { addr: info.addr ?? '127.0.0.1', port: info.agentPort, at: Date.now() };
    this.targets.set(hostId, t);
    return t;
  }

  /** The address a host publishes its boxes' ports on. */
  async addrOf(hostId: string): Promise<string> {
    return (await this.target(hostId)).addr;
  }

  /**
   * Sends a request to a host's agent and returns its response (any status). A connection
   * refused or reset before an answer re-reads the host's address and, for a replayable
   * body, tries once more. `signal` aborting destroys the request (the agent then sees the
   * caller go away).
   */
  async request(hostId: string, r: AgentRequest, signal?: AbortSignal): Promise<IncomingMessage> {
    for (let attempt = 0; ; attempt++) {
      const t = await this.target(hostId, attempt > 0);
      try {
        return await this.once(t, r, signal);
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        const replayable = !r.body || Buffer.isBuffer(r.body);
        const retryOn = r.once ? ['ECONNREFUSED'] : ['ECONNREFUSED', 'ECONNRESET', 'EPIPE'];
        if (attempt === 0 && replayable && retryOn.includes(code)) continue;
        if (r.once && code !== 'ECONNREFUSED' && !(e instanceof BoxdError)) {
          throw new BoxdError('EXEC_LOST', `host ${hostId} went away while it ran the command (${code || (e as Error).message}); it is not run again, so whether it finished is unknown`);
        }
        if (e instanceof BoxdError) throw e;
        throw new UnavailableError(`host ${hostId} did not answer: ${(e as Error).message}`);
      }
    }
  }

  private once(t: Target, r: AgentRequest, signal?: AbortSignal): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { ...r.headers, Authorization: `Bearer ${this.secret}` };
      if (Buffer.isBuffer(r.body)) headers['Content-Length'] = r.body.length;
      const req = request({ host: t.addr, port: t.port, method: r.method, path: r.path, headers, agent: this.agent });
      const onAbort = () => req.destroy(new BoxdError('CANCELLED', 'the caller went away'));
      if (signal?.aborted) return reject(new BoxdError('CANCELLED', 'the caller went away'));
      signal?.addEventListener('abort', onAbort, { once: true });
      req.once('response', (res) => {
        res.once('close', () => signal?.removeEventListener('abort', onAbort));
        resolve(res);
      });
      req.once('error', (e) => {
        signal?.removeEventListener('abort', onAbort);
        reject(e);
      });
      if (!r.body) req.end();
      else if (Buffer.isBuffer(r.body)) req.end(r.body);
      else {
        const body = r.body;
        body.pipe(req);
        body.once('error', (e) => req.destroy(e));
        // A client that hangs up mid-upload: the agent must see the upload break off.
        body.once('close', () => {
          if (!body.readableEnded) req.destroy(new Error('the upload broke off'));
        });
      }
    });
  }

  /** Calls the agent and parses its JSON answer; an error answer is rethrown with its code. */
  async json<T>(hostId: string, r: AgentRequest, signal?: AbortSignal): Promise<T> {
    const res = await this.request(hostId, r, signal);
    const text = await readText(res);
    if ((res.statusCode ?? 500) >= 300) throw errorOf(res.statusCode ?? 500, text);
    return JSON.parse(text) as T;
  }

  /** Whether host `hostId` holds image `ref` (asks its agent). */
  async hasImage(hostId: string, ref: string): Promise<boolean> {
    const res = await this.request(hostId, { method: 'HEAD', path: `/v1/images/${encodeURIComponent(ref)}` });
    res.resume();
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    throw new UnavailableError(`host ${hostId} could not say whether it holds image ${ref} (${res.statusCode})`);
  }

  /**
   * Makes sure host `to` holds image `ref`, copying it from the first of `from` that has it:
   * the gateway streams the source agent's `docker save` straight into the destination agent's
   * `docker load` (relayed chunk by chunk with backpressure; never buffered whole, never through
   * Redis). Resolves once the destination has loaded it.
   */
  async ensureImage(ref: string, to: string, from: string[]): Promise<'present' | 'copied'> {
    if (await this.hasImage(to, ref)) return 'present';
    const enc = encodeURIComponent(ref);
    let last: unknown;
    for (const src of from.filter((h) => h !== to)) {
      let up: IncomingMessage | undefined;
      try {
        up = await this.request(src, { method: 'GET', path: `/v1/images/${enc}` });
        if (up.statusCode !== 200) {
          last = errorOf(up.statusCode ?? 500, await readText(up));
          continue;
        }
        const down = await this.request(to, {
          method: 'POST',
          path: `/v1/images?ref=${enc}`,
          headers: { 'Content-Type': 'application/x-tar', 'Transfer-Encoding': 'chunked' },
          body: up,
        });
        const text = await readText(down);
        if ((down.statusCode ?? 500) >= 300) throw errorOf(down.statusCode ?? 500, text);
        return 'copied';
      } catch (e) {
        up?.destroy();
        last = e;
      }
    }
    const why = last instanceof Error ? `: ${last.message}` : '';
    throw new UnavailableError(`image ${ref} could not be copied to host ${to}; no live host holding it answered${why}`);
  }

  close(): void {
    this.agent.destroy();
  }
}

/** The error an agent answered with (its `{error:{code,message}}`). */
export function errorOf(status: number, text: string): BoxdError {
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (body.error?.code) return fromWire({ code: body.error.code, message: body.error.message ?? '' });
  } catch {
    /* not JSON */
  }
  return new BoxdError('RUNTIME_ERROR', `the host answered ${status}`);
}

export async function readText(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Response headers worth passing from an agent to a client. */
export function passHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ['content-type', 'content-length', 'cache-control']) {
    const v = h[k];
    if (typeof v === 'string') out[k] = v;
  }
  return out;
}
