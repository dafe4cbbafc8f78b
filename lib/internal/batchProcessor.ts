/**
 * How a batch actor's partition handles records (`handleBatch`): decode a gathered batch, hand
 * the records that decoded to the batch handler in one call (with its timeout), and on failure
 * apply the policy of the error's tag to the batch as a whole, as `processor.ts` does for one
 * record: retries of the whole batch on the policy's schedule, a pause, and when a retry's
 * schedule runs out either its `then` for every record of the batch or, with `bisect`, the two
 * halves handled the same way in turn (each with the retries again), down to single records, so
 * only a record that fails alone gets `then`. Records that do not decode never reach the
 * handler: each goes to the `DecodeError` policy on its own, after the batch.
 *
 * Every record is booked done with the offset tracker and the committer as soon as its part of
 * the batch ended, so commits stay contiguous (`offsetTracker.ts`). Defects and interruptions
 * pass through to supervision, which hands the records not done yet to `handle` again.
 *
 * Exactly-once, each batch (and each bisected half) is a transaction of its own: begun before a
 * try, committed with the offset past what is done after it, aborted after a failed try, so what
 * a failed try produced never commits and the policy's next step needs no rewind.
 */
import { Cause, Duration, Effect, Exit, Schedule, Tracer } from "effect"
import { type Actor, type BatchRecord, type DecodeError, HandlerTimeout } from "../Actor.ts"
import * as Codec from "../Codec.ts"
import type { ErrorPolicy } from "../ErrorPolicy.ts"
import type { ConsumerRecord, Header } from "../Transport.ts"
import { describe } from "./errorText.ts"
import * as PlainDecode from "./plainDecode.ts"
import { decodeErrorOf, Halted, type ProcessorDeps } from "./processor.ts"

export interface BatchDeps<R> extends Omit<ProcessorDeps<R>, "transactions"> {
  /** Exactly-once: the partition's transactions, one per batch (see the module's doc). */
  readonly transaction?: {
    readonly begin: Effect.Effect<void>
    /** Commits the open transaction with the offset past what is done. */
    readonly commit: Effect.Effect<void>
    readonly abort: Effect.Effect<void>
  } | undefined
}

export interface BatchProcessor<R> {
  /** Handles the startable ones of `records` (one partition's, in offset order) to their end; fails only with `Halted`. */
  readonly handle: (records: ReadonlyArray<ConsumerRecord>) => Effect.Effect<void, Halted, R>
}

/**
 * One record of a unit of work (a batch, a half of one, a record that did not decode) on its
 * latest try: what the policy needs of it, and the same for the next try.
 */
interface Tried<Self> {
  readonly attempt: number
  readonly next: () => Self
}

/**
 * What the handler sees of one record on one try. A fresh object per try (`next`), so one the
 * handler keeps never changes; the first try's are the only ones most records ever get.
 */
