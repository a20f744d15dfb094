/**
 * Cluster configuration: one YAML (or JSON) file describes a whole cluster, and every node reads the
 * same file. Each subsystem has its own section with documented defaults; `loadClusterConfig`
 * validates everything up front and names the offending field in its error.
 */
import { readFile } from 'node:fs/promises'
import { dirname, resolve, isAbsolute } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { parseBytes } from './units.js'

export class ConfigError extends Error {
  static override name = 'ConfigError'
  override name = 'ConfigError'
}

const nodeName = z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, 'must be lowercase letters, digits and dashes, starting with a letter')
const multiaddr = z.string().regex(/^\/ip[46]\/[^/]+\/tcp\/\d+$/, 'must look like /ip4/127.0.0.1/tcp/7101')
const bytes = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  try { return parseBytes(v) } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
    return z.NEVER
  }
})

/** Heartbeat gossip: how often each node announces itself and its load. */
const gossipSchema = z.object({
  /** ms between heartbeats. Lower detects hangs sooner; at 1000 a daemon idles at ~0.5 % of a core with 2 peers, ~0.1 % more per extra peer (README, Benchmarks). Default 1000. */
  heartbeatMs: z.number().int().min(50).max(60_000).default(1000)
}).strict()

/** Failure detection: when a silent peer becomes suspect, then dead. */
const failureSchema = z.object({
  /** ms without a heartbeat before a peer is suspect. Default 2000 (2 heartbeats). */
  suspectAfterMs: z.number().int().min(100).default(2000),
  /** ms without a heartbeat before a peer is dead. Default 2500. */
  deadAfterMs: z.number().int().min(200).default(2500),
  /** ms between re-dials of dead or unconnected peers, so restarted nodes and healed partitions rejoin. Default 1000. */
  redialMs: z.number().int().min(100).default(1000),
  /** ms a dial may take before the peer counts as unreachable (a wrong cluster key fails at once, in the Noise handshake). Default 2000. */
  dialTimeoutMs: z.number().int().min(100).default(2000)
}).strict()

/** Defaults for jobs launched without explicit limits. */
const jobsSchema = z.object({
  /** Memory limit per job in bytes (accepts "512MiB", "2G"). Default: none. */
  memory: bytes.optional(),
  /** CPU limit per job in cores (1.5 = one and a half cores). Default: none. */
  cpus: z.number().positive().max(4096).optional(),
  /** Maximum number of processes per job. Default 4096. */
  pids: z.number().int().positive().default(4096),
  /** Bytes of stdout+stderr kept per job after it ends. Default 64 MiB. */
  logRetentionBytes: bytes.default(64 * 1024 * 1024),
  /** How long records and logs of finished jobs are kept, in ms. Default 24 h. */
  retainFinishedMs: z.number().int().positive().default(24 * 3600 * 1000),
  /**
   * "block" (default): a job's io_uring_setup fails with ENOSYS (seccomp), so it uses epoll and
   * threads instead and stays migratable: CRIU cannot dump an io_uring instance, and libuv in
   * Node >= 22 opens some in every process. "allow": jobs may use io_uring, and `ssi migrate` and
   * `ssi checkpoint` refuse those that do.
   */
  ioUring: z.enum(['block', 'allow']).default('block'),
  /**
   * How long the last periodic checkpoint of an ended job (`--checkpoint-every`, held on another
   * node) outlives its reaped record, in ms: it is dropped retainFinishedMs + this after the job
   * ended. Default 0 (it goes with the record); a lost job that could not be restored counts as ended.
   */
  heldCheckpointAfterReapMs: z.number().int().min(0).default(0)
}).strict()

