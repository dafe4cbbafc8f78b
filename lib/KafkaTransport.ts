/**
 * The Kafka transport: the `Transport` contract on a real cluster, through kafkajs.
 *
 * This is the one file that knows kafkajs. The layer owns a kafkajs client, an admin client and
 * an idempotent producer, connected in the layer's scope; each subscription and each
 * transactional producer owns its own kafkajs client for as long as its scope is open. Promises
 * enter only through `Effect.tryPromise`, and every kafkajs error becomes a `TransportError` once,
 * here: by the broker's numeric code when there is one (kafkajs still uses some pre-2.x names),
 * by the wrapped cause for kafkajs' retry and aggregate errors, `NETWORK_EXCEPTION` for
 * connection failures and `REQUEST_TIMED_OUT` for client-side timeouts.
 *
 * How the contract maps onto kafkajs:
 * - `send` is one `producer.sendBatch` per call, records grouped by topic in the order given.
 *   The partitioner is ours (Kafka's murmur2 for keys, the record's partition if set,
 *   round-robin otherwise) and remembers each record's partition, so kafkajs' retries never move
 *   a record and each record's offset is its partition's `baseOffset` plus its index among the
 *   call's records for that partition (exact: a call is one produce request per partition).
 *   `acks: "all"` uses the idempotent producer; `leader` and `none` use a plain producer opened
 *   on first use, as kafkajs refuses other acks on an idempotent one. Under `none` the broker
 *   answers nothing: offsets are `-1`.
 * - `subscribe` is one kafkajs consumer (`autoCommit: false`, `eachBatchAutoResolve: false`).
 *   Each assigned partition is a claim whose `records` stream is fed by `eachBatch`, one batch
 *   ahead: `eachBatch` buffers its batch (in chunks of `maxBatchSize`), resolves it in kafkajs
 *   and returns, so kafkajs fetches the next batch while this one is handled; that next
 *   `eachBatch` waits, heartbeating, until the buffer was pulled whole, so a member that does not
 *   pull holds the fetch back. A batch that reaches the partition's high watermark (nothing to
 *   fetch ahead) is held the same way until pulled. A batch arriving for a paused claim is not
 *   taken (kafkajs fetches it again after `resume`); buffered chunks stay across a pause and are
 *   dropped by `seek` or a revocation, which set the position anew. `Assigned` follows kafkajs'
 *   `GROUP_JOIN` event; a claim's `startOffset` is the group's committed offset, or the reset
 *   position, read with the admin client, and the consumer is sought there, so the first batch
 *   starts exactly there.
 * - Revocation. kafkajs rebalances eagerly and has no revocation callback. Three hooks stand in:
 *   1. While a batch waits in `eachBatch` (the member is behind, or handling the log's last
 *      fetched batch), its heartbeats find the rebalance first. The generation is revoked
 *      there, and every waiting `eachBatch` of it returns only once `acknowledge` ran (or the
 *      rebalance timeout, less two heartbeats, passed). kafkajs sends JoinGroup only after
 *      that, so the contract holds in full: commits made before acknowledging succeed, and no
 *      member gets the partitions before it.
 *   2. Otherwise kafkajs finds the rebalance between fetches and rejoins at once. The assignor's
 *      `protocol()`, which kafkajs calls right before every JoinGroup, revokes the generation:
 *      `Revoked` still precedes the new assignment, but kafkajs does not wait. Once the join
 *      phase completes the group takes no commits until SyncGroup, so commits made after
 *      `Revoked` fail (`ILLEGAL_GENERATION`, not retriable) and the next owner handles again
 *      what this member did since its last commit: at least once, as Kafka always is.
 *   3. When this member leads the group, its assignor (kafkajs' round-robin, wrapped) waits for
 *      this member's acknowledgement, at most half the session timeout, before it hands out the
 *      new assignment. In case 2 this still keeps others from starting on the partitions while
 *      this member finishes its work, though its commits cannot land.
 *   A follower in case 2 gives no such hold: another member may start on the partitions from
 *   the last commit before this one acknowledged. A new assignment of this member itself always
 *   waits for its previous acknowledgement, so its start offsets include its own last commits.
 * - `commit` is `consumer.commitOffsets`, for partitions this member holds or is giving up (until
 *   it acknowledges); `committed` is the admin's `fetchOffsets`; `pause`, `resume` and `seek` are
 *   the consumer's. When kafkajs crashes and restarts, the member sees `Revoked`, then `Assigned`
 *   once rejoined; when it crashes for good, the events stream and the claims fail.
 * - `transactional` is a kafkajs producer with a `transactionalId`, whose producer id is
 *   initialized at once (as Kafka's `initTransactions`), fencing older producers with the id.
 *   A transaction's `commit` returns once the consumer offsets it carried are readable with
 *   `committed` (Kafka applies them a moment after the commit; at most 5 seconds are waited).
 * - `createTopic` is `admin.createTopics`, waiting for leaders (kafkajs answers `false` for an
 *   existing topic: that becomes `TOPIC_ALREADY_EXISTS`); `describeTopic` is the admin's topic
 *   metadata and offsets.
 *
 * Where it differs from `MemoryTransport`:
 * - Time is real time (`features.clockDriven` is false): sessions, heartbeats and fetch waits run
 *   on kafkajs' timers. There is no fault injection (`features.faultInjection` is false).
 * - Partitions are spread by kafkajs' round-robin assignor, not range.
 * - kafkajs carries headers as an object: values of one key keep their order, but different keys
 *   come out grouped by key (integer-like keys first, as JavaScript orders them). kafkajs cannot
 *   encode a `null` header value: such a send fails with `INVALID_RECORD` before anything is
 *   written. Consumed `null` header values arrive as `null`.
 * - kafkajs' admin lists offsets read-committed: while a transaction is open on a partition,
 *   `describeTopic` reports its last stable offset as `highWatermark`, and `reset: "latest"`
 *   starts there.
 * - `subscribe` returns once kafkajs first joined the group (it fails if that join fails for
 *   good), and `memberId` follows kafkajs when it rejoins under a new id.
 * - A claim neither pulled nor paused holds back the member's other partitions led by the same
 *   broker: kafkajs fetches per broker and waits for every batch of a fetch. Pause a partition
 *   you will not pull soon (Partita's mailboxes do).
 * - A member that does not acknowledge a revocation within the rebalance timeout (less two
 *   heartbeat intervals) is removed: its events fail with `UNKNOWN_MEMBER_ID` and the consumer
 *   leaves the group.
 *
 * Compression: `none` and `gzip` work as they are. For `snappy`, `lz4` or `zstd`, register a codec
 * with kafkajs once, before the layer is built, e.g. with the `kafkajs-snappy` package:
 * `CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec` (both from `"kafkajs"`). Consumers
 * need the codec too when anyone produces with it. A layer asked for a codec nobody registered
 * fails to build with `UNSUPPORTED_COMPRESSION_TYPE`.
 *
 * kafkajs quirks:
 * - On Bun, Deno and Node 22+, kafkajs' request queue arms a timer with a negative delay, and the
 *   runtime prints `TimeoutNegativeWarning: -1795702375271 is a negative number` once per process.
 *   It is harmless (the runtime uses 1 ms instead).
 * - kafkajs logs every error response at ERROR, including ones it retries (a coordinator still
 *   loading) and ones the caller gets anyway as a `TransportError`. Its lines go to Effect's
 *   logger, annotated: those echoes, its retried send failures and its "rebalancing" notices at
 *   `Debug`, its INFO chatter at `Debug`, its DEBUG at `Trace`; crashes, refused connections and
 *   the rest stay at `Error` and `Warn`. kafkajs' `KAFKAJS_LOG_LEVEL` variable still applies.
 * - kafkajs asks for unlimited retries on an idempotent producer (and warns when they are
 *   limited); here they are limited by `retry`, so a send to a missing topic fails with a
 *   retriable `UNKNOWN_TOPIC_OR_PARTITION` instead of hanging.
 * - An interrupted `send`, `commit` or admin call cannot be recalled: kafkajs finishes the
 *   request in the background.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { KafkaTransport, Transport } from "partita"
 *
 * const program = Effect.gen(function*() {
 *   const transport = yield* Transport.Transport
 *   yield* transport.createTopic({ topic: "greetings", partitions: 3 })
 *   yield* transport.send([{ topic: "greetings", key: null, value: new TextEncoder().encode("hi") }])
 * }).pipe(Effect.provide(KafkaTransport.layerFromEnv()))
 * ```
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"
import kafkajs from "kafkajs"
import type {
  CompressionTypes,
  EachBatchPayload,
  ICustomPartitioner,
  IHeaders,
  Kafka as KafkaClient,
  KafkaConfig,
  KafkaMessage,
  LogEntry,
  Message,
  PartitionAssigner,
  Producer,
  ProducerConfig,
  RecordMetadata as KafkaRecordMetadata,
  RetryOptions,
  Sender,
  TopicMessages,
} from "kafkajs"
import {
  Cause,
  Clock,
  Config,
  type Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  LogLevel,
  Option,
  Queue,
  Redacted,
  References,
  Schedule,
  Scope,
  Semaphore,
  Stream,
} from "effect"
import { partitionForKey } from "./internal/partitioner.ts"
import { Signal } from "./internal/signal.ts"
import {
  type Acks,
  type CommittedOffset,
  type ConsumerRecord,
  type GroupEvent,
  type Header,
  type OffsetCommit,
  type PartitionClaim,
  type ProducerRecord,
  type RecordMetadata,
  type SubscribeOptions,
  type Subscription,
  type TopicDescription,
  type TopicPartition,
  type TopicSpec,
  type Transaction,
  type TransactionalProducer,
  Transport,
} from "./Transport.ts"
import * as TransportError from "./TransportError.ts"

// kafkajs is CommonJS, and Node's ESM loader sees only some of its exports by name
// (not `CompressionCodecs`): the default import is `module.exports` on every runtime.
const {
  CompressionCodecs,
  CompressionTypes: Compressions,
  Kafka,
  logLevel: KafkaLogLevel,
  PartitionAssigners,
} = kafkajs

/**
 * Record batch compression. `snappy`, `lz4` and `zstd` need a codec registered with kafkajs'
 * `CompressionCodecs` (see the module documentation).
 *
 * @since 0.1.0
 * @category models
 */
