/** A connected pair of loopback TCP sockets (half-open allowed), for tests of socket bridges. */
import { connect, createServer } from 'node:net'
import type { Socket } from 'node:net'

/** [the accepted end, the dialing end]; the listener is closed once they are connected. */
export async function loopbackPair (): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const accepted = new Promise<Socket>(resolve => server.once('connection', resolve))
  const dialer = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  const acceptedEnd = await accepted
  server.close()
  return [acceptedEnd, dialer]
}
