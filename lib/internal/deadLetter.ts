/**
 * Dead letters: a record its policy gave up on, written to the actor's dead-letter topic, and
 * what happens when that write fails.
 *
 * A letter is the original key, value and headers plus `partita.dlq.*` headers saying where it
 * came from and why. Nothing past the record is committed until its letter is acknowledged, so
 * while a write fails the partition stays paused (for "dead-letter"), and the way forward is
 * chosen from the `TransportError`'s `code` and `retriable` alone:
 * - retriable (a leader moving, a timeout): the same letter again, on `deadLetter.retry`;
 * - too large (`MESSAGE_TOO_LARGE`: the headers took a record near the limit over it): a smaller
 *   letter, by `deadLetter.tooLarge`, that keeps every header, cuts or leaves out the value and
 *   says how long the original value was and what its SHA-256 is;
 * - anything else, a `retry` schedule that ran out, or a smaller letter still refused: no way
 *   forward. The partition is `blocked`: unhealthy, with the reason in `lastError`, still
 *   paused, and the write tried again on the slow `deadLetter.blockedRetry` schedule, so that
 *   fixing the cause outside the process (an ACL, the topic's `max.message.bytes`) unblocks it
 *   without a restart and no tight loop spins meanwhile.
 * When the topic's size limit is known (`deadLetter.maxBytes`), a letter over it is made smaller
 * before its first write, so the broker never has to refuse it.
 *
 * `ensureTopics` runs when the system starts: a dead-letter topic that does not exist fails the
 * start, naming it and its actor, or is created when the actor asks, rather than blocking the
 * first partition that needs it, long after the deploy.
 */
import { Cause, Clock, Data, Duration, Effect, Exit, Schedule } from "effect"
import type { Actor, DeadLetterSettings } from "../Actor.ts"
import type { Producer } from "../Producer.ts"
import type { ConsumerRecord, Header, ProducerRecord, Transport } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"
import { messageOf } from "./errorText.ts"
import type { PartitionStatus } from "./partitionActor.ts"
import { sha256Hex } from "./sha256.ts"

const utf8 = new TextEncoder()
const header = (key: string, value: string): Header => ({ key, value: utf8.encode(value) })

/**
 * The dead-letter topic of an actor does not exist, and the actor did not ask for it to be
 * created. Found when the system starts, before any record is taken.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeadLetterTopicMissing extends Data.TaggedError("DeadLetterTopicMissing")<{
  readonly actor: string
  readonly topic: string
}> {
  override get message(): string {
    return `Dead-letter topic "${this.topic}" of actor "${this.actor}" does not exist: create it, or set deadLetter.create on the actor to have it created at start`
  }
}

/**
 * Checks that every actor's dead-letter topic exists, creating the ones whose actor asks for it
 * (`deadLetter.create`). Actors sharing a topic share the check; one asking is enough.
 */
export const ensureTopics = (
  actors: ReadonlyArray<Actor<unknown>>,
  transport: Transport["Service"],
): Effect.Effect<void, DeadLetterTopicMissing | TransportError> => {
  const byTopic = new Map<string, { readonly actor: string; readonly settings: DeadLetterSettings }>()
  for (const actor of actors) {
    const settings = actor.deadLetter
    if (settings === undefined) continue
    const seen = byTopic.get(settings.topic)
    if (seen === undefined || (seen.settings.create === undefined && settings.create !== undefined)) {
      byTopic.set(settings.topic, { actor: actor.name, settings })
    }
  }
  return Effect.forEach(byTopic.values(), ({ actor, settings }) =>
    transport.describeTopic(settings.topic).pipe(
      Effect.asVoid,
      Effect.catch((error): Effect.Effect<void, DeadLetterTopicMissing | TransportError> => {
        if (error.code !== "UNKNOWN_TOPIC_OR_PARTITION") return Effect.fail(error)
        const create = settings.create
        if (create === undefined) return Effect.fail(new DeadLetterTopicMissing({ actor, topic: settings.topic }))
        return transport.createTopic({ topic: settings.topic, partitions: create.partitions, config: create.config }).pipe(
          Effect.andThen(Effect.logInfo(`Created dead-letter topic "${settings.topic}" of actor "${actor}"`)),
          // Another instance of the app may have created it first.
          Effect.catch((failure) => failure.code === "TOPIC_ALREADY_EXISTS" ? Effect.void : Effect.fail(failure)),
        )
      }),
    ), { discard: true })
}

/** The letter for `record`: its key, value and headers, and where it came from and why. */
export const letterOf = (
  record: ConsumerRecord,
  error: { readonly _tag: string; readonly message?: string },
  context: { readonly topic: string; readonly actor: string; readonly attempts: number; readonly now: number },
): ProducerRecord => ({
  topic: context.topic,
  key: record.key,
  value: record.value,
  headers: [
    ...record.headers,
    header("partita.dlq.source.topic", record.topic),
    header("partita.dlq.source.partition", String(record.partition)),
    header("partita.dlq.source.offset", String(record.offset)),
    header("partita.dlq.error.tag", error._tag),
    header("partita.dlq.error.message", messageOf(error)),
    header("partita.dlq.attempts", String(context.attempts)),
    header("partita.dlq.time", new Date(context.now).toISOString()),
    header("partita.dlq.actor", context.actor),
  ],
})

