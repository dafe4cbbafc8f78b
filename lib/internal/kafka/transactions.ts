/**
 * Kafka transactions on the client's producer: one transactional producer per `transactionalId`,
 * as `Transport.TransactionalProducer` documents it. The model is Java's `TransactionManager`,
 * pared to what Partita needs.
 *
 * `make` gets a producer id and epoch with InitProducerId carrying the transactional id, on the
 * transaction coordinator (FindCoordinator key type 1). That fences every older producer with
 * the id: the coordinator bumps the epoch and aborts what the older one left open. Records go
 * through `producer.ts` (the same accumulator, batching and retries), made transactional: the
 * batches carry the transactional attribute, this id, epoch and sequences, and the producer asks
 * this module for its id and epoch instead of calling InitProducerId itself.
 *
 * Which path a broker gets, decided once in `make` from the coordinator's ApiVersions:
 * - **Transactions v2 (KIP-890 part 2)** where the cluster's finalized feature
 *   `transaction.version` is 2 or more and the coordinator has EndTxn v5 (Kafka 4.x, the
 *   default for new clusters): Produce v12 adds a partition to the transaction implicitly and
 *   TxnOffsetCommit v5 adds the group, so AddPartitionsToTxn and AddOffsetsToTxn are never sent;
 *   EndTxn v5 bumps the epoch at every commit or abort and answers with the new one, which the
 *   producer adopts (its sequences start again at 0). This is the path that closes KIP-890's
 *   hanging-transaction hole: a late Produce from an ended transaction carries an old epoch.
 * - **The classic path** elsewhere (Kafka 3.9, or a 4.x cluster left at `transaction.version` 1):
 *   AddPartitionsToTxn (v3 at most: v4+ is for brokers) before a partition's first batch in the
 *   transaction, batched per `send`; AddOffsetsToTxn before a group's first TxnOffsetCommit;
 *   Produce at v11 and TxnOffsetCommit at v4 at most (the protocol forbids higher versions inside
 *   a classic transaction). After an abort that followed a failed send, the epoch is bumped with
 *   InitProducerId (KIP-360), since that send may have left the sequences uncertain.
 *
 * Offsets (`sendOffsets`) go to the group coordinator in TxnOffsetCommit. With `member`
 * (KIP-447: member id and generation, the classic generation or the KIP-848 member epoch) the
 * group checks them as it checks a member's own commit: one transactional producer per group
 * member serves all its partitions, and a zombie whose generation is stale is refused
 * (`ILLEGAL_GENERATION`, `FENCED_MEMBER_EPOCH`, `UNKNOWN_MEMBER_ID`, ...: non-retriable, and the
 * transaction can only be aborted). Kafka 4.4's KIP-848 groups answer ILLEGAL_GENERATION too, and
 * accept an older epoch for a partition the member still holds: a zombie is refused for the
 * partitions that moved away from it, which is what matters. Without `member`: generation -1 and
 * member "" (pre-KIP-447, fenced only by the transactional id). After `commit`, the offsets are applied by the group
 * coordinator when the commit marker reaches `__consumer_offsets`, a moment later: an OffsetFetch
 * right after may still see the old ones (or UNSTABLE_OFFSET_COMMIT with `requireStable`). Nothing
 * here waits for that; the transport does.
 *
 * Errors: a fenced producer (`PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH`,
 * `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`, ...: {@link fatalErrors}) fails its current and every
 * later operation with that non-retriable error, except `abort`, which succeeds (the fencing
 * aborted the transaction). Retriable coordinator answers (`COORDINATOR_LOAD_IN_PROGRESS`,
 * `NOT_COORDINATOR`, `CONCURRENT_TRANSACTIONS`, ...) are retried with backoff from 20 ms to 1 s,
 * about 30 s in all. Any other failure of `send` or `sendOffsets` leaves the transaction
 * abortable: `commit` then fails naming that failure, and `abort` works.
 */