export type Compression = "none" | "gzip" | "snappy" | "lz4" | "zstd"

/**
 * SASL credentials with the password kept out of logs.
 *
 * @since 0.1.0
 * @category models
 */
export interface SaslCredentials {
  readonly mechanism: "plain" | "scram-sha-256" | "scram-sha-512"
  readonly username: string
  readonly password: Redacted.Redacted<string>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Bootstrap brokers as `host:port`. Default `127.0.0.1:9092`. */
  readonly brokers?: ReadonlyArray<string> | undefined
  /** The client id brokers see; a subscription's own `clientId` overrides it. Default `partita`. */
  readonly clientId?: string | undefined
  /** `true` for TLS with the runtime's defaults, or `tls.connect` options, passed to kafkajs as they are. */
  readonly ssl?: KafkaConfig["ssl"] | undefined
  /** SASL credentials, or any kafkajs SASL options (`oauthbearer`, `aws`) passed as they are. */
  readonly sasl?: SaslCredentials | NonNullable<KafkaConfig["sasl"]> | undefined
  /** How produced batches are compressed. Default `none`. */
  readonly compression?: Compression | undefined
  /** How long connecting to a broker may take. Default 1 second (kafkajs' default). */
  readonly connectionTimeout?: Duration.Input | undefined
  /** How long a request may take before it fails with `REQUEST_TIMED_OUT`. Default 30 seconds. */
  readonly requestTimeout?: Duration.Input | undefined
  /**
   * kafkajs' retry of retriable errors, for every client (`retries`, `initialRetryTime`,
   * `maxRetryTime` in milliseconds, `factor`, `multiplier`). A call that still fails surfaces as
   * a `TransportError`, retriable or not, as Kafka classifies its code.
   */
  readonly retry?: RetryOptions | undefined
  /** The least severe kafkajs log lines forwarded to Effect's logger. Default `info`. */
  readonly logLevel?: "nothing" | "error" | "warn" | "info" | "debug" | undefined
  /** How long a fetch waits for records before it returns empty. Default 500 ms, as Kafka's Java client. */
  readonly fetchMaxWait?: Duration.Input | undefined
  /** The most bytes one fetch returns per partition. Default 1 MiB. */
  readonly maxBytesPerPartition?: number | undefined
  /** The most bytes one fetch returns. Default 10 MiB. */
  readonly maxBytes?: number | undefined
  /** How long a transaction may stay open before the broker aborts it. Default 60 seconds. */
  readonly transactionTimeout?: Duration.Input | undefined
}

/**
 * The defaults of {@link Options}, and of the `SubscribeOptions` a subscription leaves out.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  brokers: ["127.0.0.1:9092"] as ReadonlyArray<string>,
  clientId: "partita",
  compression: "none" as Compression,
  connectionTimeout: Duration.seconds(1),
  requestTimeout: Duration.seconds(30),
  retry: { retries: 5, initialRetryTime: 300, maxRetryTime: 30_000 } as RetryOptions,
  logLevel: "info" as const,
  fetchMaxWait: Duration.millis(500),
  maxBytesPerPartition: 1_048_576,
  maxBytes: 10_485_760,
  transactionTimeout: Duration.seconds(60),
  maxBatchSize: 500,
  sessionTimeout: Duration.seconds(30),
  heartbeatInterval: Duration.seconds(3),
  rebalanceTimeout: Duration.seconds(60),
}

// ---------------------------------------------------------------------------------------------
// Errors

interface KafkaJSErrorShape {
  readonly name?: unknown
  readonly type?: unknown
  readonly code?: unknown
  readonly message?: unknown
  readonly cause?: unknown
  readonly errors?: unknown
  readonly retryCount?: unknown
}

const shapeOf = (error: unknown): KafkaJSErrorShape =>
  typeof error === "object" && error !== null ? error as KafkaJSErrorShape : {}

/** The error that explains a kafkajs failure: the one inside its retry and aggregate wrappers. */
const rootOf = (error: unknown): unknown => {
  let current = error
  for (let depth = 0; depth < 8; depth++) {
    const shape = shapeOf(current)
    if (typeof shape.code === "number") return current
    if (Array.isArray(shape.errors) && shape.errors.length > 0) current = shape.errors[0]
    else if (shape.cause !== undefined && shape.cause !== current) current = shape.cause
    else return current
  }
  return current
}

const codeOf = (root: unknown): TransportError.KafkaErrorName => {
  const shape = shapeOf(root)
  // The broker's numeric code first: kafkajs names some codes by their pre-2.x names.
  if (typeof shape.code === "number") return TransportError.nameOf(shape.code)
  if (typeof shape.type === "string") return TransportError.nameOf(shape.type)
  switch (shape.name) {
    case "KafkaJSConnectionError":
    case "KafkaJSConnectionClosedError":
    case "KafkaJSBrokerNotFound":
    case "KafkaJSNoBrokerAvailableError":
      return "NETWORK_EXCEPTION"
    case "KafkaJSRequestTimeoutError":
    case "KafkaJSTimeout":
    case "KafkaJSLockTimeout":
      return "REQUEST_TIMED_OUT"
    case "KafkaJSGroupCoordinatorNotFound":
      return "COORDINATOR_NOT_AVAILABLE"
    case "KafkaJSMetadataNotLoaded":
    case "KafkaJSTopicMetadataNotLoaded":
      return "LEADER_NOT_AVAILABLE"
    case "KafkaJSSASLAuthenticationError":
      return "SASL_AUTHENTICATION_FAILED"
    case "KafkaJSServerDoesNotSupportApiKey":
      return "UNSUPPORTED_VERSION"
    case "KafkaJSNotImplemented":
      return /compression/i.test(String(shape.message))
        ? "UNSUPPORTED_COMPRESSION_TYPE"
        : "UNKNOWN_SERVER_ERROR"
  }
  return "UNKNOWN_SERVER_ERROR"
}

const detailOf = (error: unknown): string => {
  const message = shapeOf(error).message
  const text = typeof message === "string" && message !== "" ? message : String(error)
  return text.replace(/\.$/, "")
}

/**
 * Turns whatever kafkajs threw into a `TransportError`: `what` says what was being done, e.g.
 * `Cannot send 3 records to "orders"`.
 */
const fromKafkaJS = (operation: string, what: string) => (error: unknown): TransportError.TransportError => {
  if (error instanceof TransportError.TransportError) return error
  const root = rootOf(error)
  const code = codeOf(root)
  const outer = shapeOf(error)
  const retries = outer.name === "KafkaJSNumberOfRetriesExceeded" && typeof outer.retryCount === "number"
    ? `, gave up after ${outer.retryCount} ${outer.retryCount === 1 ? "retry" : "retries"}`
    : ""
  return TransportError.make(code, operation, `${what}: ${detailOf(root)} (${code}${retries})`, error)
}

