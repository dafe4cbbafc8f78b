/**
 * The Kafka client's producer: `sendEach` as `Transport` documents it, over Produce requests.
 *
 * Records go into the accumulator (`accumulator.ts`), which gathers them per partition into
 * record batches, whoever sent them: a thousand fibers sending one record each end up in a few
 * large batches. One sender fiber, as in Kafka's Java client (`Sender`) and franz-go (`sink`),
 * turns ready batches into one Produce request per broker carrying every partition it leads
 * that has something to send, at most `maxInFlight` (5, Kafka's limit for idempotent ordering)
 * requests per broker at once; each request runs on its own fiber and wakes the sender when its
 * answer is handled.
 *
 * Idempotence (on by default, as in Kafka 3+) applies to `acks: "all"` batches: the producer
 * gets an id and epoch with InitProducerId and numbers each partition's records; a batch
 * retried after a lost connection or a leader change goes again with the same numbers, so the
 * broker writes it once (a `DUPLICATE_SEQUENCE_NUMBER` answer is a success). When the numbers
 * can no longer be trusted (`OUT_OF_ORDER_SEQUENCE_NUMBER`, `UNKNOWN_PRODUCER_ID`,
 * `INVALID_PRODUCER_EPOCH`, or a batch given up on that the broker may have written), the
 * producer does what Java's `TransactionManager` does for an idempotent producer: once nothing
 * is in flight it bumps its epoch (InitProducerId with its id and epoch, KIP-360, on brokers
 * with InitProducerId v3+) or gets a new id, and every partition's numbers start again at 0.
 * `acks: "leader"` and `"none"` batches are not idempotent (the broker takes producer ids only
 * with acks=all), so after a lost connection they are not retried: their records fail with the
 * error, written or not.
 *
 * Errors: a partition's error that says the metadata is stale (`NOT_LEADER_OR_FOLLOWER` and the
 * other retriable ones) re-routes the batch and retries it after `retryBackoff`, until the
 * batch's delivery timeout (2 minutes, Kafka's `delivery.timeout.ms`); a batch refusal
 * (`refusesBatch`: `MESSAGE_TOO_LARGE`, `INVALID_RECORD`, ...) fails the batch's records at
 * once, each with its own message where Produce v8+ names the record at fault
 * (`recordErrors`). Closing the scope sends what is accumulated and waits up to `closeTimeout`
 * for the answers; records still unanswered then fail.
 *
 * Transactions are `transactions.ts`'s, through the `transactional` option (ids, epochs and the
 * Produce version come from there).
 *
 * Not done yet: throttling (`throttleTimeMs` is not honoured), Produce v13
 * (topic ids: requests go out at v12 at most, by topic name); one batch per partition in flight
 * (not Java's five), which bounds a single hot partition's throughput to a batch per round
 * trip; leader moves are tested only with a scripted NOT_LEADER_OR_FOLLOWER, not on the
 * 3-node cluster. KIP-951 leader hints in an answer
 * are handed to the pool, which then needs no Metadata round trip.
 */
import { Deferred, Duration, Effect, Exit, Scope } from "effect"
import type { Acks, Header, ProducerRecord, RecordMetadata, TopicPartition } from "../../Transport.ts"
import * as TransportError from "../../TransportError.ts"
import { partitionForKey } from "../partitioner.ts"
import { Accumulator, addSequence, type Batch, type Complete, type PartitionQueue, recordSize } from "./accumulator.ts"
import * as Brokers from "./brokers.ts"
import { staleMetadataErrors } from "./brokers.ts"
import type { Compression } from "./compression.ts"
import type { Connection } from "./connection.ts"
import { InitProducerId } from "./protocol/InitProducerId.ts"
import { Produce, type ProduceRequest, type ProduceResponse } from "./protocol/Produce.ts"

/**
 * What the producer needs of the cluster: partition counts, leaders and connections. `brokers.ts`
 * offers all of it; {@link fromBrokers} adapts it. Tests pass their own (a proxy in between).
 *
 * @since 0.2.0
 * @category models
 */
export interface Cluster {
  /** The number of partitions of a topic, from (cached) metadata. */
  readonly partitionCount: (topic: string) => Effect.Effect<number, TransportError.TransportError>
  /** The node id of the partition's leader. */
  readonly leaderFor: (tp: TopicPartition) => Effect.Effect<number, TransportError.TransportError>
  /** The connection to a broker, opened on first use. */
  readonly connection: (nodeId: number) => Effect.Effect<Connection, TransportError.TransportError>
  /** Any live broker, for InitProducerId. */
  readonly any: Effect.Effect<Connection, TransportError.TransportError>
  /** Marks a topic's metadata stale: the next `leaderFor` refetches it (or takes the KIP-951 hint). */
  readonly invalidate: (topic: string, hint?: Brokers.LeaderHint) => Effect.Effect<void>
}

/** A key, value or header value that is present but not bytes (from JavaScript, or a cast). */
const notBytes = (value: unknown): boolean => value != null && !(value instanceof Uint8Array)

/** Whether a header value is not bytes: a loop, not a closure per record (every traced record has headers). */
const headerNotBytes = (headers: ReadonlyArray<Header>): boolean => {
  for (let i = 0; i < headers.length; i++) if (notBytes(headers[i]!.value)) return true
  return false
}

