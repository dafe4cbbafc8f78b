/**
 * The Kafka transport: the `Transport` contract on a real cluster, through kafkajs.
 *
 * This module and its two internal parts are the only code that knows kafkajs:
 * `internal/kafkajs.ts` (errors, bytes and headers, logs) and `internal/kafkaSubscription.ts`
 * (consumer groups). The layer owns a kafkajs client, an admin client and an idempotent
 * producer, connected in the layer's scope; each subscription and each transactional producer
 * owns its own kafkajs client for as long as its scope is open. Promises enter only through
 * `Effect.tryPromise`, and every kafkajs error becomes a `TransportError` once, at that
 * boundary: by the broker's numeric code when there is one (kafkajs still uses some pre-2.x names),
 * by the wrapped cause for kafkajs' retry and aggregate errors, `NETWORK_EXCEPTION` for
 * connection failures and `REQUEST_TIMED_OUT` for client-side timeouts.
 *
 * How the contract maps onto kafkajs:
 * - `sendEach` places the records itself (Kafka's murmur2 for keys, the record's partition if
 *   set, round-robin otherwise; the partitioner given to kafkajs returns the same placement and
 *   remembers it, so kafkajs' retries never move a record) and sends one `producer.sendBatch`
 *   per leader broker, all at once: each is one produce request, whose failure tells about it
 *   alone. A request that fails with several partitions in it has each of them sent again
 *   alone, which on the idempotent producer cannot write anything twice (see `produceEach` for
 *   why, and for the cases kafkajs leaves inexact). Each record's offset is its partition's
 *   `baseOffset` plus its index among the request's records for that partition. `send` is
 *   `sendEach` failing with the first failed record's error. `acks: "all"` uses the idempotent
 *   producer, one `sendEach` at a time; `leader` and `none` use a plain producer opened on first
 *   use, as kafkajs refuses other acks on an idempotent one, with one request per partition.
 *   Under `none` the broker answers nothing: offsets are `-1`.
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
 * - Revocation. kafkajs rebalances eagerly and has no revocation callback; it rejoins as soon as
 *   a heartbeat answers that the group rebalances. Kafka's classic coordinator still takes the
 *   old generation's commits while the group prepares the rebalance, and completes the join only
 *   once every member has sent JoinGroup. So every member's JoinGroup waits until it
 *   acknowledged: commits made before acknowledging succeed, and no member gets the partitions
 *   before their owner let them go, on the leader and on followers alike. Two hooks do it:
 *   1. While a batch waits in `eachBatch` (the member is behind, or handling the log's last
 *      fetched batch), its heartbeats find the rebalance first. The generation is revoked
 *      there, and every waiting `eachBatch` of it returns only once `acknowledge` ran.
 *   2. Otherwise (the member is idle, or a batch was handed over and the next fetch is in flight)
 *      kafkajs' own heartbeat finds it and kafkajs rejoins at once. The assignor's `protocol()`,
 *      which kafkajs calls while it builds every JoinGroup, revokes the generation, and the
 *      JoinGroup request itself is held at the socket until `acknowledge` ran: each
 *      subscription's kafkajs client opens its connections through a `socketFactory` wrapping
 *      the one given (`internal/joinGate.ts` says how, and why there).
 *   Either hold lasts at most the rebalance timeout less two heartbeat intervals (see below).
 *   kafkajs sends no heartbeats meanwhile, and the coordinator drops a member that neither
 *   rejoins nor heartbeats within the session timeout, so the subscription heartbeats for it
 *   with the heartbeat of kafkajs' last `eachBatch` payload (a member that never got a batch
 *   has none: its acknowledgement must come within the session timeout). When this member
 *   leads the group, its assignor (kafkajs' round-robin, wrapped) also waits for this member's
 *   acknowledgement, at most half the session timeout, before it hands out the new assignment.
 *   A new assignment of this member always waits for its previous acknowledgement, so its start
 *   offsets include its own last commits.
 * - `commit` is `consumer.commitOffsets`, for partitions this member holds or is giving up (until
 *   it acknowledges); `committed` is the admin's `fetchOffsets`; `pause`, `resume` and `seek` are
 *   the consumer's. When kafkajs crashes and restarts, the member sees `Revoked`, then `Assigned`
 *   once rejoined; when it crashes for good, the events stream and the claims fail.
 * - `transactional` is a kafkajs producer with a `transactionalId`, whose producer id is
 *   initialized at once (as Kafka's `initTransactions`), fencing older producers with the id.
 *   A transaction's `commit` returns once the consumer offsets it carried are readable with
 *   `committed` (Kafka applies them a moment after the commit; at most 5 seconds are waited).
 * - `createTopic` is `admin.createTopics`, then a wait until every partition's leader answers
 *   for it (ours, not kafkajs', which gives up on a broker that has just started); kafkajs answers `false` for
 *   an existing topic: that becomes `TOPIC_ALREADY_EXISTS`. `describeTopic` is the admin's topic
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
 * Security: `ssl` and `sasl` go to every kafkajs client. Before connecting, the layer makes one
 * TLS handshake with the first bootstrap broker that answers, as kafkajs would make it: kafkajs
 * treats a refused certificate as a broker that is down and retries it (six handshakes, 6 to 13
 * seconds with the default retry), where here it fails at once with `SSL_AUTHENTICATION_FAILED`,
 * not retriable, saying whether the CA is not trusted or the name does not match. A wrong SASL
 * password fails the layer after one attempt with `SASL_AUTHENTICATION_FAILED`, not retriable
 * (kafkajs does not retry it). The password is handed to kafkajs only: it is in no option that is
 * logged, no span attribute and no error message.
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
 * - After `UNKNOWN_MEMBER_ID` kafkajs drops its member id and joins again; when that JoinGroup
 *   fails with a retriable error (a coordinator still loading, as a broker thawed from a freeze
 *   answers), it goes back to fetching its old partitions without a member id, sends no
 *   heartbeats for want of one, and never joins: out of the group, fetching for ever. A batch that
 *   arrives for a generation already revoked and acknowledged is that state: the subscription
 *   answers it with a rebalance error, which makes kafkajs join again. With nothing to fetch no
 *   batch comes: once kafkajs has fetched so for a session timeout, the member is out (its
 *   events fail with `UNKNOWN_MEMBER_ID`, and `ActorSystem` joins again with a new consumer).
 * - kafkajs answers a commit made while its runner is stopped (a crash disconnecting it, before
 *   its CRASH event) as done without sending it. Such a commit fails here instead, with a
 *   retriable `COORDINATOR_NOT_AVAILABLE`: a commit that succeeds has reached the broker.
 * - With Effect's minimum log level at `Debug`, each subscription logs every 5 s what its kafkajs
 *   consumer was last seen doing (joins, fetches started and ended, heartbeats, commits, crashes,
 *   request timeouts) and which of its own waits hold kafkajs, and since when: for telling why a
 *   member stopped consuming (`internal/consumerSightings.ts`).
 * - kafkajs asks for unlimited retries on an idempotent producer (and warns when they are
 *   limited); here they are limited by `retry`, so a send to a missing topic fails with a
 *   retriable `UNKNOWN_TOPIC_OR_PARTITION` instead of hanging.
 * - An interrupted `send`, `commit` or admin call cannot be recalled: kafkajs finishes the
 *   request in the background, retries included, and one that goes on past its client's
 *   disconnect connects again. A closing scope does not wait for such calls (kafkajs may retry
 *   for many seconds); each client is disconnected again once the calls made on it have ended
 *   (or `requestTimeout` passed), in the background, so no connection of the transport is left
 *   open for the broker to drop (`connections.max.idle.ms` later, holding a Node process alive).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { KafkaJsTransport, Transport } from "partita"
 *
 * const program = Effect.gen(function*() {
 *   const transport = yield* Transport.Transport
 *   yield* transport.createTopic({ topic: "greetings", partitions: 3 })
 *   yield* transport.send([{ topic: "greetings", key: null, value: new TextEncoder().encode("hi") }])
 * }).pipe(Effect.provide(KafkaJsTransport.layerFromEnv()))
 * ```
 *
 * @since 0.1.0
 */
