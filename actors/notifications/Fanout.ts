/**
 * The fan-out actor, the first hop of a two-hop pipeline: consumes `post-liked` events and
 * produces one notification per follower of the post's author to `notifications`, where the
 * worker stores them.
 *
 * Each notification's id is derived from the coordinates of the `post-liked` record and the
 * follower (a v5 UUID), and its time is the record's timestamp, so handling the same record
 * again produces the very same notifications and the worker's idempotent store drops them.
 */
import { Data, Effect, Metric, Option, Schedule } from "effect"
import { Actor, Codec, ErrorPolicy, Ordering, RecordContext } from "../../mod.ts"
import * as AppMetrics from "./AppMetrics.ts"
import { type Notification, PostLiked } from "./Domain.ts"
import { Ids } from "./Ids.ts"
import { Topics } from "./Topics.ts"
import { Users } from "./Users.ts"

/**
 * An event names a user this app does not know.
 *
 * @category errors
 */
export class UnknownUser extends Data.TaggedError("UnknownUser")<{ readonly userId: number; readonly role: string }> {
  override get message(): string {
    return `The ${this.role} of a post-liked event, user ${this.userId}, does not exist`
  }
}

const findUser = (userId: number, role: string) =>
  Effect.gen(function*() {
    const user = (yield* Users).find(userId)
    return Option.isSome(user) ? user.value : yield* new UnknownUser({ userId, role })
  })

/** The notifications one event becomes: one per follower of the author, except the liker. */
export const notificationsFor = (event: PostLiked) =>
  Effect.gen(function*() {
    const users = yield* Users
    const ids = yield* Ids
    const record = yield* RecordContext.RecordContext
    const author = yield* findUser(event.authorId, "author")
    const liker = yield* findUser(event.likerId, "liker")
    const createdAt = new Date(record.timestamp).toISOString()
    const whose = author.id === liker.id ? "their own" : `${author.name}'s`
    return yield* Effect.forEach(
      users.followersOf(author.id).filter((follower) => follower.id !== liker.id),
      (follower) =>
        Effect.map(
          ids.derived(`${record.topic}/${record.partition}@${record.offset}/${follower.id}`),
          (id): Notification => ({
            id,
            from: { id: liker.id, name: liker.name },
            to: { id: follower.id, name: follower.name },
            message: `${liker.name} liked ${whose} post ${event.postId}.`,
            createdAt,
          }),
        ),
    )
  })

/**
 * @category constructors
 */
export const make = (topics: { readonly prefix: string; readonly postLiked: string; readonly postLikedDeadLetter: string }) =>
  Actor.make({
    name: "post-liked-fanout",
    group: `${topics.prefix}post-liked-fanout`,
    topics: [topics.postLiked],
    key: Codec.string,
    value: PostLiked,
    handle: (event: PostLiked) =>
      Effect.gen(function*() {
        const { notifications: producer } = yield* Topics
        const notifications = yield* notificationsFor(event)
        // Sent together, so they leave in one batch; acknowledged before the record counts as done.
        yield* Effect.forEach(
          notifications,
          (notification) => producer.send(notification, { key: String(notification.to.id) }),
          { concurrency: "unbounded", discard: true },
        )
        yield* Metric.modify(AppMetrics.fannedOut, notifications.length)
      }),
    onError: {
      UnknownUser: ErrorPolicy.deadLetter,
      EncodeError: ErrorPolicy.deadLetter,
      DecodeError: ErrorPolicy.deadLetter,
      // The broker is away: hold the partition until it is back rather than lose the event.
      TransportError: ErrorPolicy.pausePartition(
        Schedule.min([Schedule.exponential("500 millis"), Schedule.spaced("10 seconds")]),
      ),
      HandlerTimeout: ErrorPolicy.retryWithBackoff("1 second", { times: 3, then: "dead-letter" }),
    },
    deadLetter: { topic: topics.postLikedDeadLetter },
    ordering: Ordering.byKey({ concurrency: 8 }),
    handlerTimeout: "30 seconds",
    commit: { interval: "200 millis" },
    drainDeadline: "5 seconds",
  })
