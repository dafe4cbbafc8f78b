/**
 * The transport contract: everything Partita asks of a Kafka-like log, in one service.
 *
 * Actors never talk to a Kafka client. They talk to `Transport`, and the layer provided decides
 * where records go: `MemoryTransport.layer()` (an embedded broker with Kafka's semantics, the
 * default), `KafkaTransport.layer()` (a real cluster through Partita's own Kafka client) or
 * `KafkaJsTransport.layer()` (a real cluster through kafkajs). All pass one contract suite
 * (`tests/transport_contract.ts`); where they legitimately differ, `features` says so.
 *
 * Offsets are JavaScript numbers: safe up to 2^53, which is centuries of records at millions a
 * second. Keys, values and header values are bytes; encoding belongs to `Producer` and `Actor`.
 *
 * @since 0.1.0
 */
import { Context, type Duration, type Effect, type Exit, type Scope, type Stream } from "effect"
import type { TransportError } from "./TransportError.ts"

/**
 * A record header. Kafka headers are an ordered list and a key may repeat.
 *
 * @since 0.1.0
 * @category models
 */
export interface Header {
  readonly key: string
  readonly value: Uint8Array | null
}

/**
 * A record to produce.
 *
 * `key: null` spreads records over partitions; a non-null key always lands in the same
 * partition, chosen by Kafka's default partitioner (murmur2), on every transport. `value: null`
 * is a tombstone.
 *
 * @since 0.1.0
 * @category models
 */
export interface ProducerRecord {
  readonly topic: string
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly headers?: ReadonlyArray<Header> | undefined
  /** Overrides the partitioner. */
  readonly partition?: number | undefined
  /** Epoch milliseconds; defaults to the producer's `Clock`. */
  readonly timestamp?: number | undefined
}

/**
 * Where an acknowledged record was written.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecordMetadata {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly timestamp: number
}

/**
 * A consumed record.
 *
 * Its bytes (key, value, header values) are read-only and may be views into what the transport
 * fetched (a whole fetch response, on Kafka): copy them (`slice()`) to keep them past handling.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerRecord {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly headers: ReadonlyArray<Header>
  readonly timestamp: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TopicPartition {
  readonly topic: string
  readonly partition: number
}

/**
 * An offset to commit: the offset of the next record to consume, as in Kafka (last handled + 1).
 *
 * @since 0.1.0
 * @category models
 */
export interface OffsetCommit extends TopicPartition {
  readonly offset: number
  readonly metadata?: string | undefined
}

/**
 * A committed offset as stored by the group.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommittedOffset extends TopicPartition {
  readonly offset: number
  readonly metadata: string
}

/**
 * How much acknowledgement `send` waits for. `all` (the default) waits for every in-sync replica.
 *
 * @since 0.1.0
 * @category models
 */
export type Acks = "all" | "leader" | "none"

/**
 * @since 0.1.0
 * @category models
 */
export interface SubscribeOptions {
  /** The consumer group to join. */
  readonly group: string
  readonly topics: ReadonlyArray<string>
  /** Where a partition with no committed offset starts. Default `earliest`. */
  readonly reset?: "earliest" | "latest" | undefined
  /** `read-committed` (the default) hides records of open and aborted transactions. */
  readonly isolation?: "read-committed" | "read-uncommitted" | undefined
  /** Upper bound on the records in one batch. Default 500. */
  readonly maxBatchSize?: number | undefined
  /** A member not heard from for this long is removed from the group. Default 30 seconds. */
  readonly sessionTimeout?: Duration.Input | undefined
  /** Default 3 seconds. Heartbeats run on their own fiber, never tied to record processing. */
  readonly heartbeatInterval?: Duration.Input | undefined
  /** How long a rebalance waits for members to acknowledge revocation. Default 60 seconds. */
  readonly rebalanceTimeout?: Duration.Input | undefined
  /** A client id for logs and telemetry. */
  readonly clientId?: string | undefined
}

/**
 * A partition assigned to this member, and the only way its records arrive.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartitionClaim extends TopicPartition {
  /** The offset the first batch starts at: the committed offset, or the reset position. */
  readonly startOffset: number
  /**
   * The partition's records in offset order, in non-empty batches, pulled on demand: a transport
   * fetches at most one batch ahead of what was pulled (so fetching overlaps handling), and
   * nothing more for a claim until that is pulled. The stream ends when the partition is
   * revoked or the subscription closes; it fails only with a non-retriable `TransportError`.
   */
  readonly records: Stream.Stream<ReadonlyArray<ConsumerRecord>, TransportError>
}

