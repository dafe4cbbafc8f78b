/**
 * An actor: what to do with each record of some topics, and what to do when that fails.
 *
 * An actor is a description; `ActorSystem.run` brings it to life. The system joins the actor's
 * consumer group and runs one partition actor (a supervised fiber) for every partition it is
 * assigned. Each record's key and value are decoded with the actor's codecs (an Effect Schema
 * as JSON by default); a record that does not decode becomes a `DecodeError`, handled by the
 * error policy like any other error, never a crash.
 *
 * @example
 * ```ts
 * import { Data, Effect, Schedule, Schema } from "effect"
 * import { Actor, ErrorPolicy, Ordering } from "partita"
 *
 * class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}
 * const Notification = Schema.Struct({ toId: Schema.Number, message: Schema.String })
 *
 * const notifier = Actor.make({
 *   name: "notifier",
 *   topics: ["notifications"],
 *   value: Notification,
 *   handle: (notification) => notification.message === "" ? Effect.fail(new StoreError({ reason: "empty" })) : Effect.void,
 *   onError: {
 *     StoreError: ErrorPolicy.retry(Schedule.exponential("100 millis").pipe(Schedule.jittered), { times: 5, then: "dead-letter" }),
 *     DecodeError: ErrorPolicy.deadLetter,
 *     // Named because `handlerTimeout` is set: without it, a handler cannot time out.
 *     HandlerTimeout: ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 3, then: "dead-letter" }),
 *   },
 *   handlerTimeout: "5 seconds",
 *   // Created at start if missing; a letter over the topic's limit is written with its value truncated.
 *   deadLetter: { topic: "notifications.dlq", create: { partitions: 1 }, tooLarge: "truncate" },
 *   ordering: Ordering.byKey({ concurrency: 16 }),
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Data, type Duration, Effect, Schedule } from "effect"
import * as Codec from "./Codec.ts"
import type * as ErrorPolicy from "./ErrorPolicy.ts"
import * as Ordering from "./Ordering.ts"
import { type CodecOrSchema, toCodec } from "./Producer.ts"
import type { Header, SubscribeOptions } from "./Transport.ts"

/**
 * A record whose key or value could not be decoded. Carries the raw bytes, so the dead-letter
 * topic gets them unchanged.
 *
 * @since 0.1.0
 * @category errors
 */
export class DecodeError extends Data.TaggedError("DecodeError")<{
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly part: "key" | "value"
  readonly reason: Codec.CodecError["reason"]
  /** Every problem found, each with its path into the value. */
  readonly problems: ReadonlyArray<Codec.Problem>
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
}> {
  override get message(): string {
    return `Cannot decode the ${this.part} of record ${this.topic}/${this.partition}@${this.offset}: ${
      this.problems.map(Codec.formatProblem).join("; ")
    }`
  }
}

/**
 * The handler did not finish within the actor's `handlerTimeout`; it was interrupted.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerTimeout extends Data.TaggedError("HandlerTimeout")<{
  readonly topic: string
  readonly partition: number
  /** The record's offset; for a batch handler, the batch's first. */
  readonly offset: number
  readonly timeout: Duration.Duration
  /** For a batch handler, the records in the batch that timed out. */
  readonly records?: number | undefined
}> {
  override get message(): string {
    return this.records === undefined
      ? `Handler for record ${this.topic}/${this.partition}@${this.offset} did not finish within ${this.timeout.toString()}`
      : `Batch handler for ${this.records} records of ${this.topic}/${this.partition} from offset ${this.offset} did not finish within ${this.timeout.toString()}`
  }
}

/**
 * The errors Partita raises itself: `DecodeError` for every actor, `HandlerTimeout` for an actor
 * that sets `handlerTimeout`.
 *
 * @since 0.1.0
 * @category models
 */
export type SystemErrors = DecodeError | HandlerTimeout

/**
 * The errors Partita raises itself for an actor whose `handlerTimeout` has type `T`: no
 * `HandlerTimeout` when it sets none.
 *
 * @since 0.4.0
 * @category models
 */
export type SystemErrorsOf<T> = [T] extends [undefined] ? DecodeError : DecodeError | HandlerTimeout

