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
import { Effect, type Scope } from "effect"
import type * as TransportError from "../../TransportError.ts"
import * as ClassicGroup from "./classicGroup.ts"
import * as ConsumerGroup from "./consumerGroup.ts"
import type { GroupBrokers, Group, Options, Protocol } from "./groupCore.ts"
import { ConsumerGroupHeartbeat } from "./protocol/ConsumerGroupHeartbeat.ts"

export type { AssignedPartition, Group, GroupBrokers, GroupEvent, GroupKey, Options, Protocol, TopicInfo } from "./groupCore.ts"
export { defaults } from "./groupCore.ts"

/** The protocol to use: the one asked for, else KIP-848 when the coordinator supports it. */
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
    protocol === "consumer" ? ConsumerGroup.join(brokers, options) : ClassicGroup.join(brokers, options))