const nonRetriable = (error: TransportError.TransportError): TransportError.TransportError =>
  error.retriable ? new TransportError.TransportError({ ...error, retriable: false }) : error

/** A kafkajs promise as an Effect, its rejection mapped to a `TransportError`. */
const attempt = <A>(operation: string, what: string, evaluate: () => Promise<A>) =>
  Effect.tryPromise({ try: evaluate, catch: fromKafkaJS(operation, what) })

/** A synchronous kafkajs call (pause, resume, seek) as an Effect. */
const attemptSync = <A>(operation: string, what: string, evaluate: () => A) =>
  Effect.try({ try: evaluate, catch: fromKafkaJS(operation, what) })

/** Thrown by our partitioner; `retriable: false` keeps kafkajs from retrying what cannot change. */
class PartitionNotFound extends Error {
  readonly type = "UNKNOWN_TOPIC_OR_PARTITION"
  readonly retriable = false
}

// ---------------------------------------------------------------------------------------------
// Bytes and headers

const encoder = new TextEncoder()

/** A view, not a copy: kafkajs encodes it before the send completes. */
const toBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)


/**
 * A view with Uint8Array's own prototype over kafkajs' bytes, not a copy: a copy per key and
 * value cost more than the rest of the hand-off together. The view keeps the fetch response it
 * came from alive while the record is, which a mailbox bounds; `slice()` it to keep it longer.
 * (Not the Buffer itself: a Buffer's `slice` is a view, where a Uint8Array's is a copy.)
 */
const viewOf = (value: Buffer): Uint8Array => new Uint8Array(value.buffer, value.byteOffset, value.byteLength)

/** Header values: views as well (kafkajs may hand a string, which is encoded). */
const toBytes = (value: Buffer | string): Uint8Array => typeof value === "string" ? encoder.encode(value) : viewOf(value)

/** Repeated keys become arrays; different keys keep their first-appearance order. */
const toHeaders = (headers: ReadonlyArray<Header> | undefined): IHeaders | undefined => {
  if (headers === undefined || headers.length === 0) return undefined
  // No prototype: a header named `__proto__` is a header like any other.
  const result: Record<string, Buffer | Array<Buffer>> = Object.create(null)
  for (const { key, value } of headers) {
    const bytes = toBuffer(value ?? new Uint8Array(0))
    const existing = result[key]
    result[key] = existing === undefined
      ? bytes
      : Array.isArray(existing)
      ? [...existing, bytes]
      : [existing, bytes]
  }
  return result
}

const noHeaders: ReadonlyArray<Header> = Object.freeze([])

const fromHeaders = (headers: IHeaders | undefined): ReadonlyArray<Header> => {
  if (headers === undefined) return noHeaders
  let result: Array<Header> | undefined
  for (const key in headers) {
    result ??= []
    const value = headers[key]
    for (const one of Array.isArray(value) ? value : [value]) {
      result.push({ key, value: one === undefined || one === null ? null : toBytes(one) })
    }
  }
  return result ?? noHeaders
}

const toConsumerRecord = (topic: string, partition: number) => (message: KafkaMessage): ConsumerRecord => ({
  topic,
  partition,
  offset: Number(message.offset),
  key: message.key === null ? null : viewOf(message.key),
  value: message.value === null ? null : viewOf(message.value),
  headers: fromHeaders(message.headers),
  timestamp: Number(message.timestamp),
})

const keyOf = (tp: TopicPartition): string => `${tp.topic}/${tp.partition}`

/** kafkajs' `[{ topic, partitions }]` shape, topics in first-appearance order. */
const byTopic = (
  partitions: ReadonlyArray<TopicPartition>,
): Array<{ topic: string; partitions: Array<number> }> => {
  const grouped = new Map<string, Array<number>>()
  for (const { topic, partition } of partitions) {
    grouped.set(topic, [...(grouped.get(topic) ?? []), partition])
  }
  return [...grouped].map(([topic, partitions]) => ({ topic, partitions }))
}

// ---------------------------------------------------------------------------------------------
// Logging

const kafkaLogLevels = {
  nothing: KafkaLogLevel.NOTHING,
  error: KafkaLogLevel.ERROR,
  warn: KafkaLogLevel.WARN,
  info: KafkaLogLevel.INFO,
  debug: KafkaLogLevel.DEBUG,
} as const

/** kafkajs lines that repeat what the caller learns anyway, as a `TransportError` or a `GroupEvent`. */
const isEcho = ({ namespace, log }: LogEntry): boolean =>
  (namespace === "Connection" && log.message.startsWith("Response ")) ||
  (namespace === "Producer" &&
    (log["retryCount"] !== undefined || log.message.startsWith("Limiting retries"))) ||
  (namespace === "Runner" && log.message.startsWith("The group is rebalancing"))

const severityOf = (entry: LogEntry): LogLevel.Severity => {
  switch (entry.level) {
    case KafkaLogLevel.ERROR:
      return isEcho(entry) ? "Debug" : "Error"
    case KafkaLogLevel.WARN:
      return isEcho(entry) ? "Debug" : "Warn"
    case KafkaLogLevel.INFO:
      return "Debug"
    default:
      return "Trace"
  }
}

/**
 * A kafkajs `logCreator` writing to Effect's logger. kafkajs logs outside any fiber, so each line
 * runs on the context captured when the layer was built.
 */
const logCreatorFor = (context: Context.Context<never>, minimum: LogLevel.LogLevel) => {
  const run = Effect.runForkWith(context)
  return () => (entry: LogEntry): void => {
    const severity = severityOf(entry)
    if (LogLevel.isLessThan(severity, minimum)) return
    const { timestamp: _timestamp, logger: _logger, message, stack, ...extra } = entry.log
    const annotations = severity === "Error" && stack !== undefined ? { ...extra, stack } : extra
    run(
      Effect.logWithLevel(severity)(`kafkajs ${entry.namespace}: ${message}`).pipe(
        Effect.annotateLogs(annotations),
      ),
    )
  }
}

// ---------------------------------------------------------------------------------------------
// Producing

interface ProducerHandle {
  readonly producer: Producer
  /** Where our partitioner put each message of a send. */
  readonly placements: WeakMap<Message, number>
}

/**
 * Kafka's placement (murmur2 for keys, the caller's partition if given, round-robin otherwise),
 * remembered per message: kafkajs calls the partitioner again on every retry, and a record must
 * not move to another partition between attempts.
 */
const makePlacer = () => {
  const placements = new WeakMap<Message, number>()
  const turns = new Map<string, number>()
  const createPartitioner: ICustomPartitioner = () => ({ topic, partitionMetadata, message }) => {
    const placed = placements.get(message)
    if (placed !== undefined) return placed
    let partition: number
    if (message.partition !== undefined && message.partition !== null) {
      partition = message.partition
    } else if (message.key !== undefined && message.key !== null) {
      const key = typeof message.key === "string" ? encoder.encode(message.key) : message.key
      partition = partitionForKey(key, partitionMetadata.length)
    } else {
      const available = partitionMetadata.filter((metadata) => metadata.leader >= 0)
      const candidates = (available.length > 0 ? available : partitionMetadata).map((m) => m.partitionId)
        .sort((a, b) => a - b)
      const turn = turns.get(topic) ?? 0
      turns.set(topic, turn + 1)
      partition = candidates[turn % candidates.length]!
    }
    if (!partitionMetadata.some((metadata) => metadata.partitionId === partition)) {
      throw new PartitionNotFound(
        `Partition ${partition} of "${topic}" does not exist (it has ${partitionMetadata.length})`,
      )
    }
    placements.set(message, partition)
    return partition
  }
  return { placements, createPartitioner }
}

const ackCodes: Record<Acks, -1 | 1 | 0> = { all: -1, leader: 1, none: 0 }

const compressionTypes: Record<Compression, CompressionTypes> = {
  none: Compressions.None,
  gzip: Compressions.GZIP,
  snappy: Compressions.Snappy,
  lz4: Compressions.LZ4,
  zstd: Compressions.ZSTD,
}

