/**
 * Dead-letter replay: the letters of a dead-letter topic sent back to the topics they came from
 * (or to another), once the cause that put them there is fixed.
 *
 * A letter is what an actor's `"dead-letter"` policy writes: the record's key, value and headers,
 * plus `partita.dlq.*` headers saying where it came from and why (`internal/deadLetter.ts`).
 * `replay` re-publishes each letter with those headers stripped and a `partita.replayed-from`
 * header (`<dead-letter topic>/<partition>@<offset>`) instead, to its source topic and partition,
 * or to `to` (placed by its key there).
 *
 * A replay is a job, not a daemon: it reads the dead-letter topic up to its end as it was when
 * the replay started, then returns a {@link Report}. Its progress is a consumer group of its own
 * (`partita-replay-<topic>` unless given), and each batch of letters is moved in one Kafka
 * transaction with that group's offsets (read-committed, through `Transport.transactional`), so
 * each letter is moved exactly once, even when a replay is killed midway and run again: what the
 * killed one had not committed is aborted when the next one opens its producer, and its offsets
 * with it. The letters themselves stay in the dead-letter topic, as Kafka topics keep records.
 *
 * Letters a filter (`where`, `since`) leaves out are passed over, and so are letters that cannot
 * be moved (no `partita.dlq.*` headers, a source topic that no longer exists, a value cut to fit
 * the dead-letter topic): each of those is
 * in the report with its offset, never a failure of the replay. Both are passed for the group
 * too: a later replay with another filter, or once the source topic is back, needs a `group` of
 * its own (and `since`, to start near them).
 *
 * It runs on every transport with transactions: on the embedded broker from inside the process
 * that owns it, on Kafka from anywhere (the `partita dlq replay` command line is this function).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { DeadLetterReplay, KafkaTransport } from "partita"
 *
 * const program = Effect.gen(function*() {
 *   const report = yield* DeadLetterReplay.replay({
 *     from: "notifications.dlq",
 *     where: { error: ["DecodeError"] },
 *     since: "2 hours",
 *   })
 *   console.log(`moved ${report.moved}, skipped ${report.skipped}, ${report.failed.length} could not be moved`)
 * }).pipe(Effect.provide(KafkaTransport.layerFromEnv()))
 * ```
 *
 * @since 0.4.0
 */
import { Clock, Data, Duration, Effect, Random, Semaphore } from "effect"
import * as TopicScan from "./internal/topicScan.ts"
import { type ConsumerRecord, type Header, type ProducerRecord, type SubscribeOptions, Transport } from "./Transport.ts"
import type { TransportError } from "./TransportError.ts"

/**
 * The headers a letter carries, as `internal/deadLetter.ts` writes them.
 *
 * @since 0.4.0
 * @category constants
 */
export const headers = {
  prefix: "partita.dlq.",
  sourceTopic: "partita.dlq.source.topic",
  sourcePartition: "partita.dlq.source.partition",
  sourceOffset: "partita.dlq.source.offset",
  errorTag: "partita.dlq.error.tag",
  errorMessage: "partita.dlq.error.message",
  attempts: "partita.dlq.attempts",
  time: "partita.dlq.time",
  actor: "partita.dlq.actor",
  /** `truncated` or `omitted` when the letter's value was cut to fit the topic's size limit. */
  value: "partita.dlq.value",
  originalSize: "partita.dlq.original.size",
  originalSha256: "partita.dlq.original.sha256",
  /** Added by a replay: `<dead-letter topic>/<partition>@<offset>` of the letter it came from. */
  replayedFrom: "partita.replayed-from",
} as const

/**
 * @since 0.4.0
 * @category models
 */
export interface Filter {
  /** Error tags (`partita.dlq.error.tag`, e.g. `DecodeError`): a letter matches any of them. */
  readonly error?: ReadonlyArray<string> | undefined
  /** Actor names (`partita.dlq.actor`): a letter matches any of them. */
  readonly actor?: ReadonlyArray<string> | undefined
  /** Source topics (`partita.dlq.source.topic`): a letter matches any of them. */
  readonly sourceTopic?: ReadonlyArray<string> | undefined
}

/**
 * @since 0.4.0
 * @category models
 */