/**
 * A change of this member's assignment.
 *
 * `Revoked` comes before the partitions are given to anyone else, and each revoked claim's
 * `records` stream has ended when it arrives. The member finishes what it holds, commits, then
 * runs `acknowledge`; only then (or once the rebalance timeout passed) may another member get
 * the partitions. A member that never acknowledges is removed from the group.
 *
 * @since 0.1.0
 * @category models
 */
export type GroupEvent =
  | { readonly _tag: "Assigned"; readonly claims: ReadonlyArray<PartitionClaim> }
  | {
    readonly _tag: "Revoked"
    readonly partitions: ReadonlyArray<TopicPartition>
    readonly acknowledge: Effect.Effect<void>
  }

/**
 * Membership of a consumer group, alive while the scope that created it is open. Closing that
 * scope ends every claim's stream, leaves the group and lets the others rebalance.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscription {
  readonly group: string
  readonly memberId: string
  /** Assignment changes in the order they happen. Ends when the subscription closes. */
  readonly events: Stream.Stream<GroupEvent, TransportError>
  /**
   * Commits offsets for partitions this member holds (including ones being revoked, until
   * acknowledged). Fails with a non-retriable `TransportError` for a partition it no longer
   * holds: a member fenced out of the group cannot move another member's offsets.
   */
  readonly commit: (offsets: ReadonlyArray<OffsetCommit>) => Effect.Effect<void, TransportError>
  /** The group's committed offsets for these partitions; a partition never committed is absent. */
  readonly committed: (
    partitions: ReadonlyArray<TopicPartition>,
  ) => Effect.Effect<ReadonlyArray<CommittedOffset>, TransportError>
  /** Stops fetching these partitions. Other partitions keep flowing; membership stays alive. */
  readonly pause: (partitions: ReadonlyArray<TopicPartition>) => Effect.Effect<void>
  /** Undoes `pause`. */
  readonly resume: (partitions: ReadonlyArray<TopicPartition>) => Effect.Effect<void>
  /** The next batch of this claimed partition starts at `offset`. */
  readonly seek: (partition: TopicPartition, offset: number) => Effect.Effect<void, TransportError>
}

/**
 * A Kafka transaction: records and consumed offsets that become visible together, or not at all.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transaction {
  /**
   * Sends records in the transaction. Unlike `Transport.sendEach` it answers for the call as a
   * whole: if any record fails, abort the transaction, which discards whatever of it was written.
   */
  readonly send: (records: ReadonlyArray<ProducerRecord>) => Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError>
  /** Commits a consumer group's offsets as part of the transaction (consume-transform-produce). */
  readonly sendOffsets: (group: string, offsets: ReadonlyArray<OffsetCommit>) => Effect.Effect<void, TransportError>
  readonly commit: Effect.Effect<void, TransportError>
  readonly abort: Effect.Effect<void, TransportError>
}

