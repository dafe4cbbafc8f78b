/**
 * `GET /users/:id/notifications/stream`: the user's notifications live, as Server-Sent Events.
 *
 * Each event is `event: notification`, `id: <notification id>`, `data: <notification JSON>`. The
 * stream subscribes to the live feed before it sends its first byte, so anything posted once a
 * client sees the stream open reaches it. A client that reconnects with `Last-Event-ID` (browsers
 * do this themselves) first gets what was stored after that notification, then the live ones.
 * A comment line every 15 seconds keeps proxies and idle timers from closing a quiet stream.
 *
 * Authentication: the bearer header, or `?token=` since `EventSource` cannot send headers.
 */
import { type Duration, Effect, Metric, Stream } from "effect"
import * as AppMetrics from "../AppMetrics.ts"
import type { Notification } from "../Domain.ts"
import { LiveFeed } from "../LiveFeed.ts"
import { NotificationStore } from "../NotificationStore.ts"
import * as Auth from "./Auth.ts"
import { Lifecycle } from "./Lifecycle.ts"

/**
 * @category defaults
 */
export const defaults = {
  heartbeat: "15 seconds" as Duration.Input,
  /** What a browser waits before reconnecting, in milliseconds. */
  retry: 2000,
}

const event = (notification: Notification) =>
  `event: notification\nid: ${notification.id}\ndata: ${JSON.stringify(notification)}\n\n`

/**
 * @category routes
 */
export const stream = (request: Request, url: URL, userId: number) =>
  Effect.gen(function*() {
    const caller = yield* Auth.authenticate(request, url, { allowQueryToken: true })
    yield* Auth.requireSelf(caller, userId, "read the notifications")
    const lastEventId = request.headers.get("last-event-id") ?? url.searchParams.get("lastEventId")

    const lifecycle = yield* Lifecycle
    const context = yield* Effect.context<LiveFeed | NotificationStore>()
    const body = Stream.unwrap(Effect.gen(function*() {
      const live = yield* (yield* LiveFeed).subscribe(userId)
      yield* Metric.modify(AppMetrics.streams, 1)
      yield* Effect.addFinalizer(() => Metric.modify(AppMetrics.streams, -1))
      const missed = lastEventId === null
        ? []
        : yield* (yield* NotificationStore).after(userId, lastEventId).pipe(Effect.orElseSucceed(() => []))
      const sent = new Set(missed.map((notification) => notification.id))
      const notifications = Stream.concat(
        Stream.fromIterable(missed),
        Stream.filter(live, (notification) => !sent.has(notification.id)),
      )
      const heartbeats = Stream.tick(defaults.heartbeat).pipe(Stream.drop(1), Stream.map(() => ": keep-alive\n\n"))
      return Stream.concat(
        Stream.make(`retry: ${defaults.retry}\n: connected\n\n`),
        Stream.merge(Stream.map(notifications, event), heartbeats, { haltStrategy: "either" }),
      )
    })).pipe(
      // Shutdown ends every stream, so a graceful stop is not held open by them.
      Stream.interruptWhen(lifecycle.closing),
      Stream.encodeText,
    )
    // A client that goes away cancels the body, which interrupts the stream and unsubscribes.
    // (Not `request.signal`: Deno aborts it after every complete response, and warns.)
    return new Response(Stream.toReadableStreamWith(body, context), {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        // no-transform: proxies and the runtime must not compress or buffer the stream.
        "cache-control": "no-store, no-transform",
        "x-accel-buffering": "no",
        "x-content-type-options": "nosniff",
      },
    })
  })
