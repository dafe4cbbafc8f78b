/**
 * The embedded broker: Kafka's semantics in-process, and Partita's default transport.
 *
 * Topics are partitioned append-only logs; keyed records are placed by Kafka's own partitioner,
 * so a key lands in the same partition number here and on a real cluster. Consumer groups
 * join, leave, expire and rebalance eagerly (range or round-robin assignment); offsets are
 * committed with metadata; transactions write to the logs at once and become visible to
 * read-committed consumers on commit, together with the offsets they carry. Retention is by
 * record count.
 *
 * All state lives in the layer's scope: two layers are two independent brokers. Time comes from
 * Effect's `Clock`, so `TestClock` drives session expiry, retries and injected delays.
 *
 * `MemoryBroker`, provided by the same layer, is the test control panel (franz-go's `kfake` is
 * the model): fail or delay the next N calls of an operation, force a rebalance, list members.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { MemoryTransport, Transport } from "partita"
 *
 * const program = Effect.gen(function*() {
 *   const transport = yield* Transport.Transport
 *   yield* transport.createTopic({ topic: "greetings", partitions: 3 })
 *   yield* transport.send([{ topic: "greetings", key: null, value: new TextEncoder().encode("hi") }])
 * }).pipe(Effect.provide(MemoryTransport.layer()))
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, Layer, Queue, Schedule, Semaphore, Stream } from "effect"
import { partitionForKey } from "./internal/partitioner.ts"
import { Signal } from "./internal/signal.ts"
import {
  type Acks,
  type CommittedOffset,
  type ConsumerRecord,
  type GroupEvent,
  type ListedOffset,
  type OffsetCommit,
  type OffsetQuery,
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

/**
 * The operations faults can be injected into.
 *
 * @since 0.1.0
 * @category models
 */
export type Operation =
  | "send"
  | "fetch"
  | "commit"
  | "subscribe"
  | "heartbeat"
  | "createTopic"
  | "describeTopic"
  | "admin"
  | "transaction"

/**
 * @since 0.1.0
 * @category models
 */
export interface FaultOptions {
  /** How many calls it affects. Default 1; `Infinity` keeps firing. */
  readonly times?: number | undefined
  /**
   * Only calls made by this group member (its `memberId`): a hung process among healthy ones.
   * Applies to the calls a member makes (`fetch`, `commit`, `heartbeat`).
   */
  readonly member?: string | undefined
}

/**
 * The memory broker's control panel for tests.
 *
 * @since 0.1.0
 * @category services
 */
export class MemoryBroker extends Context.Service<MemoryBroker, {
  /**
   * The next `times` calls of `operation` fail with `code` (retriable or not, as Kafka says). A
   * heartbeat failed with `UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION` or `FENCED_INSTANCE_ID`
   * removes the member from its group at once, as a coordinator that fenced it would: its events
   * fail with that error and the rest of the group rebalances.
   */
  readonly failNext: (
    operation: Operation,
    code: TransportError.KafkaErrorName,
    options?: FaultOptions,
  ) => Effect.Effect<void>
  /** The next `times` calls of `operation` wait `delay` (on the `Clock`) before running. */
  readonly delayNext: (operation: Operation, delay: Duration.Input, options?: FaultOptions) => Effect.Effect<void>
  /** How many times `operation` was called, failed calls and internal retries included. */
  readonly calls: (operation: Operation) => Effect.Effect<number>
  /** Makes every member of the group give up its partitions and get a fresh assignment. */
  readonly rebalance: (group: string) => Effect.Effect<void>
  /** The group's member ids, sorted. */
  readonly members: (group: string) => Effect.Effect<ReadonlyArray<string>>
}>()("partita/MemoryBroker") {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Topics created when the broker starts. */
  readonly topics?: ReadonlyArray<TopicSpec> | undefined
  /** Keep at most this many records per partition (oldest dropped first). Default: unbounded. */
  readonly retentionRecords?: number | undefined
  /**
   * The largest record batch accepted, in bytes: a call's records for one partition, their
   * keys, values and headers. A topic's `max.message.bytes` config overrides it, as on Kafka,
   * where the broker's limit applies to a record batch too. Default 1 MiB, as Kafka.
   */
  readonly maxRecordBytes?: number | undefined
  /** How `send` and `commit` retry retriable errors before surfacing them. */
  readonly retry?: Schedule.Schedule<unknown, TransportError.TransportError> | undefined
  /** How partitions are spread over a group's members. Default `range`, as Kafka's Java client. */
  readonly assignor?: "range" | "round-robin" | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  maxRecordBytes: 1_048_588,
  retry: Schedule.max([Schedule.exponential("50 millis"), Schedule.recurs(5)]),
  assignor: "range" as const,
  maxBatchSize: 500,
  sessionTimeout: Duration.seconds(30),
  heartbeatInterval: Duration.seconds(3),
  rebalanceTimeout: Duration.seconds(60),
}

// ---------------------------------------------------------------------------------------------
// Logs

interface Txn {
  state: "open" | "committed" | "aborted"
}

