/**
 * The JoinGroup gate of a kafkajs consumer: its connections' JoinGroup requests wait until the
 * member acknowledged the revocation of its previous generation.
 *
 * Why at the socket: kafkajs rejoins as soon as any heartbeat answers `REBALANCE_IN_PROGRESS`
 * (`Runner.heartbeat` throws into the fetch loop, whose `scheduleFetchManager` calls
 * `consumerGroup.joinAndSync()` at once), and the heartbeats that find a rebalance are mostly its
 * own: after an empty fetch (`Runner.fetch`) and after each `eachBatch` returned
 * (`Runner.handleBatch`). Between that answer and the JoinGroup it awaits nothing a user supplies:
 * the assignor's `protocol()` is called synchronously while the request is built. Kafka's classic
 * coordinator still takes commits of the old generation while the group prepares the rebalance,
 * and completes the join only once every member has sent JoinGroup (or the rebalance timeout
 * passed). So a member whose JoinGroup waits for its acknowledgement commits what it finished,
 * and no member gets its partitions before it let them go: the contract holds on followers too.
 *
 * kafkajs' public `socketFactory` option is the one place on that path: kafkajs writes each
 * request as one whole frame (`Connection.send`: size, then the header's API key), so a frame
 * with JoinGroup's key (11) is held, and the frames after it (commits, heartbeats) go on; kafkajs
 * matches responses by correlation id, so the order on the wire does not matter to it. kafkajs
 * times a JoinGroup out after the rebalance timeout plus 5 s, longer than any hold here.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import type { ISocketFactory } from "kafkajs"

/** JoinGroup's API key in Kafka's protocol. */
const JOIN_GROUP = 11

/** kafkajs' own default: a plain or TLS connection with TCP keep-alive. */
export const defaultSocketFactory: ISocketFactory = ({ host, port, ssl, onConnect }) => {
  const socket = ssl
    ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...ssl }, onConnect)
    : net.connect({ host, port }, onConnect)
  socket.setKeepAlive(true, 60_000)
  return socket
}

/** Called with the held request's release: call it once the JoinGroup may be sent. */
export type JoinGate = (release: () => void) => void

/** A whole request frame (its size prefix matches) with JoinGroup's API key. */
const isJoinGroup = (chunk: unknown): boolean => {
  if (!(chunk instanceof Uint8Array) || chunk.byteLength < 8) return false
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  return view.getInt32(0) === chunk.byteLength - 4 && view.getInt16(4) === JOIN_GROUP
}

/** `base`'s sockets, whose JoinGroup frames pass through `gate` first. */
export const gated = (base: ISocketFactory, gate: JoinGate): ISocketFactory => (args) => {
  const socket = base(args)
  const write = socket.write
  const held: typeof socket.write = function (this: net.Socket, chunk: unknown, ...rest: Array<unknown>) {
    if (!isJoinGroup(chunk)) return Reflect.apply(write, socket, [chunk, ...rest])
    gate(() => {
      if (!socket.destroyed) Reflect.apply(write, socket, [chunk, ...rest])
    })
    return true
  }
  socket.write = held
  return socket
}