import { Duration, Effect, Exit, Schedule, type Scope, Semaphore } from "effect"
import type * as Transport from "../../Transport.ts"
import type { OffsetCommit, ProducerRecord, RecordMetadata, TopicPartition } from "../../Transport.ts"
import * as TransportError from "../../TransportError.ts"
import { partitionForKey } from "../partitioner.ts"
import type * as Brokers from "./brokers.ts"
import { staleCoordinatorErrors } from "./brokers.ts"
import type { Connection } from "./connection.ts"
import * as Producer from "./producer.ts"
import { AddOffsetsToTxn } from "./protocol/AddOffsetsToTxn.ts"
import { AddPartitionsToTxn } from "./protocol/AddPartitionsToTxn.ts"
import { EndTxn } from "./protocol/EndTxn.ts"
import { InitProducerId } from "./protocol/InitProducerId.ts"
import { TxnOffsetCommit } from "./protocol/TxnOffsetCommit.ts"

/**
 * What transactions need of the cluster: the producer's view and the coordinators.
 *
 * @since 0.2.0
 * @category models
 */
export interface Cluster extends Producer.Cluster {
  readonly coordinatorFor: (key: Brokers.CoordinatorKey) => Effect.Effect<Connection, TransportError.TransportError>
  readonly invalidateCoordinator: (key: Brokers.CoordinatorKey) => Effect.Effect<void>
}

/**
 * @since 0.2.0
 * @category constructors
 */
export const fromBrokers = (brokers: Brokers.Brokers): Cluster => ({
  ...Producer.fromBrokers(brokers),
  coordinatorFor: brokers.coordinatorFor,
  invalidateCoordinator: brokers.invalidateCoordinator,
})

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  readonly transactionalId: string
  /** How long the coordinator lets a transaction stay open before it aborts it. Default 60 s. */
  readonly transactionTimeout?: Duration.Input | undefined
  /** The producer's batching, compression and timeouts (idempotence is implied). */
  readonly producer?: Omit<Producer.Options, "idempotent" | "transactional"> | undefined
}

/**
 * @since 0.2.0
 * @category defaults
 */
export const defaults = {
  /** Kafka's `transaction.timeout.ms` default. */
  transactionTimeout: Duration.seconds(60),
} as const

/**
 * The group member a transaction's offsets are committed for (KIP-447).
 *
 * @since 0.2.0
 * @category models
 */
export interface Member {
  readonly memberId: string
  /** The classic generation id, or the KIP-848 member epoch. */
  readonly generationId: number
  readonly groupInstanceId?: string | null | undefined
}

/**
 * `Transport.Transaction`, with the member `sendOffsets` commits for.
 *
 * @since 0.2.0
 * @category models
 */
export interface Transaction extends Transport.Transaction {
  /** The records' metadata in order; fails as a whole when any record fails (then abort). */
  readonly send: (records: ReadonlyArray<ProducerRecord>) => Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError.TransportError>
  /** Commits the group's offsets with the transaction; `member` makes the group fence a zombie (KIP-447). */
  readonly sendOffsets: (
    group: string,
    offsets: ReadonlyArray<OffsetCommit>,
    member?: Member | undefined,
  ) => Effect.Effect<void, TransportError.TransportError>
}

/**
 * `v2`: KIP-890 transactions (implicit partitions, an epoch per transaction); `classic`:
 * AddPartitionsToTxn and AddOffsetsToTxn.
 *
 * @since 0.2.0
 * @category models
 */
export type Protocol = "v2" | "classic"

/**
 * Requests answered, by kind, for tests and telemetry (an answer that is retried counts each time).
 *
 * @since 0.2.0
 * @category models
 */
export interface Metrics {
  /** Producer ids and epochs got with InitProducerId: the first, then each KIP-360 bump. */
  readonly initProducerId: number
  readonly addPartitionsToTxn: number
  readonly addOffsetsToTxn: number
  readonly txnOffsetCommit: number
  readonly endTxn: number
  /** Coordinator requests sent again after a retriable error. */
  readonly retries: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface TransactionalProducer extends Transport.TransactionalProducer {
  readonly begin: Effect.Effect<Transaction, TransportError.TransportError>
  readonly protocol: Protocol
  /** The producer id and epoch in use now (the epoch changes at each transaction on `v2`). */
  readonly producerId: () => { readonly id: number; readonly epoch: number }
  readonly metrics: () => Metrics
}

/**
 * Answers after which this producer can do nothing more with its transactional id (Java's
 * fatal errors): another producer took the id, or this one may not use it.
 *
 * @since 0.2.0
 * @category models
 */
export const fatalErrors: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "PRODUCER_FENCED",
  "INVALID_PRODUCER_EPOCH",
  "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
  "CLUSTER_AUTHORIZATION_FAILED",
  "TRANSACTION_COORDINATOR_FENCED",
  "INVALID_PRODUCER_ID_MAPPING",
  "INVALID_TXN_STATE",
  "UNSUPPORTED_VERSION",
  "UNSUPPORTED_FOR_MESSAGE_FORMAT",
])

