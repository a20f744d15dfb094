import { describe, expect, it } from 'vitest'
import { mappedFiles, mountsOfPaths, mountsToSkip, parseMountinfo } from '../../src/migration/skip-mounts.js'

// A job's namespace on a Docker host: root, system mounts, cgroups, Docker's netns and overlay,
// a tmpfs under /tmp with a child, a data mount the job works in, and the job's own /proc.
const INFO = [
  '100 90 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
  '101 100 0:6 / /dev rw - devtmpfs devtmpfs rw',
  '102 101 0:24 / /dev/pts rw - devpts devpts rw',
  '103 101 0:23 / /dev/shm rw - tmpfs tmpfs rw',
  '104 101 0:19 / /dev/mqueue rw - mqueue mqueue rw',
  '105 100 0:22 / /sys rw - sysfs sysfs rw',
  '106 105 0:25 / /sys/fs/cgroup ro - tmpfs tmpfs ro',
  '107 106 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
  '108 100 0:27 / /run rw - tmpfs tmpfs rw',
  '109 108 0:4 net:[4026532301] /run/docker/netns/abc rw - nsfs nsfs rw',
  '110 100 0:40 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw',
  '111 100 0:41 / /tmp/ssi-a\\040b rw - tmpfs tmpfs rw',
  '112 111 0:42 / /tmp/ssi-a\\040b/inner rw - tmpfs tmpfs rw',
  '113 100 0:43 / /data rw - tmpfs tmpfs rw',
  '114 113 0:44 / /data/sub rw - tmpfs tmpfs rw',
  '115 100 0:45 / /proc rw - proc proc rw',
  ''
].join('\n')

describe('mountsToSkip', () => {
  it('keeps root, system mounts, cgroups and the job\'s /proc; leaves out unused host mounts as whole subtrees', () => {
    const skip = mountsToSkip(INFO, new Set())
    expect(skip.sort()).toEqual(['/data', '/data/sub', '/run', '/run/docker/netns/abc', '/tmp/ssi-a b', '/tmp/ssi-a b/inner', '/var/lib/docker/overlay2/x/merged'])
  })

  it('keeps a used mount and its ancestors, but not its unused siblings or children of other parents', () => {
    const skip = mountsToSkip(INFO, new Set([114, 109]))
    expect(skip).not.toContain('/data')
    expect(skip).not.toContain('/data/sub')
    expect(skip).not.toContain('/run')
    expect(skip).not.toContain('/run/docker/netns/abc')
    expect(skip.sort()).toEqual(['/tmp/ssi-a b', '/tmp/ssi-a b/inner', '/var/lib/docker/overlay2/x/merged'])
  })

  it('never leaves out a parent while keeping a child (used child keeps the whole chain)', () => {
    const skip = mountsToSkip(INFO, new Set([112]))
    expect(skip).not.toContain('/tmp/ssi-a b')
    expect(skip).not.toContain('/tmp/ssi-a b/inner')
    for (const m of parseMountinfo(INFO)) {
      const parent = parseMountinfo(INFO).find(p => p.id === m.parent)
      if (parent !== undefined && skip.includes(parent.mountPoint)) expect(skip).toContain(m.mountPoint)
    }
  })

  it('does not leave out a mount point where another stacked mount is kept', () => {
    const stacked = INFO + '116 111 0:46 / /tmp/ssi-a\\040b rw - tmpfs tmpfs rw\n'
    expect(mountsToSkip(stacked, new Set([116]))).not.toContain('/tmp/ssi-a b')
  })

  it('a job whose cwd is on a host tmpfs keeps that mount (not in the skip list)', () => {
    const mounts = parseMountinfo(INFO)
    const used = mountsOfPaths(mounts, [{ path: '/tmp/ssi-a b/work', dev: '0:41' }])
    expect(used).toEqual(new Set([111]))
    expect(mountsToSkip(INFO, used)).not.toContain('/tmp/ssi-a b')
  })
})

describe('mountsOfPaths / mappedFiles', () => {
  it('takes the longest prefix mount, not a mount whose name merely starts the same', () => {
    const mounts = parseMountinfo(INFO)
    expect(mountsOfPaths(mounts, [{ path: '/data/sub/x' }])).toEqual(new Set([114]))
    expect(mountsOfPaths(mounts, [{ path: '/datafile' }])).toEqual(new Set([100]))
    expect(mountsOfPaths(mounts, [{ path: '/usr/bin/sh', dev: '0:43' }])).toEqual(new Set([100, 113]))
  })

  it('parses mapped files with their device, dropping anonymous maps and "(deleted)"', () => {
    const maps = [
      '55d1c0a00000-55d1c0a02000 r--p 00000000 fe:01 1234                       /usr/bin/sleep',
      '7f0000000000-7f0000001000 rw-p 00000000 00:00 0                          [heap]',
      '7f0000001000-7f0000002000 rw-s 00000000 00:2b 77                         /dev/shm/x (deleted)',
      '7f0000002000-7f0000003000 rw-p 00000000 00:00 0 '
    ].join('\n')
    expect(mappedFiles(maps)).toEqual([{ path: '/usr/bin/sleep', dev: '254:1' }, { path: '/dev/shm/x', dev: '0:43' }])
  })
})
