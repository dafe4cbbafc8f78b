/**
 * `Transport.subscribe` on Partita's own client: a group member (group.ts) and a fetch loop
 * (fetchLoop.ts), joined so that the transport contract holds.
 *
 * - `Assigned`: the group says which partitions are this member's and where the group left
 *   them; a partition never committed starts at the reset position (ListOffsets, read-committed
 *   under read-committed isolation, so `latest` is the last stable offset). The fetch loop is
 *   given the partitions at those offsets, and its claims go out in one `Assigned` event.
 * - `Revoked`: the fetch loop ends the claims' streams first (what was fetched and not pulled is
 *   dropped), then the event goes out; the group releases the partitions only when Partita runs
 *   `acknowledge`, on the KIP-848 protocol and the classic one alike, leader or not.
 * - Removal: when the coordinator fenced the member (it did not acknowledge a revocation within
 *   the rebalance timeout, or was not heard from within the session timeout), its partitions
 *   are already someone else's: the claims end and `events` fails with `UNKNOWN_MEMBER_ID`
 *   saying which, as on the other transports; the caller subscribes again.
 * - The fetch loop talks to each broker on a connection of the subscription's own: a Fetch
 *   long-polls (up to `maxWait`), and a broker answers one connection's requests in order, so a
 *   shared connection would hold every produce and metadata request behind it. Membership has
 *   its own coordinator connection for the same reason (group.ts' `fromBrokers`).
 * - Closing the subscription's scope leaves the group first (the member's finalizer was added
 *   last), then ends the fetch loop and closes the connections.
 */
import { Clock, Deferred, Duration, Effect, Scope, Semaphore, Stream } from "effect"
import type {
  GroupEvent,
  OffsetCommit,
  PartitionClaim,
  SubscribeOptions,
  Subscription,
  TopicPartition,
} from "../../Transport.ts"
import * as TransportError from "../../TransportError.ts"
import type * as Admin from "./admin.ts"
import type * as Brokers from "./brokers.ts"
import * as Connection from "./connection.ts"
import * as FetchLoop from "./fetchLoop.ts"
import * as Group from "./group.ts"
import { keyOf } from "./groupCore.ts"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options extends SubscribeOptions {
  /** Options of every connection the subscription opens (its own `clientId` wins). */
  readonly connection: Omit<Connection.Options, "broker">
  /** The group protocol; default: KIP-848 where the coordinator has it, else classic. */
  readonly protocol?: Group.Protocol | undefined
  /** Static membership (`group.instance.id`). */
  readonly instanceId?: string | undefined
  /** Passed to the fetch loop (its `maxWait`, byte limits). */
  readonly fetch?: Omit<FetchLoop.Options, "isolation" | "reset" | "maxBatchSize"> | undefined
}

/**
 * The fetch loop's routing with connections of its own, one per broker, opened in `scope` on
 * first use and opened again once closed.
 */
const ownConnections = (
  brokers: Brokers.Brokers,
  options: Omit<Connection.Options, "broker">,
  scope: Scope.Scope,
): FetchLoop.Routing => {
  const open = new Map<number, Connection.Connection>()
  // One opening at a time per broker: the loop's fibers (fetches, leader lookups, resets) all
  // reconnect at once after a broker comes back, and each would otherwise open its own socket.
  const permits = new Map<number, Semaphore.Semaphore>()
  const permit = (nodeId: number) => {
    let semaphore = permits.get(nodeId)
    if (semaphore === undefined) permits.set(nodeId, semaphore = Semaphore.makeUnsafe(1))
    return semaphore
  }
  const cached = (nodeId: number) => {
    const found = open.get(nodeId)
    return found !== undefined && found.isOpen() ? found : undefined
  }
  const connection = (nodeId: number): Effect.Effect<Connection.Connection, TransportError.TransportError> =>
    Effect.suspend(() => {
      const found = cached(nodeId)
      if (found !== undefined) return Effect.succeed(found)
      return Semaphore.withPermit(
        permit(nodeId),
        Effect.suspend(() => {
          const again = cached(nodeId)
          if (again !== undefined) return Effect.succeed(again)
          // The pool's connection names the broker's address as the cluster advertises it.
          return Effect.flatMap(brokers.connection(nodeId), (pooled) =>
            Effect.tap(
              Connection.make({ ...options, broker: pooled.broker }).pipe(Scope.provide(scope)),
              (made) =>
                Effect.sync(() => {
                  open.set(nodeId, made)
                }),
            ))
        }),
      )
    })
  return { ...FetchLoop.fromBrokers(brokers), connection }
}

/**
 * A subscription, and the member's generation now (the classic generation or the KIP-848
 * member epoch): what a transaction's offsets carry under KIP-447.
 *
 * @since 0.2.0
 * @category models
 */
export interface Joined extends Subscription {
  readonly generation: () => number
}

/**
 * Joins the group for as long as the current scope is open.
 *
 * @since 0.2.0
 * @category constructors
 */
