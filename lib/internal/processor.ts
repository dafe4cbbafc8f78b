/**
 * How a partition actor handles records: decode, run the handler (with its timeout) with the
 * record in `RecordContext`, and on failure apply the error policy (retries, pauses, dead
 * letter, skip, halt) until the record is done. Each record done is booked with the offset
 * tracker and the committer. Defects and interruptions pass through to supervision.
 *
 * Two entry points: `handle` for one record on its own (unordered lanes), and `inOrder` for
 * records one after another in the current fiber (partition order, and each key's lane).
 */
import { Cause, type Clock, Context, Data, Duration, Effect, Exit, Schedule, Tracer } from "effect"
import { type Actor, DecodeError, HandlerTimeout } from "../Actor.ts"
import * as Codec from "../Codec.ts"
import type { ErrorPolicy } from "../ErrorPolicy.ts"
import { RecordContext } from "../RecordContext.ts"
import type { ConsumerRecord, Header } from "../Transport.ts"
import type { Committer } from "./committer.ts"
import type { DurationHistogram } from "./durationHistogram.ts"
import { describe } from "./errorText.ts"
import type { OffsetTracker } from "./offsetTracker.ts"
import type { PartitionHooks, RecordOutcome } from "./partitionHooks.ts"
import * as PlainDecode from "./plainDecode.ts"
import * as SyncEffect from "./syncEffect.ts"

/**
 * Raised when a policy halts the partition: the actor stops and commits nothing past the record
 * (`offset`, the halting record's, for the health report).
 */
export class Halted extends Data.TaggedError("Halted")<{ readonly reason: string; readonly offset?: number | undefined }> {}

/**
 * Why a partition is paused on the transport; several at once are possible. `operator`: the
 * system's `pause` (run-time control), until its `resume`.
 */
export type PauseReason = "mailbox" | "policy" | "dead-letter" | "halted" | "operator"

/** What of a partition's status record handling keeps current. */
export interface HandlingStatus {
  state: "running" | "retrying" | "paused" | "restarting" | "draining" | "halted" | "stopped" | "failed" | "blocked" | "fenced"
  processed: number
  failed: number
  retried: number
  skipped: number
  lastProgress: number
  lastError: string | undefined
  lastOutcome: RecordOutcome
}

export interface ProcessorDeps<R> {
  readonly actor: Actor<R>
  readonly status: HandlingStatus
  readonly clock: Clock.Clock
  readonly hooks: PartitionHooks
  readonly tracker: OffsetTracker
  readonly committer: Committer
  readonly durations: DurationHistogram
  readonly pauseFor: (reason: PauseReason) => Effect.Effect<void>
  readonly resumeFor: (reason: PauseReason) => Effect.Effect<void>
  readonly deadLetter: (
    record: ConsumerRecord,
    error: { readonly _tag: string; readonly message?: string },
    attempts: number,
  ) => Effect.Effect<void>
  /** Counts `records` (default 1) records in the outcome metric. */
  readonly outcome: (name: "failed" | "retried" | "dead_lettered" | "skipped", records?: number) => Effect.Effect<void>
  /** Whether a record may start: not after a revocation, not when it completed before a restart. */
  readonly startable: (record: ConsumerRecord) => boolean
  /** Told when a record is done, however it ended, after the tracker was. */
  readonly onSettled?: ((record: ConsumerRecord) => void) | undefined
  /** Exactly-once actors: the partition's open transaction, as the error policy needs it. */
  readonly transactions?: TransactionView | undefined
}

/** Where a record's error policy left off when its transaction was rewound. */
export interface Carried {
  readonly attempt: number
  readonly retries: number
  readonly steps: Map<ErrorPolicy, Step>
  /** Waited before the next try (a retry's or a pause's delay). */
  readonly delay: Duration.Duration | undefined
  readonly pause: boolean
  /** The policy's end, carried out in the new transaction without running the handler again. */
  readonly terminal: { readonly then: "dead-letter" | "skip"; readonly error: { readonly _tag: string; readonly message?: string } } | undefined
}