/**
 * What `onError` maps: a policy for every tag the handler can fail with and Partita can raise
 * (see {@link SystemErrorsOf}), or some of them and a `default`. A policy for `HandlerTimeout` is
 * allowed (and unused) on an actor without `handlerTimeout`, so adding or removing the timeout
 * never breaks a table that names it.
 *
 * @since 0.4.0
 * @category models
 */
export type OnError<E, T> = ErrorPolicy.Policies<E | SystemErrorsOf<T>> & { readonly HandlerTimeout?: ErrorPolicy.ErrorPolicy | undefined }

/**
 * One record of a batch handed to a batch handler (`handleBatch`): its decoded value and key,
 * and what `RecordContext` would hold for it (a batch handler has no `RecordContext`).
 *
 * @since 0.4.0
 * @category models
 */
export interface BatchRecord<V, K = Uint8Array | null> {
  readonly value: V
  /** The decoded key; the raw bytes without a key codec. */
  readonly key: K
  readonly topic: string
  readonly partition: number
  readonly offset: number
  /** Epoch milliseconds. */
  readonly timestamp: number
  readonly headers: ReadonlyArray<Header>
  /** 1 the first time the record is handed to the handler, 2 the next (a retry, or a bisected half), and so on. */
  readonly attempt: number
}

/**
 * What a batch handler gets: records of one partition, in offset order, none of which failed to
 * decode (those go to the error policy one by one).
 *
 * @since 0.4.0
 * @category models
 */
export type Batch<V, K = Uint8Array | null> = ReadonlyArray<BatchRecord<V, K>>

/**
 * How a batch handler's batches are gathered (see `BatchOptions.batch`).
 *
 * @since 0.4.0
 * @category models
 */
export interface BatchLimits {
  /** At most this many records per batch. Default 500. */
  readonly maxRecords?: number | undefined
  /**
   * How long, from the first record taken, more records are waited for while the batch holds
   * fewer than `maxRecords`; measured with `Clock`. A batch is handed over as soon as it is
   * full, and records already in the mailbox never wait. Default 100 milliseconds.
   */
  readonly maxWait?: Duration.Input | undefined
}

/**
 * An exactly-once partition actor's transaction was refused because another producer or group
 * member now owns the partition: this instance is a zombie (stalled past its session, or cut off
 * while the group moved on). Nothing of the transaction becomes visible; the partition actor ends
 * without a restart and waits for the group to take the partition away.
 *
 * @since 0.3.0
 * @category errors
 */
export class TransactionFenced extends Data.TaggedError("TransactionFenced")<{
  readonly topic: string
  readonly partition: number
  readonly transactionalId: string
  /** Kafka's error: `PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH` or `FENCED_INSTANCE_ID`. */
  readonly code: string
  readonly reason: string
}> {
  override get message(): string {
    return `The transaction of ${this.topic}/${this.partition} (transactional id "${this.transactionalId}") was fenced (${this.code}): another instance owns the partition now; ${this.reason}`
  }
}

/**
 * What an actor promises about each record (see `Options.delivery`).
 *
 * @since 0.3.0
 * @category models
 */
export type Delivery = "at-least-once" | "at-most-once" | "exactly-once"

/**
 * How an exactly-once actor groups a partition's records into Kafka transactions. A transaction
 * commits what the handlers produced for its records, their dead letters and the consumed
 * offset together; it never spans a rebalance.
 *
 * @since 0.3.0
 * @category models
 */
export interface TransactionOptions {
  /** Commit once this many records completed in the partition's open transaction. Default 500. */
  readonly records?: number | undefined
  /** Commit once the transaction has been open this long. Default 100 milliseconds. */
  readonly interval?: Duration.Input | undefined
  /**
   * How long a commit or abort may take. Past it the outcome is unknown, and the partition's
   * transactional producer is opened again before the next transaction: that fences a request
   * still on its way, which could otherwise commit or abort a later transaction. Default 30 s.
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * Each partition's transactional id is `<idPrefix>-<group>-<topic>-<partition>`: the id a new
   * owner of the partition opens, fencing the old one. Default `partita`.
   */
  readonly idPrefix?: string | undefined
  /**
   * `per-partition` (the default): each partition has its own transactional producer and its
   * own transactions, fenced by its transactional id on every transport; a partition's next
   * owner aborts what a crashed one left open at once. `per-member`: one producer for all the
   * member's partitions (KIP-447), whose transactions hold every partition's work and commit
   * together, fenced by the group's generation: fewer producers for a member with many
   * partitions, at the price that an abort makes all of them handle their part again, a slow
   * handler holds the others' commits back, and a crashed member's open transaction blocks
   * read-committed readers of its output until the transport's transaction timeout. It needs a
   * transport with `groupFencedTransactions` (`KafkaTransport`).
   */
  readonly producer?: "per-partition" | "per-member" | undefined
}