class BatchRecordView implements BatchRecord<unknown, unknown>, Tried<BatchRecordView> {
  readonly value: unknown
  readonly key: unknown
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly timestamp: number
  readonly attempt: number
  readonly #record: ConsumerRecord
  constructor(record: ConsumerRecord, value: unknown, key: unknown, attempt: number) {
    this.value = value
    this.key = key
    this.topic = record.topic
    this.partition = record.partition
    this.offset = record.offset
    this.timestamp = record.timestamp
    this.attempt = attempt
    this.#record = record
  }
  // Read from the record when asked: Partita's own client decodes headers on access.
  get headers(): ReadonlyArray<Header> {
    return this.#record.headers
  }
  next(): BatchRecordView {
    return new BatchRecordView(this.#record, this.value, this.key, this.attempt + 1)
  }
  static recordOf(view: BatchRecordView): ConsumerRecord {
    return view.#record
  }
}

/** A record that did not decode: tried (decoded) again only if its policy retries. */
class Undecoded implements Tried<Undecoded> {
  readonly record: ConsumerRecord
  readonly attempt: number
  constructor(record: ConsumerRecord, attempt: number) {
    this.record = record
    this.attempt = attempt
  }
  next(): Undecoded {
    return new Undecoded(this.record, this.attempt + 1)
  }
  static recordOf(item: Undecoded): ConsumerRecord {
    return item.record
  }
}

type Step = (now: number, input: unknown) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>
type Failure = { readonly _tag: string; readonly message?: string }

export const make = <R>(deps: BatchDeps<R>): BatchProcessor<R> => {
  const { actor, status, clock, hooks, tracker, committer, onSettled } = deps
  const batch = actor.batch!
  const transaction = deps.transaction
  const timeout = actor.handlerTimeout === undefined ? undefined : Duration.fromInputUnsafe(actor.handlerTimeout)

  /** Records done, however they ended: booked, and the time since `startedMillis` shared among them. */
  const settle = (records: ReadonlyArray<ConsumerRecord>, startedMillis: number) =>
    Effect.sync(() => {
      const now = clock.currentTimeMillisUnsafe()
      for (const record of records) {
        tracker.complete(record.offset)
        committer.completed()
        if (onSettled !== undefined) onSettled(record)
      }
      status.processed += records.length
      status.lastProgress = now
      deps.durations.recordMany((now - startedMillis) / 1000 / records.length, records.length)
    })

  /** One call of the batch handler, under the actor's timeout. */
  const attempt = (views: ReadonlyArray<BatchRecordView>): Effect.Effect<void, unknown, R> => {
    const handled = batch.handle(views)
    if (timeout === undefined || Exit.isExit(handled)) return handled
    const first = views[0]!
    return Effect.timeoutOrElse(handled, {
      duration: timeout,
      orElse: () =>
        Effect.fail(
          new HandlerTimeout({ topic: first.topic, partition: first.partition, offset: first.offset, timeout, records: views.length }),
        ),
    })
  }

  /** The end a policy gives every record of `records`: dead letters or skips (in the open transaction, exactly-once), or a halt. */
  const terminal = (
    then: "dead-letter" | "skip" | "halt",
    error: Failure,
    records: ReadonlyArray<ConsumerRecord>,
    attemptsOf: (index: number) => number,
    startedMillis: number,
  ): Effect.Effect<void, Halted> => {
    // The health report names the first record the halting unit holds (after bisection, the record alone).
    if (then === "halt") return Effect.fail(new Halted({ reason: describe(error), offset: records[0]!.offset }))
    const first = records[0]!
    const where = records.length === 1
      ? `${first.topic}/${first.partition}@${first.offset}`
      : `${records.length} records of ${first.topic}/${first.partition} from offset ${first.offset}`
    const ending = then === "dead-letter"
      ? Effect.forEach(records, (record, index) => deps.deadLetter(record, error, attemptsOf(index)), { discard: true })
      : Effect.andThen(
        Effect.sync(() => {
          status.skipped += records.length
          status.lastOutcome = "skipped"
        }),
        Effect.andThen(deps.outcome("skipped", records.length), Effect.logWarning(`Skipped ${where}: ${describe(error)}`)),
      )
    return transaction === undefined
      ? Effect.andThen(ending, settle(records, startedMillis))
      : Effect.andThen(transaction.begin, Effect.andThen(ending, Effect.andThen(settle(records, startedMillis), transaction.commit)))
  }

  /**
   * Handles `items` to their end: tries until one succeeds or the policy of the error gives up,
   * then its end for all of them, or, bisecting, each half the same way. `items` are on the try
   * they are about to get, unless `firstFailure` says how that try ended (a record that did not
   * decode): the policy starts from there.
   */
  const runUnit = <I extends Tried<I>>(
    given: ReadonlyArray<I>,
    recordOf: (item: I) => ConsumerRecord,
    tryOnce: (items: ReadonlyArray<I>) => Effect.Effect<void, unknown, R>,
    firstFailure: Cause.Cause<unknown> | undefined,
  ): Effect.Effect<void, Halted, R> =>
    Effect.gen(function*() {
      let items = given
      const startedMillis = clock.currentTimeMillisUnsafe()
      const records = items.map(recordOf)
      const first = records[0]!
      const where = records.length === 1
        ? `Record ${first.topic}/${first.partition}@${first.offset}`
        : `Batch of ${records.length} records of ${first.topic}/${first.partition} from offset ${first.offset}`
      const steps = new Map<ErrorPolicy, Step>()
      /** The delay before the next try, or undefined when the schedule is over. */
      const nextDelay = (policy: ErrorPolicy & { readonly schedule: Schedule.Schedule<unknown, unknown> }, error: unknown) =>
        Effect.gen(function*() {
          let step = steps.get(policy)
          if (step === undefined) {
            step = (yield* Schedule.toStep(policy.schedule)) as unknown as Step
            steps.set(policy, step)
          }
          const next = yield* Effect.exit(step(clock.currentTimeMillisUnsafe(), error))
          return Exit.isSuccess(next) ? next.value[1] : undefined
        })
      const end = (then: "dead-letter" | "skip" | "halt", error: Failure) =>
        terminal(then, error, records, (index) => items[index]!.attempt, startedMillis)
      const advance = () => {
        items = items.map((item) => item.next())
      }
      let cause = firstFailure
      let retries = 0
      while (true) {
        if (cause === undefined) {
          if (transaction !== undefined) yield* transaction.begin
          const exit = yield* Effect.exit(tryOnce(items))
          if (Exit.isSuccess(exit)) {
            yield* settle(records, startedMillis)
            if (transaction !== undefined) yield* transaction.commit
            break
          }
          cause = exit.cause
          // Exactly-once: what the failed try produced must not commit.
          if (transaction !== undefined) yield* transaction.abort
        }
        const found = Cause.findErrorOption(cause)
        // Defects and interruptions are not the policy's business: supervision handles them.
        if (found._tag === "None") return yield* Effect.failCause(cause as Cause.Cause<never>)
        cause = undefined
        const error = found.value as Failure
        status.failed += records.length
        status.lastError = describe(error)
        yield* deps.outcome("failed", records.length)
        const policy = actor.policyFor(error._tag)
        const tries = items[0]!.attempt
        yield* Effect.logWarning(`${where} failed on attempt ${tries} with ${describe(error)} (policy ${policy._tag})`)
        if (policy._tag === "Retry") {
          const delay = policy.times !== undefined && retries >= policy.times ? undefined : yield* nextDelay(policy, error)
          if (delay === undefined) {
            if (policy.bisect && items.length > 1) {
              const half = Math.ceil(items.length / 2)
              if (hooks.enabled) yield* hooks.onRecordRetry("bisect", { attempt: tries + 1, delayMillis: 0, error: error._tag })
              advance()
              yield* runUnit(items.slice(0, half), recordOf, tryOnce, undefined)
              yield* runUnit(items.slice(half), recordOf, tryOnce, undefined)
              return
            }
            yield* end(policy.then, error)
            break
          }
          status.state = "retrying"
          status.retried += records.length
          yield* deps.outcome("retried", records.length)
          if (hooks.enabled) {
            yield* hooks.onRecordRetry("retry", { attempt: tries + 1, delayMillis: Duration.toMillis(delay), error: error._tag })
          }
          yield* Effect.sleep(delay)
          advance()
          retries++
          continue
        }
        if (policy._tag === "PausePartition") {
          const delay = yield* nextDelay(policy, error)
          if (delay === undefined) {
            yield* end("halt", error)
            break
          }
          status.state = "paused"
          if (hooks.enabled) {
            yield* hooks.onRecordRetry("pause", { attempt: tries + 1, delayMillis: Duration.toMillis(delay), error: error._tag })
          }
          yield* deps.pauseFor("policy")
          yield* Effect.sleep(delay)
          advance()
          continue
        }
        yield* end(policy._tag === "DeadLetter" ? "dead-letter" : policy._tag === "Skip" ? "skip" : "halt", error)
        break
      }
      yield* deps.resumeFor("policy")
      status.state = "running"
    })

  const redecode = (items: ReadonlyArray<Undecoded>): Effect.Effect<void, DecodeError> => Effect.asVoid(decode(items[0]!.record))

  /** The record's value and key, decoded from what its codecs answered; `Exit`s are read without running an effect. */
  const decoded = (
    record: ConsumerRecord,
    value: Effect.Effect<unknown, Codec.CodecError>,
    key: Effect.Effect<unknown, Codec.CodecError>,
  ): Effect.Effect<readonly [unknown, unknown], DecodeError> => {
    if (Exit.isExit(value) && Exit.isExit(key)) {
      if (Exit.isFailure(value)) return Effect.mapError(value as Exit.Exit<never, Codec.CodecError>, decodeErrorOf(record, "value"))
      if (Exit.isFailure(key)) return Effect.mapError(key as Exit.Exit<never, Codec.CodecError>, decodeErrorOf(record, "key"))
      return Exit.succeed([value.value, key.value] as const)
    }
    return Effect.flatMap(Effect.mapError(value, decodeErrorOf(record, "value")), (decodedValue) =>
      Effect.map(Effect.mapError(key, decodeErrorOf(record, "key")), (decodedKey) => [decodedValue, decodedKey] as const))
  }
  const decode = (record: ConsumerRecord) => decoded(record, actor.decodeValue(record.value), actor.decodeKey(record.key))

  const bytesOnly = actor.decodeValue === Codec.bytes.decode && actor.decodeKey === Codec.bytes.decode
  // As `processor.ts` does: the codecs' plain decodes when they have them, no `Exit` per record;
  // a decode that declines runs again through the codec, for its error.
  const plainValue = PlainDecode.of(actor.decodeValue)
  const plainKey = PlainDecode.of(actor.decodeKey)
  const keyAsBytes = actor.decodeKey === Codec.bytes.decode
  const handleStartable = (records: ReadonlyArray<ConsumerRecord>): Effect.Effect<void, Halted, R> =>
    Effect.gen(function*() {
      status.lastOutcome = "handled"
      const views: Array<BatchRecordView> = []
      let undecoded: Array<{ readonly record: ConsumerRecord; readonly cause: Cause.Cause<unknown> }> | undefined
      for (let i = 0; i < records.length; i++) {
        const record = records[i]!
        if (bytesOnly) {
          views.push(new BatchRecordView(record, record.value, record.key, 1))
          continue
        }
        if (plainValue !== undefined && plainKey !== undefined) {
          const value = plainValue(record.value)
          const key = value === PlainDecode.declined ? value : keyAsBytes ? record.key : plainKey(record.key)
          if (key !== PlainDecode.declined) {
            views.push(new BatchRecordView(record, value, key, 1))
            continue
          }
        }
        // The built-in codecs answer with an `Exit`: read at once, no effect per record.
        const value = actor.decodeValue(record.value)
        const key = actor.decodeKey(record.key)
        if (Exit.isExit(value) && Exit.isExit(key) && Exit.isSuccess(value) && Exit.isSuccess(key)) {
          views.push(new BatchRecordView(record, value.value, key.value, 1))
          continue
        }
        const exit = yield* Effect.exit(decoded(record, value, key))
        if (Exit.isSuccess(exit)) views.push(new BatchRecordView(record, exit.value[0], exit.value[1], 1))
        else (undecoded ??= []).push({ record, cause: exit.cause })
      }
      if (views.length > 0) yield* runUnit(views, BatchRecordView.recordOf, attempt, undefined)
      // Each on its own, as a per-record actor's: a dead letter, a skip, a halt.
      if (undecoded !== undefined) {
        for (const { record, cause } of undecoded) {
          yield* runUnit([new Undecoded(record, 1)], Undecoded.recordOf, redecode, cause)
        }
      }
    })

  const handle = (records: ReadonlyArray<ConsumerRecord>): Effect.Effect<void, Halted, R> =>
    Effect.suspend(() => {
      // Usually all of them: filtered (copied) only when some may not start.
      const startable = records.every(deps.startable) ? records : records.filter(deps.startable)
      if (startable.length === 0) return Effect.void
      if (!hooks.enabled) return handleStartable(startable)
      const span = hooks.onBatchStart(startable)
      if (span === undefined) return handleStartable(startable)
      return handleStartable(startable).pipe(
        Effect.provideService(Tracer.ParentSpan, span),
        Effect.onExit((exit) => Effect.sync(() => void hooks.onRecordEnd(span, exit, status.lastOutcome))),
      )
    })

  return { handle }
}