/**
 * The producer's view of the broker pool.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromBrokers = (brokers: Brokers.Brokers): Cluster => ({
  // A topic created a moment ago may not be in the metadata yet: `untilKnown` gives it that moment.
  partitionCount: (topic) =>
    Effect.flatMap(Brokers.untilKnown(brokers.topics([topic])), (topics) => {
      const found = topics.get(topic)
      return found === undefined
        ? Effect.fail(TransportError.make("UNKNOWN_TOPIC_OR_PARTITION", "send", `Cannot produce to ${topic}: the cluster has no such topic`))
        : Effect.succeed(found.partitions.length)
    }),
  leaderFor: (tp) => Effect.map(brokers.leaderFor(tp), (leader) => leader.nodeId),
  connection: brokers.connection,
  any: brokers.any,
  invalidate: brokers.invalidate,
})

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** Idempotent `acks: "all"` batches (no duplicates, order kept across retries). Default true. */
  readonly idempotent?: boolean | undefined
  /** The codec of every batch. Default `none`. */
  readonly compression?: Compression | undefined
  /** How long a partition's first batch waits for more records. Default 5 ms (Kafka 4's `linger.ms`). */
  readonly linger?: Duration.Input | undefined
  /** The most records in one batch. Default 10,000. */
  readonly maxBatchRecords?: number | undefined
  /** The most bytes in one batch, uncompressed. Default 1 MiB. */
  readonly maxBatchBytes?: number | undefined
  /** The most bytes of batches in one Produce request (its first batch goes whatever its size). Default 16 MiB. */
  readonly maxRequestBytes?: number | undefined
  /** Produce requests in flight per broker. Default 5. */
  readonly maxInFlight?: number | undefined
  /** How long a record may take to be acknowledged, retries included. Default 2 minutes. */
  readonly deliveryTimeout?: Duration.Input | undefined
  /** The wait before a batch is retried. Default 100 ms. */
  readonly retryBackoff?: Duration.Input | undefined
  /** How long the broker may wait for replicas (Produce `timeoutMs`). Default 30 seconds. */
  readonly brokerTimeout?: Duration.Input | undefined
  /** How long closing waits for what is accumulated and in flight. Default 30 seconds. */
  readonly closeTimeout?: Duration.Input | undefined
  /**
   * Makes every batch part of a transaction (`transactions.ts` sets it; needs idempotence): the
   * batches carry the transactional attribute and the Produce requests the transactional id.
   */
  readonly transactional?: Transactional | undefined
}

/**
 * What a transactional producer (`transactions.ts`) hands the producer: its id, and where the
 * producer id and epoch come from instead of the producer's own InitProducerId.
 *
 * @since 0.2.0
 * @category models
 */
export interface Transactional {
  readonly transactionalId: string
  /**
   * The producer id and epoch batches go out with, asked for whenever the producer would
   * otherwise call InitProducerId: first, after `renewProducerId`, and after a sequence error.
   * Sequences start again at 0 each time. Its failure fails the waiting batches (fenced: for good).
   */
  readonly producerIdAndEpoch: Effect.Effect<{ readonly producerId: number; readonly producerEpoch: number }, TransportError.TransportError>
  /** The highest Produce version: 11 in a transaction unless transactions v2 (KIP-890) are on. */
  readonly maxProduceVersion: number
}

/**
 * The defaults of {@link Options}, and why.
 *
 * - `maxBatchBytes` 1 MiB, not Java's 16 KiB `batch.size`: a partition's batch should carry
 *   what gathered during one round trip, and 16 KiB cuts that into many small batches under
 *   load; 1 MiB is franz-go's `ProducerBatchMaxBytes` and fits the broker's default
 *   `max.message.bytes` (1 MiB + 12), so a full batch is never refused for its size.
 * - `linger` 5 ms, Kafka 4's default (KIP-1030): long enough that records sent together by
 *   many fibers share a batch, short enough not to be seen at rest.
 *
 * @since 0.2.0
 * @category defaults
 */
export const defaults = {
  idempotent: true,
  compression: "none" as Compression,
  linger: Duration.millis(5),
  maxBatchRecords: 10_000,
  maxBatchBytes: 1_048_576,
  maxRequestBytes: 16 * 1_048_576,
  maxInFlight: 5,
  deliveryTimeout: Duration.minutes(2),
  retryBackoff: Duration.millis(100),
  brokerTimeout: Duration.seconds(30),
  closeTimeout: Duration.seconds(30),
} as const

/**
 * Counters, for tests and telemetry.
 *
 * @since 0.2.0
 * @category models
 */
export interface Metrics {
  /** Produce requests sent (answered or not). */
  readonly requests: number
  /** Record batches sent, retries included. */
  readonly batches: number
  /** Batches sent again after an error. */
  readonly retries: number
  /** InitProducerId requests answered: the first id, then each epoch bump or reset. */
  readonly producerIds: number
  /** Records handed over and not yet answered. */
  readonly waiting: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface KafkaProducer {
  /** Each record's outcome in the order given (see `Transport.sendEach`); never fails. */
  readonly sendEach: (
    records: ReadonlyArray<ProducerRecord>,
    options?: { readonly acks?: Acks | undefined },
  ) => Effect.Effect<ReadonlyArray<Exit.Exit<RecordMetadata, TransportError.TransportError>>>
  /** Sends what is accumulated now and waits until nothing is waiting or in flight. */
  readonly flush: Effect.Effect<void>
  /** The producer id and epoch in use; -1 before the first InitProducerId or without idempotence. */
  readonly producerId: () => { readonly id: number; readonly epoch: number }
  /**
   * The producer id and epoch are to be asked for again before the next batch (a transactional
   * producer's epoch changed); call it when nothing is in flight (after `flush`).
   */
  readonly renewProducerId: Effect.Effect<void>
  readonly metrics: () => Metrics
}

/** Errors after which the partition's leader is looked up again: brokers.ts's, and a timeout. */
const staleMetadata = (code: TransportError.KafkaErrorName): boolean =>
  staleMetadataErrors.has(code) || code === "REQUEST_TIMED_OUT"

/** The idempotence errors that need a new epoch (Java's `TransactionManager.handleFailedBatch`). */
const sequenceErrors: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
])