type Step = (now: number, input: unknown) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>

/**
 * What the processor needs of an exactly-once partition's transactions. A failed try whose
 * output is in the open transaction cannot be retried, dead-lettered or skipped inside it: that
 * output would commit too. So the policy's next step is carried over (`carried`, by offset), the
 * transaction is rewound (`rewind` aborts it and the partition is handled again from its
 * committed offset), and when the record comes round again the step runs in a new transaction.
 */
export interface TransactionView {
  readonly produced: (offset: number) => boolean
  readonly carried: Map<number, Carried>
  readonly rewind: (reason: string) => Effect.Effect<never>
}

export interface Processor<R> {
  /** What it was made with: a batch actor's batch processor shares it (`batchProcessor.ts`). */
  readonly deps: ProcessorDeps<R>
  /** Handles one record to its end under the error policy; fails only with `Halted`. */
  readonly handle: (record: ConsumerRecord) => Effect.Effect<void, Halted, R>
  /** Handles startable records one after another, in the current fiber; fails only with `Halted`. */
  readonly inOrder: (records: ReadonlyArray<ConsumerRecord>) => Effect.Effect<void, Halted, R>
}

/**
 * `RecordContext`'s value: the record's key and headers are read from the record when the
 * handler asks. A record of Partita's own Kafka client decodes them from its batch's bytes on
 * access (a key view, a headers array), and most handlers never read them from the context:
 * copying them into a plain object per record cost more than a no-op handler. The record is
 * immutable, so a handler that keeps this object (or forks a fiber that reads it later) sees
 * the same values whenever it reads them.
 */
type RecordContextValue = RecordContext["Service"]
class RecordInContext implements RecordContextValue {
  readonly actor: string
  readonly group: string
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly timestamp: number
  readonly attempt: number
  readonly delivery: RecordContextValue["delivery"]
  readonly #record: ConsumerRecord
  constructor(actor: string, group: string, record: ConsumerRecord, attempt: number, delivery: RecordContextValue["delivery"]) {
    this.actor = actor
    this.group = group
    this.topic = record.topic
    this.partition = record.partition
    this.offset = record.offset
    this.timestamp = record.timestamp
    this.attempt = attempt
    this.delivery = delivery
    this.#record = record
  }
  get key(): Uint8Array | null {
    return this.#record.key
  }
  get headers(): ReadonlyArray<Header> {
    return this.#record.headers
  }
}

/** How a try of one record runs, which depends on its actor alone. */
interface Attempts<R> {
  /** What `RecordContext` holds while `record` is handled, on try number `attempt`. */
  readonly contextOf: (record: ConsumerRecord, attempt: number) => RecordContext["Service"]
  /** One try, decode then handle, without the record's context. */
  readonly attemptBare: (record: ConsumerRecord) => Effect.Effect<void, unknown, R>
  /** One try with the record in the handler's context. */
  readonly attemptOnce: (record: ConsumerRecord, attempt: number) => Effect.Effect<void, unknown, R>
}

/**
 * Made once per actor and shared by its partitions (a partition actor kept its own copy of
 * these closures, idle or not). Keyed weakly: an actor no longer used takes its entry with it.
 */
const attemptsByActor = new WeakMap<object, unknown>()
const attemptsOf = <R>(actor: Actor<R>): Attempts<R> => {
  let attempts = attemptsByActor.get(actor) as Attempts<R> | undefined
  if (attempts === undefined) {
    attempts = makeAttempts(actor)
    attemptsByActor.set(actor, attempts)
  }
  return attempts
}

/** Makes the `DecodeError` of `record`'s `part` from its codec's error. */
export const decodeErrorOf = (record: ConsumerRecord, part: "key" | "value") => (error: Codec.CodecError): DecodeError =>
  new DecodeError({
    topic: record.topic,
    partition: record.partition,
    offset: record.offset,
    part,
    reason: error.reason,
    problems: error.problems,
    key: record.key,
    value: record.value,
  })

