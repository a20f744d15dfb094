/**
 * Seeded mutation of wire frames for the fuzz tests: random bytes, bit flips and truncations of
 * valid frames, valid msgpack of the wrong shape, huge numbers, deep nesting, every msgpack
 * extension type. The seed comes from FUZZ_SEED (printed by each test) so a failure can be replayed.
 */
import { Packr } from 'msgpackr'

const packr = new Packr({ useRecords: false, mapsAsObjects: true })

export const pack = (value: unknown): Buffer => packr.pack(value)

/** The seed of this run: FUZZ_SEED if set, else random. */
export function fuzzSeed (): number {
  const env = process.env.FUZZ_SEED
  return env !== undefined && env !== '' ? Number(env) >>> 0 : Math.floor(Math.random() * 2 ** 32)
}

/** mulberry32: small, fast, good enough to pick mutations. */
export class Rng {
  private state: number
  constructor (seed: number) { this.state = seed >>> 0 }
  next (): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }

  int (n: number): number { return Math.floor(this.next() * n) }
  pick<T>(items: readonly T[]): T { return items[this.int(items.length)] as T }
  bytes (n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) b[i] = this.int(256)
    return b
  }
}

/** Values of every msgpack type, many of them extreme. */
export function oddValues (rng: Rng): unknown[] {
  return [
    null, true, false, 0, -1, 1.5, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 63), 2 ** 64, 1e308, Number.MIN_VALUE,
    '', 'x'.repeat(70_000), '\u0000', '../../etc/passwd', '/etc/shadow', '\ud800', '__proto__', 'constructor',
    [], [[[[]]]], new Array(5000).fill(0), {}, { __proto__: { polluted: true } }, { constructor: { prototype: { polluted: true } } },
    Buffer.alloc(0), rng.bytes(64), new Date(0), new Uint8Array(3)
  ]
}

/** Raw msgpack that libraries rarely see: deep nesting, huge declared lengths, every ext type. */
export function rawMsgpack (rng: Rng): Buffer {
  const depth = rng.pick([100, 1000, 10_000, 100_000])
  switch (rng.int(9)) {
    case 0: return Buffer.concat([Buffer.alloc(depth, 0x91), Buffer.from([0xc0])]) // [[[...[nil]...]]]
    case 1: return Buffer.concat([Buffer.alloc(depth * 2).fill(Buffer.from([0x81, 0xa0])), Buffer.from([0xc0])]) // {"":{"":...}}
    case 2: return Buffer.from([rng.pick([0xdd, 0xdf, 0xdb, 0xc6]), 0xff, 0xff, 0xff, 0xff, 0x01]) // array/map/str/bin of 2^32-1
    case 3: return Buffer.from([0xcf, ...rng.bytes(8)]) // uint64
    case 4: return Buffer.from([0xd3, ...rng.bytes(8)]) // int64
    case 5: return Buffer.from([0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1]) // NaN payload
    case 6: { // ext of any type (msgpackr gives some types meaning: records, typed arrays, errors, ...)
      const data = rng.bytes(rng.int(40))
      return Buffer.from([0xc7, data.length, (rng.int(256) << 24) >> 24, ...data])
    }
    case 7: return Buffer.from([0xd4 + rng.int(5), rng.int(256), ...rng.bytes(16)]) // fixext 1..16
    default: return Buffer.from([0xc1]) // the one byte msgpack never uses
  }
}

/** One mutation of a valid frame body. */
export function mutate (rng: Rng, valid: Buffer): Buffer {
  const b = Buffer.from(valid)
  switch (rng.int(6)) {
    case 0: { // flip 1..8 bits
      for (let i = 1 + rng.int(8); i > 0; i--) b[rng.int(b.length)]! ^= 1 << rng.int(8)
      return b
    }
    case 1: return b.subarray(0, rng.int(b.length)) // truncated
    case 2: return Buffer.concat([b, rng.bytes(1 + rng.int(32))]) // trailing junk
    case 3: { // one byte replaced by an interesting one
      b[rng.int(b.length)] = rng.pick([0x00, 0x7f, 0x80, 0xc0, 0xc1, 0xcf, 0xd3, 0xdc, 0xdd, 0xde, 0xdf, 0xff])
      return b
    }
    case 4: { // a span overwritten with random bytes
      const at = rng.int(b.length)
      rng.bytes(Math.min(b.length - at, 1 + rng.int(8))).copy(b, at)
      return b
    }
    default: { // a span duplicated
      const at = rng.int(b.length)
      return Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + rng.int(16)), b.subarray(at)])
    }
  }
}

/** Resident set size of a process, bytes. */
export async function rssBytes (pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises')
  const m = /^VmRSS:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0) * 1024
}

/** Files (recursively) under `dir` with their sizes, to see what a fuzz run wrote. */
export async function listFiles (dir: string): Promise<Map<string, number>> {
  const { readdir, lstat } = await import('node:fs/promises')
  const { join } = await import('node:path')
  const out = new Map<string, number>()
  const walk = async (d: string): Promise<void> => {
    let names: string[]
    try { names = await readdir(d) } catch { return }
    for (const n of names) {
      const p = join(d, n)
      const st = await lstat(p).catch(() => undefined)
      if (st === undefined) continue
      if (st.isDirectory()) await walk(p)
      else out.set(p, st.size)
    }
  }
  await walk(dir)
  return out
}