/** Live migration (`ssi migrate`). */
const migrationSchema = z.object({
  /**
   * Resident memory above which `ssi migrate --mode auto` uses post-copy (when the source node can
   * do lazy pages), in bytes (accepts "256MiB"). Below it, stop-copy: its downtime is then short
   * anyway (~0.1-0.4 s) and the job never depends on two nodes at once. Default 256 MiB.
   */
  postCopyAboveBytes: bytes.default(256 * 1024 * 1024),
  /**
   * Stop-copy streams the pages to the target while CRIU dumps them (CRIU page server over the
   * bulk transport; the dump and the transfer overlap). false: dump into files, then send them.
   * Default false: since images take the direct bulk path, files were 1.6-1.7x faster here
   * (benchmarks/migrate.ts mode stop-copy-files); the stream moves small chunks. A target that
   * cannot take streamed pages gets files anyway.
   */
  streamPages: z.boolean().default(false),
  /**
   * Stop-copy with files sends CRIU's page files while CRIU still writes them (as they grow), and
   * the rest once the dump is done, so the dump and the transfer share the freeze instead of taking
   * it in turn (src/migration/transfer/follow.ts). Default true; false sends after the dump.
   */
  sendWhileDumping: z.boolean().default(true),
  /**
   * Stop-copy: the target restores while the images arrive (`criu restore --stream` reading them
   * through pipes, src/migration/image-streamer.ts), the restored job held stopped until every file
   * verified, instead of restoring after the transfer. The images are then sent after the dump
   * (sendWhileDumping does not apply). Ignored with recheckBeforeRestore or streamPages, or when
   * the target cannot. Default false.
   */
  streamRestore: z.boolean().default(false),
  /**
   * The target re-reads and re-hashes the received images right before `criu restore`, so that
   * on-disk corruption in the instant between arrival (already verified while writing, sha256 per
   * file) and the restore is refused too. Costs one read + sha256 of the images inside the
   * downtime (~0.55 s of a core per GiB). Default false: the window is milliseconds long and the
   * transfer already checked every byte. Checkpoint restores always re-check (images at rest).
   */
  recheckBeforeRestore: z.boolean().default(false),
  /**
   * Stop-copy: a target starts `criu restore` as soon as the migration is prepared, and CRIU waits
   * for its first image until every image arrived and verified (src/migration/inventory-hold.ts),
   * so CRIU's start (~40 ms here: exec and its kernel probes) overlaps the dump and the transfer
   * instead of adding to the downtime. Applies where the target decides (its own config). Default true.
   */
  earlyRestore: z.boolean().default(true),
  /**
   * A migration's image send that moves no data and gets no answer from the target for this long
   * is given up (the job runs on at the source), in ms. A target declared dead is given up at once
   * (failureDetection.deadAfterMs); this bounds one that answers heartbeats but takes no data.
   * Default 30 000.
   */
  transferIdleMs: z.number().int().min(1000).default(30_000)
}).strict()

const nodeSchema = z.object({
  /** Unique node name, used on the command line (`ssi run --node n2`). */
  name: nodeName,
  /** Unique numeric id 1..65535; vpids embed it, so it must never change for a node. */
  id: z.number().int().min(1).max(65_535),
  /** libp2p listen address. */
  listen: multiaddr,
  /** Where this node keeps its identity key, LevelDB state and job files. Default /var/lib/ssi/<cluster>/<node>. */
  stateDir: z.string().optional(),
  /** Control socket path. Default /run/ssi/<cluster>/<node>.sock. */
  controlSocket: z.string().optional()
}).strict()

/**
 * Run every node in its own network and UTS namespace (`ssi cluster up` on one machine): each node
 * gets netns `ssi-<cluster>-<node>`, hostname = node name, and a veth on a Linux bridge the
 * launcher creates. Node `listen` addresses must lie in `subnet`; the bridge takes `.1`. Everything
 * created is named by prefix (netns `ssi-<cluster>-`, veths `ssv<hash>`, the bridge, iptables
 * comment `ssi-<cluster>`) so `cluster down` and the next `cluster up` can remove leftovers.
 */
const netnsSchema = z.object({
  /** Bridge name (≤ 15 chars, starting with "ssi"). */
  bridge: z.string().regex(/^ssi[a-z0-9-]{1,12}$/, 'must start with "ssi" and be at most 15 lowercase letters, digits, dashes'),
  /** The /24 the nodes live in, e.g. 10.213.0.0/24 (ssi's own range is 10.213.0.0/16). */
  subnet: z.string().regex(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.0\/24$/, 'must be an IPv4 /24 such as 10.213.0.0/24')
}).strict()

const fileSchema = z.object({
  cluster: z.object({
    /** Cluster name: part of the gossip topic and default paths. */
    name: nodeName,
    /** Cluster key (libp2p pre-shared-key file format, `ssi keygen`), bound into the Noise handshake; relative paths are relative to this file. */
    keyFile: z.string().min(1)
  }).strict(),
  /** Extra multiaddrs to dial at start besides the listed nodes (e.g. nodes managed elsewhere). */
  bootstrap: z.array(multiaddr).default([]),
  nodes: z.array(nodeSchema).min(1),
  gossip: gossipSchema.default(() => gossipSchema.parse({})),
  failureDetection: failureSchema.default(() => failureSchema.parse({})),
  jobs: jobsSchema.default(() => jobsSchema.parse({})),
  migration: migrationSchema.default(() => migrationSchema.parse({})),
  netns: netnsSchema.optional()
}).strict()

export type GossipConfig = z.infer<typeof gossipSchema>
export type FailureDetectionConfig = z.infer<typeof failureSchema>
export type JobsConfig = z.infer<typeof jobsSchema>
export type MigrationConfig = z.infer<typeof migrationSchema>

export interface NetnsConfig {
  readonly bridge: string
  readonly subnet: string
  /** The bridge's own address (`.1` of the subnet): the host side. */
  readonly gateway: string
}