export interface Options {
  /** The dead-letter topic. */
  readonly from: string
  /** Send every letter here instead of to its source topic (placed by its key). */
  readonly to?: string | undefined
  /** Only letters that match every field given; the others are skipped. */
  readonly where?: Filter | undefined
  /**
   * Only letters written at or after this time (the letter's timestamp): a `Date`, or a duration
   * back from now (`"2 hours"`). Older letters are skipped.
   */
  readonly since?: Date | Duration.Input | undefined
  /** The consumer group (and transactional id) that holds the replay's progress. Default `partita-replay-<from>`. */
  readonly group?: string | undefined
  /** Letters per transaction, at most. Default 500. */
  readonly batchSize?: number | undefined
  /** See {@link defaults}. */
  readonly idleTimeout?: Duration.Input | undefined
  /**
   * How long a replay that died keeps its partitions from the next one: the group's session
   * timeout (on Kafka's KIP-848 protocol the broker's `group.consumer.session.timeout.ms`
   * decides). Default 30 seconds.
   */
  readonly sessionTimeout?: Duration.Input | undefined
}

/**
 * - `batchSize`: letters per transaction, at most (also the fetch batch size).
 * - `idleTimeout`: how long a partition short of its end waits for a letter before it counts as
 *   done (the last offsets of a log written transactionally can be markers, which take an offset
 *   but are never read).
 *
 * @since 0.4.0
 * @category constants
 */
export const defaults = {
  batchSize: 500,
  idleTimeout: Duration.seconds(3),
} as const

/**
 * The group a replay of `topic` commits its progress in when none is given.
 *
 * @since 0.4.0
 * @category constructors
 */
export const defaultGroup = (topic: string): string => `partita-replay-${topic}`

/**
 * A record of a dead-letter topic without the `partita.dlq.source.*` headers: it was not written
 * by Partita's dead-lettering (or they were removed), so where it belongs is unknown.
 *
 * @since 0.4.0
 * @category errors
 */
export class NotADeadLetter extends Data.TaggedError("NotADeadLetter")<{
  /** `<topic>/<partition>@<offset>` of the record. */
  readonly letter: string
  readonly missing: string
}> {
  override get message(): string {
    return `Record ${this.letter} is not a dead letter: it has no "${this.missing}" header, so its source is unknown; it stays where it is`
  }
}

/**
 * The topic a letter is to be sent to does not exist (deleted since the letter was written).
 *
 * @since 0.4.0
 * @category errors
 */
export class SourceTopicMissing extends Data.TaggedError("SourceTopicMissing")<{
  readonly letter: string
  readonly topic: string
}> {
  override get message(): string {
    return `Dead letter ${this.letter} was not moved: its topic "${this.topic}" does not exist; it stays in the dead-letter topic (create the topic and replay with a new group, or replay it with a target topic)`
  }
}

/**
 * A letter whose value was cut (`truncated` or `omitted`) when it was written, to fit the
 * dead-letter topic's size limit: replaying it would publish a value that is not the record's.
 *
 * @since 0.4.0
 * @category errors
 */
export class IncompleteLetter extends Data.TaggedError("IncompleteLetter")<{
  readonly letter: string
  readonly form: string
  /** Where the whole record was, for fetching it while the source topic still retains it. */
  readonly source: string
  readonly originalSize: number | undefined
}> {
  override get message(): string {
    const size = this.originalSize === undefined ? "" : ` (it was ${this.originalSize} bytes)`
    return `Dead letter ${this.letter} was not moved: its value was ${this.form} when it was dead-lettered${size}, so it is not the record's; it stays in the dead-letter topic (the whole record is ${this.source}, while its topic retains it)`
  }
}

/**
 * Why one letter was not moved; the replay goes on with the others.
 *
 * @since 0.4.0
 * @category errors
 */
export type LetterError = NotADeadLetter | SourceTopicMissing | IncompleteLetter

/**
 * A topic the replay needs does not exist: the dead-letter topic, or the target topic given.
 *
 * @since 0.4.0
 * @category errors
 */
export class TopicNotFound extends Data.TaggedError("TopicNotFound")<{
  readonly topic: string
  readonly role: "dead-letter topic" | "target topic"
}> {
  override get message(): string {
    return `The ${this.role} "${this.topic}" does not exist (check the name, or create it first)`
  }
}

/**
 * What happened to the letters of one error tag.
 *
 * @since 0.4.0
 * @category models
 */
export interface Counts {
  readonly moved: number
  readonly skipped: number
  readonly failed: number
}

