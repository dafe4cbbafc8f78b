/**
 * Where the worker keeps each user's notifications, and where the API reads them.
 *
 * The contract is what a real database would give: `add` is idempotent by notification id (a
 * record delivered twice is stored once), a user's notifications come back newest first (the
 * order the worker stored them, which is their order on the topic, since the topic is keyed by
 * recipient), in pages addressed by the id of the last one seen. The in-memory layer keeps
 * everything for the life of the process; a database layer would implement the same service.
 */
import { Context, Data, Effect, Layer } from "effect"
import type { Notification } from "./Domain.ts"

/**
 * One page of a user's notifications, newest first; `nextBefore` addresses the next (older)
 * page and is absent on the last one.
 *
 * @category models
 */
export interface Page {
  readonly notifications: ReadonlyArray<Notification>
  readonly nextBefore: string | undefined
}

/**
 * The store could not be reached; the worker retries with the partition paused.
 *
 * @category errors
 */
export class StoreUnavailable extends Data.TaggedError("StoreUnavailable")<{ readonly reason: string }> {
  override get message(): string {
    return `The notification store is unavailable: ${this.reason}`
  }
}

/**
 * A page cursor that names no notification of this user.
 *
 * @category errors
 */
export class UnknownCursor extends Data.TaggedError("UnknownCursor")<{ readonly before: string }> {
  override get message(): string {
    return `No notification "${this.before}" to page from`
  }
}

/**
 * @category services
 */
export class NotificationStore extends Context.Service<NotificationStore, {
  /** Stores the notification for its recipient; false (and nothing stored) if its id is already there. */
  readonly add: (notification: Notification) => Effect.Effect<boolean, StoreUnavailable>
  /** Newest first, at most `limit`, older than `before` when given. */
  readonly list: (
    userId: number,
    options: { readonly limit: number; readonly before?: string | undefined },
  ) => Effect.Effect<Page, UnknownCursor | StoreUnavailable>
  /** What was stored for the user after notification `id`, oldest first (for a live feed resuming). */
  readonly after: (userId: number, id: string) => Effect.Effect<ReadonlyArray<Notification>, StoreUnavailable>
}>()("notifications/NotificationStore") {}

interface Inbox {
  /** Oldest first, as stored. */
  readonly items: Array<Notification>
  /** Notification id → its index in `items`. */
  readonly index: Map<string, number>
}

/**
 * An in-memory store.
 *
 * @category constructors
 */
export const makeMemory = Effect.sync(() => {
  const inboxes = new Map<number, Inbox>()
  const inboxOf = (userId: number): Inbox => {
    let inbox = inboxes.get(userId)
    if (inbox === undefined) {
      inbox = { items: [], index: new Map() }
      inboxes.set(userId, inbox)
    }
    return inbox
  }
  return NotificationStore.of({
    add: (notification) =>
      Effect.sync(() => {
        const inbox = inboxOf(notification.to.id)
        if (inbox.index.has(notification.id)) return false
        inbox.index.set(notification.id, inbox.items.length)
        inbox.items.push(notification)
        return true
      }),
    list: (userId, { limit, before }) =>
      Effect.suspend(() => {
        const inbox = inboxOf(userId)
        const end = before === undefined ? inbox.items.length : inbox.index.get(before)
        if (end === undefined) return Effect.fail(new UnknownCursor({ before: before! }))
        const start = Math.max(0, end - limit)
        const notifications = inbox.items.slice(start, end).reverse()
        return Effect.succeed({ notifications, nextBefore: start > 0 ? inbox.items[start]!.id : undefined })
      }),
    after: (userId, id) =>
      Effect.sync(() => {
        const inbox = inboxOf(userId)
        const position = inbox.index.get(id)
        return position === undefined ? [] : inbox.items.slice(position + 1)
      }),
  })
})

/**
 * @category layers
 */
export const layerMemory: Layer.Layer<NotificationStore> = Layer.effect(NotificationStore, makeMemory)
