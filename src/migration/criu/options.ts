/** Typed options of the CRIU driver and their mapping onto CRIU's wire options (criu_opts). */
import { CgMode, type CgModeName, type WireOpts } from './rpc.js'
import { FIRST_EXTRA_FD, type NotifyHook } from './swrk.js'

/** Options every request takes. */
export interface RequestOptions {
  /** Cancels the request: criu is killed (SIGKILL). */
  readonly signal?: AbortSignal
  /** Notification hook; CRIU waits for it (see NotifyHook). */
  readonly onNotify?: NotifyHook
}

/** Options shared by dump and restore. */
export interface ImageOptions extends RequestOptions {
  /** Directory with the images (dump writes there: it must exist). */
  readonly imagesDir: string
  /** CRIU log verbosity 0 (none) .. 4 (debug). Default: the Criu instance's (4). */
  readonly logLevel?: number
  /** The job is attached to a terminal/session outside its tree (`--shell-job`). Default false. */
  readonly shellJob?: boolean
  /** Established TCP connections are dumped/restored (`--tcp-established`); listeners need nothing. */
  readonly tcpEstablished?: boolean
  /** Unix sockets connected to peers outside the tree are allowed (`--ext-unix-sk`). */
  readonly extUnixSk?: boolean
  /** File locks are dumped/restored (`--file-locks`). */
  readonly fileLocks?: boolean
  /** External resources (`--external`), e.g. 'mnt[]' to treat every mount as external. */
  readonly external?: readonly string[]
  /**
   * Mounts that are slaves of a peer group outside the dumped tree's namespaces are allowed
   * (`--enable-external-masters`): a job's rslave mount namespace on a host whose mounts are
   * shared (systemd's default, or Docker's /var/lib/docker) has such mounts.
   */
  readonly extMasters?: boolean
  /**
   * cgroup handling: true = CRIU's 'soft' mode, false = 'ignore', or a mode name
   * ('IGNORE' | 'CG_NONE' | 'PROPS' | 'SOFT' | 'FULL' | 'STRICT' | 'DEFAULT'). Default: CRIU's (soft).
   */
  readonly manageCgroups?: boolean | CgModeName
}

/** Where a page server listens (source side of post-copy, or a target for streamed pages). */
export interface PageServerAddress {
  readonly address: string
  readonly port: number
}

export interface DumpOptions extends ImageOptions {
  /** Host pid of the root of the tree to dump (the job's init, e.g. tini). */
  readonly pid: number
  /** Leave the tree running after the dump (checkpoint); default false (it is killed). */
  readonly leaveRunning?: boolean
  /**
   * Post-copy: dump everything but memory, then serve pages from `pageServer` until the target
   * has them all. The dump resolves only when the transfer ends; the "status-ready"
   * notification tells when the page server listens. Needs fs.pipe-max-size >= 4 MiB here.
   */
  readonly lazyPages?: boolean
  /** With lazyPages: where to serve pages. Without: send pages to this page server instead of imagesDir. */
  readonly pageServer?: PageServerAddress
  /**
   * Send the pages over this connected stream socket (our fd; CRIU gets a copy as an extra fd)
   * instead of to `pageServer` or imagesDir. A socketpair, unlike CRIU's own TCP connection to a
   * page server, is not corked: over TCP, each of CRIU's pipe-sized batches waited for the cork
   * timer (a 1 GiB dump took 9 s instead of 0.6).
   */
  readonly pageServerSocket?: number
  /** Track memory changes for a later incremental dump (needs soft-dirty in the kernel). */
  readonly trackMem?: boolean
  /** Previous (pre-)dump's images dir, relative to imagesDir (e.g. '../1'). */
  readonly parentImg?: string
  /** Largest deleted-but-open file kept as a ghost in the images, in bytes (CRIU default 1 MiB). */
  readonly ghostLimit?: number
  /** Freeze the tree with this freezer cgroup instead of ptrace-stopping each task. */
  readonly freezeCgroup?: string
  /** Dump opened-but-unlinked files by linking them back (`--link-remap`). */
  readonly linkRemap?: boolean
  /** Mount points left out of the images (`--skip-mnt`), whole subtrees only. */
  readonly skipMounts?: readonly string[]
}

export interface InheritFd {
  /** Our descriptor (e.g. the write end of a new stdout pipe). */
  readonly fd: number
  /** What it replaces in the images, e.g. 'pipe:[12345]' or 'file path'. */
  readonly key: string
}

export interface CgroupRoot {
  /** Controller (e.g. 'memory', 'cpu,cpuacct'); absent means all. */
  readonly controller?: string
  /** Path under the controller's root where the tree's cgroups are restored. */
  readonly path: string
}

