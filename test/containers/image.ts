/**
 * The container suite's node image, built offline: no registry is reachable, so the root filesystem
 * is assembled from this host's own files and loaded with `docker import`:
 *   - the binaries ssi and its jobs run (node, tini, sh, ip, tar, zstd, coreutils for the test jobs)
 *     with every shared library `ldd` names, at the same paths as on the host;
 *   - the provisioned CRIU bundle (/opt/ssi/bin, /opt/ssi/criu, /opt/ssi/criu.path);
 *   - this checkout's package.json, bin/, dist/ and the production node_modules under /opt/ssi-app.
 * Every node runs the same image, so CRIU finds the same binaries at the same paths on the target.
 * The tag is a hash of every input file's path, size, mode and mtime: a second run with nothing
 * rebuilt reuses the image (~0.1 s) instead of importing ~230 MB again (~5 s).
 */
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { lstat, mkdtemp, readdir, readlink, realpath, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join, relative } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const IMAGE_REPO = 'ssi-node'
/** Where the checkout lives inside the image. */
export const APP_DIR = '/opt/ssi-app'
const REPO = join(import.meta.dirname, '..', '..')

/** Programs the image must have, looked up on the host's PATH. */
const PROGRAMS = ['node', 'tini', 'sh', 'dash', 'bash', 'ip', 'tar', 'zstd', 'sleep', 'cat', 'echo', 'env', 'ls', 'kill', 'ps', 'mount', 'umount', 'true', 'false', 'seq', 'head', 'tail', 'id', 'grep', 'find', 'wc', 'mkdir', 'rm']
/** Host trees and files copied as they are (the CRIU bundle, accounts). */
const HOST_TREES = ['/opt/ssi/bin', '/opt/ssi/criu', '/opt/ssi/criu.path', '/etc/passwd', '/etc/group', '/etc/nsswitch.conf']
/** usrmerge symlinks at / (bin -> usr/bin, ...), kept as links. */
const ROOT_LINKS = ['/bin', '/sbin', '/lib', '/lib64']
/** Empty dirs the daemon and the jobs expect. */
const EMPTY_DIRS = ['tmp', 'run', 'var/lib', 'var/log', 'root', 'etc/ssi']

export class ImageBuildError extends Error {
  static override name = 'ImageBuildError'
  override name = 'ImageBuildError'
}

/** The docker client: $SSI_DOCKER, else Debian's (matches its daemon's API), else `docker` on PATH (newer clients negotiate down). */
export function dockerBin (): string {
  return process.env.SSI_DOCKER ?? (existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker')
}

async function docker (args: string[]): Promise<string> {
  const bin = dockerBin()
  try {
    return (await run(bin, args, { maxBuffer: 16 << 20 })).stdout
  } catch (err) {
    const e = err as { stderr?: string, message: string }
    throw new ImageBuildError(`${bin} ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`, { cause: err })
  }
}

async function which (program: string): Promise<string> {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir, program)
    try { if ((await lstat(p)).isFile() || (await lstat(p)).isSymbolicLink()) return p } catch { /* next */ }
  }
  throw new ImageBuildError(`${program} not found on this host (scripts/provision.sh installs what ssi needs)`)
}

/** A path with its directories resolved (so /lib/x/libc.so.6 is stored as usr/lib/x/libc.so.6), plus the file it links to. */
async function canonical (path: string): Promise<string[]> {
  const dir = await realpath(dirname(path))
  const named = join(dir, basename(path))
  const target = await realpath(named)
  return target === named ? [named] : [named, target]
}

async function sharedLibraries (binary: string): Promise<string[]> {
  let out = ''
  try { out = (await run('ldd', [binary])).stdout } catch { return [] } // static or a script
  return [...out.matchAll(/(\/\S+) \(0x/g)].map(m => m[1] as string)
}

/** Every file and symlink under `path` (depth first); directories are not listed. */
async function walk (path: string, out: string[]): Promise<void> {
  const st = await lstat(path)
  if (!st.isDirectory()) { out.push(path); return }
  for (const e of (await readdir(path)).sort()) await walk(join(path, e), out)
}

/** Absolute host paths of the system part of the image. */
async function systemFiles (): Promise<string[]> {
  const files = new Set<string>()
  for (const program of PROGRAMS) {
    const path = await which(program)
    for (const p of await canonical(path)) files.add(p)
    const interp = (await run('readlink', ['-f', path])).stdout.trim()
    for (const lib of await sharedLibraries(interp)) for (const p of await canonical(lib)) files.add(p)
  }
  for (const tree of HOST_TREES) {
    const found: string[] = []
    try { await walk(tree, found) } catch { if (!tree.startsWith('/etc/')) throw new ImageBuildError(`${tree} is missing: run scripts/provision.sh`) }
    for (const f of found) files.add(f)
  }
  return [...files].sort()
}

/** Package dirs of the production dependencies (npm ls works offline from node_modules). */
async function runtimePackages (): Promise<string[]> {
  const { stdout } = await run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: REPO, maxBuffer: 16 << 20 })
    .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' })) // npm ls exits 1 on extraneous packages
  const nm = join(REPO, 'node_modules')
  const all = [...new Set(stdout.split('\n').filter(l => l.startsWith(nm + '/')).map(l => relative(nm, l)))].sort()
  // A nested package (a/node_modules/b) travels with its parent's tree: list it once.
  return all.filter(p => !all.some(q => p.startsWith(q + '/')))
}