const describeSend = (records: ReadonlyArray<ProducerRecord>): string => {
  const topics = [...new Set(records.map((record) => record.topic))].map((topic) => `"${topic}"`).join(", ")
  return `Cannot send ${records.length} record${records.length === 1 ? "" : "s"} to ${topics}`
}

/** What kafkajs cannot encode, refused before anything is sent. */
const checkRecords = (records: ReadonlyArray<ProducerRecord>, operation: string) =>
  Effect.suspend(() => {
    for (const record of records) {
      const header = record.headers?.find((header) => header.value === null)
      if (header !== undefined) {
        return Effect.fail(
          TransportError.make(
            "INVALID_RECORD",
            operation,
            `Cannot send a record to "${record.topic}" with header "${header.key}" set to null: kafkajs cannot encode null header values, use an empty value`,
          ),
        )
      }
    }
    return Effect.void
  })

const toMessage = (record: ProducerRecord, now: number): Message => {
  const headers = toHeaders(record.headers)
  return {
    key: record.key === null ? null : toBuffer(record.key),
    value: record.value === null ? null : toBuffer(record.value),
    timestamp: String(record.timestamp ?? now),
    ...(record.partition === undefined ? {} : { partition: record.partition }),
    ...(headers === undefined ? {} : { headers }),
  }
}

/** Each record's metadata, in the order given, from kafkajs' per-partition answers. */
const metadataOf = (
  records: ReadonlyArray<ProducerRecord>,
  messages: ReadonlyArray<Message>,
  response: ReadonlyArray<KafkaRecordMetadata>,
  placements: WeakMap<Message, number>,
): ReadonlyArray<RecordMetadata> => {
  const answers = new Map(response.map((answer) => [`${answer.topicName}/${answer.partition}`, answer]))
  const seen = new Map<string, number>()
  return records.map((record, index) => {
    const message = messages[index]!
    const partition = placements.get(message) ?? record.partition ?? -1
    const key = `${record.topic}/${partition}`
    const position = seen.get(key) ?? 0
    seen.set(key, position + 1)
    const answer = answers.get(key)
    const logAppendTime = Number(answer?.logAppendTime ?? -1)
    return {
      topic: record.topic,
      partition,
      // One request per partition per call: its records are consecutive from the base offset.
      offset: answer?.baseOffset === undefined ? -1 : Number(answer.baseOffset) + position,
      timestamp: logAppendTime >= 0 ? logAppendTime : Number(message.timestamp),
    }
  })
}

/** How long a transaction's `commit` waits for its consumer offsets to become readable. */
const offsetsReadableTimeout = Duration.seconds(5)

// ---------------------------------------------------------------------------------------------
// Consuming

class Claim {
  readonly startOffset: number
  /**
   * Whether kafkajs' fetch position is known to match `startOffset`: checked on the first batch
   * rather than set by a seek up front, because a seek makes kafkajs drop the first fetch it has
   * usually sent by then (a whole batch per partition, fetched twice on every assignment).
   */
  positioned = false
  /** A seek to `startOffset` was made: the next batch starts there (after control records kafkajs skips). */
  sought = false
  ended = false
  failure: TransportError.TransportError | undefined = undefined
  paused = false
  /**
   * Chunks of the last fetched batch not yet pulled. kafkajs already moved past them, so the
   * next batch is fetched while these are handled; anything that drops them sets the position.
   */
  buffered: Array<ReadonlyArray<ConsumerRecord>> = []
  readonly changed = new Signal()

  constructor(startOffset: number) {
    this.startOffset = startOffset
  }

  /** Drops the buffered chunks: a seek, a revocation or the end makes them stale. */
  drop(): void {
    if (this.buffered.length === 0) return
    this.buffered = []
    this.changed.notify()
  }

  end(failure: TransportError.TransportError | undefined): void {
    if (this.ended) return
    this.ended = true
    this.failure = failure
    this.buffered = []
    this.changed.notify()
  }
}

/** One kafkajs generation of this member: from a `GROUP_JOIN` to the next rejoin. */
class Generation {
  state: "preparing" | "assigned" | "revoked" = "preparing"
  readonly claims = new Map<string, Claim>()
  /** Done once the claims exist, or the generation was revoked before they did. */
  readonly settled = Deferred.makeUnsafe<void>()
  /** Done once the member acknowledged the revocation, or none was needed. */
  readonly acknowledged = Deferred.makeUnsafe<void>()
  readonly assignment: ReadonlyArray<TopicPartition>
  constructor(assignment: ReadonlyArray<TopicPartition>) {
    this.assignment = assignment
  }
}

type Control =
  | { readonly _tag: "Joined"; readonly generation: Generation }
  | { readonly _tag: "Revoked"; readonly generation: Generation }
  | { readonly _tag: "Stop" }

/** Heartbeat errors after which kafkajs rejoins the group. */
const rejoinsGroup = (error: unknown): boolean => {
  const type = shapeOf(error).type
  return type === "REBALANCE_IN_PROGRESS" || type === "NOT_COORDINATOR_FOR_GROUP" ||
    type === "ILLEGAL_GENERATION" || type === "UNKNOWN_MEMBER_ID"
}

const claimStream = (
  claim: Claim,
): Stream.Stream<ReadonlyArray<ConsumerRecord>, TransportError.TransportError> => {
  const pull: Effect.Effect<
    readonly [ReadonlyArray<ConsumerRecord>],
    TransportError.TransportError | Cause.Done
  > = Effect.suspend(() => {
    if (claim.ended) return claim.failure === undefined ? Cause.done() : Effect.fail(claim.failure)
    if (claim.paused || claim.buffered.length === 0) return Effect.andThen(claim.changed.wait, pull)
    const chunk = claim.buffered.shift()!
    // The last one: wakes an `eachBatch` waiting to hand over the next batch.
    if (claim.buffered.length === 0) claim.changed.notify()
    return Effect.succeed([chunk] as const)
  })
  return Stream.fromPull(Effect.succeed(pull))
}

// ---------------------------------------------------------------------------------------------
// The transport

interface Environment {
  readonly kafka: (clientId?: string) => KafkaClient
  readonly admin: ReturnType<KafkaClient["admin"]>
  readonly options: Options
  readonly requestTimeout: number
}

