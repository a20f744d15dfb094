import { readFile } from 'node:fs/promises'
import type { JobOwner } from '../ssi/jobs/record.js'

export interface PeerCredentials { readonly uid: number, readonly gid: number, readonly pid: number }

/**
 * Turns the kernel-verified credentials of a control-socket caller into a job owner: the
 * supplementary groups come from the caller's /proc entry, the name from the passwd database.
 */
export async function ownerFromCredentials (cred: PeerCredentials): Promise<JobOwner> {
  const [groups, user] = await Promise.all([supplementaryGroups(cred), userName(cred.uid)])
  return { uid: cred.uid, gid: cred.gid, groups, user }
}

async function supplementaryGroups (cred: PeerCredentials): Promise<number[]> {
  try {
    const status = await readFile(`/proc/${cred.pid}/status`, 'utf8')
    const uidLine = /^Uid:\s+(\d+)/m.exec(status)
    // Guard against pid reuse: the process must still be the caller's.
    if (Number(uidLine?.[1]) !== cred.uid) return [cred.gid]
    const groups = (/^Groups:[ \t]*(.*)$/m.exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number).filter(Number.isInteger)
    return groups.length > 0 ? groups : [cred.gid]
  } catch {
    return [cred.gid]
  }
}

async function userName (uid: number): Promise<string> {
  try {
    const passwd = await readFile('/etc/passwd', 'utf8')
    for (const line of passwd.split('\n')) {
      const f = line.split(':')
      if (Number(f[2]) === uid && f[0] !== undefined && f[0] !== '') return f[0]
    }
  } catch { /* fall through */ }
  return String(uid)
}