/**
 * How often at-least-once progress is committed.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommitOptions {
  /** Commit at least this often while records complete. Default 1 second. */
  readonly interval?: Duration.Input | undefined
  /** Commit once this many records completed since the last commit. Default 1000. */
  readonly records?: number | undefined
  /**
   * The delays between tries after a commit failed; requests made meanwhile wait for the next
   * try. Also how an at-most-once commit ahead of a chunk is retried, since nothing of the chunk
   * runs before it lands. Default exponential from 100 ms, capped at 5 s.
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
}

/**
 * How a partition actor is restarted after a defect.
 *
 * @since 0.1.0
 * @category models
 */
export interface SupervisionOptions {
  /** Delays between restarts. Default exponential from 100 ms, capped at 10 s. */
  readonly schedule?: Schedule.Schedule<unknown, unknown> | undefined
  /** Restarts allowed within `window` before `then`. Default 5. */
  readonly maxRestarts?: number | undefined
  /** Default 1 minute. */
  readonly window?: Duration.Input | undefined
  /** `stop-partition` (the default) reports the partition unhealthy; `fail-system` fails the run. */
  readonly then?: "stop-partition" | "fail-system" | undefined
}

/**
 * An actor's dead-letter topic, and what happens when a letter cannot be written.
 *
 * Nothing past a dead-lettered record is committed until its letter is acknowledged: while a
 * write fails the partition stays paused. Which way forward it takes depends on the failure:
 * a retriable one is tried again on `retry`; a letter refused as too large gets the `tooLarge`
 * treatment; anything else (writes not authorized, say), a `retry` schedule that ran out, or a
 * smaller letter still refused leaves the partition `blocked`: reported unhealthy with the reason
 * in `lastError`, and the write tried again on the slow `blockedRetry` schedule, so fixing the
 * cause unblocks it without a restart.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterOptions {
  /**
   * The topic letters go to. It must exist when the system starts (else `ActorSystem.start`
   * fails with `DeadLetterTopicMissing`), unless `create` is set.
   */
  readonly topic: string
  /**
   * How a write that failed with a retriable error (a leader moving, a timeout) is tried again.
   * When the schedule ends, the partition is blocked. Default exponential from 1 s, capped at
   * 30 s, without end.
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /**
   * How a blocked partition's letter is tried again: slowly, as only a change outside the
   * process (an ACL granted, a larger `max.message.bytes`) lets it through. Default exponential
   * from 30 s, capped at 5 minutes.
   */
  readonly blockedRetry?: Schedule.Schedule<unknown, unknown> | undefined
  /**
   * A letter the topic refuses as too large (`MESSAGE_TOO_LARGE`: the `partita.dlq.*` headers
   * took a record near the limit over it). `truncate` (the default) writes the value cut to fit,
   * then, if that is refused too, no value; `omit-value` writes no value; `block` blocks the
   * partition. Such a letter keeps the key, the original headers and the `partita.dlq.*` ones,
   * and adds `partita.dlq.value` (`truncated` or `omitted`), `partita.dlq.original.size` (the
   * original value's length in bytes) and `partita.dlq.original.sha256` (its SHA-256, in hex).
   * An omitted value is empty, not null: a tombstone would delete the key's earlier letters
   * from a compacted topic.
   */
  readonly tooLarge?: "truncate" | "omit-value" | "block" | undefined
  /**
   * The topic's `max.message.bytes`, when known: a letter that would exceed it (counted as Kafka
   * encodes a one-record batch) gets the `tooLarge` treatment before it is sent, so its first
   * write fits. Default `create.config["max.message.bytes"]` when set; otherwise the limit is
   * learned from the broker's refusal, and a truncated value is cut to the original record's size.
   */
  readonly maxBytes?: number | undefined
  /** Creates the topic at start if it does not exist. Default: not created. */
  readonly create?: {
    /** Default 1. */
    readonly partitions?: number | undefined
    /** Topic configuration, e.g. `{ "retention.ms": "-1" }`. */
    readonly config?: Readonly<Record<string, string>> | undefined
  } | undefined
}