export const subscribe = (
  brokers: Brokers.Brokers,
  admin: Admin.Admin,
  options: Options,
): Effect.Effect<Joined, TransportError.TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const connectionOptions = options.clientId === undefined
      ? options.connection
      : { ...options.connection, clientId: options.clientId }
    const isolation = options.isolation ?? "read-committed"
    const reset = options.reset ?? "earliest"
    const parent = yield* Effect.scope
    const fetchScope = yield* Scope.fork(parent)
    const loop = yield* FetchLoop.make(ownConnections(brokers, connectionOptions, fetchScope), {
      ...options.fetch,
      isolation,
      reset,
      ...(options.maxBatchSize === undefined ? {} : { maxBatchSize: options.maxBatchSize }),
    })
    const groupBrokers = yield* Group.fromBrokers(brokers, connectionOptions)
    const member = yield* Group.join(groupBrokers, {
      group: options.group,
      topics: options.topics,
      protocol: options.protocol,
      instanceId: options.instanceId,
      sessionTimeout: options.sessionTimeout,
      heartbeatInterval: options.heartbeatInterval,
      rebalanceTimeout: options.rebalanceTimeout,
    })

    /** Where partitions the group never committed start: the reset position, per partition. */
    const resetOffsets = (partitions: ReadonlyArray<TopicPartition>) =>
      partitions.length === 0
        ? Effect.succeed(new Map<string, number>())
        : Effect.map(
          admin.listOffsets(partitions.map((tp) => ({ ...tp, spec: reset })), {
            readCommitted: isolation === "read-committed",
          }),
          (listed) => new Map(listed.map((found) => [keyOf(found), found.offset ?? 0] as const)),
        )

    const rebalanceTimeoutMs = Duration.toMillis(
      Duration.fromInputUnsafe(options.rebalanceTimeout ?? Group.defaults.rebalanceTimeout),
    )
    /** Revocations handed out and not yet acknowledged, and the slowest acknowledged one since the last loss. */
    let unacknowledged = 0
    let slowestRevocationMs = 0
    /** Fails `events` once this member knows it was removed. */
    const removal = yield* Deferred.make<never, TransportError.TransportError>()

    const removed = (partitions: ReadonlyArray<TopicPartition>) => {
      const late = unacknowledged > 0 || slowestRevocationMs > rebalanceTimeoutMs
      const reason = late
        ? `it did not acknowledge a revocation within the rebalance timeout (${rebalanceTimeoutMs} ms${
          unacknowledged > 0 ? "" : `; it took ${slowestRevocationMs} ms`
        })`
        : "the coordinator fenced it (not heard from within the session timeout)"
      slowestRevocationMs = 0
      return TransportError.make(
        "UNKNOWN_MEMBER_ID",
        "subscribe",
        `Member ${member.memberId()} was removed from group "${options.group}" and lost ${
          partitions.map((tp) => `${tp.topic}/${tp.partition}`).join(", ")
        }: ${reason}; subscribe again to rejoin`,
      )
    }

    const onEvent = (event: Group.GroupEvent): Effect.Effect<GroupEvent, TransportError.TransportError> => {
      if (event._tag === "Revoked" && event.lost) {
        // The partitions are someone else's already. The contract (and the other transports)
        // end a removed member's subscription: the caller learns it lost the group and joins
        // again on its own schedule. Not acknowledging keeps the group from rejoining by
        // itself before this subscription's scope closes.
        return Effect.andThen(loop.revoke(event.partitions), Effect.fail(removed(event.partitions)))
      }
      if (event._tag === "Revoked") {
        return Effect.gen(function*() {
          yield* loop.revoke(event.partitions)
          const revokedAt = yield* Clock.currentTimeMillis
          unacknowledged++
          let done = false
          const acknowledge = Effect.andThen(
            Effect.flatMap(Clock.currentTimeMillis, (now) =>
              Effect.sync(() => {
                if (done) return
                done = true
                unacknowledged--
                slowestRevocationMs = Math.max(slowestRevocationMs, now - revokedAt)
              })),
            event.acknowledge,
          )
          // The coordinator removes a member that has not acknowledged within the rebalance
          // timeout, and gives its partitions to others at once; the member hears of it only at
          // its next heartbeat (up to the broker's interval later). So it gives up here, at the
          // deadline: the claims end and `events` fails, and nothing is handled meanwhile by
          // a member that no longer owns it.
          yield* Effect.sleep(Duration.millis(rebalanceTimeoutMs)).pipe(
            Effect.andThen(Effect.suspend(() =>
              done ? Effect.void : Effect.andThen(
                loop.revoke(member.owned()),
                Deferred.fail(removal, removed(event.partitions)),
              )
            )),
            Effect.forkIn(parent),
          )
          return { _tag: "Revoked", partitions: event.partitions, acknowledge } satisfies GroupEvent
        })
      }
      return Effect.gen(function*() {
        const fresh = event.partitions.filter((assigned) => assigned.startOffset === undefined)
        const resets = yield* resetOffsets(fresh)
        const claims: ReadonlyArray<PartitionClaim> = yield* loop.assign(event.partitions.map((assigned) => ({
          topic: assigned.topic,
          partition: assigned.partition,
          offset: assigned.startOffset ?? resets.get(keyOf(assigned)) ?? 0,
        })))
        return { _tag: "Assigned", claims }
      })
    }

    const notHeld = (tp: TopicPartition, operation: string) =>
      TransportError.make(
        "ILLEGAL_GENERATION",
        operation,
        `Member ${member.memberId()} of group "${options.group}" does not hold ${tp.topic}/${tp.partition}`,
      )

    return {
      group: options.group,
      get memberId() {
        return member.memberId()
      },
      generation: member.generation,
      events: Stream.mapEffect(member.events, onEvent).pipe(Stream.interruptWhen(Deferred.await(removal))),
      commit: (offsets: ReadonlyArray<OffsetCommit>) => member.commit(offsets),
      committed: (partitions) => member.committed(partitions),
      pause: loop.pause,
      resume: loop.resume,
      seek: (tp, offset) =>
        Effect.suspend(() => loop.position(tp) === undefined ? Effect.fail(notHeld(tp, "seek")) : loop.seek(tp, offset)),
    } satisfies Joined
  })