/**
 * Connects the layer's clients in the current scope and returns the transport.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const layerScope = yield* Effect.scope
  const context = yield* Effect.context<never>()
  const minimumLogLevel = yield* References.MinimumLogLevel
  const brokers = options.brokers ?? defaults.brokers
  const compression = options.compression ?? defaults.compression
  const requestTimeout = Duration.toMillis(options.requestTimeout ?? defaults.requestTimeout)

  if (brokers.length === 0) {
    return yield* Effect.fail(
      TransportError.make(
        "NETWORK_EXCEPTION",
        "connect",
        "Cannot connect to Kafka: no brokers given, set `brokers` or KAFKA_BROKERS",
      ),
    )
  }
  // kafkajs' placeholder for a codec nobody registered throws when asked for the codec.
  const codecs: Partial<Record<CompressionTypes, () => unknown>> = CompressionCodecs
  yield* attemptSync("connect", `Cannot use ${compression} compression`, () => {
    if (compression !== "none") codecs[compressionTypes[compression]]?.()
  }).pipe(Effect.mapError((error) =>
    TransportError.make(
      "UNSUPPORTED_COMPRESSION_TYPE",
      "connect",
      `Cannot use ${compression} compression: register its codec in kafkajs' CompressionCodecs before building the layer`,
      error,
    )
  ))

  const sasl = options.sasl
  const config: KafkaConfig = {
    brokers: [...brokers],
    clientId: options.clientId ?? defaults.clientId,
    connectionTimeout: Duration.toMillis(options.connectionTimeout ?? defaults.connectionTimeout),
    requestTimeout,
    retry: { ...defaults.retry, ...options.retry },
    logLevel: kafkaLogLevels[options.logLevel ?? defaults.logLevel],
    logCreator: logCreatorFor(context, minimumLogLevel),
    ...(options.ssl === undefined ? {} : { ssl: options.ssl }),
    ...(sasl === undefined ? {} : {
      sasl: "password" in sasl && Redacted.isRedacted(sasl.password)
        ? {
          mechanism: sasl.mechanism,
          username: sasl.username,
          password: Redacted.value(sasl.password),
        } as NonNullable<
          KafkaConfig["sasl"]
        >
        : sasl as NonNullable<KafkaConfig["sasl"]>,
    }),
  }
  const kafka = (clientId?: string) => new Kafka(clientId === undefined ? config : { ...config, clientId })
  const client = yield* attemptSync("connect", "Cannot configure kafkajs", () => kafka())
  const target = brokers.join(",")

  const admin = yield* Effect.acquireRelease(
    Effect.suspend(() => {
      const admin = client.admin()
      return attempt("connect", `Cannot connect the admin client to ${target}`, () => admin.connect()).pipe(
        Effect.as(admin),
      )
    }),
    (admin) => disconnect(admin, "admin client"),
  )

  /** A producer connected in the current scope, with our partitioner. */
  const openProducer = (producerConfig: ProducerConfig, what: string) =>
    Effect.acquireRelease(
      Effect.gen(function* () {
        const placer = makePlacer()
        const producer = yield* attemptSync("connect", `Cannot create the ${what}`, () =>
          client.producer({
            ...producerConfig,
            retry: { ...defaults.retry, ...options.retry },
            allowAutoTopicCreation: false,
            createPartitioner: placer.createPartitioner,
          }))
        yield* attempt("connect", `Cannot connect the ${what} to ${target}`, () => producer.connect()).pipe(
          Effect.tapError(() => disconnect(producer, what)),
        )
        return { producer, placements: placer.placements } satisfies ProducerHandle
      }),
      ({ producer }) => disconnect(producer, what),
    )

  const idempotent = yield* openProducer({ idempotent: true, maxInFlightRequests: 1 }, "producer")

  // kafkajs' idempotent producer requires acks=all; other acks get a plain producer, opened on
  // first use and closed with the layer.
  const plainLock = Semaphore.makeUnsafe(1)
  let plain: ProducerHandle | undefined = undefined
  const plainProducer = plainLock.withPermits(1)(
    Effect.suspend(() =>
      plain !== undefined
        ? Effect.succeed(plain)
        : openProducer({ idempotent: false }, "producer for acks other than all").pipe(
          Scope.provide(layerScope),
          Effect.tap((handle) =>
            Effect.sync(() => {
              plain = handle
            })
          ),
        )
    ),
  )

  const codec = compressionTypes[compression]

  /** One `sendBatch` for the whole call, and each record's metadata in the order given. */
  const produce = (
    handle: ProducerHandle,
    sender: Sender,
    records: ReadonlyArray<ProducerRecord>,
    acks: Acks,
    operation: string,
  ) =>
    Effect.gen(function* () {
      if (records.length === 0) return []
      yield* checkRecords(records, operation)
      const now = yield* Clock.currentTimeMillis
      const messages = records.map((record) => toMessage(record, now))
      const topicMessages: Array<TopicMessages> = []
      for (const [index, record] of records.entries()) {
        const entry = topicMessages.find((entry) => entry.topic === record.topic)
        if (entry === undefined) topicMessages.push({ topic: record.topic, messages: [messages[index]!] })
        else entry.messages.push(messages[index]!)
      }
      const response = yield* attempt(
        operation,
        describeSend(records),
        () => sender.sendBatch({ topicMessages, acks: ackCodes[acks], compression: codec }),
      )
      return metadataOf(records, messages, response, handle.placements)
    })

  const send = (
    records: ReadonlyArray<ProducerRecord>,
    sendOptions?: { readonly acks?: Acks | undefined },
  ) => {
    const acks = sendOptions?.acks ?? "all"
    return acks === "all"
      ? produce(idempotent, idempotent.producer, records, acks, "send")
      : Effect.flatMap(plainProducer, (handle) => produce(handle, handle.producer, records, acks, "send"))
  }

  const createTopic = (spec: TopicSpec) =>
    Effect.gen(function* () {
      if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
        return yield* Effect.fail(
          TransportError.make(
            "INVALID_PARTITIONS",
            "createTopic",
            `Topic "${spec.topic}" needs a whole number of partitions of at least 1, got ${spec.partitions}`,
          ),
        )
      }
      const configEntries = Object.entries(spec.config ?? {}).map(([name, value]) => ({ name, value }))
      const created = yield* attempt("createTopic", `Cannot create topic "${spec.topic}"`, () =>
        admin.createTopics({
          topics: [{ topic: spec.topic, numPartitions: spec.partitions, configEntries }],
          waitForLeaders: true,
          timeout: requestTimeout,
        }))
      // kafkajs answers `false`, not an error, when the topic exists.
      if (!created) {
        return yield* Effect.fail(
          TransportError.make("TOPIC_ALREADY_EXISTS", "createTopic", `Topic "${spec.topic}" already exists`),
        )
      }
    })

  const describeTopic = (topic: string) =>
    Effect.gen(function* () {
      const what = `Cannot describe topic "${topic}"`
      // Metadata first: it fails at once for a missing topic, where the offsets lookup retries.
      yield* attempt("describeTopic", what, () => admin.fetchTopicMetadata({ topics: [topic] }))
      const offsets = yield* attempt("describeTopic", what, () => admin.fetchTopicOffsets(topic))
      return {
        topic,
        partitions: offsets
          .map(({ partition, low, high }) => ({
            partition,
            logStartOffset: Number(low),
            highWatermark: Number(high),
          }))
          .sort((a, b) => a.partition - b.partition),
      } satisfies TopicDescription
    })

  const environment: Environment = {
    kafka: (clientId) => clientId === undefined ? client : kafka(clientId),
    admin,
    options,
    requestTimeout,
  }

  /**
   * Waits until the group's committed offsets include `offsets`. Kafka applies a transaction's
   * offsets when its commit marker reaches the group coordinator, after EndTxn has answered;
   * Java's `require_stable` offset fetch waits for that, kafkajs (OffsetFetch v1 to v4) cannot,
   * so `commit` polls, for at most `offsetsReadableTimeout`, then returns anyway: the
   * transaction is committed either way.
   */
  const offsetsReadable = (group: string, offsets: ReadonlyArray<OffsetCommit>) => {
    const topics = byTopic(offsets).map(({ topic }) => topic)
    const readable = attempt(
      "commit",
      `Cannot read the committed offsets of group "${group}"`,
      () => admin.fetchOffsets({ groupId: group, topics }),
    ).pipe(
      Effect.map((responses) =>
        offsets.every((offset) => {
          const found = responses
            .find(({ topic }) => topic === offset.topic)?.partitions
            .find(({ partition }) => partition === offset.partition)
          return Number(found?.offset ?? -1) >= offset.offset
        })
      ),
    )
    return Effect.repeat(readable, { until: (done) => done, schedule: Schedule.spaced("20 millis") }).pipe(
      Effect.timeoutOption(offsetsReadableTimeout),
      Effect.ignore,
    )
  }

  const transactional = (transactionalId: string) =>
    Effect.gen(function* () {
      const handle = yield* openProducer({
        transactionalId,
        idempotent: true,
        maxInFlightRequests: 1,
        transactionTimeout: Duration.toMillis(options.transactionTimeout ?? defaults.transactionTimeout),
      }, `transactional producer "${transactionalId}"`)
      const what = `Cannot use transactional id "${transactionalId}"`
      // Initialize the producer id now, as Kafka's initTransactions does: this fences older
      // producers with the id and aborts what they left open. An empty transaction sends nothing.
      const first = yield* attempt("transaction", what, () => handle.producer.transaction())
      yield* attempt("transaction", what, () => first.abort())

      const state = { open: undefined as Transaction | undefined }
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => state.open === undefined ? Effect.void : Effect.ignore(state.open.abort))
      )

      const begin = Effect.gen(function* () {
        if (state.open !== undefined) {
          return yield* Effect.fail(
            TransportError.make(
              "INVALID_TXN_STATE",
              "begin",
              `Transactional id "${transactionalId}" already has a transaction open`,
            ),
          )
        }
        const txn = yield* attempt("begin", what, () => handle.producer.transaction())
        let outcome: "open" | "committed" | "aborted" = "open"
        const isOpen = (operation: string) =>
          Effect.suspend(() =>
            outcome === "open" ? Effect.void : Effect.fail(
              TransportError.make("INVALID_TXN_STATE", operation, `The transaction was already ${outcome}`),
            )
          )
        const finish = (done: "committed" | "aborted") =>
          Effect.sync(() => {
            outcome = done
            state.open = undefined
          })
        // Consumer offsets this transaction carries, for `commit` to wait on.
        const carried: Array<{ readonly group: string; readonly offsets: ReadonlyArray<OffsetCommit> }> = []
        const transaction: Transaction = {
          send: (records) => Effect.andThen(isOpen("send"), produce(handle, txn, records, "all", "send")),
          sendOffsets: (group, offsets) =>
            Effect.andThen(
              isOpen("sendOffsets"),
              attempt("sendOffsets", `Cannot add offsets of group "${group}" to the transaction`, () =>
                txn.sendOffsets({
                  consumerGroupId: group,
                  topics: byTopic(offsets).map(({ topic }) => ({
                    topic,
                    partitions: offsets
                      .filter((offset) => offset.topic === topic)
                      .map((offset) => ({
                        partition: offset.partition,
                        offset: String(offset.offset),
                        metadata: offset.metadata ?? null,
                      })),
                  })),
                })).pipe(Effect.andThen(Effect.sync(() =>
                  carried.push({ group, offsets })
                ))),
            ),
          commit: isOpen("commit").pipe(
            Effect.andThen(attempt("commit", `Cannot commit the transaction of "${transactionalId}"`, () =>
              txn.commit())),
            Effect.andThen(finish("committed")),
            Effect.andThen(Effect.forEach(carried, ({ group, offsets }) =>
              offsetsReadable(group, offsets), {
              discard: true,
            })),
          ),
          abort: Effect.suspend(() =>
            outcome !== "open"
              ? Effect.void
              : attempt("abort", `Cannot abort the transaction of "${transactionalId}"`, () =>
                txn.abort())
                .pipe(
                  // A fenced producer's transaction was aborted by the fencing: not an error.
                  Effect.catchIf(
                    (error) => error.code === "PRODUCER_FENCED" || error.code === "INVALID_PRODUCER_EPOCH",
                    () => Effect.void,
                  ),
                  Effect.andThen(finish("aborted")),
                )
          ),
        }
        state.open = transaction
        return transaction
      })

      return { transactionalId, begin } satisfies TransactionalProducer
    })

  const [host, port] = (brokers[0] ?? "").split(":")
  return Transport.of({
    name: "kafka",
    features: { transactions: true, faultInjection: false, clockDriven: false },
    telemetry: {
      "server.address": host ?? "",
      "server.port": Number(port ?? 9092),
      "messaging.client.id": options.clientId ?? defaults.clientId,
    },
    send,
    subscribe: (subscribeOptions) => subscribe(environment, subscribeOptions),
    transactional,
    createTopic,
    describeTopic,
  })
})