/**
 * An actor's dead-letter settings with the defaults applied.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterSettings {
  readonly topic: string
  readonly retry: Schedule.Schedule<unknown, unknown>
  readonly blockedRetry: Schedule.Schedule<unknown, unknown>
  readonly tooLarge: "truncate" | "omit-value" | "block"
  readonly maxBytes: number | undefined
  readonly create: { readonly partitions: number; readonly config: Readonly<Record<string, string>> } | undefined
}

/**
 * What every actor's options hold, whatever its handler: everything but `handle` / `handleBatch`.
 * `T` is the type of `handlerTimeout`, which decides whether `onError` must name `HandlerTimeout`.
 *
 * @since 0.4.0
 * @category models
 */
export interface CommonOptions<V, K, E, T extends Duration.Input | undefined = Duration.Input | undefined> {
  /** Names the actor in logs, metrics, health and dead-letter headers. */
  readonly name: string
  readonly topics: ReadonlyArray<string>
  /** The consumer group. Default: the actor's name. */
  readonly group?: string | undefined
  readonly value: CodecOrSchema<V>
  /** Without a key codec the handler gets the raw key bytes. */
  readonly key?: CodecOrSchema<K> | undefined
  /**
   * A policy per error tag: every tag of the handler's errors, `DecodeError`, and
   * `HandlerTimeout` when `handlerTimeout` is set, or some of them and a `default`.
   */
  readonly onError: OnError<E, T>
  /** Where `deadLetter` policies write, and what happens when a letter cannot be written. Required when a policy dead-letters. */
  readonly deadLetter?: DeadLetterOptions | undefined
  /**
   * `at-least-once` (the default) commits after handling; `at-most-once` before.
   * `exactly-once` runs each partition in Kafka transactions (see `transaction`): what a
   * handler produces through `Producer` while handling a record, its dead letters included,
   * commits together with the consumed offsets, or not at all, and a read-committed consumer
   * sees each output once. It needs a transport with transactions and `partition` ordering.
   * Effects outside Kafka (a database write, an HTTP call) stay at-least-once: a transaction
   * that aborts is handled again. Make them idempotent, keyed by `RecordContext`'s topic,
   * partition and offset.
   */
  readonly delivery?: Delivery | undefined
  /** Exactly-once only: how records are grouped into transactions. */
  readonly transaction?: TransactionOptions | undefined
  /**
   * Records held per partition. When it is full, fetching waits, and if the wait lasts longer
   * than `pauseAfter` (default 50 ms) the partition is paused on the transport until the mailbox
   * is half empty. Default capacity 1000 records and `maxBytes` 16 MiB. With `byKey` and
   * `unordered` ordering, records taken from the mailbox count against both until they are done:
   * the bound covers what waits in key lanes behind a record in a retry.
   */
  readonly mailbox?: {
    readonly capacity?: number | undefined
    /**
     * Bytes held per partition, counting each record's key, value and headers: the bound on
     * memory when records are large. A batch larger than this still enters an empty mailbox,
     * so nothing waits forever. Default 16 MiB.
     */
    readonly maxBytes?: number | undefined
    readonly pauseAfter?: Duration.Input | undefined
  } | undefined
  /**
   * A handler running longer is interrupted and fails with `HandlerTimeout` (for a batch
   * handler, each call on a batch). Default: none. Set, `onError` must cover `HandlerTimeout`.
   */
  readonly handlerTimeout?: T | undefined
  readonly commit?: CommitOptions | undefined
  readonly supervision?: SupervisionOptions | undefined
  /**
   * On revocation, how long a partition's in-flight records may take to finish before they are
   * interrupted and the partition is given up. Keep it below the consumer's rebalance timeout.
   * A shutdown is bounded by the system's `shutdownDeadline` instead. Default 10 seconds.
   */
  readonly drainDeadline?: Duration.Input | undefined
  /** A partition with records waiting and no progress for this long is reported stalled. Default 1 minute. */
  readonly stallAfter?: Duration.Input | undefined
  /** Consumer settings passed to the transport (session timeout, isolation, reset, ...). */
  readonly consumer?: Omit<SubscribeOptions, "group" | "topics"> | undefined
}

