/**
 * Live notifications per user, for Server-Sent Events: the worker publishes each notification it
 * stored, and every open stream of its recipient gets it.
 *
 * Each user has a sliding PubSub: a subscriber that falls behind by more than `capacity` loses
 * the oldest notifications it has not read, never slows the worker down, and can read them from
 * the store. Closing the layer shuts every PubSub down, which ends the open streams.
 */
import { Context, Effect, Layer, PubSub, type Scope, Stream } from "effect"
import type { Notification } from "./Domain.ts"

/**
 * @category defaults
 */
export const defaults = {
  /** Notifications a slow subscriber may fall behind by before the oldest are dropped for it. */
  capacity: 256,
}

/**
 * @category services
 */
export class LiveFeed extends Context.Service<LiveFeed, {
  readonly publish: (notification: Notification) => Effect.Effect<void>
  /**
   * Subscribes at once, in the current scope, and returns the notifications published from
   * then on; subscribing before reading the store means nothing falls between the two.
   */
  readonly subscribe: (userId: number) => Effect.Effect<Stream.Stream<Notification>, never, Scope.Scope>
}>()("notifications/LiveFeed") {}

/**
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(options: { readonly capacity?: number | undefined } = {}) {
  const capacity = options.capacity ?? defaults.capacity
  const feeds = new Map<number, PubSub.PubSub<Notification>>()
  const feedOf = (userId: number) =>
    Effect.suspend(() => {
      const existing = feeds.get(userId)
      if (existing !== undefined) return Effect.succeed(existing)
      // Check again once created: another fiber may have created it meanwhile.
      return Effect.map(PubSub.sliding<Notification>(capacity), (created) => {
        const winner = feeds.get(userId) ?? created
        feeds.set(userId, winner)
        return winner
      })
    })
  yield* Effect.addFinalizer(() => Effect.forEach([...feeds.values()], PubSub.shutdown, { discard: true }))
  return LiveFeed.of({
    publish: (notification) => Effect.flatMap(feedOf(notification.to.id), (feed) => PubSub.publish(feed, notification)),
    subscribe: (userId) =>
      Effect.flatMap(feedOf(userId), PubSub.subscribe).pipe(Effect.map(Stream.fromSubscription)),
  })
})

/**
 * @category layers
 */
export const layer = (options: { readonly capacity?: number | undefined } = {}): Layer.Layer<LiveFeed> =>
  Layer.effect(LiveFeed, make(options))
