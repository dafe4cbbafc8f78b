/**
 * The HTTP server as a layer: builds the handler from the app's services, serves it with the
 * adapter of the runtime it runs on, and stops it gracefully when the layer closes.
 *
 * This is the one place that knows which runtime it is on. Shutdown goes: mark the server closing
 * (`/readyz` fails, live streams end), stop accepting and let in-flight requests finish within
 * the deadline, then close whatever is left. The layer is built after, and so closed before, the
 * actor system and the producer that in-flight requests still use.
 */
import { Context, Data, Duration, Effect, Layer } from "effect"
import * as Handler from "../http/Handler.ts"
import * as Lifecycle from "../http/Lifecycle.ts"
import * as BunAdapter from "./Bun.ts"
import * as DenoAdapter from "./Deno.ts"
import type { Adapter } from "./Listener.ts"
import * as NodeAdapter from "./Node.ts"

/**
 * @category models
 */
export type Runtime = "bun" | "deno" | "node"

/**
 * The runtime this process runs on.
 *
 * @category runtime
 */
export const runtime: Runtime = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node"

/**
 * The adapter for a runtime.
 *
 * @category runtime
 */
export const adapters: Readonly<Record<Runtime, Adapter>> = {
  bun: BunAdapter.serve,
  deno: DenoAdapter.serve,
  node: NodeAdapter.serve,
}

/**
 * The adapters that work here: this runtime's own, and `node:http`, which Bun and Deno provide too.
 *
 * @category runtime
 */
export const available: ReadonlyArray<Runtime> = runtime === "node" ? ["node"] : [runtime, "node"]

/**
 * @category models
 */
export interface Options extends Handler.Options {
  /** Default 8080; 0 picks a free port. */
  readonly port?: number | undefined
  /** Default `127.0.0.1`: loopback only. `0.0.0.0` listens on every interface. */
  readonly hostname?: string | undefined
  /** Which adapter serves. Default: this runtime's own. */
  readonly adapter?: Runtime | undefined
  /** How long a graceful stop may wait for in-flight requests. Default 10 seconds. */
  readonly shutdownDeadline?: Duration.Input | undefined
}

/**
 * @category defaults
 */
export const defaults = {
  port: 8080,
  hostname: "127.0.0.1",
  shutdownDeadline: Duration.seconds(10),
}

/**
 * The port could not be bound.
 *
 * @category errors
 */
export class ServeError extends Data.TaggedError("ServeError")<{ readonly address: string; readonly reason: string }> {
  override get message(): string {
    return `Cannot listen on ${this.address}: ${this.reason}`
  }
}

/**
 * The running server.
 *
 * @category services
 */
export class HttpServer extends Context.Service<HttpServer, {
  readonly url: string
  readonly port: number
  readonly adapter: Runtime
}>()("notifications/HttpServer") {}

const hostForUrl = (hostname: string) =>
  hostname === "0.0.0.0" || hostname === "::" ? "127.0.0.1" : hostname.includes(":") ? `[${hostname}]` : hostname

/**
 * @category layers
 */
export const layer = (
  options: Options = {},
): Layer.Layer<HttpServer, ServeError, Exclude<Handler.Services, Lifecycle.Lifecycle>> =>
  Layer.effect(
    HttpServer,
    Effect.gen(function*() {
      const port = options.port ?? defaults.port
      const hostname = options.hostname ?? defaults.hostname
      const adapter = options.adapter ?? runtime
      const deadline = options.shutdownDeadline ?? defaults.shutdownDeadline
      const lifecycle = yield* Lifecycle.make
      const handler = yield* Handler.make(options).pipe(Effect.provideService(Lifecycle.Lifecycle, lifecycle))
      const listener = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => adapters[adapter](handler, { port, hostname }),
          catch: (error) =>
            new ServeError({
              address: `${hostname}:${port}`,
              reason: error instanceof Error ? error.message : String(error),
            }),
        }),
        (listener) =>
          Effect.gen(function*() {
            yield* lifecycle.close
            const stopped = yield* Effect.promise(listener.stop).pipe(Effect.timeoutOption(deadline))
            if (stopped._tag === "None") {
              yield* Effect.logWarning(`HTTP requests still running after ${Duration.format(Duration.fromInputUnsafe(deadline))}: closing their connections`)
              yield* Effect.promise(listener.forceStop)
            }
          }),
      )
      return HttpServer.of({ url: `http://${hostForUrl(hostname)}:${listener.port}`, port: listener.port, adapter })
    }),
  )