export interface RestoreOptions extends ImageOptions {
  /** Restore the tree as a child of this process (criu's parent) so we get its exit status. Default true. */
  readonly rstSibling?: boolean
  /** Descriptors of ours that replace files of the tree (`--inherit-fd fd[N]:key`). */
  readonly inheritFd?: readonly InheritFd[]
  /** Restore into other cgroups (`--cgroup-root [controller:]path`), one per controller on v1. */
  readonly cgroupRoot?: readonly CgroupRoot[]
  /** Post-copy: pages come from a running `criu lazy-pages` daemon for the same images dir. */
  readonly lazyPages?: boolean
  /** Root directory to restore into (`--root`), with a mount namespace. */
  readonly root?: string
  /** Map external mounts automatically (`--ext-mount-map auto`). */
  readonly autoExtMounts?: boolean
}

export interface PageServerOptions extends RequestOptions {
  readonly imagesDir: string
  readonly logLevel?: number
  /** Address to listen on; default all. */
  readonly address?: string
  /** Port to listen on; 0 or absent lets CRIU pick one (returned). */
  readonly port?: number
  /** Serve lazy pages (`--lazy-pages`) rather than receive them. */
  readonly lazyPages?: boolean
}

/** What the driver itself puts into every request that touches images. */
export interface Plumbing {
  readonly imagesDirFd: number
  readonly workDirFd: number
  readonly logFile: string
  readonly logLevel: number
}

function cgroupOpts (mode: boolean | CgModeName | undefined): Partial<WireOpts> {
  if (mode === undefined) return {}
  if (typeof mode === 'boolean') return { manage_cgroups: mode }
  return { manage_cgroups_mode: CgMode[mode] }
}

function commonOpts (o: ImageOptions, p: Plumbing): WireOpts {
  return {
    images_dir_fd: p.imagesDirFd,
    work_dir_fd: p.workDirFd,
    log_file: p.logFile,
    log_level: o.logLevel ?? p.logLevel,
    notify_scripts: o.onNotify !== undefined ? true : undefined,
    shell_job: o.shellJob,
    tcp_established: o.tcpEstablished,
    ext_unix_sk: o.extUnixSk,
    file_locks: o.fileLocks,
    external: o.external === undefined ? undefined : [...o.external],
    ext_masters: o.extMasters,
    ...cgroupOpts(o.manageCgroups)
  }
}

/** Drops undefined members so the wire message carries only what was asked for. */
function compact<T extends object> (value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T
}

export function dumpWireOpts (o: DumpOptions, p: Plumbing): WireOpts {
  if (!Number.isInteger(o.pid) || o.pid <= 0) throw new RangeError(`dump: invalid pid ${o.pid}`)
  return compact({
    ...commonOpts(o, p),
    pid: o.pid,
    leave_running: o.leaveRunning,
    lazy_pages: o.lazyPages,
    ps: o.pageServerSocket !== undefined ? { fd: FIRST_EXTRA_FD } : o.pageServer === undefined ? undefined : { address: o.pageServer.address, port: o.pageServer.port },
    track_mem: o.trackMem,
    parent_img: o.parentImg,
    ghost_limit: o.ghostLimit,
    freeze_cgroup: o.freezeCgroup,
    link_remap: o.linkRemap,
    skip_mnt: o.skipMounts === undefined || o.skipMounts.length === 0 ? undefined : [...o.skipMounts]
  })
}

/** Restore options; `inheritFd` entries name criu's copies of our fds (FIRST_EXTRA_FD + index). */
export function restoreWireOpts (o: RestoreOptions, p: Plumbing): WireOpts {
  return compact({
    ...commonOpts(o, p),
    rst_sibling: o.rstSibling ?? true,
    inherit_fd: o.inheritFd?.map((entry, index) => ({ key: entry.key, fd: FIRST_EXTRA_FD + index })),
    cg_root: o.cgroupRoot?.map((root) => compact({ ctrl: root.controller, path: root.path })),
    lazy_pages: o.lazyPages,
    root: o.root,
    auto_ext_mnt: o.autoExtMounts
  })
}

export function pageServerWireOpts (o: PageServerOptions, p: Plumbing): WireOpts {
  return compact({
    images_dir_fd: p.imagesDirFd,
    work_dir_fd: p.workDirFd,
    log_file: p.logFile,
    log_level: o.logLevel ?? p.logLevel,
    lazy_pages: o.lazyPages,
    ps: compact({ address: o.address, port: o.port ?? 0 })
  })
}
