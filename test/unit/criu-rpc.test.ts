/** CRIU RPC encoding, option mapping, log summaries and findCriu's refusals (no CRIU needed). */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { CriuNotFoundError, CriuVersionError, findCriu, versionAtLeast } from '../../src/migration/criu/index.js'
import { significantMessage, summarizeLog } from '../../src/migration/criu/errors.js'
import { dumpWireOpts, restoreWireOpts, type Plumbing } from '../../src/migration/criu/options.js'
import {
  CgMode, CriuProtocolError, decodeRequest, decodeResponse, encodeRequest, encodeResponse, ReqType
} from '../../src/migration/criu/rpc.js'

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex')
const plumbing: Plumbing = { imagesDirFd: 21, workDirFd: 22, logFile: 'dump.log', logLevel: 4 }
const scratch = mkdtempSync(join(tmpdir(), 'ssi-criu-unit-'))
afterAll(() => { rmSync(scratch, { recursive: true, force: true }) })

describe('criu rpc encoding', () => {
  it('uses rpc.proto field numbers on the wire', () => {
    // criu_req{type=DUMP(1), opts(2){images_dir_fd(1)=7, pid(2)=42}}
    expect(hex(encodeRequest({ type: ReqType.DUMP, opts: { images_dir_fd: 7, pid: 42 } }))).toBe('0801120408071' + '02a')
    // criu_req{type=NOTIFY(6), notify_success(3)=true}
    expect(hex(encodeRequest({ type: ReqType.NOTIFY, notify_success: true }))).toBe('08061801')
    // criu_opts.rst_sibling is field 26: tag (26<<3)|0 = 208 = varint d0 01
    expect(hex(encodeRequest({ type: ReqType.RESTORE, opts: { images_dir_fd: 1, rst_sibling: true } }))).toBe('0802120508' + '01d00101')
  })

  it('round-trips requests and responses', () => {
    const request = {
      type: ReqType.RESTORE,
      opts: {
        images_dir_fd: 5,
        log_file: 'restore.log',
        log_level: 4,
        rst_sibling: true,
        inherit_fd: [{ key: 'pipe:[123]', fd: 4 }],
        cg_root: [{ ctrl: 'memory', path: '/ssi/j1' }, { path: '/ssi/all' }],
        manage_cgroups_mode: CgMode.SOFT,
        external: ['mnt[]'],
        ps: { address: '127.0.0.1', port: 27000 }
      }
    }
    expect(decodeRequest(encodeRequest(request))).toEqual(request)
    const response = {
      type: ReqType.RESTORE,
      success: false,
      restore: { pid: 4242 },
      cr_errno: 2,
      cr_errmsg: 'Error (criu/image.c:554): Head magic doesn\'t match',
      version: { major_number: 4, minor_number: 2, sublevel: 1 }
    }
    expect(decodeResponse(encodeResponse(response))).toEqual(response)
    expect(decodeResponse(encodeResponse({ type: ReqType.NOTIFY, success: true, notify: { script: 'post-dump' } })).notify).toEqual({ script: 'post-dump' })
  })

  it('rejects malformed messages with CriuProtocolError', () => {
    expect(() => decodeResponse(Uint8Array.from([0x08]))).toThrow(CriuProtocolError)
    // a response without its required `success`
    expect(() => decodeResponse(Uint8Array.from([0x08, 0x01]))).toThrow(CriuProtocolError)
    expect(() => encodeRequest({ type: ReqType.DUMP, opts: { images_dir_fd: 'x' as unknown as number } })).toThrow(CriuProtocolError)
  })
})

