/**
 * Consumer group membership, the entry point: joins a group on the protocol its coordinator
 * speaks — KIP-848 (consumerGroup.ts) where the broker has ConsumerGroupHeartbeat, the classic
 * protocol with the cooperative-sticky assignor (classicGroup.ts) where it does not (Kafka 3.x,
 * or a broker with `group.coordinator.rebalance.protocols=classic`). groupCore.ts holds what
 * both share: events, owned partitions, commits and committed offsets.
 *
 * The member does not fetch: an `Assigned` event carries each partition's committed offset and
 * the fetch loop starts there.
 */
import { Effect, Scope, Semaphore } from "effect"
import type * as TransportError from "../../TransportError.ts"
import type * as Brokers from "./brokers.ts"
import * as ClassicGroup from "./classicGroup.ts"
import * as Connection from "./connection.ts"
import * as ConsumerGroup from "./consumerGroup.ts"
import type { Group, GroupBrokers, GroupKey, Options, Protocol, TopicInfo } from "./groupCore.ts"
import { ConsumerGroupHeartbeat } from "./protocol/ConsumerGroupHeartbeat.ts"

export type { AssignedPartition, Group, GroupBrokers, GroupEvent, GroupKey, Options, Protocol, TopicInfo } from "./groupCore.ts"
export { defaults } from "./groupCore.ts"

/**
 * The protocol to use: the one asked for, else KIP-848 when the coordinator lists it (`join`
 * falls back to classic when the coordinator then refuses it).
 */
const protocolFor = (brokers: GroupBrokers, options: Options): Effect.Effect<Protocol, TransportError.TransportError> =>
  options.protocol !== undefined
    ? Effect.succeed(options.protocol)
    : Effect.flatMap(brokers.coordinatorFor({ type: "group", id: options.group }), (connection) =>
      Effect.match(connection.versionFor(ConsumerGroupHeartbeat), {
        onFailure: (): Protocol => "classic",
        onSuccess: (): Protocol => "consumer",
      }))

/**
 * Joins `options.group` for as long as the scope is open; closing it leaves the group. The
 * first events come once the coordinator assigned partitions.
 */
export const join = (
  brokers: GroupBrokers,
  options: Options,
): Effect.Effect<Group, TransportError.TransportError, Scope.Scope> =>
  Effect.flatMap(protocolFor(brokers, options), (protocol) =>
    protocol === "classic"
      ? ClassicGroup.join(brokers, options)
      : options.protocol === "consumer"
      ? ConsumerGroup.join(brokers, options)
      // Chosen here, not asked for: a coordinator that lists ConsumerGroupHeartbeat may still
      // refuse the protocol (Kafka 3.9 does by default); its first heartbeat says so.
      : ConsumerGroup.join(brokers, options).pipe(
        Effect.catchIf((error) => error.code === "UNSUPPORTED_VERSION", () => ClassicGroup.join(brokers, options)),
      ))

/**
 * brokers.ts' `Brokers` as membership needs it, with one change: the coordinator is talked to
 * on a connection of the member's own (opened in the current scope, with the pool's connection
 * options), not the pool's. A broker answers one connection's requests in order, so a JoinGroup
 * that waits for a rebalance (up to the rebalance timeout) on a shared connection would hold
 * back every fetch, produce and other member's heartbeat behind it; Kafka's Java consumer keeps
 * its coordinator connection apart for the same reason.
 */
export const fromBrokers = (
  brokers: Brokers.Brokers,
  connectionOptions: Omit<Connection.Options, "broker">,
): Effect.Effect<GroupBrokers, never, Scope.Scope> =>
  // Connections go into a scope forked now, so that they close after a member made later in the
  // same scope has left (its finalizer runs first), even those opened after the member joined.
  Effect.map(Effect.flatMap(Effect.scope, (parent) => Scope.fork(parent)), (scope) => {
    const own = new Map<string, Connection.Connection>()
    // The member's own connection, while open, is used without asking the pool: the pool's
    // answer could only say the coordinator moved, which the coordinator's own errors say
    // (NOT_COORDINATOR and the like invalidate it), and at close the pool may no longer answer.
    // Its connections are opened lazily into the scope it was made in, so one opened after the
    // member joined closes before the member's finalizer runs, and a lookup then waited for the
    // leave's whole timeout: the group kept the partitions for a session timeout (45 s on KIP-848).
    const open = (key: GroupKey) => {
      const cached = own.get(key.id)
      return cached !== undefined && cached.isOpen() ? cached : undefined
    }
    // One opening at a time: a heartbeat and a commit that both find the connection gone would
    // otherwise each open one, and the first would stay open, unused, until the member leaves.
    const opening = Semaphore.makeUnsafe(1)
    const coordinatorFor = (key: GroupKey) =>
      Effect.suspend(() => {
        const cached = open(key)
        if (cached !== undefined) return Effect.succeed(cached)
        return Semaphore.withPermit(
          opening,
          Effect.suspend(() => {
            const again = open(key)
            if (again !== undefined) return Effect.succeed(again)
            return Effect.flatMap(brokers.coordinatorFor(key), (pooled) =>
              Effect.tap(
                Connection.make({ ...connectionOptions, broker: pooled.broker }).pipe(Scope.provide(scope)),
                (connection) => Effect.sync(() => own.set(key.id, connection)),
              ))
          }),
        )
      })
    const info = (metadata: Brokers.TopicMetadata): TopicInfo => ({ topicId: metadata.topicId, partitions: metadata.partitions.length })
    return {
      coordinatorFor,
      invalidateCoordinator: (key) =>
        Effect.suspend(() => {
          const cached = own.get(key.id)
          own.delete(key.id)
          return Effect.andThen(brokers.invalidateCoordinator(key), cached === undefined ? Effect.void : cached.close)
        }),
      // brokers.ts fails for a topic the cluster lacks; membership wants the ones that exist.
      topics: (topics) =>
        brokers.topics(topics).pipe(
          Effect.map((found) => new Map([...found].map(([name, metadata]) => [name, info(metadata)] as const))),
          Effect.catchIf((error) => error.code === "UNKNOWN_TOPIC_OR_PARTITION" && topics.length > 1, () =>
            Effect.map(
              Effect.forEach(topics, (topic) => Effect.option(brokers.topics([topic]))),
              (each) => new Map(each.flatMap((found) => found._tag === "Some" ? [...found.value].map(([name, metadata]) => [name, info(metadata)] as const) : [])),
            )),
          Effect.catchIf((error) => error.code === "UNKNOWN_TOPIC_OR_PARTITION", () => Effect.succeed(new Map<string, TopicInfo>())),
        ),
    }
  })