/** Bytes of a zigzag varint, as Kafka's record format writes lengths. */
const varintSize = (value: number): number => {
  let zigzag = value >= 0 ? value * 2 : -value * 2 - 1
  let size = 1
  while (zigzag >= 128) {
    zigzag = Math.floor(zigzag / 128)
    size++
  }
  return size
}
const bytesSize = (bytes: Uint8Array | null): number => bytes === null ? varintSize(-1) : varintSize(bytes.length) + bytes.length

/**
 * The size of `record` in a record batch of its own, uncompressed, with the widest timestamp and
 * offset deltas: at least what a broker's `max.message.bytes` counts for it, and at least the
 * key, value and header bytes the memory broker counts.
 */
export const encodedSize = (record: Pick<ProducerRecord, "key" | "value" | "headers">): number => {
  // attributes, timestamp delta, offset delta
  let body = 1 + 10 + 5 + bytesSize(record.key) + bytesSize(record.value)
  const headers = record.headers ?? []
  body += varintSize(headers.length)
  for (const { key, value } of headers) body += bytesSize(utf8.encode(key)) + bytesSize(value)
  // The batch header: base offset, length, epoch, magic, CRC, attributes, deltas, ids, count.
  return 61 + varintSize(body) + body
}

/**
 * `letter` made smaller: its value cut to fit `limit` (as `encodedSize` counts), or left out,
 * with headers that say so and identify the original value. An omitted value is empty, not
 * null: a tombstone would delete the key's earlier letters from a compacted topic.
 */
export const reduce = (
  letter: ProducerRecord,
  original: { readonly value: Uint8Array; readonly sha256: string },
  form: "truncated" | "omitted",
  limit: number,
): ProducerRecord => {
  const headers = [
    ...(letter.headers ?? []),
    header("partita.dlq.value", form),
    header("partita.dlq.original.size", String(original.value.length)),
    header("partita.dlq.original.sha256", original.sha256),
  ]
  const empty = { ...letter, value: new Uint8Array(0), headers }
  if (form === "omitted") return empty
  // The value's own length varint grows with it: leave room for its widest form.
  let keep = Math.min(original.value.length, limit - encodedSize(empty) - 4)
  if (keep <= 0) return reduce(letter, original, "omitted", limit)
  let reduced = { ...letter, value: original.value.slice(0, keep), headers }
  while (keep > 0 && encodedSize(reduced) > limit) {
    keep -= encodedSize(reduced) - limit
    reduced = { ...letter, value: original.value.slice(0, Math.max(0, keep)), headers }
  }
  return reduced
}

const formOf = (letter: ProducerRecord): "truncated" | "omitted" => letter.value?.length === 0 ? "omitted" : "truncated"

const tooLarge = (error: TransportError): boolean => error.code === "MESSAGE_TOO_LARGE" || error.code === "RECORD_LIST_TOO_LARGE"

/** The smaller letters `tooLarge` allows, in the order they are tried. */
const smallerForms = (settings: DeadLetterSettings, value: Uint8Array | null): ReadonlyArray<"truncated" | "omitted"> =>
  value === null || value.length === 0 || settings.tooLarge === "block"
    ? []
    : settings.tooLarge === "truncate"
    ? ["truncated", "omitted"]
    : ["omitted"]

/**
 * What writing a letter needs from its partition actor.
 */
