/**
 * The app's topics, their typed producers, and creating them at startup.
 *
 * `notifications` is keyed by recipient id, so one user's notifications share a partition and
 * the worker (ordered by key) stores them in the order they were produced. `post-liked` is keyed
 * by author. Each consumed topic has a dead-letter topic beside it. A prefix lets several copies
 * of the app (tests on a shared broker) use one cluster without meeting.
 */
import { Context, Effect, Layer } from "effect"
import { Codec, Producer, Transport } from "../../mod.ts"
import { Notification, PostLiked } from "./Domain.ts"

/**
 * @category models
 */
export interface Names {
  readonly notifications: string
  readonly notificationsDeadLetter: string
  readonly postLiked: string
  readonly postLikedDeadLetter: string
  /** Prefixes consumer group names too. */
  readonly prefix: string
}

/**
 * @category defaults
 */
export const defaults = {
  notificationPartitions: 6,
  postLikedPartitions: 3,
}

/**
 * The topic names under `prefix` (default none).
 *
 * @category constructors
 */
export const names = (prefix = ""): Names => ({
  notifications: `${prefix}notifications`,
  notificationsDeadLetter: `${prefix}notifications.dlq`,
  postLiked: `${prefix}post-liked`,
  postLikedDeadLetter: `${prefix}post-liked.dlq`,
  prefix,
})

/**
 * The topics with a typed producer for each topic the app writes to. Keys are the decimal user
 * id as plain UTF-8 text, readable in any Kafka tool.
 *
 * @category services
 */
export class Topics extends Context.Service<Topics, {
  readonly names: Names
  readonly notifications: Producer.TopicProducer<string | null, Notification>
  readonly postLiked: Producer.TopicProducer<string | null, PostLiked>
}>()("notifications/Topics") {}

/**
 * Creates the topics that do not exist yet and returns the service.
 *
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(prefix = "") {
  const transport = yield* Transport.Transport
  const topicNames = names(prefix)
  const specs: ReadonlyArray<Transport.TopicSpec> = [
    { topic: topicNames.notifications, partitions: defaults.notificationPartitions },
    { topic: topicNames.notificationsDeadLetter, partitions: 1 },
    { topic: topicNames.postLiked, partitions: defaults.postLikedPartitions },
    { topic: topicNames.postLikedDeadLetter, partitions: 1 },
  ]
  yield* Effect.forEach(specs, (spec) =>
    transport.createTopic(spec).pipe(
      Effect.catchTag("TransportError", (error) =>
        error.code === "TOPIC_ALREADY_EXISTS" ? Effect.void : Effect.fail(error)),
    ), { discard: true })
  return Topics.of({
    names: topicNames,
    notifications: Producer.forTopic({ topic: topicNames.notifications, key: Codec.string, value: Notification }),
    postLiked: Producer.forTopic({ topic: topicNames.postLiked, key: Codec.string, value: PostLiked }),
  })
})

/**
 * @category layers
 */
export const layer = (prefix = "") => Layer.effect(Topics, make(prefix))
