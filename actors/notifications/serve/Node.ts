/**
 * The handler on `node:http`, translating between Node's request/response objects and
 * web-standard ones. Works on Node, and on Bun and Deno through their `node:http`.
 *
 * Bodies stream both ways: the request body is a web stream over the socket (read only as far as
 * the handler reads it), and the response body is written chunk by chunk as it is produced, with
 * backpressure, so Server-Sent Events go out as they happen. When the client goes away the
 * request's `signal` aborts and the response stream is cancelled.
 */
import { once } from "node:events"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { Readable } from "node:stream"
import { type Adapter, internalError } from "./Listener.ts"

const toRequest = (incoming: http.IncomingMessage, origin: string, signal: AbortSignal): Request => {
  const headers = new Headers()
  for (let i = 0; i < incoming.rawHeaders.length; i += 2) headers.append(incoming.rawHeaders[i]!, incoming.rawHeaders[i + 1]!)
  const method = incoming.method ?? "GET"
  const hasBody = method !== "GET" && method !== "HEAD"
  // The origin is the listener's own, never the client's Host header.
  return new Request(new URL(incoming.url ?? "/", origin), {
    method,
    headers,
    signal,
    ...(hasBody ? { body: Readable.toWeb(incoming) as unknown as ReadableStream<Uint8Array>, duplex: "half" } : {}),
  } as RequestInit)
}

const write = async (response: Response, outgoing: http.ServerResponse): Promise<void> => {
  const headers: Record<string, string> = {}
  response.headers.forEach((value, key) => {
    headers[key] = value
  })
  outgoing.writeHead(response.status, headers)
  outgoing.flushHeaders()
  if (response.body === null) {
    outgoing.end()
    return
  }
  const reader = response.body.getReader()
  outgoing.once("close", () => void reader.cancel().catch(() => {}))
  while (true) {
    const chunk = await reader.read()
    if (chunk.done) break
    if (!outgoing.write(chunk.value)) await once(outgoing, "drain")
  }
  outgoing.end()
}

/**
 * @category adapters
 */
export const serve: Adapter = (handler, { port, hostname }) =>
  new Promise((resolve, reject) => {
    let origin = ""
    let closing = false
    const server = http.createServer((incoming, outgoing) => {
      // While stopping, every answer closes its connection, and a connection whose answer ends is
      // closed then: Node's close() would otherwise wait for clients to drop their keep-alives.
      if (closing) outgoing.shouldKeepAlive = false
      outgoing.once("finish", () => {
        if (closing) setImmediate(() => server.closeIdleConnections())
      })
      const abort = new AbortController()
      outgoing.once("close", () => {
        if (!outgoing.writableFinished) abort.abort()
      })
      incoming.socket.setNoDelay(true)
      handler(toRequest(incoming, origin, abort.signal))
        .catch(internalError)
        .then((response) => write(response, outgoing))
        .catch(() => outgoing.destroy())
    })
    server.once("error", reject)
    server.listen(port, hostname, () => {
      server.off("error", reject)
      const address = server.address() as AddressInfo
      origin = `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${address.port}`
      resolve({
        port: address.port,
        stop: () =>
          new Promise<void>((done) => {
            closing = true
            // A keep-alive connection may turn idle only after this call (Deno's node:http marks
            // it later than Node does), so look again until the server has closed.
            const sweep = setInterval(() => server.closeIdleConnections(), 100)
            server.close(() => {
              clearInterval(sweep)
              done()
            })
            server.closeIdleConnections()
          }),
        forceStop: async () => {
          server.closeAllConnections()
        },
      })
    })
  })