/**
 * What a replay did.
 *
 * @since 0.4.0
 * @category models
 */
export interface Report {
  readonly from: string
  readonly group: string
  /** Letters re-published (each in a committed transaction with the group's progress). */
  readonly moved: number
  /** Letters the filter left out. */
  readonly skipped: number
  /** Letters that could not be moved, each with why; they stay in the dead-letter topic. */
  readonly failed: ReadonlyArray<LetterError>
  /** The same counts by the letters' error tag (`(none)` for records without one). */
  readonly byError: Readonly<Record<string, Counts>>
}

/**
 * A dead letter as read back: where it is, where it came from and why, and the original record.
 *
 * @since 0.4.0
 * @category models
 */
export interface Letter {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  /** When the letter was written (epoch milliseconds). */
  readonly timestamp: number
  /** Where the record was consumed from; absent when the letter lacks the headers. */
  readonly source?: { readonly topic: string; readonly partition: number; readonly offset: number } | undefined
  readonly actor?: string | undefined
  readonly error?: { readonly tag: string; readonly message: string } | undefined
  readonly attempts?: number | undefined
  /** Set when the value was cut to fit the dead-letter topic: `truncated` or `omitted`. */
  readonly valueCut?: { readonly form: string; readonly originalSize: number | undefined } | undefined
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  /** The original record's headers: the letter's, without `partita.dlq.*` (nor an earlier replay's `partita.replayed-from`). */
  readonly headers: ReadonlyArray<Header>
}

const utf8 = new TextDecoder()

/**
 * Reads a record of a dead-letter topic as a letter.
 *
 * @since 0.4.0
 * @category constructors
 */
export const parse = (record: ConsumerRecord): Letter => {
  const found = new Map<string, string>()
  const original: Array<Header> = []
  for (const header of record.headers) {
    if (header.key.startsWith(headers.prefix)) {
      if (header.value !== null) found.set(header.key, utf8.decode(header.value))
    } else if (header.key !== headers.replayedFrom) original.push(header)
  }
  const number = (key: string) => {
    const text = found.get(key)
    const value = text === undefined ? NaN : Number(text)
    return Number.isSafeInteger(value) && value >= 0 ? value : undefined
  }
  const sourceTopic = found.get(headers.sourceTopic)
  const sourcePartition = number(headers.sourcePartition)
  const sourceOffset = number(headers.sourceOffset)
  const errorTag = found.get(headers.errorTag)
  const actor = found.get(headers.actor)
  const attempts = number(headers.attempts)
  const valueForm = found.get(headers.value)
  return {
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    timestamp: record.timestamp,
    ...(sourceTopic !== undefined && sourcePartition !== undefined && sourceOffset !== undefined
      ? { source: { topic: sourceTopic, partition: sourcePartition, offset: sourceOffset } }
      : {}),
    ...(actor !== undefined ? { actor } : {}),
    ...(errorTag !== undefined ? { error: { tag: errorTag, message: found.get(headers.errorMessage) ?? "" } } : {}),
    ...(attempts !== undefined ? { attempts } : {}),
    ...(valueForm !== undefined ? { valueCut: { form: valueForm, originalSize: number(headers.originalSize) } } : {}),
    key: record.key,
    value: record.value,
    headers: original,
  }
}

/** `<topic>/<partition>@<offset>`: how a replay names a letter. */
const positionOf = (record: { readonly topic: string; readonly partition: number; readonly offset: number }): string =>
  `${record.topic}/${record.partition}@${record.offset}`

const matches = (filter: Filter, letter: Letter): boolean =>
  (filter.error === undefined || (letter.error !== undefined && filter.error.includes(letter.error.tag))) &&
  (filter.actor === undefined || (letter.actor !== undefined && filter.actor.includes(letter.actor))) &&
  (filter.sourceTopic === undefined || (letter.source !== undefined && filter.sourceTopic.includes(letter.source.topic)))

/** The epoch milliseconds `since` stands for, now. */
const sinceMillis = (since: Date | Duration.Input | undefined): Effect.Effect<number> =>
  since === undefined
    ? Effect.succeed(-Infinity)
    : since instanceof Date
    ? Effect.succeed(since.getTime())
    : Effect.map(Clock.currentTimeMillis, (now) => now - Duration.toMillis(Duration.fromInputUnsafe(since)))