/**
 * An actor handling one record at a time.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<V, K, E, R, T extends Duration.Input | undefined = Duration.Input | undefined>
  extends CommonOptions<V, K, E, T>
{
  readonly handle: (value: V, key: K) => Effect.Effect<void, E, R>
  /** `partition` (the default), `Ordering.byKey(...)` or `Ordering.unordered(...)`. */
  readonly ordering?: "partition" | Ordering.Ordering | undefined
  readonly handleBatch?: undefined
  readonly batch?: undefined
}

/**
 * An actor handling a partition's records in batches: `handleBatch` gets up to
 * `batch.maxRecords` decoded records of one partition, in offset order, gathered for at most
 * `batch.maxWait`. A record that does not decode never reaches it: it goes to the `DecodeError`
 * policy on its own. A batch that fails gets the policy of its error's tag as a whole (retried
 * whole; dead-lettered, skipped or halting as a whole), unless the policy is a `retry` with
 * `bisect: true`, which splits a batch out of retries in halves, down to the record that fails alone.
 *
 * Batches are per partition and in order: a batch actor has `partition` ordering. Exactly-once,
 * each batch is a transaction of its own (records produced in the handler, dead letters and the
 * offset past the batch commit together; `transaction.records` and `interval` do not apply), and
 * a failed try aborts what it produced before the policy's next step.
 *
 * @since 0.4.0
 * @category models
 */
export interface BatchOptions<V, K, E, R, T extends Duration.Input | undefined = Duration.Input | undefined>
  extends CommonOptions<V, K, E, T>
{
  readonly handleBatch: (records: Batch<V, K>) => Effect.Effect<void, E, R>
  /** How batches are gathered. Default 500 records, 100 milliseconds. */
  readonly batch?: BatchLimits | undefined
  /** Batches are one partition's records in offset order: `partition`, the only ordering for a batch handler. */
  readonly ordering?: "partition" | undefined
  readonly handle?: undefined
}

/**
 * An actor, ready for `ActorSystem.run`. `R` is what its handler needs from the context.
 *
 * @since 0.1.0
 * @category models
 */