const makeAttempts = <R>(actor: Actor<R>): Attempts<R> => {
  const decodeFailed = decodeErrorOf
  const timeoutFor = (record: ConsumerRecord, timeout: Duration.Input) => () =>
    Effect.fail(
      new HandlerTimeout({
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        timeout: Duration.fromInputUnsafe(timeout),
      }),
    )
  /** What `RecordContext` holds while `record` is handled, on try number `attempt`. */
  const contextOf = (record: ConsumerRecord, attempt: number): RecordContext["Service"] =>
    new RecordInContext(actor.name, actor.group, record, attempt, actor.delivery)
  /** Runs the handler for decoded key and value; the caller puts the record in the context. */
  const runHandler = (record: ConsumerRecord, value: unknown, key: unknown) => {
    const handled = actor.handle(value, key)
    // An Exit has ended already: there is nothing left to time out.
    return actor.handlerTimeout === undefined || Exit.isExit(handled)
      ? handled
      : Effect.timeoutOrElse(handled, { duration: actor.handlerTimeout, orElse: timeoutFor(record, actor.handlerTimeout) })
  }
  /** `Codec.bytes` for both, the default key's and the raw value's: nothing to decode, nothing can fail. */
  const bytesOnly = actor.decodeValue === Codec.bytes.decode && actor.decodeKey === Codec.bytes.decode
  /** The codecs' decodes as plain functions, when they have them (the built-in ones do: plainDecode.ts). */
  const plainValue = PlainDecode.of(actor.decodeValue)
  const plainKey = PlainDecode.of(actor.decodeKey)
  /** The default key codec: the key is its bytes, not even a call to find that out. */
  const keyAsBytes = actor.decodeKey === Codec.bytes.decode
  /**
   * One try, decode then handle, without the record's context (see `attemptOnce`). Codecs that
   * answer with an `Exit` (the built-in ones do) are read synchronously, which keeps two effects
   * per record off the hot path.
   */
  const attemptBare = (record: ConsumerRecord): Effect.Effect<void, unknown, R> => {
    if (bytesOnly) return runHandler(record, record.value, record.key)
    if (plainValue !== undefined && plainKey !== undefined) {
      // No Exit per record; a decode that declines is run again below, for its error.
      const value = plainValue(record.value)
      if (value !== PlainDecode.declined) {
        const key = keyAsBytes ? record.key : plainKey(record.key)
        if (key !== PlainDecode.declined) return runHandler(record, value, key)
      }
    }
    const value = actor.decodeValue(record.value)
    const key = actor.decodeKey(record.key)
    if (Exit.isExit(value) && Exit.isExit(key)) {
      if (Exit.isFailure(value)) return Effect.mapError(value, decodeFailed(record, "value"))
      if (Exit.isFailure(key)) return Effect.mapError(key, decodeFailed(record, "key"))
      return runHandler(record, value.value, key.value)
    }
    return Effect.flatMap(Effect.mapError(value, decodeFailed(record, "value")), (decodedValue) =>
      Effect.flatMap(Effect.mapError(key, decodeFailed(record, "key")), (decodedKey) =>
        runHandler(record, decodedValue, decodedKey)))
  }
  /** One try with the record in the handler's context. */
  const attemptOnce = (record: ConsumerRecord, attempt: number): Effect.Effect<void, unknown, R> =>
    Effect.provideService(attemptBare(record), RecordContext, contextOf(record, attempt))

  return { contextOf, attemptBare, attemptOnce }
}

