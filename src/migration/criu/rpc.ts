/**
 * The part of CRIU's RPC protocol (images/rpc.proto, proto2) that ssi speaks, as a protobufjs JSON
 * descriptor embedded in code so that `tsc` output needs no schema file at run time.
 *
 * Field numbers and names are CRIU's wire contract and must match rpc.proto exactly; fields are only
 * ever added there, so a subset stays compatible with every CRIU >= 3. Names stay snake_case, as on
 * the wire: the typed options in options.ts map onto them.
 */
import protobuf from 'protobufjs'

/** criu_req_type: the kind of a request, echoed in the response's `type`. */
export const ReqType = {
  EMPTY: 0,
  DUMP: 1,
  RESTORE: 2,
  CHECK: 3,
  PRE_DUMP: 4,
  PAGE_SERVER: 5,
  NOTIFY: 6,
  CPUINFO_DUMP: 7,
  CPUINFO_CHECK: 8,
  FEATURE_CHECK: 9,
  VERSION: 10,
  WAIT_PID: 11,
  PAGE_SERVER_CHLD: 12,
  SINGLE_PRE_DUMP: 13
} as const
export type ReqTypeValue = typeof ReqType[keyof typeof ReqType]

/** criu_cg_mode: how CRIU handles cgroups (`--manage-cgroups=MODE`). */
export const CgMode = { IGNORE: 0, CG_NONE: 1, PROPS: 2, SOFT: 3, FULL: 4, STRICT: 5, DEFAULT: 6 } as const
export type CgModeName = keyof typeof CgMode

type Field = { type: string, id: number, rule?: 'required' | 'repeated' }
const opt = (type: string, id: number): Field => ({ type, id })
const req = (type: string, id: number): Field => ({ type, id, rule: 'required' })
const rep = (type: string, id: number): Field => ({ type, id, rule: 'repeated' })

const descriptor = {
  nested: {
    criu_page_server_info: { fields: { address: opt('string', 1), port: opt('int32', 2), pid: opt('int32', 3), fd: opt('int32', 4) } },
    inherit_fd: { fields: { key: req('string', 1), fd: req('int32', 2) } },
    cgroup_root: { fields: { ctrl: opt('string', 1), path: req('string', 2) } },
    criu_cg_mode: { values: CgMode },
    criu_req_type: { values: ReqType },
    criu_opts: {
      fields: {
        images_dir_fd: req('int32', 1),
        pid: opt('int32', 2),
        leave_running: opt('bool', 3),
        ext_unix_sk: opt('bool', 4),
        tcp_established: opt('bool', 5),
        evasive_devices: opt('bool', 6),
        shell_job: opt('bool', 7),
        file_locks: opt('bool', 8),
        log_level: opt('int32', 9),
        log_file: opt('string', 10),
        ps: opt('criu_page_server_info', 11),
        notify_scripts: opt('bool', 12),
        root: opt('string', 13),
        parent_img: opt('string', 14),
        track_mem: opt('bool', 15),
        auto_dedup: opt('bool', 16),
        work_dir_fd: opt('int32', 17),
        link_remap: opt('bool', 18),
        cpu_cap: opt('uint32', 20),
        force_irmap: opt('bool', 21),
        manage_cgroups: opt('bool', 24),
        cg_root: rep('cgroup_root', 25),
        rst_sibling: opt('bool', 26),
        inherit_fd: rep('inherit_fd', 27),
        auto_ext_mnt: opt('bool', 28),
        ext_sharing: opt('bool', 29),
        ext_masters: opt('bool', 30),
        skip_mnt: rep('string', 31),
        enable_fs: rep('string', 32),
        manage_cgroups_mode: opt('criu_cg_mode', 34),
        ghost_limit: opt('uint32', 35),
        external: rep('string', 37),
        empty_ns: opt('uint32', 38),
        freeze_cgroup: opt('string', 44),
        timeout: opt('uint32', 45),
        tcp_skip_in_flight: opt('bool', 46),
        weak_sysctls: opt('bool', 47),
        lazy_pages: opt('bool', 48),
        status_fd: opt('int32', 49),
        orphan_pts_master: opt('bool', 50),
        tcp_close: opt('bool', 52)
      }
    },
    criu_dump_resp: { fields: { restored: opt('bool', 1) } },
    criu_restore_resp: { fields: { pid: req('int32', 1) } },
    criu_notify: { fields: { script: opt('string', 1), pid: opt('int32', 2) } },
    criu_features: { fields: { mem_track: opt('bool', 1), lazy_pages: opt('bool', 2), pidfd_store: opt('bool', 3) } },
    criu_req: {
      fields: {
        type: req('criu_req_type', 1),
        opts: opt('criu_opts', 2),
        notify_success: opt('bool', 3),
        keep_open: opt('bool', 4),
        features: opt('criu_features', 5),
        pid: opt('uint32', 6)
      }
    },
    criu_version: {
      fields: {
        major_number: req('int32', 1),
        minor_number: req('int32', 2),
        gitid: opt('string', 3),
        sublevel: opt('int32', 4),
        extra: opt('int32', 5),
        name: opt('string', 6)
      }
    },
    criu_resp: {
      fields: {
        type: req('criu_req_type', 1),
        success: req('bool', 2),
        dump: opt('criu_dump_resp', 3),
        restore: opt('criu_restore_resp', 4),
        notify: opt('criu_notify', 5),
        ps: opt('criu_page_server_info', 6),
        cr_errno: opt('int32', 7),
        features: opt('criu_features', 8),
        cr_errmsg: opt('string', 9),
        version: opt('criu_version', 10),
        status: opt('int32', 11)
      }
    }
  }
}