/** Disconnects a kafkajs client, logging (not failing) when it cannot. */
const disconnect = (client: { readonly disconnect: () => Promise<void> }, what: string) =>
  attempt("disconnect", `Cannot disconnect the ${what}`, () => client.disconnect()).pipe(
    Effect.catch((error) => Effect.logWarning(error.message)),
  )

// ---------------------------------------------------------------------------------------------
// Subscriptions

const subscribe = (environment: Environment, options: SubscribeOptions) =>
  Effect.gen(function* () {
    const { admin } = environment
    const group = options.group
    const sessionTimeout = Duration.toMillis(options.sessionTimeout ?? defaults.sessionTimeout)
    const heartbeatInterval = Duration.toMillis(options.heartbeatInterval ?? defaults.heartbeatInterval)
    const rebalanceTimeout = Duration.toMillis(options.rebalanceTimeout ?? defaults.rebalanceTimeout)
    const maxBatchSize = Math.max(1, options.maxBatchSize ?? defaults.maxBatchSize)
    const reset = options.reset ?? "earliest"
    // kafkajs throttles heartbeats to one per interval, so asking often is cheap.
    const tick = Duration.millis(Math.min(1000, Math.max(50, heartbeatInterval / 2)))
    // A held eachBatch must let kafkajs rejoin before the coordinator gives up on this member.
    const acknowledgeWindow = Duration.millis(Math.max(1000, rebalanceTimeout - 2 * heartbeatInterval))
    // The leader must send SyncGroup before its session expires and before followers' requests time out.
    const leaderWindow = Duration.millis(Math.min(sessionTimeout, environment.requestTimeout) / 2)

    if (heartbeatInterval >= sessionTimeout) {
      return yield* Effect.fail(
        TransportError.make(
          "INVALID_SESSION_TIMEOUT",
          "subscribe",
          `Cannot join group "${group}": the heartbeat interval (${heartbeatInterval} ms) must be shorter than the session timeout (${sessionTimeout} ms)`,
        ),
      )
    }

    // Fails at once for a missing topic, and bounds how many batches kafkajs hands over at once.
    // (No topics would ask for every topic's metadata.)
    const metadata = options.topics.length === 0 ? { topics: [] } : yield* attempt(
      "subscribe",
      `Cannot subscribe group "${group}" to ${options.topics.map((topic) => `"${topic}"`).join(", ")}`,
      () => admin.fetchTopicMetadata({ topics: [...options.topics] }),
    )
    const partitionCount = metadata.topics.reduce((sum, topic) => sum + topic.partitions.length, 0)

    const context = yield* Effect.context<never>()
    const runPromise = Effect.runPromiseWith(context)
    const events = yield* Queue.unbounded<GroupEvent, TransportError.TransportError | Cause.Done>()
    const control = yield* Queue.unbounded<Control>()
    const state = {
      current: undefined as Generation | undefined,
      /** The last generation revoked with an acknowledgement pending. */
      revoked: undefined as Generation | undefined,
      memberId: "",
      fatal: undefined as TransportError.TransportError | undefined,
      closed: false,
    }

    /** Ends a generation's claims and, if the member held any, asks it to acknowledge. Synchronous. */
    const revoke = (generation: Generation, failure?: TransportError.TransportError): void => {
      if (generation.state === "revoked") return
      const wasAssigned = generation.state === "assigned"
      generation.state = "revoked"
      for (const claim of generation.claims.values()) claim.end(failure)
      Deferred.doneUnsafe(generation.settled, Exit.void)
      if (
        !wasAssigned || generation.claims.size === 0 || state.closed || state.fatal !== undefined ||
        failure !== undefined
      ) {
        Deferred.doneUnsafe(generation.acknowledged, Exit.void)
        return
      }
      state.revoked = generation
      Queue.offerUnsafe(events, {
        _tag: "Revoked",
        partitions: generation.assignment,
        acknowledge: Effect.asVoid(Deferred.succeed(generation.acknowledged, undefined)),
      })
      Queue.offerUnsafe(control, { _tag: "Revoked", generation })
    }

    /**
     * The member is out: its streams fail, its events fail, nothing waits on it any more, and
     * kafkajs stops (it would otherwise fetch, again and again, batches nobody takes).
     */
    const fatal = (error: TransportError.TransportError): void => {
      if (state.closed || state.fatal !== undefined) return
      state.fatal = error
      if (state.current !== undefined) revoke(state.current, error)
      if (state.revoked !== undefined) Deferred.doneUnsafe(state.revoked.acknowledged, Exit.void)
      Queue.failCauseUnsafe(events, Cause.fail(error))
      Queue.offerUnsafe(control, { _tag: "Stop" })
    }

    // kafkajs calls the assignor's `protocol()` right before every JoinGroup, and its `assign()`
    // on the group leader before SyncGroup: the two places a rejoin can be seen and, on the
    // leader, held until this member acknowledged its revocation.
    const assignor: PartitionAssigner = (assignorConfig) => {
      const roundRobin = PartitionAssigners.roundRobin(assignorConfig)
      return {
        name: roundRobin.name,
        version: roundRobin.version,
        protocol: (subscription) => {
          if (state.current !== undefined) revoke(state.current)
          return roundRobin.protocol.call(roundRobin, subscription)
        },
        assign: (groupState) =>
          runPromise(Effect.suspend(() => {
            const revoked = state.revoked
            return revoked === undefined
              ? Effect.void
              : Effect.asVoid(Effect.timeoutOption(Deferred.await(revoked.acknowledged), leaderWindow))
          })).then(() => roundRobin.assign.call(roundRobin, groupState)),
      }
    }

    const client = environment.kafka(options.clientId)
    const consumer = yield* attemptSync("subscribe", `Cannot create a consumer for group "${group}"`, () =>
      client.consumer({
        groupId: group,
        partitionAssigners: [assignor],
        sessionTimeout,
        heartbeatInterval,
        rebalanceTimeout,
        maxWaitTimeInMs: Duration.toMillis(environment.options.fetchMaxWait ?? defaults.fetchMaxWait),
        maxBytesPerPartition: environment.options.maxBytesPerPartition ?? defaults.maxBytesPerPartition,
        maxBytes: environment.options.maxBytes ?? defaults.maxBytes,
        readUncommitted: options.isolation === "read-uncommitted",
        allowAutoTopicCreation: false,
        retry: { ...defaults.retry, ...environment.options.retry },
      }))
    yield* Effect.acquireRelease(
      attempt("subscribe", `Cannot connect a consumer of group "${group}"`, () =>
        consumer.connect()),
      () =>
        disconnect(consumer, `consumer of group "${group}"`),
    )

    const removers = [
      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        state.memberId = payload.memberId
        if (state.current !== undefined) {
          revoke(state.current)
        }
        const assignment = Object.entries(payload.memberAssignment)
          .flatMap(([topic, partitions]) =>
            partitions.map((partition) => ({ topic, partition }))
          )
          .sort((a, b) => a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition)
        const generation = new Generation(assignment)
        state.current = generation
        Queue.offerUnsafe(control, { _tag: "Joined", generation })
      }),
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (state.current !== undefined) revoke(state.current)
        if (!payload.restart) {
          fatal(
            nonRetriable(fromKafkaJS("subscribe", `The consumer of group "${group}" stopped`)(payload.error)),
          )
        }
      }),
    ]
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const remove of removers) remove()
      })
    )

    /** The committed offset of each assigned partition, or its reset position. */
    const startOffsets = (assignment: ReadonlyArray<TopicPartition>) =>
      Effect.gen(function* () {
        const positions = new Map<string, number>()
        if (assignment.length === 0) return positions
        const topics = byTopic(assignment).map(({ topic }) => topic)
        const committed = yield* attempt(
          "subscribe",
          `Cannot read the committed offsets of group "${group}"`,
          () => admin.fetchOffsets({ groupId: group, topics }),
        )
        for (const { topic, partitions } of committed) {
          for (const { partition, offset } of partitions) {
            if (Number(offset) >= 0) positions.set(keyOf({ topic, partition }), Number(offset))
          }
        }
        for (const { topic, partitions } of byTopic(assignment.filter((tp) => !positions.has(keyOf(tp))))) {
          const offsets = yield* attempt(
            "subscribe",
            `Cannot read the offsets of topic "${topic}"`,
            () => admin.fetchTopicOffsets(topic),
          )
          for (const { partition, low, high } of offsets) {
            if (partitions.includes(partition)) {
              positions.set(keyOf({ topic, partition }), Number(reset === "latest" ? high : low))
            }
          }
        }
        return positions
      })

    /** Turns a joined generation into claims, once the previous one was acknowledged. */
    const prepare = (generation: Generation) =>
      Effect.gen(function* () {
        if (generation.state !== "preparing") return
        const positions = yield* startOffsets(generation.assignment).pipe(
          Effect.retry({
            schedule: Schedule.max([Schedule.exponential("200 millis"), Schedule.recurs(5)]),
            while: (error) => error.retriable,
          }),
        )
        if (generation.state !== "preparing") return
        // kafkajs keeps pauses across rebalances: a new claim is not paused. (Its position is
        // checked against `startOffset` on its first batch: see `Claim.positioned`.)
        const resumed = yield* attemptSync(
          "subscribe",
          `Cannot position the consumer of group "${group}"`,
          () => consumer.resume(byTopic(generation.assignment)),
        ).pipe(Effect.option)
        // Not running any more: the crash that stopped it revokes this generation.
        if (Option.isNone(resumed) || generation.state !== "preparing") return
        const claims = generation.assignment.map((tp): PartitionClaim => {
          const claim = new Claim(positions.get(keyOf(tp)) ?? 0)
          generation.claims.set(keyOf(tp), claim)
          return { ...tp, startOffset: positions.get(keyOf(tp)) ?? 0, records: claimStream(claim) }
        })
        generation.state = "assigned"
        Deferred.doneUnsafe(generation.settled, Exit.void)
        Queue.offerUnsafe(events, { _tag: "Assigned", claims })
      }).pipe(
        Effect.catch((error) =>
          Effect.sync(() =>
            fatal(nonRetriable(
              TransportError.make(
                error.code,
                "subscribe",
                `Cannot start consuming for group "${group}": ${error.message}`,
                error,
              ),
            ))
          )
        ),
      )

    /** A member that does not acknowledge within the rebalance timeout is removed, as the contract says. */
    const awaitAcknowledgement = (generation: Generation) =>
      Effect.gen(function* () {
        const acknowledged = yield* Effect.timeoutOption(
          Deferred.await(generation.acknowledged),
          acknowledgeWindow,
        )
        if (Option.isSome(acknowledged) || state.closed || state.fatal !== undefined) return
        fatal(
          TransportError.make(
            "UNKNOWN_MEMBER_ID",
            "subscribe",
            `Member ${state.memberId} left group "${group}": it did not acknowledge a revocation within ${
              Duration.toMillis(acknowledgeWindow)
            } ms`,
          ),
        )
      })

    // Joins and revocations are handled in order, so a generation's claims start only after the
    // previous one was acknowledged (its last commits are what the new start offsets read).
    const stop = Effect.ignore(
      attempt("subscribe", `Cannot stop the consumer of group "${group}"`, () => consumer.stop()),
    )
    yield* Effect.forkScoped(Effect.forever(
      Effect.flatMap(Queue.take(control), (item) => {
        switch (item._tag) {
          case "Joined":
            return prepare(item.generation)
          case "Revoked":
            return awaitAcknowledgement(item.generation)
          case "Stop":
            return stop
        }
      }),
    ))

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        state.closed = true
        if (state.current !== undefined) revoke(state.current)
        if (state.revoked !== undefined) Deferred.doneUnsafe(state.revoked.acknowledged, Exit.void)
        Queue.endUnsafe(events)
      })
    )

    /** Hands a fetched batch to its claim's stream and waits until it is pulled, heartbeating. */
    const onBatch = (payload: EachBatchPayload) =>
      Effect.gen(function* () {
        const generation = state.current
        if (generation === undefined || state.closed) return undefined
        const { batch } = payload
        // Done when kafkajs stops, or a seek made this batch stale.
        const halt = Deferred.makeUnsafe<void>()
        let rejoin: unknown = undefined
        const heartbeats = Effect.gen(function* () {
          while (true) {
            yield* Effect.sleep(tick)
            if (!payload.isRunning() || payload.isStale()) {
              Deferred.doneUnsafe(halt, Exit.void)
              return
            }
            const beat = yield* Effect.result(
              Effect.tryPromise({ try: () => payload.heartbeat(), catch: (error) => error }),
            )
            if (beat._tag === "Failure" && rejoinsGroup(beat.failure)) {
              rejoin = beat.failure
              revoke(generation)
              return
            }
          }
        })
        return yield* Effect.scoped(Effect.gen(function* () {
          yield* Effect.forkScoped(heartbeats)
          const halted = Deferred.await(halt)
          yield* Effect.raceFirst(Deferred.await(generation.settled), halted)
          const claim = generation.claims.get(keyOf(batch))
          if (claim !== undefined) {
            const stopped = () => claim.ended || claim.paused || Deferred.isDoneUnsafe(halt) || payload.isStale()
            const untilPulled = Effect.gen(function* () {
              while (claim.buffered.length > 0 && !stopped()) {
                yield* Effect.raceFirst(claim.changed.wait, halted)
              }
            })
            // The first batch must start at `startOffset`. kafkajs starts where the group
            // committed, like `startOffset`, so this is rare: a reset to the latest offset read at
            // another moment, a commit made in between. Then seek once, and this batch is stale.
            if (!claim.positioned && !stopped()) {
              const fetched = (batch as { readonly fetchedOffset?: unknown }).fetchedOffset
              if (claim.sought || (typeof fetched === "string" && Number(fetched) === claim.startOffset)) {
                claim.positioned = true
              } else {
                claim.sought = true
                yield* attemptSync(
                  "seek",
                  `Cannot position ${keyOf(batch)} at ${claim.startOffset}`,
                  () => consumer.seek({ topic: batch.topic, partition: batch.partition, offset: String(claim.startOffset) }),
                ).pipe(Effect.ignore)
              }
            }
            // One batch ahead at most: wait (heartbeating) until the one before is pulled whole.
            yield* untilPulled
            // Not taken when paused or stale: kafkajs did not move past it and fetches it again.
            if (!stopped() && batch.messages.length > 0) {
              const records = batch.messages.map(toConsumerRecord(batch.topic, batch.partition))
              for (let from = 0; from < records.length; from += maxBatchSize) {
                claim.buffered.push(records.slice(from, from + maxBatchSize))
              }
              const last = records[records.length - 1]!.offset
              payload.resolveOffset(String(last))
              claim.changed.notify()
              // At the log's end there is nothing to fetch ahead: hold it until pulled, so a
              // rebalance found meanwhile still waits for the acknowledgement (1. below).
              if (Number(batch.highWatermark) <= last + 1) yield* untilPulled
            }
          }
          // kafkajs rejoins only once this returns: hold it until the member acknowledged.
          if (generation.state === "revoked") {
            yield* Effect.timeoutOption(Deferred.await(generation.acknowledged), acknowledgeWindow)
          }
          return rejoin
        }))
      })

    yield* attempt(
      "subscribe",
      `Cannot join group "${group}"`,
      () => consumer.subscribe({ topics: [...options.topics], fromBeginning: reset === "earliest" }),
    )
    // Resolves once kafkajs first joined the group (or crashed trying).
    yield* attempt("subscribe", `Cannot join group "${group}"`, () =>
      consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: Math.max(1, partitionCount),
        eachBatch: (payload) =>
          runPromise(onBatch(payload)).then((rejoin) => {
            // The heartbeat's rebalance error makes kafkajs rejoin, after the acknowledgement.
            if (rejoin !== undefined) throw rejoin
          }),
      }))
    if (state.fatal !== undefined) return yield* Effect.fail(state.fatal)

    /** The claim this member holds now for `tp`, if any. */
    const held = (tp: TopicPartition): Claim | undefined => {
      const current = state.current
      return current?.state === "assigned" ? current.claims.get(keyOf(tp)) : undefined
    }

    const notHeld = (tp: TopicPartition, operation: string) =>
      TransportError.make(
        state.fatal === undefined && !state.closed ? "ILLEGAL_GENERATION" : "UNKNOWN_MEMBER_ID",
        operation,
        `Member ${state.memberId} of group "${group}" does not hold ${keyOf(tp)}`,
      )

    const setPaused = (partitions: ReadonlyArray<TopicPartition>, paused: boolean) =>
      attemptSync(
        paused ? "pause" : "resume",
        `Cannot ${paused ? "pause" : "resume"} partitions of group "${group}"`,
        () => {
          const claimed = partitions.filter((tp) => {
            const claim = held(tp)
            if (claim === undefined) return false
            claim.paused = paused
            // Chunks already buffered stay, and are pulled after `resume`.
            claim.changed.notify()
            return true
          })
          if (claimed.length === 0) return
          if (paused) consumer.pause(byTopic(claimed))
          else consumer.resume(byTopic(claimed))
        },
      ).pipe(Effect.ignore)

    const subscription: Subscription = {
      group,
      get memberId() {
        return state.memberId
      },
      events: Stream.fromQueue(events),
      commit: (offsets) =>
        Effect.suspend(() => {
          if (offsets.length === 0) return Effect.void
          const revoking = state.revoked !== undefined && !Deferred.isDoneUnsafe(state.revoked.acknowledged)
            ? state.revoked
            : undefined
          for (const offset of offsets) {
            const ours = held(offset) !== undefined || revoking?.claims.has(keyOf(offset)) === true
            if (!ours || state.fatal !== undefined || state.closed) {
              return Effect.fail(notHeld(offset, "commit"))
            }
          }
          return attempt("commit", `Cannot commit offsets of group "${group}"`, () =>
            consumer.commitOffsets(offsets.map((offset: OffsetCommit) => ({
              topic: offset.topic,
              partition: offset.partition,
              offset: String(offset.offset),
              metadata: offset.metadata ?? null,
            })))).pipe(
              Effect.mapError((error) =>
                error.code === "ILLEGAL_GENERATION" || error.code === "REBALANCE_IN_PROGRESS" ||
                  error.code === "UNKNOWN_MEMBER_ID"
                  ? TransportError.make(
                    error.code,
                    "commit",
                    `Cannot commit offsets of group "${group}": the group rebalanced and member ${state.memberId}'s generation ended first; whoever gets these partitions resumes from the last committed offset (${error.code})`,
                    error,
                  )
                  : error
              ),
            )
        }),
      committed: (partitions) =>
        partitions.length === 0 ? Effect.succeed([]) : attempt(
          "committed",
          `Cannot read the committed offsets of group "${group}"`,
          () => admin.fetchOffsets({ groupId: group, topics: byTopic(partitions).map(({ topic }) => topic) }),
        ).pipe(Effect.map((responses) =>
          partitions.flatMap((tp): Array<CommittedOffset> => {
            const found = responses
              .find(({ topic }) => topic === tp.topic)?.partitions
              .find(({ partition }) => partition === tp.partition)
            return found === undefined || Number(found.offset) < 0
              ? []
              : [{ ...tp, offset: Number(found.offset), metadata: found.metadata ?? "" }]
          })
        )),
      pause: (partitions) => setPaused(partitions, true),
      resume: (partitions) => setPaused(partitions, false),
      seek: (tp, offset) =>
        Effect.suspend(() => {
          const claim = held(tp)
          if (claim === undefined || state.fatal !== undefined || state.closed) {
            return Effect.fail(notHeld(tp, "seek"))
          }
          // Buffered chunks are from before the seek.
          claim.drop()
          claim.positioned = true
          return attemptSync(
            "seek",
            `Cannot seek ${keyOf(tp)} to ${offset}`,
            () => consumer.seek({ ...tp, offset: String(offset) }),
          )
        }),
    }
    return subscription
  })