interface Entry {
  readonly record: ConsumerRecord
  readonly txn: Txn | undefined
  /** A transaction marker: takes an offset, is never delivered. */
  readonly control: boolean
}

class PartitionLog {
  /** `entries[head + (offset - start)]` is the entry at `offset`; `head` grows as retention trims. */
  private entries: Array<Entry> = []
  private head = 0
  start = 0
  next = 0
  /** First offset of each open transaction with records here: the last stable offset is their minimum. */
  readonly openTransactions = new Map<Txn, number>()
  readonly changed = new Signal()

  readonly topic: string
  readonly partition: number
  constructor(topic: string, partition: number) {
    this.topic = topic
    this.partition = partition
  }

  append(entry: Omit<Entry, "record"> & { readonly record: Omit<ConsumerRecord, "offset"> }, retention: number): number {
    const offset = this.next++
    this.entries.push({ ...entry, record: { ...entry.record, offset } })
    if (entry.txn?.state === "open" && !this.openTransactions.has(entry.txn)) this.openTransactions.set(entry.txn, offset)
    const excess = this.next - this.start - retention
    if (excess > 0) {
      this.head += excess
      this.start += excess
      if (this.head > 1024 && this.head * 2 > this.entries.length) {
        this.entries = this.entries.slice(this.head)
        this.head = 0
      }
    }
    return offset
  }

  lastStableOffset(): number {
    let stable = this.next
    for (const first of this.openTransactions.values()) stable = Math.min(stable, first)
    return stable
  }

  /** The first record at or after `timestamp`, as ListOffsets finds it; undefined when every record is older. */
  offsetForTime(timestamp: number): { readonly offset: number; readonly timestamp: number } | undefined {
    for (let index = this.head; index < this.entries.length; index++) {
      const entry = this.entries[index]!
      if (!entry.control && entry.record.timestamp >= timestamp) {
        return { offset: entry.record.offset, timestamp: entry.record.timestamp }
      }
    }
    return undefined
  }

  /** Up to `max` deliverable records from `from`, and the position after what was scanned. */
  read(from: number, max: number, committedOnly: boolean): { records: Array<ConsumerRecord>; position: number } {
    const limit = committedOnly ? this.lastStableOffset() : this.next
    const records: Array<ConsumerRecord> = []
    let position = from
    while (position < limit && records.length < max) {
      const entry = this.entries[this.head + position - this.start]!
      position++
      if (entry.control || (committedOnly && entry.txn?.state === "aborted")) continue
      records.push(entry.record)
    }
    return { records, position }
  }
}

interface Topic {
  readonly name: string
  readonly partitions: ReadonlyArray<PartitionLog>
  readonly config: Readonly<Record<string, string>>
  /** The topic's `max.message.bytes`, else the broker's `maxRecordBytes`. */
  readonly maxMessageBytes: number
  roundRobin: number
}

// ---------------------------------------------------------------------------------------------
// Groups

interface Claim {
  readonly log: PartitionLog
  position: number
  paused: boolean
  ended: boolean
}

interface Member {
  readonly id: string
  readonly options: SubscribeOptions
  readonly events: Queue.Queue<GroupEvent, TransportError.TransportError | Cause.Done>
  readonly claims: Map<string, Claim>
  lastHeartbeat: number
  inGroup: boolean
}

interface Group {
  readonly id: string
  readonly members: Map<string, Member>
  readonly offsets: Map<string, CommittedOffset>
  /** Membership changes and rebalances run one at a time. */
  readonly lock: Semaphore.Semaphore
  generation: number
  nextMemberId: number
}

/** What one send wrote: each record's metadata, or its error. */
interface Written {
  readonly metadata: Array<RecordMetadata | undefined>
  readonly errors: Array<TransportError.TransportError | undefined> | undefined
}

const keyOf = (tp: TopicPartition): string => `${tp.topic}/${tp.partition}`