describe('criu option mapping', () => {
  it('maps dump options and leaves unset ones out', () => {
    const opts = dumpWireOpts({
      pid: 77, imagesDir: '/x', leaveRunning: true, lazyPages: true, pageServer: { address: '10.0.0.1', port: 1234 },
      ghostLimit: 4 << 20, external: ['mnt[]'], manageCgroups: 'IGNORE', onNotify: () => {}
    }, plumbing)
    expect(opts).toEqual({
      images_dir_fd: 21, work_dir_fd: 22, log_file: 'dump.log', log_level: 4, notify_scripts: true,
      pid: 77, leave_running: true, lazy_pages: true, ps: { address: '10.0.0.1', port: 1234 },
      ghost_limit: 4 << 20, external: ['mnt[]'], manage_cgroups_mode: CgMode.IGNORE
    })
    expect(() => dumpWireOpts({ pid: 0, imagesDir: '/x' }, plumbing)).toThrow(RangeError)
  })

  it('numbers inherited fds as criu sees them (4, 5, ...) and restores as a sibling by default', () => {
    const opts = restoreWireOpts({
      imagesDir: '/x', inheritFd: [{ fd: 40, key: 'pipe:[1]' }, { fd: 41, key: 'pipe:[2]' }],
      cgroupRoot: [{ controller: 'cpu,cpuacct', path: '/a' }, { path: '/b' }], manageCgroups: true
    }, plumbing)
    expect(opts.rst_sibling).toBe(true)
    expect(opts.inherit_fd).toEqual([{ key: 'pipe:[1]', fd: 4 }, { key: 'pipe:[2]', fd: 5 }])
    expect(opts.cg_root).toEqual([{ ctrl: 'cpu,cpuacct', path: '/a' }, { path: '/b' }])
    expect(opts.manage_cgroups).toBe(true)
    expect(opts.notify_scripts).toBeUndefined()
  })
})

describe('criu log summaries', () => {
  const log = join(scratch, 'restore.log')
  writeFileSync(log, [
    '(00.000001) Version: 4.2.1',
    '(00.021044) Error (criu/util.c:1534): rlimit: Can\'t setup RLIMIT_NOFILE for self: Operation not permitted',
    '(00.021100) Reading image tree',
    '(00.021115) Error (criu/image.c:554): Head magic doesn\'t match for pstree.img',
    '(00.021200) Unlock network'
  ].join('\n'))

  it('prefers the real error over the harmless rlimit one', () => {
    const rlimit = 'Error (criu/util.c:1534): rlimit: Can\'t setup RLIMIT_NOFILE for self: Operation not permitted'
    expect(significantMessage(rlimit, log)).toBe('Error (criu/image.c:554): Head magic doesn\'t match for pstree.img')
    expect(significantMessage('Error: something else', log)).toBe('Error: something else')
    expect(significantMessage(undefined, join(scratch, 'missing.log'))).toBeUndefined()
  })

  it('shows error lines, then the end of the log', () => {
    const summary = summarizeLog(log)
    expect(summary).toContain('Head magic')
    expect(summary).not.toContain('RLIMIT_NOFILE')
    expect(summary.split('\n').at(-1)).toContain('Unlock network')
    expect(summarizeLog(join(scratch, 'missing.log'))).toBe('')
  })
})

describe('findCriu', () => {
  it('compares versions', () => {
    expect(versionAtLeast({ major: 4, minor: 2 })).toBe(true)
    expect(versionAtLeast({ major: 5, minor: 0 })).toBe(true)
    expect(versionAtLeast({ major: 4, minor: 1 })).toBe(false)
    expect(versionAtLeast({ major: 3, minor: 17 })).toBe(false)
  })

  it('says what it tried when there is no criu', async () => {
    const env = { PATH: scratch, SSI_CRIU: '' }
    await expect(findCriu({ env, pathFile: join(scratch, 'nope') })).rejects.toThrow(CriuNotFoundError)
    await expect(findCriu({ env, pathFile: join(scratch, 'nope') })).rejects.toThrow(/provision\.sh/)
  })

  it('refuses a binary that does not speak CRIU RPC', async () => {
    const fake = join(scratch, 'criu')
    writeFileSync(fake, '#!/bin/sh\necho "Version: 3.17" >&2\nexit 1\n')
    chmodSync(fake, 0o755)
    const error = await findCriu({ env: { SSI_CRIU: fake }, pathFile: join(scratch, 'nope') }).catch((err: unknown) => err)
    expect(error).toBeInstanceOf(CriuVersionError)
    expect(String(error)).toContain(fake)
  })
})
