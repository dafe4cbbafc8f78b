/**
 * The server's own state: whether it is shutting down. `/readyz` reports it, and live streams end
 * when it begins, so a graceful stop is not held open by clients that would never leave.
 */
import { Context, Deferred, Effect } from "effect"

/**
 * @category services
 */
export class Lifecycle extends Context.Service<Lifecycle, {
  /** Completes when shutdown begins. */
  readonly closing: Effect.Effect<void>
  readonly isClosing: Effect.Effect<boolean>
  /** Begins shutdown; idempotent. */
  readonly close: Effect.Effect<void>
}>()("notifications/Lifecycle") {}

/**
 * @category constructors
 */
export const make = Effect.map(Deferred.make<void>(), (deferred) =>
  Lifecycle.of({
    closing: Deferred.await(deferred),
    isClosing: Deferred.isDone(deferred),
    close: Effect.asVoid(Deferred.succeed(deferred, undefined)),
  }))