/** `topic` exists (`describeTopic` answers), or `TopicNotFound` for `role`. */
const partitionsOf = (transport: Transport["Service"], topic: string) =>
  Effect.map(transport.describeTopic(topic), (description) => description.partitions.length).pipe(
    Effect.catch((error) =>
      error.code === "UNKNOWN_TOPIC_OR_PARTITION" ? Effect.succeed(undefined) : Effect.fail(error)
    ),
  )

const noTag = "(none)"
const utf8Encoder = new TextEncoder()

/** What a replay does with one letter. */
type Decision =
  | { readonly tag: string; readonly kind: "moved"; readonly record: ProducerRecord }
  | { readonly tag: string; readonly kind: "skipped" }
  | { readonly tag: string; readonly kind: "failed"; readonly error: LetterError }

/**
 * Re-publishes the letters of `options.from` up to its end at the start, exactly once each, and
 * reports what it did (see the module's paragraphs). Fails only when a topic it needs is missing
 * or the transport fails; a failure leaves every letter either moved (with its progress
 * committed) or not moved, so running it again finishes the job.
 *
 * @since 0.4.0
 * @category replay
 */
export const replay = (options: Options): Effect.Effect<Report, TopicNotFound | TransportError, Transport> =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const group = options.group ?? defaultGroup(options.from)
    if ((yield* partitionsOf(transport, options.from)) === undefined) {
      return yield* Effect.fail(new TopicNotFound({ topic: options.from, role: "dead-letter topic" }))
    }
    if (options.to !== undefined && (yield* partitionsOf(transport, options.to)) === undefined) {
      return yield* Effect.fail(new TopicNotFound({ topic: options.to, role: "target topic" }))
    }
    const since = yield* sinceMillis(options.since)
    const where = options.where ?? {}
    /** Partition counts of the topics letters go back to; `undefined` for one that does not exist. */
    const targets = new Map<string, number | undefined>()
    // One description at a time, each once: partitions' batches ask concurrently, and kafkajs'
    // admin fails some of many concurrent topic descriptions.
    const describing = yield* Semaphore.make(1)
    const partitionsOfTarget = (topic: string) =>
      describing.withPermits(1)(Effect.suspend(() =>
        targets.has(topic)
          ? Effect.succeed(targets.get(topic))
          : Effect.tap(partitionsOf(transport, topic), (count) => Effect.sync(() => targets.set(topic, count)))
      ))

    let moved = 0
    let skipped = 0
    const failed: Array<LetterError> = []
    const byError: Record<string, { moved: number; skipped: number; failed: number }> = {}

    /** What becomes of one letter: a record to send, skipped, or an error. */
    const decide = (record: ConsumerRecord): Effect.Effect<Decision, TransportError> =>
      Effect.gen(function*() {
        const letter = parse(record)
        const tag = letter.error?.tag ?? noTag
        const at = positionOf(record)
        if (letter.source === undefined) {
          const missing = [headers.sourceTopic, headers.sourcePartition, headers.sourceOffset]
            .find((key) => !record.headers.some((header) => header.key === key)) ?? headers.sourceTopic
          return { tag, kind: "failed", error: new NotADeadLetter({ letter: at, missing }) }
        }
        if (record.timestamp < since || !matches(where, letter)) return { tag, kind: "skipped" }
        if (letter.valueCut !== undefined) {
          const error = new IncompleteLetter({ letter: at, form: letter.valueCut.form, source: positionOf(letter.source), originalSize: letter.valueCut.originalSize })
          return { tag, kind: "failed", error }
        }
        const topic = options.to ?? letter.source.topic
        const partitions = yield* partitionsOfTarget(topic)
        if (partitions === undefined) return { tag, kind: "failed", error: new SourceTopicMissing({ letter: at, topic }) }
        return {
          tag,
          kind: "moved",
          record: {
            topic,
            key: letter.key,
            value: letter.value,
            headers: [...letter.headers, { key: headers.replayedFrom, value: utf8Encoder.encode(at) }],
            // Back where it was read; a topic of the caller's places it by key.
            ...(options.to === undefined && letter.source.partition < partitions ? { partition: letter.source.partition } : {}),
          },
        }
      })

    // One transaction at a time on the producer: partitions take turns.
    const turn = yield* Semaphore.make(1)
    const producer = yield* transport.transactional(group)
    const move = (partition: number, records: ReadonlyArray<ConsumerRecord>) =>
      Effect.gen(function*() {
        const decisions = yield* Effect.forEach(records, decide)
        const out = decisions.flatMap((decision) => decision.kind === "moved" ? [decision.record] : [])
        const next = records[records.length - 1]!.offset + 1
        yield* turn.withPermits(1)(Effect.gen(function*() {
          const transaction = yield* producer.begin
          yield* Effect.gen(function*() {
            if (out.length > 0) yield* transaction.send(out)
            yield* transaction.sendOffsets(group, [{ topic: options.from, partition, offset: next }])
            yield* transaction.commit
          }).pipe(Effect.onError(() => Effect.ignore(transaction.abort)))
        }))
        // Counted once committed: the report says what is in the target topics.
        for (const decision of decisions) {
          const counts = byError[decision.tag] ??= { moved: 0, skipped: 0, failed: 0 }
          counts[decision.kind]++
          if (decision.kind === "moved") moved++
          else if (decision.kind === "skipped") skipped++
          else failed.push(decision.error)
        }
        return "more" as const
      })

    yield* TopicScan.scan(transport, {
      topic: options.from,
      group,
      idleTimeout: options.idleTimeout ?? defaults.idleTimeout,
      consumer: {
        maxBatchSize: options.batchSize ?? defaults.batchSize,
        ...(options.sessionTimeout !== undefined ? sessionSettings(options.sessionTimeout) : {}),
        clientId: "partita-replay",
      },
    }, move)
    return { from: options.from, group, moved, skipped, failed, byError } satisfies Report
  }).pipe(Effect.scoped)