export interface Deps {
  readonly actor: Actor<unknown>
  readonly producer: Producer["Service"]
  readonly status: PartitionStatus
  /** Wraps each write: the partition's telemetry hook (`PartitionHooks.onDeadLetter`). */
  readonly around: <A, E, R>(record: ConsumerRecord, send: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Pauses the partition for "dead-letter" (idempotent). */
  readonly pause: Effect.Effect<void>
  /** Undoes `pause`. */
  readonly resume: Effect.Effect<void>
  /** Runs once a letter is acknowledged: the outcome metric. */
  readonly written: Effect.Effect<void>
  /**
   * Completes when the partition actor is asked to stop (revocation, shutdown). A letter waiting
   * to be tried again gives up then, by interrupting the record: it stays uncommitted for the
   * partition's next owner, and the stop need not wait out a retry that may be minutes away.
   */
  readonly stopped: Effect.Effect<void>
}

/**
 * The partition actor's `deadLetter(record, error, attempts)`: writes the record's letter and
 * returns once it is acknowledged, however long that takes (see the module's paragraph).
 * Fails only as the producer dies, or interrupted (see `Deps.stopped`); nothing is committed
 * past the record until it returns.
 */
export const make = (deps: Deps) =>
(
  record: ConsumerRecord,
  error: { readonly _tag: string; readonly message?: string },
  attempts: number,
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { actor, producer, status } = deps
    const settings = actor.deadLetter
    if (settings === undefined) {
      return yield* Effect.die(new Error(`Actor "${actor.name}" has no deadLetter topic for a dead-letter policy`))
    }
    const source = `${record.topic}/${record.partition}@${record.offset}`
    const now = yield* Clock.currentTimeMillis
    const full = letterOf(record, error, { topic: settings.topic, actor: actor.name, attempts, now })
    let letter = full
    const forms = smallerForms(settings, record.value)
    let form = -1
    let original: { readonly value: Uint8Array; readonly sha256: string } | undefined
    /** The next smaller letter, cut to the topic's limit (when unknown, to the record as it came). */
    const smaller = (): ProducerRecord => {
      const value = record.value!
      original ??= { value, sha256: sha256Hex(value) }
      form++
      return reduce(full, original, forms[form]!, settings.maxBytes ?? encodedSize(record))
    }
    if (settings.maxBytes !== undefined && encodedSize(letter) > settings.maxBytes) {
      // Known not to fit: the smallest form that does (or the smallest there is: the broker decides).
      while (form + 1 < forms.length) {
        letter = smaller()
        if (encodedSize(letter) <= settings.maxBytes) break
      }
    }
    const send = (letter: ProducerRecord) => deps.around(record, producer.send(letter))

    const retryStep = yield* Schedule.toStep(settings.retry)
    let blocked: { readonly step: typeof retryStep; readonly previous: PartitionStatus["state"] } | undefined
    const nextDelay = (step: typeof retryStep, failure: TransportError) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) =>
        Effect.map(Effect.exit(step(at, failure)), (next) => Exit.isSuccess(next) ? next.value[1] : undefined))
    while (true) {
      const exit = yield* Effect.exit(send(letter))
      if (Exit.isSuccess(exit)) break
      const found = Cause.findErrorOption(exit.cause)
      // A defect or an interruption is not a refusal: supervision handles it.
      if (found._tag === "None") return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
      const failure = found.value
      yield* deps.pause
      const problem = `Dead-letter write of ${source} to "${settings.topic}" failed with ${failure.code}: ${failure.message}`
      if (tooLarge(failure) && form + 1 < forms.length) {
        letter = smaller()
        status.lastError = problem
        yield* Effect.logWarning(`${problem}; writing its letter with the value ${formOf(letter)}`)
        continue
      }
      let delay = blocked === undefined && failure.retriable ? yield* nextDelay(retryStep, failure) : undefined
      if (delay === undefined) {
        if (blocked === undefined) {
          blocked = { step: yield* Schedule.toStep(settings.blockedRetry), previous: status.state }
          status.state = "blocked"
        }
        delay = (yield* nextDelay(blocked.step, failure)) ?? Duration.minutes(5)
        status.lastError = `Partition blocked: ${problem}. Nothing past the record is committed; ${
          advice(failure, settings)
        }; the write is tried again in ${Duration.format(delay)}`
        yield* Effect.logError(status.lastError)
      } else {
        status.lastError = problem
        yield* Effect.logWarning(`${problem}; trying again in ${Duration.format(delay)}`)
      }
      const stopped = yield* Effect.raceFirst(Effect.as(Effect.sleep(delay), false), Effect.as(deps.stopped, true))
      if (stopped) {
        yield* Effect.logWarning(`Partition stopping: the dead letter of ${source} was not written; its record stays uncommitted`)
        return yield* Effect.interrupt
      }
    }
    if (blocked !== undefined) {
      status.state = blocked.previous
      yield* Effect.logInfo(`Dead letter of ${source} written to "${settings.topic}"; the partition is unblocked`)
    }
    if (letter !== full) yield* Effect.logWarning(`Dead letter of ${source} written to "${settings.topic}" with its value ${formOf(letter)}`)
    yield* deps.resume
    status.deadLettered++
    status.lastOutcome = "dead_lettered"
    yield* deps.written
  })

/** What a person can do about a letter that cannot be written. */
const advice = (failure: TransportError, settings: DeadLetterSettings): string =>
  tooLarge(failure)
    ? settings.tooLarge === "block"
      ? `raise the topic's max.message.bytes, or set deadLetter.tooLarge to "truncate" or "omit-value"`
      : `the letter without its value is still too large (key or headers): raise the topic's max.message.bytes`
    : failure.code.endsWith("AUTHORIZATION_FAILED")
    ? `grant this client write access to "${settings.topic}"`
    : failure.code === "INVALID_RECORD"
    ? `the letter cannot be encoded as it is (kafkajs, for one, cannot send a null header value)`
    : failure.retriable
    ? `the deadLetter.retry schedule ran out: check that "${settings.topic}" exists and its leaders are available`
    : `fix the cause (${failure.code}) on the broker`
