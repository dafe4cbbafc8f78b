/**
 * `POST /notifications` and `GET /users/:id/notifications`.
 *
 * A notification is accepted only once the broker acknowledged its record: the 202 means it is
 * durable on the topic and the worker will store it, not that it is stored yet (it is visible in
 * the GET a moment later). Its id is assigned here, once, and makes the worker's store idempotent.
 */
import { Clock, Duration, Effect, Metric, Option, Schema } from "effect"
import type { Producer, TransportError } from "../../../mod.ts"
import * as AppMetrics from "../AppMetrics.ts"
import { type Notification, SendNotification } from "../Domain.ts"
import { Ids } from "../Ids.ts"
import { NotificationStore } from "../NotificationStore.ts"
import { Topics } from "../Topics.ts"
import { type User, Users } from "../Users.ts"
import * as Auth from "./Auth.ts"
import * as Body from "./Body.ts"
import { BadRequest, json, NotFound, type Problem, Unavailable } from "./Errors.ts"

/**
 * @category defaults
 */
export const defaults = {
  /** How long a POST waits for the broker's acknowledgement before answering 503. */
  ackTimeout: Duration.seconds(10),
  pageSize: 20,
  maxPageSize: 100,
}

/** What a request needs to know about the app's limits. */
export interface Limits {
  readonly maxBodyBytes: number
}

/** The users named by ids in the body, or a 404 listing each unknown one. */
export const findUsers = <K extends string>(ids: ReadonlyArray<readonly [field: K, id: number]>) =>
  Effect.gen(function*() {
    const users = yield* Users
    const found = new Map<K, User>()
    const problems: Array<Problem> = []
    for (const [field, id] of ids) {
      const user = users.find(id)
      if (Option.isSome(user)) found.set(field, user.value)
      else problems.push({ path: [field], message: `No user has id ${id}` })
    }
    if (problems.length > 0) return yield* new NotFound({ error: "Unknown user", problems })
    return (field: K) => found.get(field)!
  })

/** Sends a record and waits for the broker, turning its failure or silence into a 503. */
export const acknowledged = <A, R>(
  send: Effect.Effect<A, Producer.EncodeError | TransportError.TransportError, R>,
  what: string,
) =>
  send.pipe(
    Effect.timeoutOrElse({
      duration: defaults.ackTimeout,
      orElse: () => Effect.fail(new Unavailable({ error: `The broker did not acknowledge the ${what} in time: try again` })),
    }),
    // The body was validated with the same schema: a value it rejects now is a bug, not a 4xx.
    Effect.catchTag("EncodeError", (error) => Effect.die(error)),
    Effect.catchTag("TransportError", (error) =>
      Effect.andThen(
        Effect.logWarning(`Producing a ${what} failed: ${error.code}`),
        Effect.fail(new Unavailable({ error: `The broker did not accept the ${what}: try again` })),
      )),
  )

/**
 * `POST /notifications`: `{fromId, toId, message}` as JSON or form fields, sent by `fromId`.
 *
 * @category routes
 */
export const send = (request: Request, url: URL, limits: Limits) =>
  Effect.gen(function*() {
    const caller = yield* Auth.authenticate(request, url)
    const body = yield* Body.decodeBody(request, SendNotification, { limit: limits.maxBodyBytes })
    yield* Auth.requireSelf(caller, body.fromId, "send notifications in the name")
    const user = yield* findUsers([["fromId", body.fromId], ["toId", body.toId]])
    const from = user("fromId")
    const to = user("toId")
    const notification: Notification = {
      id: yield* (yield* Ids).random,
      from: { id: from.id, name: from.name },
      to: { id: to.id, name: to.name },
      message: body.message,
      createdAt: new Date(yield* Clock.currentTimeMillis).toISOString(),
    }
    const topics = yield* Topics
    // Keyed by recipient: one user's notifications share a partition and keep their order.
    yield* acknowledged(topics.notifications.send(notification, { key: String(to.id) }), "notification")
    yield* Metric.modify(AppMetrics.accepted, 1)
    return json(202, { id: notification.id }, { location: `/users/${to.id}/notifications` })
  })

const ListQuery = Schema.Struct({
  limit: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: defaults.maxPageSize }))),
  before: Schema.optionalKey(Schema.String.check(Schema.isNonEmpty(), Schema.isMaxLength(64))),
})

/**
 * `GET /users/:id/notifications?limit=&before=`: newest first; `nextBefore` pages on.
 *
 * @category routes
 */
export const list = (request: Request, url: URL, userId: number) =>
  Effect.gen(function*() {
    const caller = yield* Auth.authenticate(request, url)
    yield* Auth.requireSelf(caller, userId, "read the notifications")
    const query = yield* Body.decodeQuery(ListQuery, url)
    const page = yield* (yield* NotificationStore).list(userId, {
      limit: query.limit ?? defaults.pageSize,
      before: query.before,
    }).pipe(
      Effect.catchTag("UnknownCursor", (error) =>
        Effect.fail(new BadRequest({ error: "Invalid query string", problems: [{ path: ["before"], message: error.message }] }))),
      Effect.catchTag("StoreUnavailable", () =>
        Effect.fail(new Unavailable({ error: "The notification store is unavailable: try again" }))),
    )
    return json(200, {
      notifications: page.notifications,
      ...(page.nextBefore === undefined ? {} : { nextBefore: page.nextBefore }),
    })
  })