/** Heartbeats and rebalance timeout that fit a session timeout. */
const sessionSettings = (session: Duration.Input): Pick<SubscribeOptions, "sessionTimeout" | "heartbeatInterval" | "rebalanceTimeout"> => {
  const millis = Duration.toMillis(Duration.fromInputUnsafe(session))
  return { sessionTimeout: millis, heartbeatInterval: Math.max(100, Math.floor(millis / 10)), rebalanceTimeout: millis }
}

/**
 * @since 0.4.0
 * @category models
 */
export interface ListOptions {
  readonly from: string
  /** At most this many letters, the oldest first. Default 100. */
  readonly limit?: number | undefined
  /** See {@link defaults}. */
  readonly idleTimeout?: Duration.Input | undefined
}

const copyOf = (record: ConsumerRecord): ConsumerRecord => ({
  ...record,
  key: record.key?.slice() ?? null,
  value: record.value?.slice() ?? null,
  headers: record.headers.map((header) => ({ key: header.key, value: header.value?.slice() ?? null })),
})

/**
 * The oldest letters of `options.from` (by their timestamp, then partition and offset), read
 * without moving or committing anything: through a group of its own that commits nothing.
 *
 * @since 0.4.0
 * @category replay
 */
export const list = (options: ListOptions): Effect.Effect<ReadonlyArray<Letter>, TopicNotFound | TransportError, Transport> =>
  Effect.gen(function*() {
    const transport = yield* Transport
    if ((yield* partitionsOf(transport, options.from)) === undefined) {
      return yield* Effect.fail(new TopicNotFound({ topic: options.from, role: "dead-letter topic" }))
    }
    const limit = options.limit ?? 100
    if (limit <= 0) return []
    const byPartition = new Map<number, Array<Letter>>()
    const suffix = yield* Random.nextIntBetween(0, 2 ** 31)
    yield* TopicScan.scan(transport, {
      topic: options.from,
      group: `partita-list-${options.from}-${suffix.toString(36)}`,
      idleTimeout: options.idleTimeout ?? defaults.idleTimeout,
      consumer: { maxBatchSize: Math.min(limit, defaults.batchSize), clientId: "partita-list" },
    }, (partition, records) =>
      Effect.sync(() => {
        const letters = byPartition.get(partition) ?? []
        byPartition.set(partition, letters)
        // Copies: a record's bytes may be views into the fetch response.
        for (const record of records) {
          if (letters.length < limit) letters.push(parse(copyOf(record)))
        }
        return letters.length >= limit ? "enough" : "more"
      }))
    return [...byPartition.values()].flat()
      .sort((a, b) => a.timestamp - b.timestamp || a.partition - b.partition || a.offset - b.offset)
      .slice(0, limit)
  })
