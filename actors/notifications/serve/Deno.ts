/**
 * The handler on `Deno.serve`, which takes a web-standard handler as it is.
 */
import { type Adapter, internalError } from "./Listener.ts"

/** The part of Deno's API used here, typed locally so the file also type-checks under tsc. */
interface DenoServer {
  readonly addr: { readonly port: number }
  readonly finished: Promise<void>
  shutdown(): Promise<void>
}
interface DenoApi {
  serve(
    options: {
      readonly port: number
      readonly hostname: string
      readonly signal: AbortSignal
      readonly onListen: () => void
      readonly onError: (error: unknown) => Response
    },
    handler: (request: Request) => Promise<Response>,
  ): DenoServer
}

/**
 * @category adapters
 */
export const serve: Adapter = async (handler, { port, hostname }) => {
  const deno = (globalThis as unknown as { readonly Deno: DenoApi }).Deno
  // Aborting closes the listener and every connection: the forced stop.
  const abort = new AbortController()
  const server = deno.serve(
    // onListen replaces Deno's own "Listening on" line; the app prints its URL itself.
    { port, hostname, signal: abort.signal, onListen: () => {}, onError: internalError },
    handler,
  )
  return {
    port: server.addr.port,
    stop: () => server.shutdown(),
    forceStop: async () => {
      abort.abort()
      await server.finished
    },
  }
}
