import { describe, expect, it } from 'vitest'
import { loadClusterConfig, parseClusterConfig } from '../../src/node/config.js'
import { hostVeth, netnsCommand, netnsName } from '../../src/node/netns/network.js'

const base = (netns: unknown, listens = ['/ip4/10.213.0.11/tcp/7101', '/ip4/10.213.0.12/tcp/7101']): unknown => ({
  cluster: { name: 'c', keyFile: 'k' },
  netns,
  nodes: listens.map((listen, i) => ({ name: `n${i + 1}`, id: i + 1, listen }))
})

describe('netns cluster config', () => {
  it('cluster-configs/netns-4.yaml: four nodes on 10.213.0.0/24, the bridge at .1', async () => {
    const c = await loadClusterConfig('cluster-configs/netns-4.yaml')
    expect(c.netns).toEqual({ bridge: 'ssibr-netns4', subnet: '10.213.0.0/24', gateway: '10.213.0.1' })
    expect(c.nodes.map(n => n.listen)).toEqual([11, 12, 13, 14].map(h => `/ip4/10.213.0.${h}/tcp/7101`))
  })

  it('loopback configs have no netns section', async () => {
    expect((await loadClusterConfig('cluster-configs/local-3.yaml')).netns).toBeUndefined()
  })

  it('rejects node addresses outside the subnet, the bridge address, bad bridge names and subnets', () => {
    const ok = { bridge: 'ssibr-x', subnet: '10.213.0.0/24' }
    expect(() => parseClusterConfig(base(ok, ['/ip4/127.0.0.1/tcp/1', '/ip4/10.213.0.12/tcp/1']), '/c.yaml')).toThrow(/nodes\.0\.listen: a netns cluster needs addresses in 10\.213\.0\.2-254/)
    expect(() => parseClusterConfig(base(ok, ['/ip4/10.213.0.1/tcp/1', '/ip4/10.213.0.12/tcp/1']), '/c.yaml')).toThrow(/nodes\.0\.listen/)
    expect(() => parseClusterConfig(base({ ...ok, bridge: 'br0' }), '/c.yaml')).toThrow(/netns\.bridge: must start with "ssi"/)
    expect(() => parseClusterConfig(base({ ...ok, bridge: 'ssi-much-too-long' }), '/c.yaml')).toThrow(/netns\.bridge/)
    expect(() => parseClusterConfig(base({ ...ok, subnet: '10.213.0.0/16' }), '/c.yaml')).toThrow(/netns\.subnet: must be an IPv4 \/24/)
    expect(() => parseClusterConfig(base({ ...ok, extra: 1 }), '/c.yaml')).toThrow(/netns/)
  })

  it('names everything by prefix, within the kernel limit for link names', () => {
    expect(netnsName('netns-4', 'n2')).toBe('ssi-netns-4-n2')
    expect(hostVeth('a-cluster-name-of-thirty-chars', 65535)).toMatch(/^ssv[0-9a-f]{6}ffff$/)
    expect(hostVeth('x', 65535).length).toBeLessThanOrEqual(15)
    const node = { name: 'n2', id: 2, listen: '/ip4/10.213.0.12/tcp/1', stateDir: '/s', controlSocket: '/s.sock' }
    expect(netnsCommand('netns-4', node, ['node', 'ssid.js'])).toEqual([
      'nsenter', '--net=/run/netns/ssi-netns-4-n2', '--', 'unshare', '--uts', '--mount', '--propagation', 'private', '--',
      '/bin/sh', '-c', 'hostname "$0" && exec "$@"', 'n2', 'node', 'ssid.js'
    ])
  })
})