// ---------------------------------------------------------------------------------------------
// Layers and configuration

/**
 * The Kafka transport. Building it connects to the cluster, and fails with a `TransportError`
 * when it cannot.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Transport, TransportError.TransportError> =>
  Layer.effect(Transport, make(options))

/**
 * The options the environment gives: `KAFKA_BROKERS` (comma separated, required),
 * `KAFKA_CLIENT_ID`, `KAFKA_SSL` (a boolean), and SASL as `KAFKA_SASL_MECHANISM` (`plain`,
 * `scram-sha-256` or `scram-sha-512`) with `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD`
 * (read as `Redacted`, required once a mechanism is set).
 *
 * @since 0.1.0
 * @category configuration
 */
export const config: Config.Config<Options> = Config.all({
  brokers: Config.String("KAFKA_BROKERS").pipe(
    Config.map((value) => value.split(",").map((broker) => broker.trim()).filter((broker) => broker !== "")),
  ),
  clientId: Config.option(Config.String("KAFKA_CLIENT_ID")),
  ssl: Config.option(Config.Boolean("KAFKA_SSL")),
  sasl: Config.option(Config.Literals(["plain", "scram-sha-256", "scram-sha-512"], "KAFKA_SASL_MECHANISM"))
    .pipe(
      Config.flatMap(Option.match({
        onNone: () => Config.succeed(Option.none<SaslCredentials>()),
        onSome: (mechanism) =>
          Config.all({
            username: Config.String("KAFKA_SASL_USERNAME"),
            password: Config.Redacted("KAFKA_SASL_PASSWORD"),
          })
            .pipe(Config.map((credentials) => Option.some<SaslCredentials>({ mechanism, ...credentials }))),
      })),
    ),
}).pipe(Config.map(({ brokers, clientId, ssl, sasl }): Options => ({
  brokers,
  ...(Option.isSome(clientId) ? { clientId: clientId.value } : {}),
  ...(Option.isSome(ssl) ? { ssl: ssl.value } : {}),
  ...(Option.isSome(sasl) ? { sasl: sasl.value } : {}),
})))

/**
 * The Kafka transport with its options read from a `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options>,
): Layer.Layer<Transport, TransportError.TransportError | Config.ConfigError> =>
  Layer.unwrap(Effect.map(options, layer))

/**
 * The Kafka transport configured by the environment (see {@link config}); `options` supplies
 * what the environment cannot say (TLS certificates, retries, compression). What the
 * environment sets wins, except that `KAFKA_SSL=true` keeps TLS options given here.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromEnv = (
  options: Options = {},
): Layer.Layer<Transport, TransportError.TransportError | Config.ConfigError> =>
  layerConfig(Config.map(config, (fromEnv): Options => ({
    ...options,
    ...fromEnv,
    ...(fromEnv.ssl === true && options.ssl !== undefined && options.ssl !== false
      ? { ssl: options.ssl }
      : {}),
  })))