/** Produce v13 addresses topics by id; by name, v12 is the last. */
const maxProduceVersion = 12

const acksCode = (acks: Acks): number => (acks === "all" ? -1 : acks === "leader" ? 1 : 0)

const where = (queue: PartitionQueue): string => `${queue.topic}/${queue.partition}`

/**
 * Finishes a batch (its records were encoded as they were appended: this writes its header, and
 * compresses); the one throwing call (a codec missing in this runtime) becomes a typed error, so
 * the sender never sees an exception.
 */
const encode = (batch: Batch, compression: Compression, transactional: boolean): Uint8Array | TransportError.TransportError => {
  try {
    return batch.builder.finish({
      transactional,
      producerId: batch.producerId,
      producerEpoch: batch.producerEpoch,
      baseSequence: batch.baseSequence,
    })
  } catch (cause) {
    return TransportError.make(
      "UNSUPPORTED_COMPRESSION_TYPE",
      "send",
      `Cannot encode a ${compression} record batch for ${where(batch.queue)}: ${cause instanceof Error ? cause.message : String(cause)}`,
      cause,
    )
  }
}

/**
 * Builds a producer in the current scope. Closing the scope flushes it (bounded by
 * `closeTimeout`) and fails what is left.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(cluster: Cluster, options: Options = {}) {
  const outer = yield* Effect.scope
  const clock = yield* Effect.clockWith(Effect.succeed)
  // The producer's fibers live in a scope of their own, closed by the finalizer below only
  // after the flush: fibers forked while the outer scope closes would be interrupted at once.
  const scope = yield* Scope.make()
  const transactional = options.transactional
  const idempotent = transactional !== undefined || (options.idempotent ?? defaults.idempotent)
  const compression = options.compression ?? defaults.compression
  const millis = (input: Duration.Input | undefined, fallback: Duration.Duration) =>
    Duration.toMillis(Duration.fromInputUnsafe(input ?? fallback))
  const accumulator = new Accumulator({
    maxRecords: Math.max(1, options.maxBatchRecords ?? defaults.maxBatchRecords),
    maxBytes: options.maxBatchBytes ?? defaults.maxBatchBytes,
    lingerMs: millis(options.linger, defaults.linger),
    deliveryTimeoutMs: millis(options.deliveryTimeout, defaults.deliveryTimeout),
    compression,
  })
  const maxRequestBytes = options.maxRequestBytes ?? defaults.maxRequestBytes
  const maxInFlight = Math.max(1, options.maxInFlight ?? defaults.maxInFlight)
  const backoffMs = millis(options.retryBackoff, defaults.retryBackoff)
  const brokerTimeoutMs = millis(options.brokerTimeout, defaults.brokerTimeout)
  const closeTimeout = Duration.fromInputUnsafe(options.closeTimeout ?? defaults.closeTimeout)

  // --- state, touched only by synchronous code between effects --------------------------------
  let producerId = -1
  let producerEpoch = -1
  /** The id and epoch are to be (re)made before idempotent batches go on. */
  let bumpRequired = idempotent
  let bumping = false
  let flushing = 0
  let closing = false
  const inFlightByNode = new Map<number, number>()
  let requestsInFlight = 0
  const roundRobin = new Map<string, number>()
  const partitionCounts = new Map<string, { readonly count: Exit.Exit<number, TransportError.TransportError>; readonly at: number }>()
  const countsMaxAgeMs = 1000
  const metrics = { requests: 0, batches: 0, retries: 0, producerIds: 0 }
  const drainedWaiters: Array<() => void> = []

  let signalled = false
  /** When the sender's pending alarm goes off (see `sender`). */
  let alarmAt = Number.NEGATIVE_INFINITY
  /** Resumes the sender while it waits for something to do. */
  let waiter: (() => void) | undefined
  // Only the first wake after the sender went to sleep resumes it; the sender then yields to
  // the scheduler before its pass (see `sender`), so the wakes of every record appended and
  // every answer handled meanwhile cost a flag each, and one pass serves them all.
  const wake = () => {
    signalled = true
    if (waiter !== undefined) {
      const resume = waiter
      waiter = undefined
      resume()
    }
  }

  const isIdempotent = (queue: PartitionQueue) => idempotent && queue.acks === "all"

  const checkDrained = () => {
    if (accumulator.isEmpty && drainedWaiters.length > 0) {
      for (const resume of drainedWaiters.splice(0)) resume()
    }
  }

  const succeed = (batch: Batch, baseOffset: number, logAppendTime: number) =>
    accumulator.finish(batch, (i) =>
      Exit.succeed({
        topic: batch.queue.topic,
        partition: batch.queue.partition,
        offset: baseOffset < 0 ? -1 : baseOffset + i,
        timestamp: logAppendTime >= 0 ? logAppendTime : batch.timestamps[i]!,
      }))

  const fail = (batch: Batch, error: TransportError.TransportError, perRecord?: ReadonlyMap<number, string>) => {
    const queue = batch.queue
    // Nothing after it has a sequence yet (one batch in flight per partition), so a batch the
    // broker did not write gives its numbers back; one it may have written leaves a gap only a
    // new epoch closes.
    if (batch.baseSequence >= 0 && batch.producerEpoch === producerEpoch && batch.producerId === producerId) {
      if (batch.uncertain) bumpRequired = true
      else queue.nextSequence = batch.baseSequence
    }
    const general = TransportError.forRecord(error, queue.topic, queue.partition)
    accumulator.finish(batch, (i) => {
      const own = perRecord?.get(i)
      if (perRecord === undefined || perRecord.size === 0) return Exit.fail(general)
      return Exit.fail(TransportError.forRecord(
        new TransportError.TransportError({
          code: error.code,
          retriable: error.retriable,
          operation: "send",
          message: own !== undefined
            ? `${where(queue)} refused record ${i} of its batch (${error.code}): ${own}`
            : `${where(queue)} refused the record's batch (${error.code}) for another record in it: ${
              [...perRecord].map(([index, message]) => `record ${index}: ${message}`).join("; ")
            }`,
        }),
        queue.topic,
        queue.partition,
      ))
    })
    checkDrained()
  }

  /** A retriable error: the batch goes again after the backoff, unless its time is up. */
  const retry = (batch: Batch, error: TransportError.TransportError, now: number) => {
    batch.lastError = error
    if (now >= batch.deadline || closing && flushing === 0) return fail(batch, timedOut(batch, error))
    if (batch.uncertain && !isIdempotent(batch.queue)) return fail(batch, error)
    if (staleMetadata(error.code)) batch.queue.leader = undefined
    accumulator.requeue(batch, now + backoffMs)
  }

  const timedOut = (batch: Batch, last: TransportError.TransportError | undefined) =>
    TransportError.make(
      "REQUEST_TIMED_OUT",
      "send",
      `Cannot produce to ${where(batch.queue)}: not acknowledged within the delivery timeout (${accumulator.limits.deliveryTimeoutMs} ms)${
        last === undefined ? "" : `; last error: ${last.message}`
      }. ${batch.uncertain ? "It may have been written." : "It was not written."}`,
    )

  // --- answers ---------------------------------------------------------------------------------

  const handleResponse = (batches: ReadonlyArray<Batch>, response: ProduceResponse, now: number) => {
    const byPartition = new Map<string, ProduceResponse["responses"][number]["partitionResponses"][number]>()
    for (const topic of response.responses) {
      for (const partition of topic.partitionResponses) byPartition.set(`${partition.index}\u0000${topic.name}`, partition)
    }
    /** Per stale topic, the leader hints of its partitions; `undefined` once one has none (refetch). */
    const stale = new Map<string, Array<Brokers.LeaderHint> | undefined>()
    const endpoints = response.nodeEndpoints?.map((node) => ({ nodeId: node.nodeId, host: node.host, port: node.port, rack: node.rack }))
    for (const batch of batches) {
      const queue = batch.queue
      const answer = byPartition.get(`${queue.partition}\u0000${queue.topic}`)
      if (answer === undefined) {
        batch.uncertain = true
        retry(batch, TransportError.make("UNKNOWN_SERVER_ERROR", "send", `The broker did not answer for ${where(queue)}`), now)
        continue
      }
      const code = answer.errorCode === 0 ? undefined : TransportError.nameOfCode(answer.errorCode)
      if (code === undefined || code === "DUPLICATE_SEQUENCE_NUMBER") {
        // Answered: its bytes were written in full and are not needed again (outcomes come from
        // the answer and the records' timestamps), so the next batches may take its buffer.
        if (!batch.done) accumulator.recycle(batch)
        succeed(batch, answer.baseOffset, answer.logAppendTimeMs)
        continue
      }
      const detail = answer.errorMessage ? `: ${answer.errorMessage}` : ""
      const error = TransportError.make(code, "send", `Cannot produce to ${where(queue)}: the broker answered ${code}${detail}`)
      if (isIdempotent(queue) && sequenceErrors.has(code)) {
        // The broker's view of our numbers and ours differ: a new epoch resets both.
        bumpRequired = true
        if (code === "UNKNOWN_PRODUCER_ID" && !batch.uncertain && now < batch.deadline) {
          batch.forgetSequence()
          accumulator.requeue(batch, now)
          metrics.retries++
        } else {
          batch.uncertain = false // a refusal: not written
          fail(batch, error)
        }
        continue
      }
      if (error.retriable) {
        if (staleMetadata(code)) {
          // KIP-951: a NOT_LEADER_OR_FOLLOWER answer may name the new leader, saving a Metadata round trip.
          const leader = answer.currentLeader
          const hints = stale.has(queue.topic) ? stale.get(queue.topic) : []
          if (leader === undefined || leader.leaderId < 0) stale.set(queue.topic, undefined)
          else if (hints !== undefined) {
            hints.push({ partition: queue.partition, leaderId: leader.leaderId, leaderEpoch: leader.leaderEpoch, ...(endpoints ? { endpoints } : {}) })
            stale.set(queue.topic, hints)
          }
        }
        metrics.retries++
        retry(batch, error, now)
        continue
      }
      const perRecord = new Map<number, string>()
      for (const recordError of answer.recordErrors ?? []) {
        perRecord.set(recordError.batchIndex, recordError.batchIndexErrorMessage ?? code)
      }
      fail(batch, error, perRecord)
    }
    return stale
  }

  /** The request carrying `batches` got no answer (or could not be sent). */
  const handleLost = (batches: ReadonlyArray<Batch>, error: TransportError.TransportError, sent: boolean, now: number) => {
    for (const batch of batches) {
      if (sent && batch.queue.acks !== "none") batch.uncertain = true
      if (!error.retriable) fail(batch, error)
      else {
        metrics.retries++
        retry(batch, error, now)
      }
    }
  }

  // --- sending ---------------------------------------------------------------------------------

  const sendRequest = (node: number, acks: Acks, batches: ReadonlyArray<Batch>) =>
    Effect.gen(function*() {
      const byTopic = new Map<string, Array<{ index: number; records: Uint8Array }>>()
      const sendable: Array<Batch> = []
      for (const batch of batches) {
        if (isIdempotent(batch.queue) && batch.baseSequence < 0) {
          batch.producerId = producerId
          batch.producerEpoch = producerEpoch
          batch.baseSequence = batch.queue.nextSequence
          batch.queue.nextSequence = addSequence(batch.queue.nextSequence, batch.count)
          batch.encoded = undefined
        }
        if (batch.encoded === undefined) {
          const encoded = encode(batch, compression, transactional !== undefined)
          if (encoded instanceof TransportError.TransportError) {
            fail(batch, encoded)
            continue
          }
          batch.encoded = encoded
        }
        batch.attempts++
        sendable.push(batch)
        let partitions = byTopic.get(batch.queue.topic)
        if (partitions === undefined) byTopic.set(batch.queue.topic, partitions = [])
        partitions.push({ index: batch.queue.partition, records: batch.encoded })
      }
      if (sendable.length === 0) return
      const request: ProduceRequest = {
        transactionalId: transactional?.transactionalId ?? null,
        acks: acksCode(acks),
        timeoutMs: brokerTimeoutMs,
        topicData: [...byTopic].map(([name, partitionData]) => ({ name, partitionData })),
      }
      metrics.requests++
      metrics.batches += sendable.length
      const connection = yield* Effect.exit(cluster.connection(node))
      if (Exit.isFailure(connection)) {
        return handleLost(sendable, errorOfExit(connection, node), false, yield* now)
      }
      const version = yield* Effect.exit(connection.value.versionFor(Produce))
      if (Exit.isFailure(version)) return handleLost(sendable, errorOfExit(version, node), false, yield* now)
      const options = { version: Math.min(transactional?.maxProduceVersion ?? maxProduceVersion, version.value) }
      if (acks === "none") {
        const sent = yield* Effect.exit(connection.value.send(Produce, request, options))
        if (Exit.isFailure(sent)) return handleLost(sendable, errorOfExit(sent, node), true, yield* now)
        for (const batch of sendable) succeed(batch, -1, -1)
        return
      }
      const answer = yield* Effect.exit(connection.value.request(Produce, request, options))
      const at = yield* now
      if (Exit.isFailure(answer)) {
        for (const topic of byTopic.keys()) yield* cluster.invalidate(topic)
        return handleLost(sendable, errorOfExit(answer, node), true, at)
      }
      const stale = handleResponse(sendable, answer.value, at)
      for (const [topic, hints] of stale) {
        if (hints === undefined) yield* cluster.invalidate(topic)
        else for (const hint of hints) yield* cluster.invalidate(topic, hint)
      }
    }).pipe(
      Effect.ensuring(Effect.sync(() => {
        inFlightByNode.set(node, (inFlightByNode.get(node) ?? 1) - 1)
        requestsInFlight--
        checkDrained()
        wake()
      })),
    )

  /** Consecutive metadata answers that a queue's topic does not exist. */
  const unknownTopicAnswers = new Map<PartitionQueue, number>()
  const unknownTopicRetries = 4

  const lookUpLeader = (queue: PartitionQueue) =>
    cluster.leaderFor({ topic: queue.topic, partition: queue.partition }).pipe(
      Effect.exit,
      Effect.flatMap((exit) =>
        Effect.gen(function*() {
          if (Exit.isSuccess(exit)) {
            queue.leader = exit.value
            unknownTopicAnswers.delete(queue)
          } else {
            const error = errorOfExit(exit, undefined)
            const at = yield* now
            // A topic the metadata keeps saying is not there (deleted, or never created) fails
            // its records after a few answers, as franz-go's `UnknownTopicRetries`, instead of
            // holding them for the whole delivery timeout.
            const unknown = error.code === "UNKNOWN_TOPIC_OR_PARTITION"
              ? (unknownTopicAnswers.get(queue) ?? 0) + 1
              : 0
            if (unknown > 0) unknownTopicAnswers.set(queue, unknown)
            else unknownTopicAnswers.delete(queue)
            if (!error.retriable || unknown >= unknownTopicRetries) {
              unknownTopicAnswers.delete(queue)
              for (const batch of [...queue.batches]) fail(batch, error)
            }
            else if (queue.batches[0] !== undefined) {
              queue.batches[0].lastError = error
              queue.batches[0].retryAt = at + backoffMs
            }
          }
        })
      ),
      Effect.ensuring(Effect.sync(() => {
        queue.lookingUp = false
        wake()
      })),
    )

  /** InitProducerId: the first id, or a new epoch (KIP-360) when the broker can bump one. */
  const initProducerId = transactional !== undefined ? transactional.producerIdAndEpoch : Effect.gen(function*() {
    const connection = yield* cluster.any
    const version = yield* connection.versionFor(InitProducerId)
    const bump = producerId >= 0 && version >= 3
    const answer = yield* connection.request(InitProducerId, {
      transactionalId: null,
      transactionTimeoutMs: 60_000,
      ...(version >= 3 ? { producerId: bump ? producerId : -1, producerEpoch: bump ? producerEpoch : -1 } : {}),
    }, { version })
    if (answer.errorCode !== 0) {
      const code = TransportError.nameOfCode(answer.errorCode)
      return yield* Effect.fail(TransportError.make(code, "send", `Cannot get a producer id (InitProducerId): ${code}`))
    }
    return answer
  })

  const bumpEpoch = Effect.gen(function*() {
    const answer = yield* Effect.exit(initProducerId)
    const at = yield* now
    if (Exit.isSuccess(answer)) {
      producerId = answer.value.producerId
      producerEpoch = answer.value.producerEpoch
      metrics.producerIds++
      bumpRequired = false
      for (const queue of accumulator.queues.values()) {
        if (!isIdempotent(queue)) continue
        queue.nextSequence = 0
        for (const batch of queue.batches) batch.forgetSequence()
      }
      return
    }
    const error = errorOfExit(answer, undefined)
    for (const queue of accumulator.queues.values()) {
      if (!isIdempotent(queue)) continue
      for (const batch of [...queue.batches]) {
        if (!error.retriable) fail(batch, error)
        else {
          batch.lastError = error
          batch.retryAt = Math.max(batch.retryAt, at + backoffMs)
        }
      }
    }
    // Wait the backoff before asking again: `retryAt` above holds the batches back meanwhile.
    yield* Effect.sleep(Duration.millis(backoffMs))
  }).pipe(Effect.ensuring(Effect.sync(() => {
    bumping = false
    wake()
  })))

  /** One pass: expire, look up leaders, bump the epoch, send what is ready. */
  const pass = (at: number) =>
    Effect.gen(function*() {
      for (const batch of accumulator.expired(at)) fail(batch, timedOut(batch, batch.lastError))
      const idempotentHeld = idempotent && (bumpRequired || bumping)
      let uncertainWaiting = false
      let idempotentWaiting = false
      const byNode = new Map<number, Array<PartitionQueue>>()
      const readyNodes = new Set<number>()
      for (const queue of accumulator.queues.values()) {
        const head = queue.batches[0]
        if (head === undefined || queue.inFlight !== undefined) continue
        if (isIdempotent(queue)) idempotentWaiting = true
        if (isIdempotent(queue) && idempotentHeld) {
          // Only what may already be written goes on under the old epoch; the rest waits for the new one.
          if (!head.uncertain || bumping) continue
          uncertainWaiting = true
        }
        if (queue.leader === undefined) {
          if (!queue.lookingUp && head.retryAt <= at) {
            queue.lookingUp = true
            yield* Effect.forkIn(lookUpLeader(queue), scope)
          }
          continue
        }
        if (!accumulator.isSendable(queue, at)) continue
        let list = byNode.get(queue.leader)
        if (list === undefined) byNode.set(queue.leader, list = [])
        list.push(queue)
        if (accumulator.isReady(queue, at, flushing > 0 || closing)) readyNodes.add(queue.leader)
      }
      if (idempotentHeld && idempotentWaiting && !bumping && !uncertainWaiting && requestsInFlight === 0) {
        bumping = true
        yield* Effect.forkIn(bumpEpoch, scope)
      }
      for (const node of readyNodes) {
        const queues = byNode.get(node)!
        const perAcks = new Map<Acks, { batches: Array<Batch>; bytes: number }>()
        for (const queue of queues) {
          if ((inFlightByNode.get(node) ?? 0) >= maxInFlight) break
          let group = perAcks.get(queue.acks)
          if (group === undefined) perAcks.set(queue.acks, group = { batches: [], bytes: 0 })
          const head = queue.batches[0]!
          if (group.batches.length > 0 && group.bytes + head.bytes > maxRequestBytes) {
            yield* startRequest(node, queue.acks, group.batches)
            group.batches = []
            group.bytes = 0
            if ((inFlightByNode.get(node) ?? 0) >= maxInFlight) break
          }
          group.batches.push(accumulator.take(queue))
          group.bytes += head.bytes
        }
        for (const [acks, group] of perAcks) {
          if (group.batches.length > 0) yield* startRequest(node, acks, group.batches)
        }
      }
    })

  const startRequest = (node: number, acks: Acks, batches: ReadonlyArray<Batch>) => {
    inFlightByNode.set(node, (inFlightByNode.get(node) ?? 0) + 1)
    requestsInFlight++
    return Effect.forkIn(sendRequest(node, acks, batches), scope)
  }

  const now = Effect.sync(() => clock.currentTimeMillisUnsafe())

  const sleepUntilWoken = Effect.callback<void>((resume) => {
    if (signalled) resume(Effect.void)
    else waiter = () => resume(Effect.void)
  })

  const sender = Effect.gen(function*() {
    while (true) {
      signalled = false
      const at = yield* now
      yield* pass(at)
      if (signalled) {
        yield* Effect.yieldNow
        continue
      }
      // One alarm per earlier deadline, not a race per wait: the sender waits once per wake,
      // tens of thousands of times a second under load. A stale alarm costs one idle pass.
      const next = accumulator.nextDeadline(at)
      if (Number.isFinite(next) && (next < alarmAt || alarmAt <= at)) {
        alarmAt = next
        const target = next
        const ring = Effect.sync(() => {
          // A timer may ring a little before the clock reads `target`: forget it either way, so
          // the next pass arms again whatever the time reads (else the sender would sleep on).
          if (alarmAt === target) alarmAt = Number.NEGATIVE_INFINITY
          wake()
        })
        yield* Effect.forkIn(Effect.andThen(Effect.sleep(Duration.millis(Math.max(0, next - at))), ring), scope)
      }
      yield* sleepUntilWoken
      // A wake resumes the sender inside whoever called it: a fiber appending a record, or the
      // answer of a request settling a batch, whose fibers then append their next records one
      // after the other. Yielding first lets all of them run before the one pass that serves them.
      yield* Effect.yieldNow
    }
  })

  // --- the face --------------------------------------------------------------------------------

  const closedError = (topic: string) =>
    TransportError.forRecord(
      TransportError.make("NETWORK_EXCEPTION", "send", `Cannot produce to ${topic}: the producer is closed`),
      topic,
      undefined,
    )

  type Outcomes = Array<Exit.Exit<RecordMetadata, TransportError.TransportError>>

  /** Topics whose partition count is being asked again, in the background. */
  const refreshing = new Set<string>()
  const refreshCount = (topic: string) =>
    Effect.exit(cluster.partitionCount(topic)).pipe(
      Effect.flatMap((exit) =>
        Effect.sync(() => {
          if (Exit.isSuccess(exit)) partitionCounts.set(topic, { count: exit, at: clock.currentTimeMillisUnsafe() })
        })
      ),
      Effect.ensuring(Effect.sync(() => refreshing.delete(topic))),
    )

  type Outcome = Exit.Exit<RecordMetadata, TransportError.TransportError>
  type Counts = ReadonlyMap<string, Exit.Exit<number, TransportError.TransportError>> | undefined

  /**
   * Appends one record to its partition's batch, `complete` to be called with its outcome; or
   * returns its failure when it cannot be appended (closed, no such topic or partition).
   * `counts` holds the partition counts just asked of the pool (the others are in the cache).
   */
  const appendRecord = (record: ProducerRecord, acks: Acks, at: number, counts: Counts, complete: Complete): Outcome | undefined => {
    if (closing) return Exit.fail(closedError(record.topic))
    const count = counts?.get(record.topic) ?? partitionCounts.get(record.topic)!.count
    if (Exit.isFailure(count)) return Exit.fail(TransportError.forRecord(errorOfExit(count, undefined), record.topic, undefined))
    // Checked here, once per record: from JavaScript (or a cast) anything can arrive, and bytes
    // set from a string or a number would be written as zeros, not refused.
    if (notBytes(record.key) || notBytes(record.value) || (record.headers !== undefined && headerNotBytes(record.headers))) {
      return Exit.fail(TransportError.forRecord(
        TransportError.make(
          "INVALID_RECORD",
          "send",
          `Cannot produce to ${record.topic}: a record's key, value and header values must be bytes (a Uint8Array) or null, got ${
            notBytes(record.key)
              ? `a key of type ${typeof record.key}`
              : notBytes(record.value)
              ? `a value of type ${typeof record.value}`
              : "a header value that is not"
          }: encode it first (Codec)`,
        ),
        record.topic,
        record.partition,
      ))
    }
    let partition = record.partition
    if (partition === undefined) {
      if (record.key != null) partition = partitionForKey(record.key, count.value)
      else {
        const next = roundRobin.get(record.topic) ?? 0
        roundRobin.set(record.topic, next + 1)
        partition = next % count.value
      }
    } else if (!Number.isInteger(partition) || partition < 0 || partition >= count.value) {
      return Exit.fail(TransportError.forRecord(
        TransportError.make(
          "UNKNOWN_TOPIC_OR_PARTITION",
          "send",
          `Cannot produce to ${record.topic}/${partition}: the topic has ${count.value} partitions`,
        ),
        record.topic,
        partition,
      ))
    }
    accumulator.append(
      accumulator.queue(record.topic, partition, acks),
      { key: record.key, value: record.value, headers: record.headers, timestamp: record.timestamp ?? at },
      recordSize(record.key, record.value, record.headers),
      at,
      complete,
    )
    return undefined
  }

  /** Appends every record and calls `resume` once all have outcomes, in the order given. */
  const appendAll = (records: ReadonlyArray<ProducerRecord>, acks: Acks, at: number, counts: Counts, resume: (outcomes: Effect.Effect<Outcomes>) => void) => {
    if (records.length === 1) {
      // The common call of many fibers: one closure between the batch and the fiber, and it
      // lives as long as the record waits (fewer objects kept across a round trip, less GC).
      const complete = (exit: Outcome) => resume(Exit.succeed([exit]))
      const failed = appendRecord(records[0]!, acks, at, counts, complete)
      if (failed !== undefined) complete(failed)
    } else {
      const results: Outcomes = new Array(records.length)
      let left = records.length
      for (let i = 0; i < records.length; i++) {
        const index = i
        const complete = (exit: Outcome) => {
          results[index] = exit
          if (--left === 0) resume(Exit.succeed(results))
        }
        const failed = appendRecord(records[i]!, acks, at, counts, complete)
        if (failed !== undefined) complete(failed)
      }
    }
    wake()
  }

  const noRecords: Effect.Effect<Outcomes> = Effect.succeed([])

  /**
   * The first partition-count lookups, per topic: the calls that find a topic's count unknown
   * share one (a thousand fibers starting together would otherwise queue a thousand metadata
   * lookups on the pool's permit). Forked in the producer's scope, so a caller interrupted while
   * it waits does not leave the others waiting for nothing.
   */
  const countLookups = new Map<string, Deferred.Deferred<Exit.Exit<number, TransportError.TransportError>>>()
  const firstCount = (topic: string, at: number): Effect.Effect<Exit.Exit<number, TransportError.TransportError>> =>
    Effect.suspend(() => {
      const known = countLookups.get(topic)
      if (known !== undefined) return Deferred.await(known)
      const deferred = Deferred.makeUnsafe<Exit.Exit<number, TransportError.TransportError>>()
      countLookups.set(topic, deferred)
      const lookup = Effect.exit(cluster.partitionCount(topic)).pipe(
        Effect.flatMap((exit) =>
          Effect.sync(() => {
            if (Exit.isSuccess(exit)) partitionCounts.set(topic, { count: exit, at })
            countLookups.delete(topic)
            Deferred.doneUnsafe(deferred, Exit.succeed(exit))
          })
        ),
      )
      return Effect.andThen(Effect.forkIn(lookup, scope), Deferred.await(deferred))
    })

  /** The calls that must first ask for partition counts: the topics unknown, and those to refresh. */
  const sendAfterCounts = (
    records: ReadonlyArray<ProducerRecord>,
    acks: Acks,
    at: number,
    unknown: ReadonlyArray<string>,
    refresh: ReadonlyArray<string> | undefined,
  ): Effect.Effect<Outcomes> => {
    const refreshes = refresh === undefined
      ? Effect.void
      : Effect.forEach(refresh, (topic) => Effect.forkIn(refreshCount(topic), scope), { discard: true })
    return Effect.andThen(
      refreshes,
      Effect.flatMap(Effect.forEach(unknown, (topic) => firstCount(topic, at)), (exits) => {
        const counts = new Map(unknown.map((topic, i) => [topic, exits[i]!]))
        return Effect.callback<Outcomes>((resume) => appendAll(records, acks, clock.currentTimeMillisUnsafe(), counts, resume))
      }),
    )
  }

  // One effect per call, whatever its size, and no other step of the caller's fiber: the
  // callback's registration is the whole call (it runs when the effect runs, as a suspend would);
  // the records are appended synchronously and the fiber is resumed when the last of them has its
  // outcome (or with the effect that first asks for partition counts). The clock is the
  // producer's (read directly, as the sender reads it), so `TestClock` drives both.
  const sendEach = (records: ReadonlyArray<ProducerRecord>, sendOptions?: { readonly acks?: Acks | undefined }) =>
    records.length === 0 ? noRecords : Effect.callback<Outcomes>((resume) => {
      const acks = sendOptions?.acks ?? "all"
      if (closing) return resume(Effect.succeed(records.map((record) => Exit.fail(closedError(record.topic)))))
      const at = clock.currentTimeMillisUnsafe()
      // Partition counts are asked of the pool once per topic, then again at most once a second,
      // in the background while the last count serves: the pool's lookup is an effect with
      // retries, too dear for every one-record call of a thousand fibers (and a thousand of them
      // would each ask when the count grew a second old).
      let unknown: Array<string> | undefined
      let refresh: Array<string> | undefined
      for (let i = 0; i < records.length; i++) {
        const topic = records[i]!.topic
        const entry = partitionCounts.get(topic)
        if (entry === undefined) {
          if (!unknown?.includes(topic)) (unknown ??= []).push(topic)
        } else if (at - entry.at >= countsMaxAgeMs && !refreshing.has(topic)) {
          refreshing.add(topic)
          ;(refresh ??= []).push(topic)
        }
      }
      if (unknown === undefined && refresh === undefined) return appendAll(records, acks, at, undefined, resume)
      resume(sendAfterCounts(records, acks, at, unknown ?? [], refresh))
    })

  const flush = Effect.suspend(() => {
    if (accumulator.isEmpty) return Effect.void
    flushing++
    wake()
    return Effect.callback<void>((resume) => {
      drainedWaiters.push(() => resume(Effect.void))
    }).pipe(Effect.ensuring(Effect.sync(() => flushing--)))
  })

  yield* Effect.forkIn(sender, scope)
  yield* Scope.addFinalizer(
    outer,
    Effect.gen(function*() {
      closing = true
      wake()
      yield* Effect.timeoutOption(flush, closeTimeout)
      // What is still unanswered fails now; an answer arriving later finds its batch finished.
      for (const queue of accumulator.queues.values()) {
        for (const batch of [...queue.batches, ...(queue.inFlight ? [queue.inFlight] : [])]) {
          fail(
            batch,
            TransportError.make(
              "REQUEST_TIMED_OUT",
              "send",
              `Cannot produce to ${where(queue)}: the producer closed before it was acknowledged${
                batch.attempts > 0 ? "; it may have been written" : ""
              }`,
            ),
          )
        }
      }
      yield* Scope.close(scope, Exit.void)
    }),
  )

  return {
    sendEach,
    flush,
    producerId: () => ({ id: producerId, epoch: producerEpoch }),
    renewProducerId: Effect.sync(() => {
      bumpRequired = true
      wake()
    }),
    metrics: () => ({ ...metrics, waiting: accumulator.pending }),
  } satisfies KafkaProducer
})

/** The TransportError of a failed exit; a defect becomes an `UNKNOWN_SERVER_ERROR` naming it. */
const errorOfExit = (exit: Exit.Exit<unknown, TransportError.TransportError>, node: number | undefined): TransportError.TransportError => {
  if (Exit.isFailure(exit)) {
    for (const reason of exit.cause.reasons) {
      if (reason._tag === "Fail") return reason.error
    }
  }
  return TransportError.make(
    "UNKNOWN_SERVER_ERROR",
    "send",
    `Producing failed unexpectedly${node === undefined ? "" : ` on broker ${node}`}`,
    Exit.isFailure(exit) ? exit.cause : undefined,
  )
}
