import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ConfigError, findNode, loadClusterConfig, parseClusterConfig } from '../../src/node/config.js'
import { parseBytes, parseDurationMs } from '../../src/node/units.js'

const base = {
  cluster: { name: 'c1', keyFile: 'c1.key' },
  nodes: [{ name: 'n1', id: 1, listen: '/ip4/127.0.0.1/tcp/7001' }]
}

describe('cluster config', () => {
  it('loads the shipped configs', async () => {
    const single = await loadClusterConfig('cluster-configs/single.yaml')
    expect(single.nodes).toHaveLength(1)
    const three = await loadClusterConfig('cluster-configs/local-3.yaml')
    expect(three.nodes.map(n => n.name)).toEqual(['n1', 'n2', 'n3'])
    expect(three.nodes[1]?.stateDir).toBe('/var/lib/ssi/local-3/n2')
    expect(three.nodes[1]?.controlSocket).toBe('/run/ssi/local-3/n2.sock')
    expect(three.jobs.logRetentionBytes).toBe(64 * 1024 * 1024)
  })

  it('fills documented defaults and resolves relative paths against the file', () => {
    const c = parseClusterConfig(base, '/etc/ssi/cluster.yaml')
    expect(c.keyFile).toBe('/etc/ssi/c1.key')
    expect(c.gossip.heartbeatMs).toBe(1000)
    expect(c.failureDetection).toMatchObject({ suspectAfterMs: 2000, deadAfterMs: 2500 })
    expect(c.jobs.pids).toBe(4096)
  })

  it.each([
    [{ ...base, nodes: [] }, /nodes: .*/],
    [{ ...base, nodes: [{ ...base.nodes[0], id: 0 }] }, /nodes\.0\.id: /],
    [{ ...base, nodes: [{ ...base.nodes[0], listen: 'localhost:7001' }] }, /nodes\.0\.listen: must look like/],
    [{ ...base, nodes: [{ ...base.nodes[0], name: 'N 1' }] }, /nodes\.0\.name: must be lowercase/],
    [{ ...base, nodes: [{ ...base.nodes[0], colour: 'red' }] }, /nodes\.0: .*colour/],
    [{ ...base, nodes: [base.nodes[0], { ...base.nodes[0], listen: '/ip4/127.0.0.1/tcp/7002' }] }, /nodes\.1\.name: duplicate value n1/],
    [{ ...base, failureDetection: { suspectAfterMs: 3000, deadAfterMs: 2000 } }, /deadAfterMs: must be greater/],
    [{ ...base, jobs: { memory: 'lots' } }, /jobs\.memory: "lots" is not a size/],
    [{ nodes: base.nodes }, /cluster: /]
  ])('rejects a bad config naming the field (%#)', (raw, message) => {
    expect(() => parseClusterConfig(raw, '/x.yaml')).toThrow(ConfigError)
    expect(() => parseClusterConfig(raw, '/x.yaml')).toThrow(message)
  })

  it('reports unreadable files and YAML syntax errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ssi-config-'))
    try {
      await expect(loadClusterConfig(join(dir, 'missing.yaml'))).rejects.toThrow(/cannot read config/)
      await writeFile(join(dir, 'bad.yaml'), 'cluster: [unclosed\n')
      await expect(loadClusterConfig(join(dir, 'bad.yaml'))).rejects.toThrow(/not valid YAML/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('finds nodes by name and lists the known ones otherwise', () => {
    const c = parseClusterConfig(base, '/x.yaml')
    expect(findNode(c, 'n1').id).toBe(1)
    expect(() => findNode(c, 'n9')).toThrow(/unknown node "n9" .*nodes: n1/)
  })
})

describe('units', () => {
  it('parses sizes and durations', () => {
    expect(parseBytes('512MiB')).toBe(512 * 1024 * 1024)
    expect(parseBytes('2G')).toBe(2 * 1024 ** 3)
    expect(parseBytes('1.5GB')).toBe(1.5e9)
    expect(parseBytes(4096)).toBe(4096)
    expect(() => parseBytes('-1')).toThrow(/not a size/)
    expect(() => parseBytes('0')).toThrow(/not a positive size/)
    expect(parseDurationMs('60s')).toBe(60_000)
    expect(parseDurationMs('500ms')).toBe(500)
    expect(parseDurationMs('2m')).toBe(120_000)
    expect(() => parseDurationMs('soon')).toThrow(/not a duration/)
  })
})
