/**
 * Lazy yamux window updates. @chainsafe/libp2p-yamux (8.0.1) answers every received data frame with
 * a window-update frame, so each heartbeat (one small frame) cost a second encrypted frame back: one
 * more write on the receiver and one more read and wake-up on the sender, about half of an idle
 * daemon's per-peer CPU. HashiCorp yamux, where the protocol comes from, only sends an update once
 * half the receive window has been consumed (or when a flag must go out); this restores that rule.
 *
 * Safe for throughput: the sender still holds at least half a window (≥ 128 KiB) when the update
 * is sent, and the window auto-tuning in the original method runs at each update as before. Wire
 * format and peers are unaffected (a peer with the eager rule interoperates). Applied once, on the
 * shared class, before any host is created; idempotent.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

interface WindowFields { recvWindow: number, recvWindowCapacity: number }

const PATCHED = Symbol.for('ssi.yamux.lazyWindowUpdate')

export function useLazyYamuxWindowUpdates (): void {
  const proto = YamuxStream.prototype as YamuxStream & { [PATCHED]?: true }
  if (proto[PATCHED] === true) return
  const eager = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: YamuxStream) {
    // Only Established sends no flag; Init/SYNReceived must send SYN/ACK, Paused is handled inside.
    const w = this as unknown as WindowFields
    if (this.state === StreamState.Established && w.recvWindowCapacity * 2 > w.recvWindow) return
    eager.call(this)
  }
  proto[PATCHED] = true
}