import kafkajs from "kafkajs"
import type {
  CompressionTypes,
  ICustomPartitioner,
  KafkaConfig,
  Message,
  PartitionMetadata,
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
  Duration,
  Effect,
  Exit,
  Layer,
  Redacted,
  References,
  Schedule,
  Scope,
  Semaphore,
} from "effect"
import {
  attempt,
  attemptSync,
  byTopic,
  Calls,
  disconnect,
  encoder,
  type Environment,
  kafkaLogLevels,
  logCreatorFor,
  PartitionNotFound,
  toBuffer,
  toHeaders,
} from "./internal/kafkajs.ts"
import * as KafkaEnv from "./internal/kafkaEnv.ts"
import { subscribe } from "./internal/kafkaSubscription.ts"
import { defaultSocketFactory, gated, type JoinGate } from "./internal/joinGate.ts"
import { verifyBrokerCertificate } from "./internal/tlsCheck.ts"
import { allWritten, errorOf } from "./internal/sendOutcomes.ts"
import { partitionForKey } from "./internal/partitioner.ts"
import {
  type Acks,
  type CommittedOffset,
  type ListedOffset,
  type OffsetCommit,
  type OffsetQuery,
  type ProducerRecord,
  type RecordMetadata,
  type TopicDescription,
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
  /**
   * `true` for TLS with the runtime's defaults, or `tls.connect` options (`ca` for a private CA,
   * `servername` for the name to verify), passed to kafkajs as they are. A broker certificate
   * these refuse fails the layer at once with `SSL_AUTHENTICATION_FAILED` (see the module notes).
   */
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
  /**
   * kafkajs' `socketFactory`: how every client opens its broker connections (a proxy, a test's
   * faulty network). A subscription's client wraps it to hold its JoinGroup requests until it
   * acknowledged a revocation (see the module documentation); it is otherwise passed as it is.
   */
  readonly socketFactory?: KafkaConfig["socketFactory"] | undefined
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
// Producing

interface ProducerHandle {
  readonly producer: Producer
  /** Where our partitioner put each message of a send. */
  readonly placements: WeakMap<Message, number>
  /** Places a message ahead of kafkajs (and remembers it); `undefined` for a partition the topic lacks. */
  readonly place: (topic: string, partitionMetadata: ReadonlyArray<PartitionMetadata>, message: Message) => number | undefined
  /** Each topic's partitions and their leaders, as kafkajs last saw them (or the admin, before the first send). */
  readonly metadata: Map<string, ReadonlyArray<PartitionMetadata>>
  /** Sequence numbers per partition, which make a resent batch a duplicate the broker drops. */
  readonly idempotent: boolean
  /** Its calls (and its transactions'), which its disconnect waits for. */
  readonly calls: Calls
}

/**
 * Kafka's placement (murmur2 for keys, the caller's partition if given, round-robin otherwise),
 * remembered per message: kafkajs calls the partitioner again on every retry, and a record must
 * not move to another partition between attempts. `sendEach` places messages itself, before
 * kafkajs, to group them by leader.
 */
const makePlacer = () => {
  const placements = new WeakMap<Message, number>()
  const metadata = new Map<string, ReadonlyArray<PartitionMetadata>>()
  const turns = new Map<string, number>()
  const place = (topic: string, partitionMetadata: ReadonlyArray<PartitionMetadata>, message: Message) => {
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
    if (!partitionMetadata.some((metadata) => metadata.partitionId === partition)) return undefined
    placements.set(message, partition)
    return partition
  }
  const createPartitioner: ICustomPartitioner = () => ({ topic, partitionMetadata, message }) => {
    if (metadata.get(topic) !== partitionMetadata) metadata.set(topic, partitionMetadata)
    const partition = place(topic, partitionMetadata, message)
    if (partition === undefined) {
      throw new PartitionNotFound(
        `Partition ${message.partition} of "${topic}" does not exist (it has ${partitionMetadata.length})`,
      )
    }
    return partition
  }
  return { placements, place, metadata, createPartitioner }
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

/** What kafkajs cannot encode, refused before anything is sent: this record's error, if any. */
const refusalOf = (record: ProducerRecord, operation: string): TransportError.TransportError | undefined => {
  const header = record.headers?.find((header) => header.value === null)
  return header === undefined ? undefined : TransportError.forRecord(
    TransportError.make(
      "INVALID_RECORD",
      operation,
      `Cannot send a record to "${record.topic}" with header "${header.key}" set to null: kafkajs cannot encode null header values, use an empty value`,
    ),
    record.topic,
    undefined,
  )
}

/** A transaction's records: any refused record fails the call before anything is sent. */
const checkRecords = (records: ReadonlyArray<ProducerRecord>, operation: string) =>
  Effect.suspend(() => {
    for (const record of records) {
      const refusal = refusalOf(record, operation)
      if (refusal !== undefined) return Effect.fail(refusal)
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

/**
 * The records' indices in groups of one request each, in the order given within a group: by
 * leader broker on the idempotent producer, by partition on the plain one. A record whose
 * explicit partition the topic lacks is a group of its own (kafkajs' partitioner refuses it);
 * records of a topic whose metadata is unknown form one group, placed by kafkajs.
 */
const groupsOf = (
  handle: ProducerHandle,
  records: ReadonlyArray<ProducerRecord>,
  messages: ReadonlyArray<Message>,
  indices: ReadonlyArray<number>,
): ReadonlyArray<ReadonlyArray<number>> => {
  const groups = new Map<string | number, Array<number>>()
  const alone: Array<Array<number>> = []
  // Each topic's leader by partition, built once per call and topic.
  const leaders = new Map<ReadonlyArray<PartitionMetadata>, Map<number, number>>()
  for (const index of indices) {
    const topic = records[index]!.topic
    const metadata = handle.metadata.get(topic)
    let key: string | number = "unknown"
    if (metadata !== undefined) {
      const partition = handle.place(topic, metadata, messages[index]!)
      if (partition === undefined) {
        alone.push([index])
        continue
      }
      if (handle.idempotent) {
        let byPartition = leaders.get(metadata)
        if (byPartition === undefined) {
          byPartition = new Map(metadata.map((m) => [m.partitionId, m.leader]))
          leaders.set(metadata, byPartition)
        }
        key = byPartition.get(partition) ?? -1
      } else {
        key = `${topic}/${partition}`
      }
    }
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [index])
    else group.push(index)
  }
  return alone.length === 0 ? [...groups.values()] : [...groups.values(), ...alone]
}

/**
 * Whether a failed record leaves the idempotent producer's sequence numbers unknown: it may
 * have been written (no answer, a timeout, a write the replicas did not confirm), or the broker
 * no longer agrees with them. A refusal the broker answered wrote nothing, and kafkajs' giving
 * the numbers back is then right.
 */
const unresolvedCodes: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "NETWORK_EXCEPTION",
  "REQUEST_TIMED_OUT",
  "UNKNOWN_SERVER_ERROR",
  "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
  "OUT_OF_ORDER_SEQUENCE_NUMBER",
  "DUPLICATE_SEQUENCE_NUMBER",
  "UNKNOWN_PRODUCER_ID",
  "INVALID_PRODUCER_EPOCH",
])

const unresolved = (outcome: Exit.Exit<RecordMetadata, TransportError.TransportError>): boolean => {
  const error = errorOf(outcome)
  return error !== undefined && unresolvedCodes.has(error.code)
}

/** How long a transaction's `commit` waits for its consumer offsets to become readable. */
const offsetsReadableTimeout = Duration.seconds(5)

// ---------------------------------------------------------------------------------------------
// The transport


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
    ...(options.socketFactory === undefined ? {} : { socketFactory: options.socketFactory }),
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
  // A certificate kafkajs would refuse fails here, once, rather than through its retries.
  if (options.ssl !== undefined && options.ssl !== false) {
    yield* verifyBrokerCertificate(brokers, options.ssl, Duration.millis(config.connectionTimeout ?? 1000))
  }
  const kafka = (clientId?: string, gate?: JoinGate) =>
    new Kafka({
      ...config,
      ...(clientId === undefined ? {} : { clientId }),
      // A consumer's own client: its JoinGroup requests wait for its acknowledgements (`joinGate.ts`).
      ...(gate === undefined ? {} : { socketFactory: gated(options.socketFactory ?? defaultSocketFactory, gate) }),
    })
  const client = yield* attemptSync("connect", "Cannot configure kafkajs", () => kafka())
  const target = brokers.join(",")
  // How long a closed client follows its calls still running, to disconnect again (see `Calls`).
  const settleWithin = Duration.millis(requestTimeout)

  const adminCalls = new Calls()
  const admin = yield* Effect.acquireRelease(
    Effect.suspend(() => {
      const admin = client.admin()
      return adminCalls.attempt("connect", `Cannot connect the admin client to ${target}`, () => admin.connect()).pipe(
        Effect.as(admin),
      )
    }),
    (admin) => disconnect(admin, "admin client", adminCalls, settleWithin),
  )

  /** A producer connected in the current scope, with our partitioner. */
  const openProducer = (producerConfig: ProducerConfig, what: string) =>
    Effect.acquireRelease(
      Effect.gen(function* () {
        const placer = makePlacer()
        const calls = new Calls()
        const producer = yield* attemptSync("connect", `Cannot create the ${what}`, () =>
          client.producer({
            ...producerConfig,
            retry: { ...defaults.retry, ...options.retry },
            allowAutoTopicCreation: false,
            createPartitioner: placer.createPartitioner,
          }))
        yield* calls.attempt("connect", `Cannot connect the ${what} to ${target}`, () => producer.connect()).pipe(
          Effect.tapError(() => disconnect(producer, what, calls, settleWithin)),
        )
        return {
          producer,
          placements: placer.placements,
          place: placer.place,
          metadata: placer.metadata,
          idempotent: producerConfig.idempotent === true,
          calls,
        } satisfies ProducerHandle
      }),
      ({ producer, calls }) => disconnect(producer, what, calls, settleWithin),
    )

  /**
   * The idempotent producer, in a scope of its own so that it can be replaced. After a send
   * whose outcome is unknown (its connection was lost, it timed out) kafkajs has given its
   * batches' sequence numbers back although the broker may have written them: the next batch
   * of the same size for that partition would get the same numbers, and the broker would
   * answer it as a duplicate, with the earlier batch's offsets, without writing it (a batch of
   * another size is refused with OUT_OF_ORDER_SEQUENCE_NUMBER, and so is every one after it).
   * kafkajs cannot resynchronize its sequence numbers, so the producer is replaced before the
   * next send: a new producer id starts them afresh, as Kafka's Java producer bumps its epoch.
   */
  const openIdempotent = Effect.gen(function* () {
    const scope = yield* Scope.fork(layerScope)
    const handle = yield* openProducer({ idempotent: true, maxInFlightRequests: 1 }, "producer").pipe(
      Scope.provide(scope),
      Effect.tapError(() => Scope.close(scope, Exit.void)),
    )
    return { handle, scope }
  })
  let idempotent = yield* openIdempotent
  let idempotentStale = false
  /** One `sendEach` at a time on the idempotent producer (see `produceEach`). */
  const idempotentLock = Semaphore.makeUnsafe(1)
  const renewIdempotent = Effect.gen(function* () {
    const fresh = yield* openIdempotent
    const old = idempotent
    idempotent = fresh
    idempotentStale = false
    yield* Scope.close(old.scope, Exit.void)
  })

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

  /** One `sendBatch` for the messages, grouped by topic in the order given. */
  const sendBatch = (handle: ProducerHandle, sender: Sender, records: ReadonlyArray<ProducerRecord>, messages: ReadonlyArray<Message>, acks: Acks, what: string, operation: string) => {
    const topicMessages: Array<TopicMessages> = []
    for (let index = 0; index < records.length; index++) {
      const topic = records[index]!.topic
      const entry = topicMessages.find((entry) => entry.topic === topic)
      if (entry === undefined) topicMessages.push({ topic, messages: [messages[index]!] })
      else entry.messages.push(messages[index]!)
    }
    return handle.calls.attempt(operation, what, () => sender.sendBatch({ topicMessages, acks: ackCodes[acks], compression: codec }))
  }

  /** A transaction's send: one `sendBatch` for the whole call, failing as a whole. */
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
      const response = yield* sendBatch(handle, sender, records, messages, acks, describeSend(records), operation)
      return metadataOf(records, messages, response, handle.placements)
    })

  /**
   * Each record's outcome, exact wherever kafkajs lets it be.
   *
   * kafkajs sends one produce request per broker for a `sendBatch`, fails the whole
   * `sendBatch` with the first partition error of any response, drops the rest of that answer,
   * and does not wait for the other brokers' requests before failing. Its retry of a retriable
   * error resends the failed broker's whole request, partitions that were written included. So:
   * - The records are placed first (as our partitioner would) and sent as one `sendBatch` per
   *   leader broker on the idempotent producer, one per partition on the plain one, all at
   *   once: each `sendBatch` is one request, and a failure tells about that request alone.
   * - When a broker's request fails and it carried several partitions, each of them is sent
   *   again alone, the same messages in the same order: kafkajs gave the failed request's
   *   batches their sequence numbers back, so a batch that had been written goes out with the
   *   same sequence numbers, and the broker answers it as the duplicate it is, with its
   *   original offsets, rather than writing it again; a refused batch is refused again, or
   *   written. Each answer is that partition's own outcome. Until that is done no other send
   *   may take those sequence numbers (another batch of the same size would be taken for the
   *   duplicate and dropped): the idempotent producer runs one `sendEach` at a time. On the
   *   idempotent producer kafkajs' own retries are safe for the same reason; on the plain one a
   *   request is one partition, so a retry resends only what the broker refused.
   *
   * Not exact: when a leader moves between placing and sending, or during kafkajs' retries, a
   * request can carry partitions of a broker whose answer kafkajs then drops (if that answer
   * was a success, the partitions are resent and written twice); on the plain producer (acks
   * other than `all`), a failed `sendBatch` of records whose topic's metadata could not be read
   * fails each record, some of which may have been written (their errors name no partition,
   * so `Producer` does not resend them); and anywhere, a request that timed out or lost its
   * connection after kafkajs' retries may or may not have been written (its records fail with
   * `NETWORK_EXCEPTION` or `REQUEST_TIMED_OUT`; the idempotent producer is then replaced, see
   * `openIdempotent`).
   */
  const produceEach = (handle: ProducerHandle, records: ReadonlyArray<ProducerRecord>, acks: Acks) =>
    Effect.gen(function* () {
      const outcomes: Array<Exit.Exit<RecordMetadata, TransportError.TransportError>> = new Array(records.length)
      const now = yield* Clock.currentTimeMillis
      const sendable: Array<number> = []
      for (let index = 0; index < records.length; index++) {
        const refusal = refusalOf(records[index]!, "send")
        if (refusal === undefined) sendable.push(index)
        else outcomes[index] = Exit.fail(refusal)
      }
      if (sendable.length === 0) return outcomes
      const messages = records.map((record) => toMessage(record, now))
      yield* knowTopics(handle, records)

      /** Sends the records at these indices as one `sendBatch`; its failure, if it failed. */
      const sendSome = (indices: ReadonlyArray<number>, what: string) => {
        const some = indices.map((index) => records[index]!)
        const someMessages = indices.map((index) => messages[index]!)
        return Effect.exit(sendBatch(handle, handle.producer, some, someMessages, acks, what, "send")).pipe(
          Effect.map((exit) => {
            if (Exit.isFailure(exit)) return exit.cause
            const metadata = metadataOf(some, someMessages, exit.value, handle.placements)
            for (let position = 0; position < indices.length; position++) {
              outcomes[indices[position]!] = Exit.succeed(metadata[position]!)
            }
            return undefined
          }),
        )
      }
      const failAll = (indices: ReadonlyArray<number>, cause: Cause.Cause<TransportError.TransportError>, attributed: boolean) => {
        const error = Cause.findErrorOption(cause)
        for (const index of indices) {
          const { topic } = records[index]!
          const partition = attributed ? handle.placements.get(messages[index]!) : undefined
          outcomes[index] = error._tag === "Some"
            ? Exit.fail(TransportError.forRecord(error.value, topic, partition))
            : Exit.failCause(cause)
        }
      }
      /** One request's records; if it failed, each of its partitions again, alone. */
      const sendGroup = (group: ReadonlyArray<number>) =>
        Effect.gen(function* () {
          const failure = yield* sendSome(group, describeSend(group.map((index) => records[index]!)))
          if (failure === undefined) return
          // A record never placed was never sent: placing comes before any request.
          const partitions = new Map<string, Array<number>>()
          const unplaced: Array<number> = []
          for (const index of group) {
            const partition = handle.placements.get(messages[index]!)
            if (partition === undefined) {
              unplaced.push(index)
              continue
            }
            const key = `${records[index]!.topic}/${partition}`
            const same = partitions.get(key)
            if (same === undefined) partitions.set(key, [index])
            else same.push(index)
          }
          if (partitions.size + unplaced.length <= 1) return failAll(group, failure, true)
          if (!handle.idempotent) return failAll(group, failure, false)
          yield* Effect.forEach(partitions.values(), (same) => {
            const { topic } = records[same[0]!]!
            const partition = handle.placements.get(messages[same[0]!]!)!
            const what = `Cannot send ${same.length} record${same.length === 1 ? "" : "s"} to "${topic}" partition ${partition}`
            return Effect.map(sendSome(same, what), (cause) => cause === undefined ? undefined : failAll(same, cause, true))
          }, { concurrency: "unbounded", discard: true })
          // One at a time, in order: two of them may be for one partition.
          yield* Effect.forEach(unplaced, (index) =>
            Effect.map(sendSome([index], describeSend([records[index]!])), (cause) =>
              cause === undefined ? undefined : failAll([index], cause, true)), { discard: true })
        })

      const groups = groupsOf(handle, records, messages, sendable)
      if (groups.length === 1) yield* sendGroup(groups[0]!)
      else yield* Effect.forEach(groups, sendGroup, { concurrency: "unbounded", discard: true })
      return outcomes
    })

  /**
   * Reads the partitions and leaders of topics kafkajs has not placed a record for yet, with
   * the admin client, so that a first send is grouped by leader too. A topic that cannot be
   * read is left to kafkajs, which fails its records with its own error.
   */
  const knowTopics = (handle: ProducerHandle, records: ReadonlyArray<ProducerRecord>) =>
    Effect.suspend(() => {
      let unknown: Array<string> | undefined
      for (const { topic } of records) {
        if (!handle.metadata.has(topic) && !unknown?.includes(topic)) (unknown ??= []).push(topic)
      }
      if (unknown === undefined) return Effect.void
      return adminCalls.attempt("send", `Cannot read the metadata of ${unknown.map((topic) => `"${topic}"`).join(", ")}`, () =>
        admin.fetchTopicMetadata({ topics: unknown })).pipe(
          Effect.map(({ topics }) => {
            for (const { name, partitions } of topics) {
              if (partitions.length > 0 && !handle.metadata.has(name)) handle.metadata.set(name, partitions)
            }
          }),
          Effect.ignore,
        )
    })

  const sendEach = (
    records: ReadonlyArray<ProducerRecord>,
    sendOptions?: { readonly acks?: Acks | undefined },
  ) => {
    if (records.length === 0) return Effect.succeed([])
    const acks = sendOptions?.acks ?? "all"
    return acks === "all"
      ? idempotentLock.withPermits(1)(Effect.gen(function* () {
        if (idempotentStale) {
          const renewed = yield* Effect.exit(renewIdempotent)
          if (Exit.isFailure(renewed)) {
            return records.map((record) => Exit.failCause(Cause.map(renewed.cause, (error) => TransportError.forRecord(error, record.topic, undefined))))
          }
        }
        const outcomes = yield* produceEach(idempotent.handle, records, acks).pipe(
          // An interrupted send's requests go on in kafkajs: their outcome is unknown too.
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              idempotentStale = true
            })
          ),
        )
        // Renewed lazily, by the next send: the broker may be unreachable for a while.
        if (outcomes.some(unresolved)) idempotentStale = true
        return outcomes
      }))
      : Effect.flatMap(plainProducer, (handle) => produceEach(handle, records, acks)).pipe(
        // Opening the plain producer failed: every record's outcome.
        Effect.catch((error) => Effect.succeed(records.map((record) => Exit.fail(TransportError.forRecord(error, record.topic, undefined))))),
      )
  }

  const send = (
    records: ReadonlyArray<ProducerRecord>,
    sendOptions?: { readonly acks?: Acks | undefined },
  ) => Effect.flatMap(sendEach(records, sendOptions), allWritten)

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
      const created = yield* adminCalls.attempt("createTopic", `Cannot create topic "${spec.topic}"`, () =>
        admin.createTopics({
          topics: [{ topic: spec.topic, numPartitions: spec.partitions, configEntries }],
          waitForLeaders: false,
          timeout: requestTimeout,
        }))
      // kafkajs answers `false`, not an error, when the topic exists.
      if (!created) {
        return yield* Effect.fail(
          TransportError.make("TOPIC_ALREADY_EXISTS", "createTopic", `Topic "${spec.topic}" already exists`),
        )
      }
      yield* leadersElected(spec.topic, spec.partitions)
    })

  /**
   * Waits until a topic just created is ready: every partition has a leader that answers for it
   * (its offsets can be read). Not kafkajs' own wait for leaders: on a broker that has just
   * started it gives up with a retriable `UNKNOWN_TOPIC_OR_PARTITION`, so a topic that was
   * created was reported as not created (and creating it again as existing); and a leader in the
   * metadata may still answer `NOT_LEADER_OR_FOLLOWER` for a moment. Here a retriable answer
   * means "not yet", for as long as a request may take.
   */
  const leadersElected = (topic: string, partitions: number) => {
    const notYet = TransportError.make(
      "LEADER_NOT_AVAILABLE",
      "createTopic",
      `Topic "${topic}" was created, but its ${partitions} partitions had no leaders within ${requestTimeout} ms`,
    )
    const elected = adminCalls.attempt("createTopic", `Cannot read the metadata of topic "${topic}"`, () =>
      admin.fetchTopicMetadata({ topics: [topic] })).pipe(
        Effect.flatMap((metadata) => {
          const found = metadata.topics[0]?.partitions ?? []
          return found.length === partitions && found.every((partition) => partition.leader >= 0)
            ? adminCalls.attempt("createTopic", `Cannot read the offsets of topic "${topic}"`, () => admin.fetchTopicOffsets(topic))
            : Effect.fail(notYet)
        }),
      )
    return elected.pipe(
      Effect.retry({ while: (error) => error.retriable, schedule: Schedule.spaced("50 millis") }),
      Effect.timeoutOrElse({ duration: Duration.millis(requestTimeout), orElse: () => Effect.fail(notYet) }),
    )
  }

  const describeTopic = (topic: string) =>
    Effect.gen(function* () {
      const what = `Cannot describe topic "${topic}"`
      // Metadata first: it fails at once for a missing topic, where the offsets lookup retries.
      yield* adminCalls.attempt("describeTopic", what, () => admin.fetchTopicMetadata({ topics: [topic] }))
      const offsets = yield* adminCalls.attempt("describeTopic", what, () => admin.fetchTopicOffsets(topic))
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

  const listTopics = Effect.map(
    adminCalls.attempt("listTopics", "Cannot list the topics", () => admin.listTopics()),
    (names) => names.filter((name) => !internalTopics.has(name)).sort(),
  )

  /**
   * kafkajs lists by timestamp per topic, every partition at once, and answers the high watermark
   * where no record reaches the timestamp (and no record timestamp): that is read back as none.
   */
  const listOffsets = (queries: ReadonlyArray<OffsetQuery>) =>
    Effect.gen(function* () {
      const answers = new Array<ListedOffset>(queries.length)
      for (const topic of new Set(queries.map((query) => query.topic))) {
        const asked = queries.flatMap((query, index) => query.topic === topic ? [{ ...query, index }] : [])
        const described = yield* describeTopic(topic)
        const timestamps = new Set(asked.flatMap((query) => typeof query.at === "object" ? [query.at.timestamp] : []))
        const byTime = new Map<number, ReadonlyArray<{ readonly partition: number; readonly offset: string }>>()
        for (const timestamp of timestamps) {
          byTime.set(timestamp, yield* adminCalls.attempt(
            "listOffsets",
            `Cannot list the offsets of topic "${topic}" at ${new Date(timestamp).toISOString()}`,
            () => admin.fetchTopicOffsetsByTimestamp(topic, timestamp),
          ))
        }
        for (const query of asked) {
          const partition = described.partitions.find((p) => p.partition === query.partition)
          if (partition === undefined) {
            return yield* Effect.fail(
              TransportError.make("UNKNOWN_TOPIC_OR_PARTITION", "listOffsets", `Partition ${topic}/${query.partition} does not exist`),
            )
          }
          let offset: number | undefined
          if (query.at === "earliest") offset = partition.logStartOffset
          else if (query.at === "latest") offset = partition.highWatermark
          else {
            const found = Number(byTime.get(query.at.timestamp)?.find((p) => p.partition === query.partition)?.offset ?? -1)
            offset = found >= 0 && found < partition.highWatermark ? found : undefined
          }
          answers[query.index] = { topic, partition: query.partition, offset, timestamp: undefined }
        }
      }
      return answers
    })

  const committedOffsets = (group: string, topics?: ReadonlyArray<string>) =>
    Effect.map(
      adminCalls.attempt(
        "committedOffsets",
        `Cannot read the committed offsets of group "${group}"`,
        () => topics === undefined ? admin.fetchOffsets({ groupId: group }) : admin.fetchOffsets({ groupId: group, topics: [...topics] }),
      ),
      (answer): ReadonlyArray<CommittedOffset> =>
        answer
          .flatMap(({ topic, partitions }) =>
            partitions
              .filter(({ offset }) => Number(offset) >= 0)
              .map(({ partition, offset, metadata }) => ({ topic, partition, offset: Number(offset), metadata: metadata ?? "" }))
          )
          .sort((a, b) => a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition),
    )

  const environment: Environment = {
    kafka: (clientId, gate) => clientId === undefined && gate === undefined ? client : kafka(clientId, gate),
    admin,
    adminCalls,
    options,
    defaults,
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
    const readable = adminCalls.attempt(
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
      const first = yield* handle.calls.attempt("transaction", what, () => handle.producer.transaction())
      yield* handle.calls.attempt("transaction", what, () => first.abort())

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
        const txn = yield* handle.calls.attempt("begin", what, () => handle.producer.transaction())
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
              handle.calls.attempt("sendOffsets", `Cannot add offsets of group "${group}" to the transaction`, () =>
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
            Effect.andThen(handle.calls.attempt("commit", `Cannot commit the transaction of "${transactionalId}"`, () =>
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
              : handle.calls.attempt("abort", `Cannot abort the transaction of "${transactionalId}"`, () =>
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
    sendEach,
    subscribe: (subscribeOptions) => subscribe(environment, subscribeOptions),
    transactional,
    createTopic,
    describeTopic,
    listTopics,
    listOffsets,
    committedOffsets,
  })
})

/** Kafka's own topics, left out of `listTopics`. */
const internalTopics = new Set(["__consumer_offsets", "__transaction_state", "__share_group_state", "__cluster_metadata"])

/** Disconnects a kafkajs client, logging (not failing) when it cannot. */
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
 * `KAFKA_CLIENT_ID`, `KAFKA_SSL` (a boolean), `KAFKA_SSL_CA_FILE` (a PEM file of the CA
 * certificates to trust instead of the runtime's; it turns TLS on, and contradicts
 * `KAFKA_SSL=false`), and SASL as `KAFKA_SASL_MECHANISM` (`plain`, `scram-sha-256` or
 * `scram-sha-512`) with `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD` (read as `Redacted`,
 * required once a mechanism is set).
 *
 * @since 0.1.0
 * @category configuration
 */
export const config: Config.Config<Options> = KafkaEnv.config

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
 * what the environment cannot say (client certificates, retries, compression). What the
 * environment sets wins, except that `KAFKA_SSL=true` keeps TLS options given here, and
 * `KAFKA_SSL_CA_FILE` adds its CA to them.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromEnv = (
  options: Options = {},
): Layer.Layer<Transport, TransportError.TransportError | Config.ConfigError> =>
  layerConfig(Config.map(KafkaEnv.config, (fromEnv) => KafkaEnv.withEnv(options, fromEnv)))