/**
 * A producer owning a `transactionalId`. Opening a second one with the same id fences the first:
 * its next operation fails with a non-retriable `TransportError`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransactionalProducer {
  readonly transactionalId: string
  /** Starts a transaction. One at a time per producer. */
  readonly begin: Effect.Effect<Transaction, TransportError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TopicSpec {
  readonly topic: string
  readonly partitions: number
  readonly config?: Readonly<Record<string, string>> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PartitionDescription {
  readonly partition: number
  /** The first offset still in the log (retention removes older records). */
  readonly logStartOffset: number
  /** The offset the next record will get. */
  readonly highWatermark: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TopicDescription {
  readonly topic: string
  readonly partitions: ReadonlyArray<PartitionDescription>
}

/**
 * Which offset of a partition `listOffsets` finds: the first still in the log, the next to be
 * written (the high watermark), or the first whose record's timestamp is at or after
 * `timestamp` (epoch milliseconds), as Kafka's ListOffsets does.
 *
 * @since 0.4.0
 * @category models
 */
export type OffsetSpec = "earliest" | "latest" | { readonly timestamp: number }

/**
 * @since 0.4.0
 * @category models
 */
export interface OffsetQuery extends TopicPartition {
  readonly at: OffsetSpec
}

/**
 * @since 0.4.0
 * @category models
 */
export interface ListedOffset extends TopicPartition {
  /**
   * The offset found; undefined for a timestamp no record reaches (every record is older: a
   * consumer seeking there starts at the high watermark).
   */
  readonly offset: number | undefined
  /** The found record's timestamp, for a timestamp query that found one. */
  readonly timestamp: number | undefined
}

/**
 * What a transport can do, for callers and for the contract suite to adapt to.
 *
 * @since 0.1.0
 * @category models
 */
export interface Features {
  /** Kafka transactions and read-committed isolation. */
  readonly transactions: boolean
  /** Errors can be injected on demand (the memory transport's fault injection). */
  readonly faultInjection: boolean
  /** Time is Effect's `Clock`, so `TestClock` drives sessions, retention and delays. */
  readonly clockDriven: boolean
  /**
   * A transaction's offsets for a group this transport is a member of carry the member's id and
   * generation (KIP-447), so the group fences a member that lost the partitions: one
   * transactional producer can serve all of a member's partitions. Default false.
   */
  readonly groupFencedTransactions?: boolean | undefined
}

/**
 * The transport service.
 *
 * @since 0.1.0
 * @category services
 */
export class Transport extends Context.Service<Transport, {
  /** `memory` or `kafka`, for logs and telemetry. */
  readonly name: string
  readonly features: Features
  /**
   * Span attributes that describe this transport's connection (`server.address`,
   * `server.port`, `messaging.client.id`), added to every messaging span.
   */
  readonly telemetry: Readonly<Record<string, string | number>>
  /**
   * Produces records and returns each record's own outcome, in the order given, once every
   * record has one: its metadata once acknowledged, or the `TransportError` that refused it.
   * The call itself never fails; retriable errors are retried inside, as `send` does.
   *
   * What one record's outcome shares with others, as on Kafka: the records of one call for one
   * partition are one record batch, which the broker validates and writes whole, so they are
   * written together or refused together with that partition's error (a too-large record refuses
   * its partition's batch: `MESSAGE_TOO_LARGE`). Records of other partitions are not affected.
   * A record the client refuses before sending (kafkajs cannot encode a `null` header) fails
   * alone. Records for one partition keep their order.
   *
   * A failed record's error names its `topic`, and its `partition` when it was placed. Its
   * `code` says whether it was written: a batch refusal (`refusesBatch` in `TransportError.ts`)
   * wrote nothing, so the caller may resend those records (`Producer` resends a refused batch
   * in halves, which isolates the record at fault); after other errors (a timeout, a lost
   * connection) the record may or may not have been written. A record already written is never
   * written again by a retry inside the call.
   */
  readonly sendEach: (
    records: ReadonlyArray<ProducerRecord>,
    options?: { readonly acks?: Acks | undefined },
  ) => Effect.Effect<ReadonlyArray<Exit.Exit<RecordMetadata, TransportError>>>
  /**
   * Produces records and returns their metadata, in the order given, once acknowledged:
   * `sendEach` for callers that take one failure for all. Fails with the first failed record's
   * error when any record failed; records of other partitions may have been written then, so a
   * caller that resends after a failure should use `sendEach` to know which.
   */
  readonly send: (
    records: ReadonlyArray<ProducerRecord>,
    options?: { readonly acks?: Acks | undefined },
  ) => Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError>
  /** Joins a consumer group for as long as the scope is open. */
  readonly subscribe: (options: SubscribeOptions) => Effect.Effect<Subscription, TransportError, Scope.Scope>
  /** Opens a transactional producer for as long as the scope is open. */
  readonly transactional: (
    transactionalId: string,
  ) => Effect.Effect<TransactionalProducer, TransportError, Scope.Scope>
  /** Creates a topic; fails with `TOPIC_ALREADY_EXISTS` if it exists. */
  readonly createTopic: (spec: TopicSpec) => Effect.Effect<void, TransportError>
  readonly describeTopic: (topic: string) => Effect.Effect<TopicDescription, TransportError>
  /** Every topic's name, sorted; Kafka's internal topics (`__consumer_offsets`, ...) left out. */
  readonly listTopics: Effect.Effect<ReadonlyArray<string>, TransportError>
  /**
   * The offsets asked for, in the order asked. A missing topic or partition fails with
   * `UNKNOWN_TOPIC_OR_PARTITION` naming it.
   */
  readonly listOffsets: (queries: ReadonlyArray<OffsetQuery>) => Effect.Effect<ReadonlyArray<ListedOffset>, TransportError>
  /**
   * A group's committed offsets, for any group (this process need not be a member), sorted by
   * topic and partition: of `topics` when given, else of every topic it committed. A partition
   * never committed is absent; a group that does not exist has none.
   */
  readonly committedOffsets: (
    group: string,
    topics?: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyArray<CommittedOffset>, TransportError>
}>()("partita/Transport") {}
