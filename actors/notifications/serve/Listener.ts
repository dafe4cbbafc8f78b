/**
 * The contract every runtime adapter implements: serve a `Handler` on a port, stop gracefully,
 * stop at once. The adapters are the only runtime-specific code of the app (Hono's model), one
 * small file each.
 */
import type { Handler } from "../http/Handler.ts"

/**
 * A listening server.
 *
 * @category models
 */
export interface Listener {
  readonly port: number
  /** Stops accepting connections and resolves once in-flight requests have been answered. */
  readonly stop: () => Promise<void>
  /** Closes every connection now. */
  readonly forceStop: () => Promise<void>
}

/**
 * Serves `handler`; rejects if the port cannot be bound.
 *
 * @category models
 */
export type Adapter = (
  handler: Handler,
  options: { readonly port: number; readonly hostname: string },
) => Promise<Listener>

/** The 500 an adapter answers if the handler itself threw (it is built not to). */
export const internalError = (): Response =>
  new Response(`{"error":"Internal error"}`, { status: 500, headers: { "content-type": "application/json" } })