export interface Actor<out R = never> {
  readonly name: string
  readonly group: string
  readonly topics: ReadonlyArray<string>
  readonly ordering: Ordering.Ordering
  readonly delivery: Delivery
  /** Exactly-once transactions; the defaults when the actor is not exactly-once. */
  readonly transaction: {
    readonly records: number
    readonly interval: Duration.Input
    readonly timeout: Duration.Input
    readonly idPrefix: string
    readonly producer: "per-partition" | "per-member"
  }
  readonly mailboxCapacity: number
  readonly mailboxMaxBytes: number
  readonly pauseAfter: Duration.Input
  readonly handlerTimeout: Duration.Input | undefined
  readonly commit: { readonly interval: Duration.Input; readonly records: number; readonly retry: Schedule.Schedule<unknown, unknown> }
  readonly supervision: Required<{ readonly [K in keyof SupervisionOptions]-?: Exclude<SupervisionOptions[K], undefined> }>
  readonly drainDeadline: Duration.Input
  readonly stallAfter: Duration.Input
  readonly consumer: Omit<SubscribeOptions, "group" | "topics">
  readonly deadLetter: DeadLetterSettings | undefined
  /** The policy for an error tag. */
  readonly policyFor: (tag: string) => ErrorPolicy.ErrorPolicy
  /** Every policy named in `onError`, to check the actor's configuration. */
  readonly policies: ReadonlyArray<ErrorPolicy.ErrorPolicy>
  readonly decodeKey: (bytes: Uint8Array | null) => Effect.Effect<unknown, Codec.CodecError>
  readonly decodeValue: (bytes: Uint8Array | null) => Effect.Effect<unknown, Codec.CodecError>
  /** Per-record actors: the handler. A batch actor's answers with a defect: it is never called. */
  readonly handle: (value: unknown, key: unknown) => Effect.Effect<void, { readonly _tag: string }, R>
  /** Batch actors: the batch handler and how its batches are gathered; undefined otherwise. */
  readonly batch:
    | {
      readonly handle: (records: Batch<unknown, unknown>) => Effect.Effect<void, { readonly _tag: string }, R>
      readonly maxRecords: number
      readonly maxWait: Duration.Input
    }
    | undefined
  /** Why this actor cannot run, found by `make` where the types could not say it (`ActorSystem` fails with `InvalidActor`). */
  readonly invalid: string | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  mailboxCapacity: 1000,
  mailboxMaxBytes: 16 * 1024 * 1024,
  pauseAfter: "50 millis" as Duration.Input,
  commitInterval: "1 second" as Duration.Input,
  commitRecords: 1000,
  commitRetry: Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]) as Schedule.Schedule<
    unknown,
    unknown
  >,
  // The smaller of the two delays: exponential growth, capped.
  restartSchedule: Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("10 seconds")]) as Schedule.Schedule<
    unknown,
    unknown
  >,
  maxRestarts: 5,
  restartWindow: "1 minute" as Duration.Input,
  drainDeadline: "10 seconds" as Duration.Input,
  stallAfter: "1 minute" as Duration.Input,
  transactionRecords: 500,
  transactionInterval: "100 millis" as Duration.Input,
  transactionTimeout: "30 seconds" as Duration.Input,
  transactionIdPrefix: "partita",
  deadLetterRetry: Schedule.min([Schedule.exponential("1 second"), Schedule.spaced("30 seconds")]) as Schedule.Schedule<
    unknown,
    unknown
  >,
  deadLetterBlockedRetry: Schedule.min([Schedule.exponential("30 seconds"), Schedule.spaced("5 minutes")]) as Schedule.Schedule<
    unknown,
    unknown
  >,
  deadLetterTooLarge: "truncate" as "truncate" | "omit-value" | "block",
  deadLetterPartitions: 1,
  batchMaxRecords: 500,
  batchMaxWait: "100 millis" as Duration.Input,
}