/** The group's refusals of a member that is no longer what it thinks it is (KIP-447). */
const memberFenced: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "FENCED_MEMBER_EPOCH",
  "STALE_MEMBER_EPOCH",
  "FENCED_INSTANCE_ID",
  "REBALANCE_IN_PROGRESS",
])

/** Backoff for retriable coordinator answers: 20 ms doubling to 1 s, 30 times (about 25 s). */
const coordinatorRetry = Schedule.min([Schedule.exponential("20 millis", 2), Schedule.spaced("1 second")])
const coordinatorRetries = 30

/** Classic transactions may not use Produce v12 or TxnOffsetCommit v5 (they would add implicitly). */
const classicMaxProduce = 11
const classicMaxTxnOffsetCommit = 4
/** TxnOffsetCommit v6 names topics by id; v5 is the last by name. */
const maxTxnOffsetCommit = 5
/** AddPartitionsToTxn v4+ is broker-to-broker. */
const maxAddPartitions = 3
/** Produce v12 is the last by topic name (producer.ts' limit). */
const v2MaxProduce = 12

const keyOf = (tp: TopicPartition): string => `${tp.partition}\u0000${tp.topic}`

const byTopic = <A extends TopicPartition>(items: ReadonlyArray<A>): Map<string, Array<A>> => {
  const out = new Map<string, Array<A>>()
  for (const item of items) {
    let list = out.get(item.topic)
    if (list === undefined) out.set(item.topic, list = [])
    list.push(item)
  }
  return out
}

/** The transport error of a failed exit (a defect becomes UNKNOWN_SERVER_ERROR naming it). */
const errorOf = (exit: Exit.Exit<unknown, TransportError.TransportError>, operation: string): TransportError.TransportError => {
  if (Exit.isFailure(exit)) {
    for (const reason of exit.cause.reasons) if (reason._tag === "Fail") return reason.error
  }
  return TransportError.make("UNKNOWN_SERVER_ERROR", operation, `The transaction's ${operation} failed unexpectedly`, Exit.isFailure(exit) ? exit.cause : undefined)
}

/** One transaction's state. */
interface State {
  outcome: "open" | "committed" | "aborted"
  /** The failure that leaves the transaction abortable. */
  failed: TransportError.TransportError | undefined
  /** Something was added to it: an EndTxn is due. */
  started: boolean
  /** `commit` or `abort` has begun: nothing more may join the transaction. */
  ending: "commit" | "abort" | undefined
  readonly partitions: Set<string>
  readonly groups: Set<string>
  /** `send` calls running, and who waits for them to end. */
  sending: number
  idle: Array<() => void>
}

