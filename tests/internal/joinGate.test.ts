import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import * as net from "node:net"
import { test } from "node:test"
import { defaultSocketFactory, gated } from "../../lib/internal/joinGate.ts"

/** A request frame as kafkajs writes it: size, API key, version, correlation id, then a body. */
const frame = (apiKey: number, correlationId: number): Buffer => {
  const body = Buffer.alloc(12)
  body.writeInt16BE(apiKey, 0)
  body.writeInt16BE(0, 2)
  body.writeInt32BE(correlationId, 4)
  body.writeInt32BE(0, 8)
  const size = Buffer.alloc(4)
  size.writeInt32BE(body.length, 0)
  return Buffer.concat([size, body])
}

/** A local TCP server that collects the correlation ids of the frames it receives, in order. */
const listen = async () => {
  const received: Array<number> = []
  const sockets = new Set<net.Socket>()
  let pending = Buffer.alloc(0)
  let onFrame = () => {}
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("data", (data: Buffer) => {
      pending = Buffer.concat([pending, data])
      while (pending.length >= 4 && pending.length >= 4 + pending.readInt32BE(0)) {
        received.push(pending.readInt32BE(8))
        pending = pending.subarray(4 + pending.readInt32BE(0))
        onFrame()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as net.AddressInfo
  const frames = (count: number) =>
    new Promise<void>((resolve) => {
      onFrame = () => received.length >= count && resolve()
      onFrame()
    })
  const close = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  return { port, received, frames, close }
}

test("a JoinGroup frame waits for the gate while the frames after it go on", async () => {
  const server = await listen()
  let release: (() => void) | undefined
  const factory = gated(defaultSocketFactory, (go) => {
    release = go
  })
  const connected = Promise.withResolvers<void>()
  const socket = factory({ host: "127.0.0.1", port: server.port, ssl: undefined!, onConnect: () => connected.resolve() })
  try {
    await connected.promise
    assert.equal(socket.write(frame(12, 1)), true, "a heartbeat goes out")
    socket.write(frame(11, 2)) // JoinGroup: held
    socket.write(frame(8, 3)) // an offset commit after it
    await server.frames(2)
    assert.deepEqual(server.received, [1, 3], "the commit passed the held JoinGroup")
    assert.ok(release !== undefined, "the gate was asked about the JoinGroup")
    release()
    await server.frames(3)
    assert.deepEqual(server.received, [1, 3, 2], "released, the JoinGroup goes out")
  } finally {
    socket.destroy()
    await server.close()
  }
})