export interface NodeConfig {
  readonly name: string
  readonly id: number
  readonly listen: string
  readonly stateDir: string
  readonly controlSocket: string
}

export interface ClusterConfig {
  readonly path: string
  readonly name: string
  readonly keyFile: string
  readonly bootstrap: readonly string[]
  readonly nodes: readonly NodeConfig[]
  readonly gossip: GossipConfig
  readonly failureDetection: FailureDetectionConfig
  readonly jobs: JobsConfig
  /** Present when every node runs in its own network namespace. */
  readonly netns?: NetnsConfig
  readonly migration: MigrationConfig
}

/** Reads, parses and validates a cluster config file. Throws ConfigError naming the field and reason. */
export async function loadClusterConfig (path: string): Promise<ClusterConfig> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`, { cause: err })
  }
  let raw: unknown
  try {
    raw = parseYaml(text)
  } catch (err) {
    throw new ConfigError(`${path}: not valid YAML: ${(err as Error).message.split('\n')[0] ?? ''}`, { cause: err })
  }
  return parseClusterConfig(raw, resolve(path))
}

/** Validates an already-parsed config object; `path` anchors relative paths. */
export function parseClusterConfig (raw: unknown, path: string): ClusterConfig {
  const parsed = fileSchema.safeParse(raw)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const field = issue?.path.length ? issue.path.join('.') : '(top level)'
    throw new ConfigError(`${path}: ${field}: ${issue?.message ?? 'invalid'}`)
  }
  const c = parsed.data
  checkUnique(path, c.nodes.map(n => n.name), 'name')
  checkUnique(path, c.nodes.map(n => String(n.id)), 'id')
  checkUnique(path, c.nodes.map(n => n.listen), 'listen')
  if (c.failureDetection.deadAfterMs <= c.failureDetection.suspectAfterMs) {
    throw new ConfigError(`${path}: failureDetection.deadAfterMs: must be greater than suspectAfterMs`)
  }
  if (c.failureDetection.suspectAfterMs < 2 * c.gossip.heartbeatMs) {
    throw new ConfigError(`${path}: failureDetection.suspectAfterMs: must be at least two heartbeats (2 × gossip.heartbeatMs)`)
  }
  const netns = c.netns === undefined ? undefined : checkNetns(path, c.netns, c.nodes.map(n => n.listen))
  const base = dirname(path)
  const abs = (p: string): string => isAbsolute(p) ? p : resolve(base, p)
  return {
    path,
    name: c.cluster.name,
    keyFile: abs(c.cluster.keyFile),
    bootstrap: c.bootstrap,
    nodes: c.nodes.map(n => ({
      name: n.name,
      id: n.id,
      listen: n.listen,
      stateDir: abs(n.stateDir ?? `/var/lib/ssi/${c.cluster.name}/${n.name}`),
      controlSocket: abs(n.controlSocket ?? `/run/ssi/${c.cluster.name}/${n.name}.sock`)
    })),
    gossip: c.gossip,
    failureDetection: c.failureDetection,
    jobs: c.jobs,
    migration: c.migration,
    ...(netns === undefined ? {} : { netns })
  }
}

/** Node addresses of a netns cluster must be host addresses inside its /24, other than the bridge's. */
function checkNetns (path: string, n: { bridge: string, subnet: string }, listens: string[]): NetnsConfig {
  const octets = n.subnet.split('/')[0]?.split('.').map(Number) ?? []
  if (octets.some(o => o > 255)) throw new ConfigError(`${path}: netns.subnet: ${n.subnet} is not an IPv4 address`)
  const net = octets.slice(0, 3).join('.')
  listens.forEach((l, i) => {
    const ip = /^\/ip4\/([^/]+)\//.exec(l)?.[1] ?? ''
    const host = Number(ip.split('.')[3])
    if (!ip.startsWith(`${net}.`) || !(host >= 2 && host <= 254)) {
      throw new ConfigError(`${path}: nodes.${i}.listen: a netns cluster needs addresses in ${net}.2-254 (got ${l})`)
    }
  })
  return { bridge: n.bridge, subnet: n.subnet, gateway: `${net}.1` }
}

function checkUnique (path: string, values: string[], field: string): void {
  const seen = new Set<string>()
  values.forEach((v, i) => {
    if (seen.has(v)) throw new ConfigError(`${path}: nodes.${i}.${field}: duplicate value ${v}`)
    seen.add(v)
  })
}

/** Finds a node by name, with an error listing the known names. */
export function findNode (config: ClusterConfig, name: string): NodeConfig {
  const node = config.nodes.find(n => n.name === name)
  if (node == null) {
    throw new ConfigError(`unknown node "${name}" in ${config.path} (nodes: ${config.nodes.map(n => n.name).join(', ')})`)
  }
  return node
}