/**
 * Describes an actor: with `handle`, one record at a time; with `handleBatch` (and `batch`), a
 * partition's records in batches (see {@link BatchOptions}). Exactly one of the two. Nothing
 * runs until `ActorSystem.run`.
 *
 * @example
 * ```ts
 * import { Data, Effect, Schedule, Schema } from "effect"
 * import { Actor, ErrorPolicy } from "partita"
 *
 * class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}
 * const Order = Schema.Struct({ id: Schema.Number })
 * const insertAll = (rows: ReadonlyArray<typeof Order.Type>): Effect.Effect<void, StoreError> => Effect.void
 *
 * const loader = Actor.make({
 *   name: "loader",
 *   topics: ["orders"],
 *   value: Order,
 *   handleBatch: (records) => insertAll(records.map((record) => record.value)),
 *   batch: { maxRecords: 500, maxWait: "100 millis" },
 *   onError: {
 *     // Retried whole twice, then halved down to the record that fails alone, which is dead-lettered.
 *     StoreError: ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 2, then: "dead-letter", bisect: true }),
 *     DecodeError: ErrorPolicy.deadLetter,
 *   },
 *   deadLetter: { topic: "orders.dlq" },
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <V, E extends { readonly _tag: string }, R, K = Uint8Array | null, T extends Duration.Input | undefined = undefined>(
  options: Options<V, K, E, R, T> | BatchOptions<V, K, E, R, T>,
): Actor<R> => {
  const valueCodec = toCodec(options.value)
  const keyCodec = options.key === undefined ? (Codec.bytes as unknown as Codec.Codec<K>) : toCodec(options.key)
  const ordering = options.ordering === undefined || options.ordering === "partition"
    ? Ordering.partition
    : options.ordering
  const table = options.onError as Readonly<Record<string, ErrorPolicy.ErrorPolicy | undefined>>
  const supervision = options.supervision ?? {}
  return {
    name: options.name,
    group: options.group ?? options.name,
    topics: options.topics,
    ordering,
    delivery: options.delivery ?? "at-least-once",
    transaction: {
      records: Math.max(1, options.transaction?.records ?? defaults.transactionRecords),
      interval: options.transaction?.interval ?? defaults.transactionInterval,
      timeout: options.transaction?.timeout ?? defaults.transactionTimeout,
      idPrefix: options.transaction?.idPrefix ?? defaults.transactionIdPrefix,
      producer: options.transaction?.producer ?? "per-partition",
    },
    mailboxCapacity: Math.max(1, options.mailbox?.capacity ?? defaults.mailboxCapacity),
    mailboxMaxBytes: Math.max(1, options.mailbox?.maxBytes ?? defaults.mailboxMaxBytes),
    pauseAfter: options.mailbox?.pauseAfter ?? defaults.pauseAfter,
    handlerTimeout: options.handlerTimeout,
    commit: {
      interval: options.commit?.interval ?? defaults.commitInterval,
      records: Math.max(1, options.commit?.records ?? defaults.commitRecords),
      retry: options.commit?.retry ?? defaults.commitRetry,
    },
    supervision: {
      schedule: supervision.schedule ?? defaults.restartSchedule,
      maxRestarts: supervision.maxRestarts ?? defaults.maxRestarts,
      window: supervision.window ?? defaults.restartWindow,
      then: supervision.then ?? "stop-partition",
    },
    drainDeadline: options.drainDeadline ?? defaults.drainDeadline,
    stallAfter: options.stallAfter ?? defaults.stallAfter,
    consumer: options.consumer ?? {},
    deadLetter: options.deadLetter === undefined ? undefined : deadLetterSettings(options.deadLetter),
    policyFor: (tag) => table[tag] ?? table["default"] ?? { _tag: "Halt" },
    policies: Object.values(table).filter((policy): policy is ErrorPolicy.ErrorPolicy => policy !== undefined),
    decodeKey: keyCodec.decode,
    decodeValue: valueCodec.decode,
    handle: options.handle === undefined ? batchActorHandle(options.name) : options.handle as Actor<R>["handle"],
    batch: options.handleBatch === undefined ? undefined : {
      handle: options.handleBatch as unknown as NonNullable<Actor<R>["batch"]>["handle"],
      maxRecords: Math.max(1, Math.floor(options.batch?.maxRecords ?? defaults.batchMaxRecords)),
      maxWait: options.batch?.maxWait ?? defaults.batchMaxWait,
    },
    invalid: invalidHandlers(options),
  }
}

/** What `make` finds wrong with the handlers that the types let through (untyped callers, casts). */
const invalidHandlers = (options: { readonly handle?: unknown; readonly handleBatch?: unknown; readonly batch?: unknown }) =>
  options.handle !== undefined && options.handleBatch !== undefined
    ? "it sets both handle and handleBatch; set one: handle for one record at a time, handleBatch for batches"
    : options.handle === undefined && options.handleBatch === undefined
    ? "it sets neither handle nor handleBatch; set one"
    : options.handle !== undefined && options.batch !== undefined
    ? "it sets batch limits for a per-record handler; batch goes with handleBatch"
    : undefined

/** A batch actor's `handle`: never called (its records go to `handleBatch`), a defect if it were. */
const batchActorHandle = (name: string) => () =>
  Effect.die(new Error(`Actor "${name}" handles batches: its per-record handler must not be called`))

const deadLetterSettings = (options: DeadLetterOptions): DeadLetterSettings => {
  const create = options.create === undefined
    ? undefined
    : { partitions: options.create.partitions ?? defaults.deadLetterPartitions, config: options.create.config ?? {} }
  const configured = Number(create?.config["max.message.bytes"])
  return {
    topic: options.topic,
    retry: options.retry ?? defaults.deadLetterRetry,
    blockedRetry: options.blockedRetry ?? defaults.deadLetterBlockedRetry,
    tooLarge: options.tooLarge ?? defaults.deadLetterTooLarge,
    maxBytes: options.maxBytes ?? (Number.isSafeInteger(configured) && configured > 0 ? configured : undefined),
    create,
  }
}
