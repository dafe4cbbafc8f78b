/**
 * The handler on `Bun.serve`, which takes a web-standard handler as it is.
 */
import { type Adapter, internalError } from "./Listener.ts"

/** The part of Bun's API used here, typed locally so the file also type-checks under Deno. */
interface BunServer {
  readonly port: number
  stop(closeActiveConnections?: boolean): Promise<void> | void
}
interface BunApi {
  serve(options: {
    readonly port: number
    readonly hostname: string
    readonly fetch: (request: Request) => Promise<Response>
    readonly error: (error: unknown) => Response
    readonly idleTimeout: number
  }): BunServer
}

/**
 * @category adapters
 */
export const serve: Adapter = async (handler, { port, hostname }) => {
  const bun = (globalThis as unknown as { readonly Bun: BunApi }).Bun
  const server = bun.serve({
    port,
    hostname,
    fetch: handler,
    error: internalError,
    // Seconds without a byte before Bun drops a connection; live streams send one every 15.
    idleTimeout: 60,
  })
  return {
    port: server.port,
    stop: async () => {
      await server.stop(false)
    },
    forceStop: async () => {
      await server.stop(true)
    },
  }
}