/** Heartbeat answers that mean the member is no longer in the group. */
const fencedOut: ReadonlySet<string> = new Set(["UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "FENCED_INSTANCE_ID"])

const maxMessageBytesOf = (config: TopicSpec["config"], fallback: number): number => {
  const configured = Number(config?.["max.message.bytes"])
  return Number.isInteger(configured) && configured > 0 ? configured : fallback
}

const byteLength = (record: ProducerRecord): number =>
  (record.key?.length ?? 0) + (record.value?.length ?? 0) +
  (record.headers ?? []).reduce((sum, header) => sum + header.key.length + (header.value?.length ?? 0), 0)

/**
 * Assigns `partitions` to `members` (sorted by id), as Kafka's range and round-robin assignors do.
 */
const assign = (
  assignor: "range" | "round-robin",
  members: ReadonlyArray<Member>,
  topics: ReadonlyMap<string, Topic>,
): Map<string, Array<TopicPartition>> => {
  const result = new Map(members.map((member) => [member.id, [] as Array<TopicPartition>]))
  const subscribed = new Set(members.flatMap((member) => member.options.topics))
  const names = [...subscribed].filter((name) => topics.has(name)).sort()
  if (assignor === "range") {
    for (const name of names) {
      const consumers = members.filter((member) => member.options.topics.includes(name))
      const count = topics.get(name)!.partitions.length
      const per = Math.floor(count / consumers.length)
      const extra = count % consumers.length
      let partition = 0
      consumers.forEach((member, index) => {
        const take = per + (index < extra ? 1 : 0)
        for (let i = 0; i < take; i++) result.get(member.id)!.push({ topic: name, partition: partition++ })
      })
    }
    return result
  }
  let turn = 0
  for (const name of names) {
    for (let partition = 0; partition < topics.get(name)!.partitions.length; partition++) {
      // The next member, in turn, that subscribes to this topic.
      for (let tried = 0; tried < members.length; tried++) {
        const member = members[turn++ % members.length]!
        if (member.options.topics.includes(name)) {
          result.get(member.id)!.push({ topic: name, partition })
          break
        }
      }
    }
  }
  return result
}

// ---------------------------------------------------------------------------------------------
// The broker

interface Fault {
  readonly error: TransportError.KafkaErrorName | undefined
  readonly delay: Duration.Duration | undefined
  readonly member: string | undefined
  remaining: number
}

/**
 * Builds an embedded broker in the current scope and returns its two faces.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const brokerScope = yield* Effect.scope
  const retention = options.retentionRecords ?? Number.POSITIVE_INFINITY
  const maxRecordBytes = options.maxRecordBytes ?? defaults.maxRecordBytes
  const retry = options.retry ?? defaults.retry
  const assignor = options.assignor ?? defaults.assignor

  const topics = new Map<string, Topic>()
  const groups = new Map<string, Group>()
  const producerEpochs = new Map<string, { epoch: number; open: Transaction | undefined }>()
  const faults = new Map<Operation, Array<Fault>>()
  const callCounts = new Map<Operation, number>()

  /** Counts the call, then applies the first pending fault for the operation, if any. */
  const enter = (operation: Operation, member?: string): Effect.Effect<void, TransportError.TransportError> =>
    Effect.suspend(() => {
      callCounts.set(operation, (callCounts.get(operation) ?? 0) + 1)
      const pending = faults.get(operation)
      const index = pending?.findIndex((fault) => fault.member === undefined || fault.member === member) ?? -1
      if (index < 0) return Effect.void
      const fault = pending![index]!
      if (--fault.remaining <= 0) pending!.splice(index, 1)
      const failure = fault.error === undefined
        ? Effect.void
        : Effect.fail(TransportError.make(fault.error, operation, `Injected ${fault.error} into ${operation}`))
      return fault.delay === undefined ? failure : Effect.andThen(Effect.sleep(fault.delay), failure)
    })

  const addFault = (operation: Operation, fault: Fault) =>
    Effect.sync(() => {
      const pending = faults.get(operation) ?? []
      pending.push(fault)
      faults.set(operation, pending)
    })

  const withRetry = <A>(effect: Effect.Effect<A, TransportError.TransportError>) =>
    Effect.retry(effect, { schedule: retry, while: (error) => error.retriable })

  const topicOrFail = (name: string, operation: string) => {
    const topic = topics.get(name)
    return topic === undefined
      ? Effect.fail(TransportError.make("UNKNOWN_TOPIC_OR_PARTITION", operation, `Topic "${name}" does not exist`))
      : Effect.succeed(topic)
  }

  const createTopic = (spec: TopicSpec) =>
    Effect.andThen(
      enter("createTopic"),
      Effect.suspend(() => {
        if (topics.has(spec.topic)) {
          return Effect.fail(
            TransportError.make("TOPIC_ALREADY_EXISTS", "createTopic", `Topic "${spec.topic}" already exists`),
          )
        }
        if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
          return Effect.fail(
            TransportError.make(
              "INVALID_PARTITIONS",
              "createTopic",
              `Topic "${spec.topic}" needs a whole number of partitions of at least 1, got ${spec.partitions}`,
            ),
          )
        }
        if (!/^[a-zA-Z0-9._-]{1,249}$/.test(spec.topic) || spec.topic === "." || spec.topic === "..") {
          return Effect.fail(
            TransportError.make(
              "INVALID_TOPIC_EXCEPTION",
              "createTopic",
              `Topic name "${spec.topic}" is not valid: use 1 to 249 of a-z, A-Z, 0-9, ".", "_" and "-"`,
            ),
          )
        }
        topics.set(spec.topic, {
          name: spec.topic,
          partitions: Array.from({ length: spec.partitions }, (_, partition) => new PartitionLog(spec.topic, partition)),
          config: { ...spec.config },
          maxMessageBytes: maxMessageBytesOf(spec.config, maxRecordBytes),
          roundRobin: 0,
        })
        return Effect.void
      }),
    )

  const describeTopic = (name: string) =>
    Effect.andThen(
      enter("describeTopic"),
      Effect.map(topicOrFail(name, "describeTopic"), (topic): TopicDescription => ({
        topic: name,
        partitions: topic.partitions.map((log) => ({
          partition: log.partition,
          logStartOffset: log.start,
          highWatermark: log.next,
        })),
      })),
    )

  const listTopics = Effect.andThen(enter("admin"), Effect.sync(() => [...topics.keys()].sort()))

  const listOffsets = (queries: ReadonlyArray<OffsetQuery>) =>
    Effect.andThen(
      enter("admin"),
      Effect.forEach(queries, (query): Effect.Effect<ListedOffset, TransportError.TransportError> => {
        const log = topics.get(query.topic)?.partitions[query.partition]
        if (log === undefined) {
          return Effect.fail(
            TransportError.make("UNKNOWN_TOPIC_OR_PARTITION", "listOffsets", `Partition ${query.topic}/${query.partition} does not exist`),
          )
        }
        const { topic, partition, at } = query
        if (at === "earliest") return Effect.succeed({ topic, partition, offset: log.start, timestamp: undefined })
        if (at === "latest") return Effect.succeed({ topic, partition, offset: log.next, timestamp: undefined })
        const found = log.offsetForTime(at.timestamp)
        return Effect.succeed({ topic, partition, offset: found?.offset, timestamp: found?.timestamp })
      }),
    )

  const committedOffsets = (groupId: string, only?: ReadonlyArray<string>) =>
    Effect.andThen(
      enter("admin"),
      Effect.sync(() =>
        [...(groups.get(groupId)?.offsets.values() ?? [])]
          .filter((offset) => only === undefined || only.includes(offset.topic))
          .sort((a, b) => a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition)
      ),
    )

  /**
   * Where each record goes, and what is refused, before anything is written. As on Kafka, a
   * call's records for one partition are one batch, and a batch over its topic's limit (one
   * record over it, or all of them together) is refused whole with `MESSAGE_TOO_LARGE`; other
   * partitions are not affected. A
   * record for a missing topic or partition fails alone (`UNKNOWN_TOPIC_OR_PARTITION`).
   */
  const place = (records: ReadonlyArray<ProducerRecord>, operation: string) => {
    const logs: Array<PartitionLog | undefined> = new Array(records.length)
    let errors: Array<TransportError.TransportError | undefined> | undefined
    // No partition's batch can be over its topic's limit when the whole call is not over the
    // smallest: the common case skips counting per partition.
    let total = 0
    let smallestLimit = Number.POSITIVE_INFINITY
    for (let index = 0; index < records.length; index++) {
      const record = records[index]!
      const topic = topics.get(record.topic)
      if (topic === undefined) {
        ;(errors ??= new Array(records.length))[index] = TransportError.forRecord(
          TransportError.make("UNKNOWN_TOPIC_OR_PARTITION", operation, `Topic "${record.topic}" does not exist`),
          record.topic,
          undefined,
        )
        continue
      }
      const count = topic.partitions.length
      const partition = record.partition ??
        (record.key === null ? topic.roundRobin++ % count : partitionForKey(record.key, count))
      const log = topic.partitions[partition]
      if (log === undefined) {
        ;(errors ??= new Array(records.length))[index] = TransportError.forRecord(
          TransportError.make(
            "UNKNOWN_TOPIC_OR_PARTITION",
            operation,
            `Partition ${partition} of "${record.topic}" does not exist (it has ${count})`,
          ),
          record.topic,
          undefined,
        )
        continue
      }
      logs[index] = log
      total += byteLength(record)
      if (topic.maxMessageBytes < smallestLimit) smallestLimit = topic.maxMessageBytes
    }
    if (total > smallestLimit) errors = refuseOversized(records, logs, errors, operation)
    return { logs, errors }
  }

  /** Refuses, whole, each partition's batch that is over its topic's limit (as Kafka does). */
  const refuseOversized = (
    records: ReadonlyArray<ProducerRecord>,
    logs: Array<PartitionLog | undefined>,
    errors: Array<TransportError.TransportError | undefined> | undefined,
    operation: string,
  ) => {
    // Per partition: its batch's bytes, its largest record and its record count.
    const sizes = new Map<PartitionLog, { bytes: number; largest: number; records: number }>()
    for (let index = 0; index < records.length; index++) {
      const log = logs[index]
      if (log === undefined) continue
      const size = byteLength(records[index]!)
      const batch = sizes.get(log)
      if (batch === undefined) sizes.set(log, { bytes: size, largest: size, records: 1 })
      else {
        batch.bytes += size
        batch.largest = Math.max(batch.largest, size)
        batch.records++
      }
    }
    const refusals = new Map<PartitionLog, TransportError.TransportError>()
    for (const [log, { bytes, largest, records: count }] of sizes) {
      const limit = topics.get(log.topic)!.maxMessageBytes
      if (bytes <= limit) continue
      const what = largest > limit
        ? `a record of ${largest} bytes is over the limit of ${limit}`
        : `its ${bytes} bytes are over the limit of ${limit}`
      refusals.set(
        log,
        TransportError.forRecord(
          TransportError.make(
            "MESSAGE_TOO_LARGE",
            operation,
            `Record batch for "${log.topic}" partition ${log.partition} refused: ${what} (max.message.bytes); none of its ${count} record${count === 1 ? " was" : "s were"} written`,
          ),
          log.topic,
          log.partition,
        ),
      )
    }
    if (refusals.size === 0) return errors
    const refused = errors ?? new Array<TransportError.TransportError | undefined>(records.length)
    for (let index = 0; index < records.length; index++) {
      const refusal = logs[index] === undefined ? undefined : refusals.get(logs[index]!)
      if (refusal !== undefined) {
        refused[index] = refusal
        logs[index] = undefined
      }
    }
    return refused
  }

  /** Appends the placed records (the ones without an error), in the order given. */
  const append = (
    records: ReadonlyArray<ProducerRecord>,
    logs: ReadonlyArray<PartitionLog | undefined>,
    txn: Txn | undefined,
    now: number,
  ): Array<RecordMetadata | undefined> => {
    const touched = new Set<PartitionLog>()
    const metadata: Array<RecordMetadata | undefined> = new Array(records.length)
    for (let index = 0; index < records.length; index++) {
      const log = logs[index]
      if (log === undefined) continue
      const record = records[index]!
      const timestamp = record.timestamp ?? now
      const offset = log.append({
        record: {
          topic: record.topic,
          partition: log.partition,
          key: record.key,
          value: record.value,
          headers: record.headers ?? [],
          timestamp,
        },
        txn,
        control: false,
      }, retention)
      touched.add(log)
      metadata[index] = { topic: record.topic, partition: log.partition, offset, timestamp }
    }
    for (const log of touched) log.changed.notify()
    return metadata
  }

  /** A transaction's send: every record is checked first, so a bad call writes nothing. */
  const write = (records: ReadonlyArray<ProducerRecord>, txn: Txn | undefined, operation: string) =>
    Effect.suspend(() => {
      const { logs, errors } = place(records, operation)
      const error = errors?.find((error) => error !== undefined)
      if (error !== undefined) return Effect.fail(error)
      return Effect.map(Clock.currentTimeMillis, (now) => append(records, logs, txn, now) as Array<RecordMetadata>)
    })

  /**
   * One attempt at all of `records`: writes what can be written, and says what was refused. An
   * injected fault fails it whole, before anything is written, and `retry` runs it again.
   */
  const writeAll = (records: ReadonlyArray<ProducerRecord>): Effect.Effect<Written, TransportError.TransportError> => {
    const attempt: Effect.Effect<Written, TransportError.TransportError> = Effect.andThen(
      enter("send"),
      Effect.map(Clock.currentTimeMillis, (now) => {
        const placed = place(records, "send")
        return { metadata: append(records, placed.logs, undefined, now), errors: placed.errors }
      }),
    )
    return Effect.retry(attempt, { schedule: retry, while: (error) => error.retriable })
  }

  /**
   * The records a retriable error refused (a topic that does not exist yet), tried again alone
   * on the `retry` schedule, so that nothing written is written twice. Updates `written`.
   */
  const retryRefused = (records: ReadonlyArray<ProducerRecord>, written: Written): Effect.Effect<Written> =>
    Effect.suspend(() => {
      const { metadata, errors } = written
      let pending = records.flatMap((_, index) => errors![index]?.retriable === true ? [index] : [])
      if (pending.length === 0) return Effect.succeed(written)
      const again = Effect.andThen(
        enter("send"),
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const batch = pending.map((index) => records[index]!)
          const placed = place(batch, "send")
          const appended = append(batch, placed.logs, undefined, now)
          const left: Array<number> = []
          pending.forEach((index, position) => {
            metadata[index] = appended[position]
            errors![index] = placed.errors?.[position]
            if (errors![index]?.retriable === true) left.push(index)
          })
          pending = left
          return pending.length === 0 ? Effect.void : Effect.fail(errors![pending[0]!]!)
        }),
      )
      return Effect.retry(again, { schedule: retry, while: (error) => error.retriable }).pipe(
        // Retries spent: each record still pending keeps its last (retriable) refusal.
        Effect.ignore,
        Effect.as(written),
      )
    })

  const sendEach = (records: ReadonlyArray<ProducerRecord>, _options?: { readonly acks?: Acks | undefined }) =>
    Effect.matchEffect(writeAll(records), {
      onFailure: (error) => Effect.succeed(records.map(() => Exit.fail(error))),
      onSuccess: (first) =>
        Effect.map(first.errors === undefined ? Effect.succeed(first) : retryRefused(records, first), ({ errors, metadata }) => {
          const outcomes: Array<Exit.Exit<RecordMetadata, TransportError.TransportError>> = new Array(records.length)
          for (let index = 0; index < records.length; index++) {
            const error = errors?.[index]
            outcomes[index] = error === undefined ? Exit.succeed(metadata[index]!) : Exit.fail(error)
          }
          return outcomes
        }),
    })

  const send = (records: ReadonlyArray<ProducerRecord>, _options?: { readonly acks?: Acks | undefined }) =>
    Effect.flatMap(writeAll(records), (first) =>
      first.errors === undefined
        ? Effect.succeed(first.metadata as ReadonlyArray<RecordMetadata>)
        : Effect.flatMap(retryRefused(records, first), ({ errors }) => Effect.fail(errors!.find((error) => error !== undefined)!)))

  // ---- consumer groups ------------------------------------------------------------------------

  const groupFor = (id: string): Group => {
    let group = groups.get(id)
    if (group === undefined) {
      group = {
        id,
        members: new Map(),
        offsets: new Map(),
        lock: Semaphore.makeUnsafe(1),
        generation: 0,
        nextMemberId: 1,
      }
      groups.set(id, group)
    }
    return group
  }

  const endClaims = (member: Member) => {
    for (const claim of member.claims.values()) {
      claim.ended = true
      claim.log.changed.notify()
    }
  }

  /** Takes a member out of the group: its streams end, its events end (or fail), its commits are refused. */
  const remove = (group: Group, member: Member, failure: TransportError.TransportError | undefined) => {
    if (!member.inGroup) return
    member.inGroup = false
    group.members.delete(member.id)
    endClaims(member)
    member.claims.clear()
    if (failure === undefined) Queue.endUnsafe(member.events)
    else Queue.failCauseUnsafe(member.events, Cause.fail(failure))
  }

  /**
   * An eager rebalance: every member gives up everything, acknowledges, and gets a new assignment.
   * Runs under the group lock.
   */
  const rebalance = (group: Group): Effect.Effect<void> =>
    Effect.gen(function*() {
      const revoking = [...group.members.values()].filter((member) => member.claims.size > 0)
      const acknowledged = yield* Effect.forEach(revoking, (member) =>
        Effect.gen(function*() {
          const done = yield* Deferred.make<void>()
          const partitions = [...member.claims.values()].map(({ log }) => ({
            topic: log.topic,
            partition: log.partition,
          }))
          endClaims(member)
          Queue.offerUnsafe(member.events, { _tag: "Revoked", partitions, acknowledge: Deferred.succeed(done, void 0).pipe(Effect.asVoid) })
          const timeout = member.options.rebalanceTimeout ?? defaults.rebalanceTimeout
          return Deferred.await(done).pipe(
            Effect.timeoutOption(timeout),
            Effect.map((acked) => ({ member, acked: acked._tag === "Some" })),
          )
        }))
      const outcomes = yield* Effect.all(acknowledged, { concurrency: "unbounded" })
      for (const { member, acked } of outcomes) {
        if (acked) member.claims.clear()
        else {
          remove(
            group,
            member,
            TransportError.make(
              "UNKNOWN_MEMBER_ID",
              "subscribe",
              `Member ${member.id} was removed from group "${group.id}": it did not acknowledge a revocation within the rebalance timeout`,
            ),
          )
        }
      }
      group.generation++
      const members = [...group.members.values()].sort((a, b) => a.id < b.id ? -1 : 1)
      const plan = assign(assignor, members, topics)
      for (const member of members) {
        const claims = (plan.get(member.id) ?? []).map((tp): PartitionClaim => {
          const log = topics.get(tp.topic)!.partitions[tp.partition]!
          const committed = group.offsets.get(keyOf(tp))?.offset
          const reset = member.options.reset === "latest" ? log.next : log.start
          const claim: Claim = { log, position: committed ?? reset, paused: false, ended: false }
          member.claims.set(keyOf(tp), claim)
          return { ...tp, startOffset: claim.position, records: recordsOf(member, claim) }
        })
        Queue.offerUnsafe(member.events, { _tag: "Assigned", claims })
      }
    })

  /** Queues a rebalance of the group; rebalances of one group run one after another. */
  const startRebalance = (group: Group) =>
    Effect.asVoid(Effect.forkIn(
      group.lock.withPermits(1)(Effect.suspend(() => group.members.size > 0 ? rebalance(group) : Effect.void)),
      brokerScope,
    ))

  const recordsOf = (member: Member, claim: Claim): Stream.Stream<ReadonlyArray<ConsumerRecord>, TransportError.TransportError> => {
    const maxBatch = member.options.maxBatchSize ?? defaults.maxBatchSize
    const committedOnly = member.options.isolation !== "read-uncommitted"
    const pull: Effect.Effect<readonly [ReadonlyArray<ConsumerRecord>], TransportError.TransportError | Cause.Done> =
      Effect.suspend(() => {
        if (claim.ended) return Cause.done()
        if (claim.paused) return Effect.andThen(claim.log.changed.wait, pull)
        // Retention may have removed records this claim had not read yet: reset, as Kafka does.
        if (claim.position < claim.log.start) {
          claim.position = member.options.reset === "latest" ? claim.log.next : claim.log.start
        }
        const waitForMore = claim.log.changed.wait
        const { records, position } = claim.log.read(claim.position, maxBatch, committedOnly)
        claim.position = position
        if (records.length === 0) return Effect.andThen(waitForMore, pull)
        return Effect.succeed([records] as const)
      })
    // Retriable fetch errors are retried here, as a Kafka client does; the rest end the stream.
    const fetch = enter("fetch", member.id).pipe(
      Effect.retry({ schedule: retry, while: (error) => error.retriable }),
      Effect.andThen(pull),
    )
    return Stream.fromPull(Effect.succeed(fetch))
  }

  const subscribe = (options: SubscribeOptions) =>
    Effect.gen(function*() {
      yield* withRetry(enter("subscribe"))
      for (const name of options.topics) yield* topicOrFail(name, "subscribe")
      const group = groupFor(options.group)
      const events = yield* Queue.unbounded<GroupEvent, TransportError.TransportError | Cause.Done>()
      const member: Member = {
        id: `${options.clientId ?? "partita"}-${group.nextMemberId++}`,
        options,
        events,
        claims: new Map(),
        lastHeartbeat: yield* Clock.currentTimeMillis,
        inGroup: true,
      }
      // Joining and leaving return at once; the rebalance they start runs in the broker's scope,
      // as on a Kafka coordinator, so no caller waits on another member's acknowledgement.
      group.members.set(member.id, member)
      yield* startRebalance(group)
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          if (!member.inGroup) return Effect.void
          remove(group, member, undefined)
          return startRebalance(group)
        })
      )
      yield* heartbeats(group, member)
      return subscription(group, member)
    })

  /**
   * Heartbeats on their own fiber, and the coordinator's session check: a member whose
   * heartbeats stop (an injected fault stands for a hung process) is removed after the session
   * timeout and the rest of the group rebalances.
   */
  const heartbeats = (group: Group, member: Member) => {
    const interval = member.options.heartbeatInterval ?? defaults.heartbeatInterval
    const session = Duration.toMillis(member.options.sessionTimeout ?? defaults.sessionTimeout)
    const beat = enter("heartbeat", member.id).pipe(
      Effect.andThen(Clock.currentTimeMillis),
      Effect.map((now) => {
        member.lastHeartbeat = now
      }),
      // The coordinator answering that the member is out (an injected fault stands for a
      // fenced or forgotten member) removes it at once; other errors only miss a beat.
      Effect.catch((error) => fencedOut.has(error.code) ? fence(error) : Effect.void),
    )
    const fence = (error: TransportError.TransportError) =>
      Effect.suspend(() => {
        if (!member.inGroup) return Effect.void
        remove(group, member, TransportError.make(error.code, "heartbeat", `Member ${member.id} was removed from group "${group.id}": ${error.message}`))
        return startRebalance(group)
      })
    const expire = Effect.suspend(() => {
      if (!member.inGroup) return Effect.void
      remove(
        group,
        member,
        TransportError.make(
          "UNKNOWN_MEMBER_ID",
          "heartbeat",
          `Member ${member.id} was removed from group "${group.id}": no heartbeat within the session timeout of ${session} ms`,
        ),
      )
      return startRebalance(group)
    })
    const watch: Effect.Effect<void> = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const left = member.lastHeartbeat + session - now
      if (left >= 0) {
        yield* Effect.sleep(Duration.millis(left + 1))
        return yield* watch
      }
      yield* expire
    })
    return Effect.all([
      Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep(interval), beat))),
      Effect.forkScoped(watch),
    ])
  }

  const owned = (member: Member, tp: TopicPartition, operation: string) => {
    const claim = member.claims.get(keyOf(tp))
    return claim === undefined || !member.inGroup
      ? Effect.fail(
        TransportError.make(
          member.inGroup ? "ILLEGAL_GENERATION" : "UNKNOWN_MEMBER_ID",
          operation,
          `Member ${member.id} of group "${member.options.group}" does not hold ${keyOf(tp)}`,
        ),
      )
      : Effect.succeed(claim)
  }

  const subscription = (group: Group, member: Member): Subscription => ({
    group: group.id,
    memberId: member.id,
    events: Stream.fromQueue(member.events),
    commit: (offsets) =>
      withRetry(Effect.andThen(
        enter("commit", member.id),
        Effect.forEach(offsets, (commit) =>
          Effect.map(owned(member, commit, "commit"), () => {
            group.offsets.set(keyOf(commit), {
              topic: commit.topic,
              partition: commit.partition,
              offset: commit.offset,
              metadata: commit.metadata ?? "",
            })
          }), { discard: true }),
      )),
    committed: (partitions) =>
      Effect.sync(() =>
        partitions.flatMap((tp) => {
          const committed = group.offsets.get(keyOf(tp))
          return committed === undefined ? [] : [committed]
        })
      ),
    pause: (partitions) => setPaused(member, partitions, true),
    resume: (partitions) => setPaused(member, partitions, false),
    seek: (tp, offset) =>
      Effect.map(owned(member, tp, "seek"), (claim) => {
        claim.position = offset
        claim.log.changed.notify()
      }),
  })

  const setPaused = (member: Member, partitions: ReadonlyArray<TopicPartition>, paused: boolean) =>
    Effect.sync(() => {
      for (const tp of partitions) {
        const claim = member.claims.get(keyOf(tp))
        if (claim === undefined) continue
        claim.paused = paused
        claim.log.changed.notify()
      }
    })

  // ---- transactions ---------------------------------------------------------------------------

  const transactional = (transactionalId: string) =>
    Effect.gen(function*() {
      yield* withRetry(enter("transaction"))
      const previous = producerEpochs.get(transactionalId)
      // A new producer for the id fences the old one and aborts what it left open, as Kafka does.
      if (previous?.open !== undefined) yield* Effect.ignore(previous.open.abort)
      const epoch = (previous?.epoch ?? 0) + 1
      const state = { epoch, open: undefined as Transaction | undefined }
      producerEpochs.set(transactionalId, state)

      const fenced = (operation: string) =>
        Effect.suspend(() =>
          producerEpochs.get(transactionalId) !== state
            ? Effect.fail(
              TransportError.make(
                "PRODUCER_FENCED",
                operation,
                `Producer for transactional id "${transactionalId}" was fenced by a newer one`,
              ),
            )
            : Effect.void
        )

      const begin = Effect.gen(function*() {
        yield* fenced("begin")
        yield* enter("transaction")
        if (state.open !== undefined) {
          return yield* Effect.fail(
            TransportError.make(
              "INVALID_TXN_STATE",
              "begin",
              `Transactional id "${transactionalId}" already has a transaction open`,
            ),
          )
        }
        const txn: Txn = { state: "open" }
        const logs = new Set<PartitionLog>()
        const offsets = new Map<string, Array<OffsetCommit>>()
        const isOpen = (operation: string) =>
          Effect.andThen(
            fenced(operation),
            Effect.suspend(() =>
              txn.state === "open" ? Effect.void : Effect.fail(
                TransportError.make("INVALID_TXN_STATE", operation, `The transaction was already ${txn.state}`),
              )
            ),
          )
        const finish = (outcome: "committed" | "aborted") =>
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            txn.state = outcome
            state.open = undefined
            for (const log of logs) {
              log.openTransactions.delete(txn)
              log.append({
                record: { topic: log.topic, partition: log.partition, key: null, value: null, headers: [], timestamp: now },
                txn,
                control: true,
              }, retention)
              log.changed.notify()
            }
            if (outcome === "committed") {
              for (const [groupId, commits] of offsets) {
                const group = groupFor(groupId)
                for (const commit of commits) {
                  group.offsets.set(keyOf(commit), {
                    topic: commit.topic,
                    partition: commit.partition,
                    offset: commit.offset,
                    metadata: commit.metadata ?? "",
                  })
                }
              }
            }
          })
        const transaction: Transaction = {
          send: (records) =>
            Effect.andThen(
              isOpen("send"),
              Effect.tap(write(records, txn, "send"), (metadata) =>
                Effect.sync(() => {
                  for (const { topic, partition } of metadata) logs.add(topics.get(topic)!.partitions[partition]!)
                })),
            ),
          sendOffsets: (groupId, commits) =>
            Effect.andThen(
              isOpen("sendOffsets"),
              Effect.sync(() => {
                offsets.set(groupId, [...(offsets.get(groupId) ?? []), ...commits])
              }),
            ),
          commit: Effect.andThen(isOpen("commit"), Effect.andThen(enter("transaction"), finish("committed"))),
          // Aborting a fenced producer's transaction is what fencing already did: not an error.
          abort: Effect.suspend(() => txn.state === "open" ? finish("aborted") : Effect.void),
        }
        state.open = transaction
        return transaction
      })

      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => state.open === undefined ? Effect.void : Effect.ignore(state.open.abort))
      )
      return { transactionalId, begin } satisfies TransactionalProducer
    })

  for (const spec of options.topics ?? []) yield* Effect.orDie(createTopic(spec))

  const transport = Transport.of({
    name: "memory",
    features: { transactions: true, faultInjection: true, clockDriven: true },
    telemetry: { "server.address": "memory" },
    send,
    sendEach,
    subscribe,
    transactional,
    createTopic,
    describeTopic,
    listTopics,
    listOffsets,
    committedOffsets,
  })

  const broker = MemoryBroker.of({
    failNext: (operation, code, faultOptions) =>
      addFault(operation, {
        error: code,
        delay: undefined,
        member: faultOptions?.member,
        remaining: faultOptions?.times ?? 1,
      }),
    delayNext: (operation, delay, faultOptions) =>
      addFault(operation, {
        error: undefined,
        delay: Duration.fromInputUnsafe(delay),
        member: faultOptions?.member,
        remaining: faultOptions?.times ?? 1,
      }),
    calls: (operation) => Effect.sync(() => callCounts.get(operation) ?? 0),
    rebalance: (groupId) =>
      Effect.suspend(() => {
        const group = groups.get(groupId)
        return group === undefined ? Effect.void : group.lock.withPermits(1)(rebalance(group))
      }),
    members: (groupId) => Effect.sync(() => [...(groups.get(groupId)?.members.keys() ?? [])].sort()),
  })

  return { transport, broker }
})

/**
 * An embedded broker as the `Transport`, with its `MemoryBroker` control panel.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Transport | MemoryBroker> =>
  Layer.effectContext(
    Effect.map(make(options), ({ broker, transport }) =>
      Context.make(Transport, transport).pipe(Context.add(MemoryBroker, broker))),
  )