/**
 * Opens the transactional producer in the current scope: InitProducerId (fencing older
 * producers with the id), then the producer. Closing the scope aborts an open transaction.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (
  source: Cluster | Brokers.Brokers,
  options: Options,
): Effect.Effect<TransactionalProducer, TransportError.TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const cluster: Cluster = "partitionCount" in source ? source : fromBrokers(source)
    const transactionalId = options.transactionalId
    const txnKey: Brokers.CoordinatorKey = { type: "transaction", id: transactionalId }
    const transactionTimeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.transactionTimeout ?? defaults.transactionTimeout))
    const who = `transactional id "${transactionalId}"`
    const metrics = { initProducerId: 0, addPartitionsToTxn: 0, addOffsetsToTxn: 0, txnOffsetCommit: 0, endTxn: 0, retries: 0 }

    let producerId = -1
    let producerEpoch = -1
    /** Set once the id is lost to this producer (fenced, refused): every operation fails with it. */
    let fatal: TransportError.TransportError | undefined
    let current: State | undefined
    const adding = yield* Semaphore.make(1)

    /** A coordinator request; retriable answers retried, a moved coordinator looked up again. */
    const onCoordinator = <A>(
      key: Brokers.CoordinatorKey,
      f: (connection: Connection) => Effect.Effect<A, TransportError.TransportError>,
    ): Effect.Effect<A, TransportError.TransportError> =>
      Effect.flatMap(cluster.coordinatorFor(key), f).pipe(
        Effect.tapError((error) =>
          Effect.andThen(
            staleCoordinatorErrors.has(error.code) ? cluster.invalidateCoordinator(key) : Effect.void,
            error.retriable
              ? Effect.andThen(
                Effect.sync(() => void metrics.retries++),
                Effect.logDebug(`Retrying for ${who} after ${error.code}: ${error.message}`),
              )
              : Effect.void,
          )
        ),
        Effect.retry({ schedule: coordinatorRetry, times: coordinatorRetries, while: (error) => error.retriable }),
      )

    /** Records a fatal or abortable error where it belongs and hands it on. */
    const noteFailure = (state: State | undefined, error: TransportError.TransportError): TransportError.TransportError => {
      if (fatalErrors.has(error.code)) {
        if (fatal === undefined) {
          fatal = new TransportError.TransportError({
            code: error.code,
            retriable: false,
            operation: error.operation,
            message: `${error.message}. The ${who} is fenced or refused: another producer with the id took over, or this one may not use it; this producer can do nothing more, close it`,
          })
        }
        return fatal
      }
      if (state !== undefined && state.outcome === "open" && state.failed === undefined) state.failed = error
      return error
    }

    const refused = (code: number, operation: string, what: string, detail?: string | null): TransportError.TransportError => {
      const name = TransportError.nameOfCode(code)
      return TransportError.make(name, operation, `${what}: the broker answered ${name}${detail ? ` (${detail})` : ""}`)
    }

    const initProducerId = (bump: boolean) =>
      onCoordinator(txnKey, (connection) =>
        Effect.gen(function*() {
          const version = yield* connection.versionFor(InitProducerId)
          const answer = yield* connection.request(InitProducerId, {
            transactionalId,
            transactionTimeoutMs,
            ...(version >= 3 ? { producerId: bump ? producerId : -1, producerEpoch: bump ? producerEpoch : -1 } : {}),
          }, { version })
          if (answer.errorCode !== 0) return yield* Effect.fail(refused(answer.errorCode, "transaction", `Cannot get a producer id for ${who} (InitProducerId)`))
          metrics.initProducerId++
          producerId = answer.producerId
          producerEpoch = answer.producerEpoch
        })).pipe(Effect.mapError((error) => noteFailure(undefined, error)))

    // The path, from the coordinator's view of the cluster (finalized features are cluster-wide).
    const coordinator = yield* cluster.coordinatorFor(txnKey)
    const endTxnMax = coordinator.brokerVersions.get(EndTxn.key)?.max ?? 0
    const protocol: Protocol = (coordinator.finalizedFeatures.get("transaction.version") ?? 0) >= 2 && endTxnMax >= 5 ? "v2" : "classic"

    yield* initProducerId(false)

    const producer = yield* Producer.make(cluster, {
      // A batch retried past the transaction timeout is lost anyway: the coordinator aborts.
      deliveryTimeout: Duration.millis(Math.min(transactionTimeoutMs, Duration.toMillis(Producer.defaults.deliveryTimeout))),
      ...options.producer,
      transactional: {
        transactionalId,
        producerIdAndEpoch: Effect.suspend(() => fatal !== undefined ? Effect.fail(fatal) : Effect.succeed({ producerId, producerEpoch })),
        maxProduceVersion: protocol === "v2" ? v2MaxProduce : classicMaxProduce,
      },
    })

    /** Waits until no `send` of the transaction runs. */
    const sendsDone = (state: State) =>
      Effect.suspend(() =>
        state.sending === 0 ? Effect.void : Effect.callback<void>((resume) => {
          state.idle.push(() => resume(Effect.void))
        })
      )

    /** The error `operation` fails with now, if any: the producer is fenced, or the transaction ended, is ending or failed. */
    const usable = (state: State, operation: string): TransportError.TransportError | undefined => {
      if (fatal !== undefined) return fatal
      if (state.outcome !== "open") {
        return TransportError.make("INVALID_TXN_STATE", operation, `Cannot ${operation}: the transaction of ${who} was already ${state.outcome}`)
      }
      if (state.ending !== undefined) {
        return TransportError.make("INVALID_TXN_STATE", operation, `Cannot ${operation}: the transaction of ${who} is being ${state.ending === "commit" ? "committed" : "aborted"}`)
      }
      if (state.failed !== undefined && operation !== "abort") {
        return new TransportError.TransportError({
          code: state.failed.code,
          retriable: false,
          operation,
          message: `Cannot ${operation} in the transaction of ${who}: an earlier operation in it failed (${state.failed.message}); abort it`,
        })
      }
      return undefined
    }

    /** Where records without a partition go: murmur2 of the key, else round robin, as producer.ts does. */
    const roundRobin = new Map<string, number>()
    const place = (records: ReadonlyArray<ProducerRecord>) =>
      Effect.gen(function*() {
        const counts = new Map<string, number>()
        for (const topic of new Set(records.map((record) => record.topic))) counts.set(topic, yield* cluster.partitionCount(topic))
        return records.map((record): ProducerRecord => {
          if (record.partition !== undefined) return record
          const count = counts.get(record.topic)!
          if (record.key !== null) return { ...record, partition: partitionForKey(record.key, count) }
          const next = roundRobin.get(record.topic) ?? 0
          roundRobin.set(record.topic, next + 1)
          return { ...record, partition: next % count }
        })
      })

    /** Classic path: AddPartitionsToTxn for the partitions not yet in the transaction, in one request. */
    const addPartitions = (state: State, placed: ReadonlyArray<ProducerRecord>) =>
      adding.withPermit(Effect.suspend(() => {
        const missing = new Map<string, TopicPartition>()
        for (const record of placed) {
          const tp = { topic: record.topic, partition: record.partition! }
          if (!state.partitions.has(keyOf(tp))) missing.set(keyOf(tp), tp)
        }
        if (missing.size === 0) return Effect.void
        const topics = [...byTopic([...missing.values()])].map(([name, tps]) => ({ name, partitions: tps.map((tp) => tp.partition) }))
        const what = `Cannot add ${[...missing.values()].map((tp) => `${tp.topic}/${tp.partition}`).join(", ")} to the transaction of ${who} (AddPartitionsToTxn)`
        return onCoordinator(txnKey, (connection) =>
          Effect.gen(function*() {
            const version = Math.min(maxAddPartitions, yield* connection.versionFor(AddPartitionsToTxn))
            const answer = yield* connection.request(AddPartitionsToTxn, {
              v3AndBelowTransactionalId: transactionalId,
              v3AndBelowProducerId: producerId,
              v3AndBelowProducerEpoch: producerEpoch,
              v3AndBelowTopics: topics,
            }, { version })
            metrics.addPartitionsToTxn++
            // The coordinator adds all or none: the partitions not at fault say OPERATION_NOT_ATTEMPTED.
            let worst: number | undefined
            for (const topic of answer.resultsByTopicV3AndBelow ?? []) {
              for (const p of topic.resultsByPartition) {
                if (p.partitionErrorCode === 0) continue
                if (worst === undefined || TransportError.nameOfCode(worst) === "OPERATION_NOT_ATTEMPTED") worst = p.partitionErrorCode
              }
            }
            if (worst !== undefined) return yield* Effect.fail(refused(worst, "send", what))
          })).pipe(
            Effect.tap(() =>
              Effect.sync(() => {
                state.started = true
                for (const key of missing.keys()) state.partitions.add(key)
              })
            ),
          )
      }))

    const send = (state: State) => (records: ReadonlyArray<ProducerRecord>) =>
      Effect.suspend(() => {
        const unusable = usable(state, "send")
        if (unusable !== undefined) return Effect.fail(unusable)
        if (records.length === 0) return Effect.succeed<ReadonlyArray<RecordMetadata>>([])
        state.sending++
        return Effect.gen(function*() {
          const placed = yield* place(records)
          if (protocol === "classic") yield* addPartitions(state, placed)
          else state.started = true
          const outcomes = yield* producer.sendEach(placed, { acks: "all" })
          const failures = outcomes.filter(Exit.isFailure)
          if (failures.length === 0) return outcomes.map((exit) => (exit as Exit.Success<RecordMetadata>).value)
          const first = errorOf(failures[0]!, "send")
          return yield* Effect.fail(new TransportError.TransportError({
            code: first.code,
            retriable: first.retriable,
            operation: "send",
            message: `${failures.length} of ${records.length} records failed in the transaction of ${who}, first: ${first.message}. Abort the transaction`,
            ...(first.topic === undefined ? {} : { topic: first.topic }),
            ...(first.partition === undefined ? {} : { partition: first.partition }),
          }))
        }).pipe(
          Effect.mapError((error) => noteFailure(state, error)),
          Effect.ensuring(Effect.sync(() => {
            if (--state.sending === 0) for (const resume of state.idle.splice(0)) resume()
          })),
        )
      })

    const sendOffsets = (state: State) => (group: string, offsets: ReadonlyArray<OffsetCommit>, member?: Member) =>
      Effect.suspend(() => {
        const unusable = usable(state, "sendOffsets")
        if (unusable !== undefined) return Effect.fail(unusable)
        if (offsets.length === 0) return Effect.void
        const what = `Cannot commit offsets of group "${group}" in the transaction of ${who}`
        const addOffsets = protocol === "v2" || state.groups.has(group)
          ? Effect.void
          : onCoordinator(txnKey, (connection) =>
            Effect.gen(function*() {
              const answer = yield* connection.request(AddOffsetsToTxn, { transactionalId, producerId, producerEpoch, groupId: group })
              metrics.addOffsetsToTxn++
              if (answer.errorCode !== 0) return yield* Effect.fail(refused(answer.errorCode, "sendOffsets", `${what} (AddOffsetsToTxn)`))
              state.groups.add(group)
            }))
        const groupKey: Brokers.CoordinatorKey = { type: "group", id: group }
        const commit = onCoordinator(groupKey, (connection) =>
          Effect.gen(function*() {
            const version = Math.min(protocol === "v2" ? maxTxnOffsetCommit : classicMaxTxnOffsetCommit, yield* connection.versionFor(TxnOffsetCommit))
            const answer = yield* connection.request(TxnOffsetCommit, {
              transactionalId,
              groupId: group,
              producerId,
              producerEpoch,
              generationIdOrMemberEpoch: member?.generationId ?? -1,
              memberId: member?.memberId ?? "",
              groupInstanceId: member?.groupInstanceId ?? null,
              topics: [...byTopic(offsets)].map(([name, list]) => ({
                name,
                partitions: list.map((offset) => ({
                  partitionIndex: offset.partition,
                  committedOffset: offset.offset,
                  committedLeaderEpoch: -1,
                  committedMetadata: offset.metadata ?? "",
                })),
              })),
            }, { version })
            metrics.txnOffsetCommit++
            for (const topic of answer.topics) {
              for (const p of topic.partitions) {
                if (p.errorCode === 0) continue
                const error = refused(p.errorCode, "sendOffsets", `${what} (TxnOffsetCommit, ${topic.name}/${p.partitionIndex})`)
                if (!memberFenced.has(error.code)) return yield* Effect.fail(error)
                return yield* Effect.fail(new TransportError.TransportError({
                  code: error.code,
                  retriable: false,
                  operation: "sendOffsets",
                  message: `${error.message}: member "${member?.memberId ?? ""}" (generation ${member?.generationId ?? -1}) is no longer in the group as it was; abort the transaction and rejoin`,
                }))
              }
            }
          }))
        return Effect.andThen(addOffsets, commit).pipe(
          Effect.tap(() => Effect.sync(() => void (state.started = true))),
          Effect.mapError((error) => noteFailure(state, error)),
        )
      })

    /** EndTxn; on v2, the epoch it answers with becomes the producer's. */
    const endTxn = (committed: boolean, operation: string) =>
      onCoordinator(txnKey, (connection) =>
        Effect.gen(function*() {
          const version = yield* connection.versionFor(EndTxn)
          const answer = yield* connection.request(EndTxn, { transactionalId, producerId, producerEpoch, committed }, {
            version: protocol === "v2" ? version : Math.min(version, 4),
          })
          metrics.endTxn++
          if (answer.errorCode !== 0) {
            return yield* Effect.fail(refused(answer.errorCode, operation, `Cannot ${operation} the transaction of ${who} (EndTxn)`))
          }
          if (protocol === "v2" && answer.producerId !== undefined && answer.producerId >= 0 && answer.producerEpoch !== undefined && answer.producerEpoch >= 0) {
            producerId = answer.producerId
            producerEpoch = answer.producerEpoch
            yield* producer.renewProducerId
          }
        }))

    const finish = (state: State, outcome: "committed" | "aborted") =>
      Effect.sync(() => {
        state.outcome = outcome
        if (current === state) current = undefined
      })

    const commit = (state: State) =>
      Effect.suspend(() => {
        const early = usable(state, "commit")
        if (early !== undefined) return Effect.fail(early)
        state.ending = "commit"
        return Effect.gen(function*() {
          yield* sendsDone(state)
          yield* producer.flush
          state.ending = undefined
          const unusable = usable(state, "commit")
          if (unusable !== undefined) return yield* Effect.fail(unusable)
          state.ending = "commit"
          if (state.started) yield* endTxn(true, "commit").pipe(Effect.mapError((error) => noteFailure(state, error)))
          yield* finish(state, "committed")
        }).pipe(Effect.onError(() => Effect.sync(() => void (state.ending = undefined))))
      })

    const abort = (state: State) =>
      Effect.suspend(() => {
        if (state.outcome !== "open" || state.ending === "abort") return Effect.void
        state.ending = "abort"
        return Effect.gen(function*() {
          yield* sendsDone(state)
          yield* producer.flush
          if (fatal === undefined && state.started) {
            const ended = yield* Effect.exit(endTxn(false, "abort"))
            if (Exit.isFailure(ended)) {
              const error = noteFailure(state, errorOf(ended, "abort"))
              // Fenced: the new producer's InitProducerId aborted this transaction already.
              if (!fatalErrors.has(error.code)) return yield* Effect.fail(error)
            } else if (protocol === "classic" && state.failed !== undefined) {
              // A failed send may have left sequences the broker and the producer disagree on:
              // a new epoch (KIP-360) starts them again. v2's EndTxn bumped it already.
              const bumped = yield* Effect.exit(initProducerId(true))
              if (Exit.isSuccess(bumped)) yield* producer.renewProducerId
              else {
                // Aborted all the same; a later failed send brings the bump round again.
                yield* finish(state, "aborted")
                return yield* Effect.fail(errorOf(bumped, "abort"))
              }
            }
          }
          yield* finish(state, "aborted")
        }).pipe(Effect.onError(() => Effect.sync(() => void (state.ending = undefined))))
      })

    const begin = Effect.suspend(() => {
      if (fatal !== undefined) return Effect.fail(fatal)
      if (current !== undefined) {
        return Effect.fail(TransportError.make("INVALID_TXN_STATE", "begin", `Cannot begin a transaction: ${who} already has one open; commit or abort it first`))
      }
      const state: State = { outcome: "open", failed: undefined, started: false, ending: undefined, partitions: new Set(), groups: new Set(), sending: 0, idle: [] }
      current = state
      return Effect.succeed<Transaction>({
        send: send(state),
        sendOffsets: sendOffsets(state),
        commit: commit(state),
        abort: abort(state),
      })
    })

    // Runs before the producer's own finalizer (added earlier), while it can still send.
    yield* Effect.addFinalizer(() => Effect.suspend(() => current === undefined ? Effect.void : Effect.ignore(abort(current))))

    return {
      transactionalId,
      begin,
      protocol,
      producerId: () => ({ id: producerId, epoch: producerEpoch }),
      metrics: () => ({ ...metrics }),
    } satisfies TransactionalProducer
  })