async function fingerprint (paths: string[], seed: string): Promise<string> {
  const h = createHash('sha256').update(seed)
  for (const p of paths) {
    const st = await lstat(p)
    h.update(`${p}\0${st.size}\0${st.mode}\0${st.mtimeMs}\0${st.isSymbolicLink() ? await readlink(p) : ''}\n`)
  }
  return h.digest('hex').slice(0, 16)
}

interface Plan { readonly system: string[], readonly packages: string[], readonly nodeModules: string, readonly tag: string }

async function plan (): Promise<Plan> {
  const system = await systemFiles()
  const packages = await runtimePackages()
  const nodeModules = await realpath(join(REPO, 'node_modules'))
  const app: string[] = [join(REPO, 'package.json')]
  for (const d of ['bin', 'dist']) await walk(join(REPO, d), app)
  for (const p of packages) await walk(join(nodeModules, p), app)
  const tag = await fingerprint([...ROOT_LINKS, ...system, ...app], `v1 ${PROGRAMS.join(',')} ${EMPTY_DIRS.join(',')} ${packages.join(',')}`)
  return { system, packages, nodeModules, tag: `${IMAGE_REPO}:${tag}` }
}

async function tar (args: string[]): Promise<void> {
  try { await run('tar', args, { maxBuffer: 16 << 20 }) } catch (err) {
    throw new ImageBuildError(`tar ${args.slice(0, 4).join(' ')} ...: ${(err as { stderr?: string }).stderr ?? String(err)}`, { cause: err })
  }
}

/** Writes the root filesystem tar: system files at their paths, the checkout under APP_DIR. */
async function writeRootfs (p: Plan, dir: string): Promise<string> {
  const out = join(dir, 'rootfs.tar')
  const list = join(dir, 'system.list')
  await writeFile(list, [...ROOT_LINKS, ...p.system].map(f => f.slice(1)).join('\n') + '\n')
  await tar(['-cf', out, '-C', '/', '--no-recursion', '-T', list])
  const app = APP_DIR.slice(1)
  await tar(['-rf', out, '-C', REPO, '--transform', `s,^,${app}/,`, 'package.json', 'bin', 'dist'])
  const pkgList = join(dir, 'packages.list')
  await writeFile(pkgList, p.packages.join('\n') + '\n')
  await tar(['-rf', out, '-C', p.nodeModules, '--transform', `s,^,${app}/node_modules/,`, '-T', pkgList])
  const skel = join(dir, 'skel')
  for (const d of EMPTY_DIRS) await run('mkdir', ['-p', join(skel, d)])
  await run('chmod', ['1777', join(skel, 'tmp')])
  await tar(['-rf', out, '-C', skel, ...EMPTY_DIRS])
  return out
}

async function imageExists (tag: string): Promise<boolean> {
  try { await docker(['image', 'inspect', '--format', '{{.Id}}', tag]); return true } catch { return false }
}

/** Older builds of the image: removed after a new one is imported, so they do not pile up. */
async function removeStale (keep: string): Promise<void> {
  const tags = (await docker(['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', IMAGE_REPO])).split('\n').filter(t => t !== '' && t !== keep)
  for (const t of tags) await docker(['image', 'rm', t]).catch(() => {})
}

export interface BuiltImage { readonly tag: string, readonly cached: boolean, readonly ms: number }

/** Returns the tag of an image for this checkout, importing it if no identical one exists. */
export async function ensureNodeImage (): Promise<BuiltImage> {
  const start = performance.now()
  const p = await plan()
  if (await imageExists(p.tag)) return { tag: p.tag, cached: true, ms: performance.now() - start }
  const dir = await mkdtemp(join(tmpdir(), 'ssi-rootfs-'))
  try {
    const rootfs = await writeRootfs(p, dir)
    await new Promise<void>((resolve, reject) => {
      const child = spawn(dockerBin(), ['import', '--change', 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '--change', `WORKDIR /`, rootfs, p.tag], { stdio: ['ignore', 'ignore', 'pipe'] })
      let err = ''
      child.stderr.on('data', (d: Buffer) => { err += d.toString() })
      child.once('error', reject)
      child.once('close', code => {
        if (code === 0) resolve()
        else reject(new ImageBuildError(`docker import failed (${code}): ${err.trim()}`))
      })
    })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  await removeStale(p.tag)
  return { tag: p.tag, cached: false, ms: performance.now() - start }
}