export interface PageServerInfo { address?: string, port?: number, pid?: number, fd?: number }
export interface InheritFdEntry { key: string, fd: number }
export interface CgroupRootEntry { ctrl?: string, path: string }
export interface Features { mem_track?: boolean, lazy_pages?: boolean, pidfd_store?: boolean }

/** criu_opts as sent on the wire (only the fields ssi sets). */
export interface WireOpts {
  images_dir_fd: number
  pid?: number
  leave_running?: boolean
  ext_unix_sk?: boolean
  tcp_established?: boolean
  shell_job?: boolean
  file_locks?: boolean
  log_level?: number
  log_file?: string
  ps?: PageServerInfo
  notify_scripts?: boolean
  root?: string
  parent_img?: string
  track_mem?: boolean
  work_dir_fd?: number
  link_remap?: boolean
  manage_cgroups?: boolean
  cg_root?: CgroupRootEntry[]
  rst_sibling?: boolean
  inherit_fd?: InheritFdEntry[]
  auto_ext_mnt?: boolean
  ext_sharing?: boolean
  ext_masters?: boolean
  manage_cgroups_mode?: number
  ghost_limit?: number
  external?: string[]
  freeze_cgroup?: string
  timeout?: number
  tcp_close?: boolean
  lazy_pages?: boolean
  status_fd?: number
  orphan_pts_master?: boolean
}

export interface WireRequest {
  type: ReqTypeValue
  opts?: WireOpts
  notify_success?: boolean
  keep_open?: boolean
  features?: Features
  pid?: number
}

export interface WireVersion {
  major_number: number
  minor_number: number
  gitid?: string
  sublevel?: number
  extra?: number
  name?: string
}

export interface WireResponse {
  type: number
  success: boolean
  dump?: { restored?: boolean }
  restore?: { pid: number }
  notify?: { script?: string, pid?: number }
  ps?: PageServerInfo
  cr_errno?: number
  features?: Features
  cr_errmsg?: string
  version?: WireVersion
  status?: number
}

const root = protobuf.Root.fromJSON(descriptor)
const requestType = root.lookupType('criu_req')
const responseType = root.lookupType('criu_resp')

/** A malformed message: CRIU and ssi disagree on the protocol. */
export class CriuProtocolError extends Error {
  static override name = 'CriuProtocolError'
  override name = 'CriuProtocolError'
}

function encodeAs (type: protobuf.Type, message: object): Uint8Array {
  const problem = type.verify(message)
  if (problem !== null) throw new CriuProtocolError(`invalid ${type.name}: ${problem}`)
  return type.encode(type.fromObject(message as Record<string, unknown>)).finish()
}

function decodeAs (type: protobuf.Type, bytes: Uint8Array): Record<string, unknown> {
  try {
    // longs: plain numbers (no int64 fields here); absent optional fields stay absent.
    return type.toObject(type.decode(bytes), { longs: Number, defaults: false })
  } catch (err) {
    throw new CriuProtocolError(`cannot decode ${type.name} (${bytes.length} bytes)`, { cause: err })
  }
}

export function encodeRequest (request: WireRequest): Uint8Array {
  return encodeAs(requestType, request)
}

export function decodeRequest (bytes: Uint8Array): WireRequest {
  return decodeAs(requestType, bytes) as unknown as WireRequest
}

export function encodeResponse (response: WireResponse): Uint8Array {
  return encodeAs(responseType, response)
}

export function decodeResponse (bytes: Uint8Array): WireResponse {
  return decodeAs(responseType, bytes) as unknown as WireResponse
}
