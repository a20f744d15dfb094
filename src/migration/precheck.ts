/**
 * What stops a job from migrating, found before anything is frozen: a scan of the fds of every
 * process of the tree (/proc/<pid>/fd links). CRIU would fail on some of these only after the job
 * was frozen (io_uring), and others would restore into a broken job (GPU devices, established TCP
 * connections to other hosts, whose peers' address cannot follow).
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs'
import { setImmediate as nextTurn } from 'node:timers/promises'

/*
 * procfs answers from memory in microseconds, so these reads are synchronous: through the thread
 * pool, the scan of a small job cost ~10 ms of every migration (one hop per fd). A tree with many
 * fds yields to the event loop every YIELD_EVERY of them.
 */
const YIELD_EVERY = 256
/** What `read` returns, or `empty` if it throws (a process or fd gone meanwhile). */
export const orEmpty = <T>(read: () => T, empty: T): T => { try { return read() } catch { return empty } }

/** Host pids of `root` and all its descendants (threads' children included). */
export async function processTree (root: number): Promise<number[]> {
  const seen: number[] = []
  const queue = [root]
  while (queue.length > 0) {
    const pid = queue.shift() as number
    seen.push(pid)
    const tasks = orEmpty(() => readdirSync(`/proc/${pid}/task`), [] as string[])
    if (seen.length % YIELD_EVERY === 0) await nextTurn()
    for (const tid of tasks) {
      const children = orEmpty(() => readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8'), '')
      for (const c of children.trim().split(/\s+/)) if (c !== '') queue.push(Number(c))
    }
  }
  return seen
}

const LOOPBACK6 = new Set(['00000000000000000000000001000000', '0000000000000000FFFF00000100007F'])

function isLoopback (hexAddr: string): boolean {
  // /proc/net/tcp writes IPv4 addresses in host (little-endian) order: 127.x.y.z ends in 7F.
  return hexAddr.length === 8 ? hexAddr.endsWith('7F') : LOOPBACK6.has(hexAddr)
}

/** Socket inodes of established TCP connections to non-loopback peers, in pid's network namespace. */
function remoteTcpInodes (pid: number): Map<string, string> {
  const found = new Map<string, string>()
  for (const file of ['tcp', 'tcp6']) {
    const text = orEmpty(() => readFileSync(`/proc/${pid}/net/${file}`, 'utf8'), '')
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length < 10 || cols[3] !== '01') continue // 01 = ESTABLISHED
      const remote = cols[2] ?? ''
      if (!isLoopback(remote.split(':')[0] ?? '')) found.set(cols[9] ?? '', remote)
    }
  }
  return found
}

/** One reason per offending fd, e.g. "pid 123 fd 5: io_uring"; empty when the tree can migrate. */
export async function findUnmigratable (root: number): Promise<string[]> {
  const reasons: string[] = []
  // Read only for a tree with sockets: /proc/<pid>/net/tcp walks the whole TCP hash table (~7 ms
  // here even with a handful of connections), which most jobs do not need.
  let tcpTable: Map<string, string> | undefined
  const tcp = (): Map<string, string> => (tcpTable ??= remoteTcpInodes(root))
  let scanned = 0
  for (const pid of await processTree(root)) {
    const fds = orEmpty(() => readdirSync(`/proc/${pid}/fd`), [] as string[])
    for (const fd of fds) {
      if (++scanned % YIELD_EVERY === 0) await nextTurn()
      const target = orEmpty(() => readlinkSync(`/proc/${pid}/fd/${fd}`), '')
      const why = classify(target, tcp) ?? gpuByNumber(`/proc/${pid}/fd/${fd}`, target)
      if (why !== undefined) reasons.push(`pid ${pid} fd ${fd}: ${why}`)
    }
  }
  return reasons
}

/** Character-device majors of GPUs: 195 NVIDIA, 226 DRM (Intel, AMD, ... render and card nodes). */
const GPU_MAJORS = new Set([195, 226])

/** A GPU device opened under another path (e.g. a container's own /dev), by its device number. */
function gpuByNumber (fdPath: string, target: string): string | undefined {
  if (!target.startsWith('/')) return undefined
  const s = orEmpty(() => statSync(fdPath), undefined)
  if (s === undefined || !s.isCharacterDevice()) return undefined
  const major = Number((BigInt(s.rdev) >> 8n) & 0xfffn)
  return GPU_MAJORS.has(major) ? `GPU device ${target} (major ${major})` : undefined
}

function classify (target: string, tcpOf: () => Map<string, string>): string | undefined {
  if (target.includes('io_uring')) return 'io_uring instance'
  if (/^\/dev\/(nvidia|dri\/|kfd$)/.test(target)) return `GPU device ${target}`
  const socket = /^socket:\[(\d+)\]$/.exec(target)
  if (socket === null) return undefined
  const tcp = tcpOf()
  if (tcp.has(socket[1] ?? '')) return `established TCP connection to ${tcp.get(socket[1] ?? '') ?? '?'} (not loopback)`
  return undefined
}
