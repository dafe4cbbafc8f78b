/**
 * The notification worker: consumes `notifications`, stores each one for its recipient and
 * publishes it to the recipient's live feed.
 *
 * Records are keyed by recipient and handled with `Ordering.byKey`: different users' records run
 * concurrently, one user's run one at a time in offset order, so each inbox is in the order the
 * notifications were produced. Delivery is at least once, so a record can arrive again (after a
 * rebalance or a crash before the commit): the store is idempotent by notification id, and only a
 * notification stored for the first time reaches the live feed, so nobody sees it twice.
 *
 * The store is in memory, so it belongs to one process: each process is a consumer group of its
 * own (`group`, named per instance by `App`) and builds its store from the start of the topic,
 * which also lets any instance answer for any user. A shared database store would use one group.
 */
import { Effect, Metric, Schedule } from "effect"
import { Actor, Codec, ErrorPolicy, Ordering } from "../../mod.ts"
import * as AppMetrics from "./AppMetrics.ts"
import { Notification } from "./Domain.ts"
import { LiveFeed } from "./LiveFeed.ts"
import { NotificationStore } from "./NotificationStore.ts"
import type { Names } from "./Topics.ts"

/**
 * @category constructors
 */
export const make = (topics: Names, options: { readonly group: string }) =>
  Actor.make({
    name: "notification-worker",
    group: options.group,
    topics: [topics.notifications],
    key: Codec.string,
    value: Notification,
    handle: (notification: Notification) =>
      Effect.gen(function*() {
        const stored = yield* (yield* NotificationStore).add(notification)
        if (!stored) return yield* Metric.modify(AppMetrics.duplicates, 1)
        yield* Metric.modify(AppMetrics.stored, 1)
        yield* (yield* LiveFeed).publish(notification)
      }),
    onError: {
      // The store being down is not the record's fault: hold the partition and keep trying.
      StoreUnavailable: ErrorPolicy.pausePartition(
        Schedule.min([Schedule.exponential("200 millis"), Schedule.spaced("10 seconds")]),
      ),
      // A record that is not a notification will never become one: keep it for a person.
      DecodeError: ErrorPolicy.deadLetter,
      HandlerTimeout: ErrorPolicy.retryWithBackoff("500 millis", { times: 3, then: "dead-letter" }),
    },
    deadLetter: { topic: topics.notificationsDeadLetter },
    ordering: Ordering.byKey({ concurrency: 32 }),
    handlerTimeout: "10 seconds",
    // Shorter than the defaults: a demo shows its lag and commits promptly.
    commit: { interval: "200 millis" },
    drainDeadline: "5 seconds",
  })
