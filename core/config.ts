import { z } from 'zod';
import { parseAllowEntry } from './network-policy.ts';

/**
 * Every setting boxd reads from the environment, parsed once at start-up by each
 * process's composition root. A bad value stops start-up with a message naming the variable.
 */
const int = (def: number) => z.coerce.number().int().min(0).default(def);

export const configSchema = z.object({
  /** Port the gateway listens on. */
  BOXD_PORT: int(8080),
  /** Address the gateway binds to; keep it on loopback unless a balancer fronts it. */
  BOXD_BIND: z.string().default('127.0.0.1'),
  /** Base domain of preview URLs: `<box>.<base>` reaches the box's first port. */
  BOXD_BASE_DOMAIN: z.string().toLowerCase().default('boxd.localhost'),
  /** Public URL of the gateway, used in answers (box urls, hook urls). Derived when empty. */
  BOXD_PUBLIC_URL: z.string().default(''),
  /** Bootstrap API key of account `default`. */
  BOXD_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Redis shared by every process: `redis://h:p`, or a Redis Cluster as `redis+cluster://h1:p1,h2:p2`. */
  REDIS_URL: z
    .string()
    .regex(/^(rediss?:\/\/\S+|redis\+cluster:\/\/\S+)$/, 'redis://host:port or redis+cluster://host:port,host:port')
    .default('redis://127.0.0.1:6379'),
  /** Prefix of every Redis key and queue, and label of every container: isolates instances (tests). */
  BOXD_PREFIX: z.string().regex(/^[a-z0-9-]+$/, 'lowercase letters, digits and dashes').default('boxd'),
  /** Identity of this host process; boxes it owns are routed to its queue. */
  BOXD_HOST_ID: z.string().regex(/^[a-z0-9-]+$/).default('host-1'),
  /** OCI runtime for boxes (runc, runsc, kata-runtime…). */
  BOXD_OCI_RUNTIME: z.string().default('runc'),
  /** Docker bridge network boxes attach to (created with inter-container traffic off). */
  BOXD_NETWORK: z.string().default('boxd'),
  /** Default idle time before the host suspends a box, in ms; 0 disables. */
  BOXD_IDLE_TIMEOUT_MS: int(30_000),
  /** Live boxes per account unless the account has its own limit. */
  BOXD_MAX_BOXES: int(10),
  /** Default CPU limit of a box, in vCPUs. */
  BOXD_BOX_CPUS: z.coerce.number().positive().default(2),
  /** Default memory limit of a box, in MiB. */
  BOXD_BOX_MEMORY_MB: int(8192),
  /** Process limit of a box (threads count too): a fork bomb stops there and the host stays responsive. */
  BOXD_BOX_PIDS: z.coerce.number().int().min(16).default(1024),
  /**
   * Disk quota of a box's whole writable filesystem, in MiB: the default and this host's maximum
   * (goldens and creates may ask for less). 0 turns quotas off. A loop-mounted ext4 per box.
   */
  BOXD_BOX_DISK_MB: int(102_400),
  /** Extra IPv4 CIDRs that the `open` egress policy refuses besides private ranges (comma-separated), e.g. a public LAN. */
  BOXD_EGRESS_DENY: z
    .string()
    .default('')
    .refine((s) => s.split(',').every((c) => c.trim() === '' || parseAllowEntry(c)?.port === undefined && parseAllowEntry(c) !== undefined), 'comma-separated IPv4 CIDRs')
    .transform((s) => s.split(',').map((c) => c.trim()).filter(Boolean).map((c) => parseAllowEntry(c)!.cidr)),
  /** Folder for local state: generated secrets (API key, cluster secret) and box disk images (`<dir>/disks/<prefix>/`). */
  BOXD_STATE_DIR: z.string().default('.boxd'),
  /** How long the gateway waits for a lifecycle job before answering 504, in ms. */
  BOXD_JOB_TIMEOUT_MS: int(120_000),
  /** Upper bound of an exec's run time, in ms (requests may ask for less). */
  BOXD_EXEC_MAX_MS: int(3_600_000),
  /** Largest file accepted by PUT /files and served by GET /files, in bytes (streamed, flat memory). */
  BOXD_MAX_FILE_BYTES: int(4 * 1024 * 1024 * 1024),
  /** Address of this host: its agent listens there and box ports are published there; gateways connect to it. */
  BOXD_HOST_ADDR: z.ipv4().default('127.0.0.1'),
  /** Port of the host agent (the data-plane endpoint gateways call); 0 picks a free one, advertised in Redis. */
  BOXD_HOST_AGENT_PORT: int(0),
  /** Shared secret gateways present to host agents; generated into .boxd/cluster-secret when unset. */
  BOXD_CLUSTER_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Concurrent execs per account; more answer 429. */
  BOXD_MAX_EXECS: int(32),
  /** Suspend through the cgroup freezer directly (false: `docker pause`). */
  BOXD_FREEZER: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** How long a preview request waits for its box to wake (or finish creating), in ms. */
  BOXD_WAKE_TIMEOUT_MS: int(15_000),
  /** Requests one gateway holds per waking box; more get 503 with Retry-After. */
  BOXD_WAKE_MAX_WAITERS: int(512),
  /** A proxied request whose upstream sends nothing for this long gets 504, in ms. */
  BOXD_UPSTREAM_TIMEOUT_MS: int(60_000),
  /** When the gateway stops, how long requests in flight get to be answered before their connections close, in ms. */
  BOXD_CLOSE_GRACE_MS: int(5_000),
  /** How often the gateway pings a WebSocket client; one silent for two intervals is dropped (a dead peer must not keep its box awake), in ms; 0 disables. */
  BOXD_WS_PING_MS: int(30_000),
  /** How long a body-less preview request is retried while the box's app is not listening yet, in ms. */
  BOXD_CONNECT_RETRY_MS: int(3_000),
  /** How often gateways write inbound activity to Redis, in ms (one write per busy box). */
  BOXD_ACTIVITY_FLUSH_MS: int(1_000),
  /** How often the host compares all its boxes' records with its runtime (drift: removed, paused or dead by hand; between, a box is checked when the engine reports its container changed), in ms; 0 disables. */
  BOXD_DRIFT_CHECK_MS: int(30_000),
  /** How often the host looks for idle boxes, in ms. */
  BOXD_IDLE_CHECK_MS: int(1_000),
  /** How often the host reads all its boxes' records again (between, box events keep its in-memory copy), in ms. */
  BOXD_INDEX_FULL_MS: int(60_000),
  /** Keep warm pools of the goldens' pool sizes on this host (false: every create is cold). */
  BOXD_POOL: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** Pooled boxes an account may keep warm over all of its own goldens (they do not count as live boxes). */
  BOXD_ACCOUNT_POOL_MAX: int(5),
  /** How often the host tops its warm pools up, in ms (a claim also triggers a refill). */
  BOXD_POOL_FILL_MS: int(5_000),
  /** Lock of a running webhook task; a host silent this long is taken as dead and the task re-run, in ms. */
  BOXD_TASK_LOCK_MS: int(30_000),
  /** CPUs this host offers to boxes (0: detected). */
  BOXD_HOST_CPUS: z.coerce.number().min(0).default(0),
  /** Memory this host offers to boxes, in MiB (0: detected). */
  BOXD_HOST_MEMORY_MB: int(0),
  /** Share of its memory a suspended box commits on its host (running boxes: 1; frozen boxes use no cpu). */
  BOXD_SUSPENDED_WEIGHT: z.coerce.number().min(0).max(1).default(0.1),
  /** Placement admits boxes while a host's committed memory stays within its memory × this. */
  BOXD_OVERCOMMIT: z.coerce.number().positive().default(4),
  /** …and its committed cpus within its cpus × this (cpu is shared, not reserved, so higher). */
  BOXD_CPU_OVERCOMMIT: z.coerce.number().positive().default(16),
  /** How often a host writes its heartbeat (capacity, commitments, images), in ms. */
  BOXD_HEARTBEAT_MS: int(3_000),
  /** After its boxes change, a host beats again within this, at most once per this, in ms. */
  BOXD_HEARTBEAT_DEBOUNCE_MS: int(150),
  /** A host whose heartbeat is older than this is dead: creates skip it, its boxes become `lost`, in ms. */
  BOXD_HOST_DEAD_MS: int(15_000),
  /** Gateway processes sharing the port (node:cluster); 0: one per core. */
  BOXD_GATEWAY_WORKERS: int(0),
  /** Serve preview requests on the raw socket (byte-level head parsing, one upstream connection pinned per client connection) instead of Node's HTTP stack; opt-in. */
  BOXD_PREVIEW_FASTPATH: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  /** Images (exact references, comma-separated) any account may create boxes from, besides goldens and its own snapshots. */
  BOXD_ALLOWED_IMAGES: z.string().default('').transform((v) => v.split(',').map((x) => x.trim()).filter(Boolean)),
  /** Bound of every Redis command of the gateway, in ms: past it the API answers 503 instead of hanging on a frozen Redis. */
  BOXD_REDIS_TIMEOUT_MS: int(1_500),
  /** A client must send a request's headers within this time or its connection is closed (slowloris), in ms. */
  BOXD_HEADERS_TIMEOUT_MS: int(10_000),
  /** A client must send a whole request (headers and body) within this time, in ms; 0 disables. */
  BOXD_REQUEST_TIMEOUT_MS: int(300_000),
  /** Folder of golden image definitions. */
  BOXD_GOLDEN_DIR: z.string().default('golden-images'),
  /**
   * Port on the host's address on the box bridge where boxes reach the API (agents inside boxes,
   * `"agent": true`); 0 = the same number as BOXD_PORT. The only host port a box can open.
   */
  BOXD_BOX_API_PORT: int(0),
  /** Where that door leads: the gateway's address as seen from the host (default 127.0.0.1:BOXD_PORT). */
  BOXD_BOX_API_UPSTREAM: z.string().regex(/^[^:]+:\d+$/, 'host:port').optional(),
  /** Bind the `boxd` command and the Python SDK (sdk/python) read-only into every box. */
  BOXD_BOX_CLI: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** pino log level. */
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {}

/** Parses `env` (default: process.env); throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const picked: Record<string, string | undefined> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') picked[key] = value;
  }
  const parsed = configSchema.safeParse(picked);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/** For a process's composition root: the config, or a message naming the bad variable and exit 2. */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (e) {
    console.error(e instanceof ConfigError ? e.message : e);
    process.exit(2);
  }
}