export const make = <R>(deps: ProcessorDeps<R>): Processor<R> => {
  const { actor, status, clock, hooks, tracker, committer, startable, onSettled } = deps

  const { contextOf, attemptBare, attemptOnce } = attemptsOf(actor)

  /**
   * A record is done, however it ended: book it, and ask for a commit if enough completed.
   * Returns the time it ended, in Clock millis (millisecond resolution: reading the clock's
   * nanoseconds per record cost more than a fast handler itself).
   */
  const settleUnsafe = (record: ConsumerRecord, startedMillis: number): number => {
    const now = clock.currentTimeMillisUnsafe()
    tracker.complete(record.offset)
    status.processed++
    status.lastProgress = now
    deps.durations.record((now - startedMillis) / 1000)
    committer.completed()
    if (onSettled !== undefined) onSettled(record)
    return now
  }
  const settle = (record: ConsumerRecord, startedMillis: number): Effect.Effect<void> =>
    Effect.sync(() => void settleUnsafe(record, startedMillis))

  const handleRecord = (record: ConsumerRecord): Effect.Effect<void, Halted, R> => {
    const started = clock.currentTimeMillisUnsafe()
    return Effect.matchCauseEffect(attemptOnce(record, 1), {
      onSuccess: () => settle(record, started),
      onFailure: (cause) => recover(record, cause, started),
    })
  }

  /** `handleRecord` between the record's start and end hooks. */
  const handleHooked = (record: ConsumerRecord): Effect.Effect<void, Halted, R> => {
    const span = hooks.onRecordStart(record)
    status.lastOutcome = "handled"
    if (span === undefined) return handleRecord(record)
    return handleRecord(record).pipe(
      Effect.provideService(Tracer.ParentSpan, span),
      Effect.onExit((exit) => Effect.sync(() => void hooks.onRecordEnd(span, exit, status.lastOutcome))),
    )
  }

  /**
   * The first try failed: apply the policy, retrying as it says, until the record is done. With
   * no `firstFailure`, the record's policy goes on where a rewound transaction left it.
   */
  const recover = (record: ConsumerRecord, firstFailure: Cause.Cause<unknown> | undefined, started: number): Effect.Effect<void, Halted, R> =>
    Effect.gen(function*() {
      status.lastOutcome = "handled"
      const transactions = deps.transactions
      const carried = transactions?.carried.get(record.offset)
      if (carried !== undefined) transactions!.carried.delete(record.offset)
      let attempt = carried?.attempt ?? 1
      let retries = carried?.retries ?? 0
      const steps = carried?.steps ?? new Map<ErrorPolicy, Step>()
      const stepOf = (policy: ErrorPolicy & { readonly schedule: Schedule.Schedule<unknown, unknown> }) =>
        Effect.gen(function*() {
          let step = steps.get(policy)
          if (step === undefined) {
            step = (yield* Schedule.toStep(policy.schedule)) as unknown as typeof step
            steps.set(policy, step!)
          }
          return step!
        })
      /** The delay before the next try, or undefined when the schedule is over. */
      const nextDelay = (policy: ErrorPolicy & { readonly schedule: Schedule.Schedule<unknown, unknown> }, error: unknown) =>
        Effect.gen(function*() {
          const step = yield* stepOf(policy)
          const next = yield* Effect.exit(step(clock.currentTimeMillisUnsafe(), error))
          return Exit.isSuccess(next) ? next.value[1] : undefined
        })
      const terminal = (then: "dead-letter" | "skip" | "halt", error: { readonly _tag: string; readonly message?: string }) =>
        then === "dead-letter"
          ? deps.deadLetter(record, error, attempt)
          : then === "skip"
          ? Effect.andThen(
            Effect.sync(() => {
              status.skipped++
              status.lastOutcome = "skipped"
            }),
            Effect.andThen(
              deps.outcome("skipped"),
              Effect.logWarning(`Skipped ${record.topic}/${record.partition}@${record.offset}: ${describe(error)}`),
            ),
          )
          : Effect.fail(new Halted({ reason: describe(error), offset: record.offset }))
      /**
       * Exactly-once, when this record's failed try produced in the open transaction: carry the
       * policy's next step over and rewind (undefined when nothing needs to).
       */
      const rewindFirst = (next: Omit<Carried, "steps">): Effect.Effect<never> | undefined =>
        transactions === undefined || !transactions.produced(record.offset) ? undefined : Effect.suspend(() => {
          transactions.carried.set(record.offset, { ...next, steps })
          return transactions.rewind(
            `${record.topic}/${record.partition}@${record.offset} failed on attempt ${attempt} with output in the open transaction; its ${
              next.terminal === undefined ? "next try" : next.terminal.then
            } runs in a new transaction`,
          )
        })

      let cause: Cause.Cause<unknown> | undefined = firstFailure
      if (carried?.terminal !== undefined) {
        attempt = carried.attempt
        yield* terminal(carried.terminal.then, carried.terminal.error)
        cause = undefined
      } else if (carried !== undefined) {
        if (carried.delay !== undefined) {
          status.state = carried.pause ? "paused" : "retrying"
          if (carried.pause) yield* deps.pauseFor("policy")
          yield* Effect.sleep(carried.delay)
        }
        cause = undefined
      }
      while (carried?.terminal === undefined) {
        if (cause === undefined) {
          const exit = yield* Effect.exit(attemptOnce(record, attempt))
          if (Exit.isSuccess(exit)) break
          cause = exit.cause
        }
        const found = Cause.findErrorOption(cause)
        // Defects and interruptions are not the policy's business: supervision handles them.
        if (found._tag === "None") return yield* Effect.failCause(cause as Cause.Cause<never>)
        cause = undefined
        const error = found.value as { readonly _tag: string; readonly message?: string }
        status.failed++
        status.lastError = describe(error)
        yield* deps.outcome("failed")
        const policy = actor.policyFor(error._tag)
        yield* Effect.logWarning(
          `Record ${record.topic}/${record.partition}@${record.offset} failed on attempt ${attempt} with ${describe(error)} (policy ${policy._tag})`,
        )
        if (policy._tag === "Retry") {
          const delay = policy.times !== undefined && retries >= policy.times ? undefined : yield* nextDelay(policy, error)
          if (delay === undefined) {
            if (policy.then !== "halt") {
              const rewound = rewindFirst({ attempt, retries, delay: undefined, pause: false, terminal: { then: policy.then, error } })
              if (rewound !== undefined) return yield* rewound
            }
            yield* terminal(policy.then, error)
            break
          }
          status.state = "retrying"
          status.retried++
          yield* deps.outcome("retried")
          if (hooks.enabled) {
            yield* hooks.onRecordRetry("retry", { attempt: attempt + 1, delayMillis: Duration.toMillis(delay), error: error._tag })
          }
          const rewound = rewindFirst({ attempt: attempt + 1, retries: retries + 1, delay, pause: false, terminal: undefined })
          if (rewound !== undefined) return yield* rewound
          yield* Effect.sleep(delay)
          attempt++
          retries++
          continue
        }
        if (policy._tag === "PausePartition") {
          const delay = yield* nextDelay(policy, error)
          if (delay === undefined) {
            yield* terminal("halt", error)
            break
          }
          status.state = "paused"
          if (hooks.enabled) {
            yield* hooks.onRecordRetry("pause", { attempt: attempt + 1, delayMillis: Duration.toMillis(delay), error: error._tag })
          }
          const rewound = rewindFirst({ attempt: attempt + 1, retries, delay, pause: true, terminal: undefined })
          if (rewound !== undefined) return yield* rewound
          yield* deps.pauseFor("policy")
          yield* Effect.sleep(delay)
          attempt++
          continue
        }
        if (policy._tag === "DeadLetter" || policy._tag === "Skip") {
          const then = policy._tag === "DeadLetter" ? "dead-letter" : "skip"
          const rewound = rewindFirst({ attempt, retries, delay: undefined, pause: false, terminal: { then, error } })
          if (rewound !== undefined) return yield* rewound
          yield* terminal(then, error)
        } else yield* terminal("halt", error)
        break
      }
      yield* deps.resumeFor("policy")
      status.state = "running"
      yield* settle(record, started)
    })

  /**
   * Runs an `Effect.sync` handler's thunk as the fiber's run loop would: a throw is a defect.
   * (The one try/catch here: it stands in for the run loop's own, around the same call.)
   */
  const runThunk = (thunk: () => unknown): Cause.Cause<never> | undefined => {
    try {
      thunk()
      return undefined
    } catch (error) {
      return Cause.die(error)
    }
  }

  /**
   * Handles records one after another in the current fiber: the hot path of `partition` and
   * `byKey` ordering. A loop, not a generator, so a record costs as few fiber steps as its handler
   * needs:
   * - the handler is called (decoding first) before anything is put in the fiber's context: what
   *   it returns is a description, which reads the context only when it runs. When that is
   *   already an `Exit` (a handler answering `Effect.void` or `Exit.succeed`, a failed decode),
   *   the record ends in the same synchronous step, with no fiber step and no context at all;
   * - when it is an `Effect.sync` (and no tracer wraps each primitive in its own context), the
   *   loop calls its thunk itself: the record ends in the same step too, with no context either;
   * - otherwise the record (and its span, if the hooks gave one) goes into the fiber's context
   *   with one `setContext`, where `provideService` per record would cost several effects and an
   *   exit hook each, and the handler runs under one `matchCauseEffect`, whose success goes on
   *   with the next records. Between two records no effect runs, so the fiber's own context is
   *   put back only after a recovery and when the loop ends, however it ends.
   * Records whose handlers answer an `Exit` or an `Effect.sync` run without an interruption point
   * between them: at most a chunk (1000 records by default) of synchronous work, as one fiber
   * step. A failed first try goes to `recover`, in the record's context, which provides the
   * context per attempt as usual. In order, a record's start is the end of the one before, so the
   * clock is read once per record that runs, and once per run of records that ended in the step.
   */
  const carried = deps.transactions?.carried
  const inOrder = (records: ReadonlyArray<ConsumerRecord>): Effect.Effect<void, Halted, R> =>
    Effect.withFiber((fiber) => {
      const base = fiber.context
      // A tracer that runs every primitive in its own context (`Tracer.context`, e.g. one
      // propagating an async context) must see the handler's thunk run: no direct calls then.
      const direct = Context.get(base, Tracer.Tracer).context === undefined
      // The record's context on a flat copy of the fiber's: each record's context is new to the
      // fiber (a new span, when traced), and reading its settings walks every layer added on top.
      const flat = Context.makeUnsafe(base.mapUnsafe)
      let index = 0
      let started = clock.currentTimeMillisUnsafe()
      /**
       * Records ended in the loop's own synchronous step since the clock was last read: they share
       * that step's time, read once when the step ends, rather than a clock read each (which cost
       * as much as the rest of such a record's booking). The clock has millisecond resolution, so
       * read per record most of them would have booked 0 ms and one of them the whole millisecond.
       */
      let unclocked = 0
      /** Books the time of the records ended since the last read; `started` is then now. */
      const clockIn = () => {
        if (unclocked === 0) return
        const now = clock.currentTimeMillisUnsafe()
        status.lastProgress = now
        deps.durations.recordMany((now - started) / 1000 / unclocked, unclocked)
        started = now
        unclocked = 0
      }
      /** A record handled in this step is done: booked as `settleUnsafe` does, its time by `clockIn`. */
      const endedHere = (current: ConsumerRecord, span: Tracer.Span | undefined) => {
        tracker.complete(current.offset)
        status.processed++
        unclocked++
        committer.completed()
        if (onSettled !== undefined) onSettled(current)
        record = undefined
        open = undefined
        if (span !== undefined) spanTime = hooks.onRecordEnd(span, Exit.void, "handled")
      }
      /** The record whose handler is running, and its span: the span ends however the loop ends. */
      let record: ConsumerRecord | undefined
      let open: Tracer.Span | undefined
      // With hooks, one record's end is the next one's start: one read of the nanosecond clock
      // per record (a few BigInts each) rather than two.
      let spanTime: bigint | undefined

      /** The record whose context the fiber has: left in place between records, as nothing runs there. */
      let entered: ConsumerRecord | undefined
      const enter = (current: ConsumerRecord, span: Tracer.Span | undefined) => {
        entered = current
        const context = Context.add(flat, RecordContext, contextOf(current, 1))
        fiber.setContext(span === undefined ? context : Context.add(context, Tracer.ParentSpan, span))
      }
      const handled = (_: unknown): Effect.Effect<void, Halted, R> => {
        started = settleUnsafe(record!, started)
        const span = open
        record = undefined
        open = undefined
        if (span !== undefined) spanTime = hooks.onRecordEnd(span, Exit.void, "handled")
        return next()
      }
      const failed = (cause: Cause.Cause<unknown> | undefined): Effect.Effect<void, Halted, R> => {
        const current = record!
        if (entered !== current) enter(current, open)
        // The policy's retries, events and dead letter run inside the record's span.
        return Effect.flatMap(Effect.exit(recover(current, cause, started)), (recovered) => {
          fiber.setContext(base)
          entered = undefined
          const span = open
          record = undefined
          open = undefined
          if (span !== undefined) spanTime = hooks.onRecordEnd(span, recovered, status.lastOutcome)
          if (Exit.isFailure(recovered)) return Effect.failCause(recovered.cause)
          started = clock.currentTimeMillisUnsafe()
          return next()
        })
      }
      // One object for every record: `matchCauseEffect` keeps the functions, it copies nothing.
      const afterHandler = { onSuccess: handled, onFailure: (cause: Cause.Cause<unknown>) => failed(cause) }
      const next = (): Effect.Effect<void, Halted, R> => {
        while (index < records.length) {
          const current = records[index++]!
          if (!startable(current)) continue
          const span = hooks.enabled ? hooks.onRecordStart(current, spanTime) : undefined
          record = current
          open = span
          // A record whose transaction was rewound goes on with its policy where it left off.
          if (carried !== undefined && carried.size > 0 && carried.has(current.offset)) {
            clockIn()
            return failed(undefined)
          }
          const attempt = attemptBare(current)
          const thunk = direct ? SyncEffect.thunkOf(attempt) : undefined
          if (thunk === undefined && Exit.isExit(attempt)) {
            if (Exit.isFailure(attempt)) {
              clockIn()
              return failed(attempt.cause)
            }
            endedHere(current, span)
            continue
          }
          if (thunk === undefined) {
            enter(current, span)
            clockIn()
            return Effect.matchCauseEffect(attempt, afterHandler)
          }
          // An `Effect.sync` handler: its thunk runs here, as the fiber would run it, and the record
          // ends in this step (see syncEffect.ts). Without the record in the fiber's context: a
          // thunk cannot read the context (`yield* RecordContext` is an effect, and `Effect.run*`
          // inside it starts from an empty one); only `Fiber.getCurrent()` would show it, and
          // then it shows the fiber's own, not an earlier record's. Putting it there per record
          // was a third of what such a record allocated. A failure enters it, for the policy.
          if (entered !== undefined) {
            fiber.setContext(base)
            entered = undefined
          }
          const defect = runThunk(thunk)
          if (defect !== undefined) {
            clockIn()
            return failed(defect)
          }
          endedHere(current, span)
        }
        clockIn()
        if (entered !== undefined) {
          fiber.setContext(base)
          entered = undefined
        }
        return Effect.void
      }
      return Effect.suspend(next).pipe(Effect.onExit((exit) =>
        Effect.sync(() => {
          fiber.setContext(base)
          if (open !== undefined) hooks.onRecordEnd(open, exit, status.lastOutcome)
          record = undefined
          open = undefined
        })
      ))
    })

  // Decided once per partition actor: without hooks, the hot path has no span code at all.
  return { deps, handle: hooks.enabled ? handleHooked : handleRecord, inOrder }
}
