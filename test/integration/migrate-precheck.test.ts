/**
 * The pre-freeze scan on real processes: an established TCP connection to a non-loopback address
 * stops a migration, one over loopback does not, and the scan covers the whole process tree.
 * Needs a non-loopback IPv4 address on this host.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, type Server, type Socket } from 'node:net'
import { networkInterfaces } from 'node:os'
import { afterEach, describe, expect, it } from 'vitest'
import { findUnmigratable, processTree } from '../../src/migration/precheck.js'

function externalIPv4 (): string {
  const addr = Object.values(networkInterfaces()).flat().find(a => a !== undefined && a.family === 'IPv4' && !a.internal)
  if (addr === undefined) throw new Error('this test needs a non-loopback IPv4 address on the host')
  return addr.address
}

const children: ChildProcess[] = []
const servers: Server[] = []
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL')
  for (const s of servers.splice(0)) s.close()
})

/** A server on all addresses, and a shell whose child (node) connects to host:port and stays. */
async function connectedTree (host: string): Promise<{ shell: ChildProcess, accepted: Promise<Socket> }> {
  const server = createServer()
  servers.push(server)
  const accepted = new Promise<Socket>(resolve => server.once('connection', resolve))
  await new Promise<void>(resolve => server.listen(0, '0.0.0.0', resolve))
  const port = (server.address() as { port: number }).port
  const script = `require('net').connect(${port}, '${host}'); setInterval(() => {}, 1000)`
  const shell = spawn('sh', ['-c', `"${process.execPath}" -e "${script}"; true`], { stdio: 'ignore', env: { UV_USE_IO_URING: '0' } })
  children.push(shell)
  const socket = await accepted
  socket.on('error', () => {})
  return { shell, accepted }
}

describe('pre-migration scan', () => {
  it('refuses a tree with an established TCP connection to a non-loopback address, naming pid and fd', async () => {
    const { shell } = await connectedTree(externalIPv4())
    const tree = await processTree(shell.pid ?? -1)
    expect(tree.length).toBeGreaterThanOrEqual(2)
    const reasons = await findUnmigratable(shell.pid ?? -1)
    expect(reasons.some(r => /^pid \d+ fd \d+: established TCP connection to .* \(not loopback\)$/.test(r))).toBe(true)
  })

  it('lets loopback connections through', async () => {
    const { shell } = await connectedTree('127.0.0.1')
    const reasons = await findUnmigratable(shell.pid ?? -1)
    expect(reasons.filter(r => r.includes('TCP'))).toEqual([])
  })
})
