/**
 * One partition actor: the fiber that owns one assigned partition for one actor.
 *
 * Three fibers share a bounded mailbox:
 * - the fetcher pulls batches from the claim's stream into the mailbox; a full mailbox blocks
 *   it and pauses the partition on the transport, so memory stays bounded whatever the backlog;
 * - the processor takes chunks from the mailbox and runs the handler under the ordering mode,
 *   applying the error policy per record; defects restart it on the supervision schedule, and
 *   it resumes with the chunk's records that had not completed;
 * - the committer commits the highest contiguous completed offset on an interval.
 * Whatever ends the actor (revocation, shutdown, interruption), it commits what completed.
 */
import { Cause, Clock, Context, Data, Deferred, Duration, Effect, Exit, Fiber, Metric, Option, Schedule, Stream, Tracer } from "effect"
import { type Actor, DecodeError, HandlerTimeout } from "../Actor.ts"
import type { CodecError } from "../Codec.ts"
import type { ErrorPolicy } from "../ErrorPolicy.ts"
import { Producer } from "../Producer.ts"
import { RecordContext } from "../RecordContext.ts"
import type { ConsumerRecord, PartitionClaim, Subscription } from "../Transport.ts"
import * as Tracing from "../Tracing.ts"
import * as DeadLetter from "./deadLetter.ts"
import { DurationHistogram } from "./durationHistogram.ts"
import { Mailbox } from "./mailbox.ts"
import { OffsetTracker } from "./offsetTracker.ts"
import * as OtlpTracer from "./otlpTracer.ts"
import { Signal } from "./signal.ts"

const keyText = new TextDecoder()

/**
 * A partition actor's state, as the health report shows it.
 */
export interface PartitionStatus {
  readonly actor: string
  readonly group: string
  readonly topic: string
  readonly partition: number
  /** `blocked`: a dead letter cannot be written (see `deadLetter.ts`); unhealthy until it is. */
  state: "running" | "retrying" | "paused" | "restarting" | "draining" | "halted" | "stopped" | "failed" | "blocked"
  /** Why the transport is paused for this partition, if it is. */
  readonly pausedFor: Set<"mailbox" | "policy" | "dead-letter" | "halted">
  processed: number
  failed: number
  retried: number
  deadLettered: number
  skipped: number
  restarts: number
  mailbox: number
  /** The last committed offset (the next one a new owner would read). */
  committed: number
  /** The next offset the partition actor will fetch. */
  position: number
  /** Clock millis of the last record completed (or of the start). */
  lastProgress: number
  lastError: string | undefined
  /** How the last record ended: handled, or by a policy. */
  lastOutcome: "handled" | "dead_lettered" | "skipped"
}

/** Raised when a policy halts the partition: the actor stops and commits nothing past the record. */
class Halted extends Data.TaggedError("Halted")<{ readonly reason: string }> {}

/**
 * A partition actor restarted more often than its supervision allows, and the actor is set to
 * fail the system when that happens.
 */
export class RestartsExhausted extends Data.TaggedError("RestartsExhausted")<{
  readonly actor: string
  readonly topic: string
  readonly partition: number
  readonly restarts: number
  readonly lastDefect: string
}> {
  override get message(): string {
    return `Partition actor ${this.actor} for ${this.topic}/${this.partition} restarted ${this.restarts} times; last defect: ${this.lastDefect}`
  }
}

const consumed = Metric.counter("messaging.client.consumed.messages", {
  description: "Records handed to partition actors",
  incremental: true,
})
const durationBoundaries = Metric.exponentialBoundaries({ start: 0.0005, factor: 2, count: 16 })
/** The series is fed by a `DurationHistogram` per partition (see `registerDurations`). */
const processDuration = Metric.histogram("messaging.process.duration", {
  description: "Time to handle one record, in seconds, retries included",
  boundaries: durationBoundaries,
})
const outcomes = Metric.counter("partita.records.outcome", {
  description: "Records by how their handling ended: failed, retried, dead_lettered, skipped",
  incremental: true,
})
/** The messaging attributes of one partition of a group: its metrics' series and its spans'. */
const partitionAttributes = (partition: { readonly topic: string; readonly partition: number; readonly group: string }) => ({
  "messaging.system": "kafka",
  "messaging.destination.name": partition.topic,
  "messaging.destination.partition.id": String(partition.partition),
  "messaging.consumer.group.name": partition.group,
})

/**
 * A partition's `messaging.process.duration` histogram, registered with the metric registry of
 * `context` under the partition's attributes until the returned registration is removed.
 */
export const registerDurations = (
  context: Context.Context<never>,
  partition: { readonly topic: string; readonly partition: number; readonly group: string },
): { readonly histogram: DurationHistogram; readonly remove: () => void } => {
  const histogram = new DurationHistogram(durationBoundaries)
  const series = Metric.withAttributes(processDuration, partitionAttributes(partition))
  const registration = Metric.registerUnsafe(series, context, histogram.hooks())
  return { histogram, remove: () => registration.remove() }
}
const restartsMetric = Metric.counter("partita.partition.restarts", {
  description: "Partition actor restarts after a defect",
  incremental: true,
})

/** An error's message, or, for a tagged error without one, its fields as JSON: `{"reason":"down"}`. */
export const messageOf = (error: { readonly _tag: string; readonly message?: string }): string => {
  if (error.message !== undefined && error.message !== "") return error.message
  const fields = Object.fromEntries(Object.entries(error).filter(([key]) => key !== "_tag" && key !== "stack"))
  return Object.keys(fields).length === 0 ? "" : JSON.stringify(fields)
}

/** `StoreError: {"reason":"down"}`, for logs and health. */
export const describe = (error: { readonly _tag: string; readonly message?: string }): string => {
  const message = messageOf(error)
  return message === "" ? error._tag : `${error._tag}: ${message}`
}

export interface Deps<R> {
  readonly actor: Actor<R>
  readonly claim: PartitionClaim
  readonly subscription: Subscription
  readonly producer: Producer["Service"]
  readonly status: PartitionStatus
  /** The transport's span attributes (server address, client id). */
  readonly telemetry: Readonly<Record<string, string | number>>
  /** This partition's `messaging.process.duration`, kept across restarts and reassignments. */
  readonly durations: DurationHistogram
}

export interface Control {
  /**
   * Stops taking records. `drain` handles what the mailbox holds first (shutdown);
   * `in-flight` only finishes the records already started (revocation).
   */
  readonly stop: (mode: "drain" | "in-flight") => Effect.Effect<void>
}

/**
 * Runs the partition actor until it is stopped (see `Control`) or interrupted. Fails only with
 * `RestartsExhausted` when supervision says to fail the system.
 */
export const run = <R>(deps: Deps<R>, onControl: (control: Control) => void) =>
  Effect.gen(function*() {
    const { actor, claim, subscription, producer, status } = deps
    const tp = { topic: claim.topic, partition: claim.partition }
    const attributes = partitionAttributes({ ...tp, group: actor.group })
    const consumedHere = Metric.withAttributes(consumed, attributes)
    const outcome = (name: "failed" | "retried" | "dead_lettered" | "skipped") =>
      Metric.update(Metric.withAttributes(outcomes, { ...attributes, "partita.outcome": name }), 1)

    // Read once: the hot path below uses them synchronously, per record.
    const clock = yield* Clock.Clock
    const tracing = yield* Tracing.Settings
    const tracer = yield* Effect.tracer
    const spanAttributes: Record<string, unknown> = { ...deps.telemetry, ...attributes }
    // Written once per partition actor, not per span (see `OtlpTracer.SharedAttributes`).
    const processAttributes = new OtlpTracer.SharedAttributes({
      ...spanAttributes,
      "messaging.operation.name": "process",
      "messaging.operation.type": "process",
    })
    const pollAttributes = new OtlpTracer.SharedAttributes({
      ...spanAttributes,
      "messaging.operation.name": "poll",
      "messaging.operation.type": "receive",
    })

    const mailbox = new Mailbox<ConsumerRecord>(actor.mailboxCapacity)
    const tracker = new OffsetTracker(claim.startOffset)
    let stopping: "no" | "drain" | "in-flight" = "no"
    /** Completes when the actor is asked to stop: a halted or stopped actor waits for it. */
    const stopRequested = yield* Deferred.make<void>()
    let lastCommitted = claim.startOffset
    let sinceCommit = 0
    const commitRequested = new Signal()
    let commitPending = false
    /** Asks the committer to commit now (at most one request outstanding). */
    const requestCommit = () => {
      if (commitPending) return
      commitPending = true
      commitRequested.notify()
    }
    status.position = claim.startOffset
    status.committed = claim.startOffset
    status.lastProgress = yield* Clock.currentTimeMillis

    // ---- pausing, for any number of reasons at once ------------------------------------------
    const pauseFor = (reason: "mailbox" | "policy" | "dead-letter" | "halted") =>
      Effect.suspend(() => {
        const wasPaused = status.pausedFor.size > 0
        status.pausedFor.add(reason)
        return wasPaused ? Effect.void : subscription.pause([tp])
      })
    const resumeFor = (reason: "mailbox" | "policy" | "dead-letter" | "halted") =>
      Effect.suspend(() => {
        if (!status.pausedFor.delete(reason) || status.pausedFor.size > 0) return Effect.void
        return subscription.resume([tp])
      })

    // ---- commits -----------------------------------------------------------------------------
    const commitTraced = (offset: number) => {
      const commit = subscription.commit([{ ...tp, offset }])
      return tracing.enabled
        ? Effect.useSpan(`commit ${claim.topic}`, {
          kind: "client",
          attributes: {
            ...spanAttributes,
            "messaging.operation.name": "commit",
            "messaging.operation.type": "settle",
            "messaging.kafka.offset": offset,
          },
        }, (span) => Effect.tapError(commit, (error) => Effect.sync(() => span.attribute("error.type", error.code))))
        : commit
    }
    const commitCompleted = Effect.suspend(() => {
      commitPending = false
      const offset = tracker.committable()
      if (offset <= lastCommitted || actor.delivery === "at-most-once") return Effect.void
      return commitTraced(offset).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            lastCommitted = Math.max(lastCommitted, offset)
            status.committed = lastCommitted
            sinceCommit = 0
          })
        ),
        Effect.catch((error) => Effect.logWarning(`Commit of ${claim.topic}/${claim.partition}@${offset} failed: ${error.message}`)),
      )
    })
    /** At-most-once: the offset past a chunk is committed before any of it is handled. */
    const commitAhead = (offset: number) =>
      commitTraced(offset).pipe(
        Effect.tap(() =>
          Effect.sync(() => {
            lastCommitted = Math.max(lastCommitted, offset)
            status.committed = lastCommitted
          })
        ),
      )

    // ---- dead letters ------------------------------------------------------------------------
    const deadLetter = DeadLetter.make({
      actor,
      producer,
      status,
      tracing,
      pause: pauseFor("dead-letter"),
      resume: resumeFor("dead-letter"),
      written: outcome("dead_lettered"),
      stopped: Deferred.await(stopRequested),
    })

    // ---- one record ----------------------------------------------------------------------------
    const decodeFailed = (record: ConsumerRecord, part: "key" | "value") => (error: CodecError) =>
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
    const contextOf = (record: ConsumerRecord, attempt: number): RecordContext["Service"] => ({
      actor: actor.name,
      group: actor.group,
      topic: record.topic,
      partition: record.partition,
      offset: record.offset,
      key: record.key,
      headers: record.headers,
      timestamp: record.timestamp,
      attempt,
    })
    /** Runs the handler for decoded key and value; the caller puts the record in the context. */
    const runHandler = (record: ConsumerRecord, value: unknown, key: unknown) => {
      const handled = actor.handle(value, key)
      return actor.handlerTimeout === undefined
        ? handled
        : Effect.timeoutOrElse(handled, { duration: actor.handlerTimeout, orElse: timeoutFor(record, actor.handlerTimeout) })
    }
    /**
     * One try, decode then handle, without the record's context (see `attemptOnce`). Codecs that
     * answer with an `Exit` (the built-in ones do) are read synchronously, which keeps two effects
     * per record off the hot path.
     */
    const attemptBare = (record: ConsumerRecord): Effect.Effect<void, unknown, R> => {
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
      if (++sinceCommit >= actor.commit.records) requestCommit()
      return now
    }
    const settle = (record: ConsumerRecord, startedMillis: number): Effect.Effect<void> =>
      Effect.sync(() => void settleUnsafe(record, startedMillis))

    /** Handles one record to its end under the error policy; fails only with `Halted`; defects pass through. */
    const handleRecord = (record: ConsumerRecord): Effect.Effect<void, Halted, R> => {
      const started = clock.currentTimeMillisUnsafe()
      return Effect.matchCauseEffect(attemptOnce(record, 1), {
        onSuccess: () => settle(record, started),
        onFailure: (cause) => recover(record, cause, started),
      })
    }

    /** Marks the record's `process` span: one event per retry or pause, with the attempt and delay. */
    const spanEvent = (name: string, details: { readonly attempt: number; readonly delay: Duration.Duration; readonly error: string }) =>
      Effect.ignore(Effect.map(Effect.currentSpan, (span) =>
        span.event(name, clock.currentTimeNanosUnsafe(), {
          "messaging.retry.attempt": details.attempt,
          "messaging.retry.delay_ms": Duration.toMillis(details.delay),
          "error.type": details.error,
        })))

    /**
     * Starts the record's `process {topic}` span (CONSUMER), whose parent is the producer's span
     * from the record's headers (or which links to it, by the `consumerParent` setting).
     */
    const processName = `process ${claim.topic}`
    const startProcessSpan = (record: ConsumerRecord, startTime: bigint = clock.currentTimeNanosUnsafe()): Tracer.Span => {
      const inbound = tracing.propagator.extract(record.headers)
      const asParent = inbound !== undefined && tracing.consumerParent === "parent"
      const span = tracer.span({
        name: processName,
        parent: asParent ? Option.some(inbound) : Option.none(),
        annotations: inbound?.annotations ?? Context.empty(),
        links: inbound !== undefined && !asParent ? [{ span: inbound, attributes: {} }] : [],
        startTime,
        kind: "consumer",
        root: !asParent,
        sampled: inbound?.sampled ?? true,
      })
      OtlpTracer.setAll(span, processAttributes)
      span.attribute("messaging.kafka.offset", record.offset)
      if (record.key !== null) span.attribute("messaging.kafka.message.key", keyText.decode(record.key))
      if (record.value === null) span.attribute("messaging.kafka.message.tombstone", true)
      return span
    }
    /** Ends a `process` span with how the record's handling ended. */
    const endProcessSpan = (
      span: Tracer.Span,
      exit: Exit.Exit<unknown, Halted>,
      outcome: PartitionStatus["lastOutcome"],
      endTime: bigint = clock.currentTimeNanosUnsafe(),
    ): void => {
      if (Exit.isFailure(exit)) {
        const error = Cause.findErrorOption(exit.cause)
        span.attribute("error.type", error._tag === "Some" ? error.value._tag : "_OTHER")
      } else if (outcome !== "handled") {
        span.attribute("partita.outcome", outcome)
      }
      span.end(endTime, exit)
    }
    /** `handleRecord` inside its `process` span. */
    const handleTraced = (record: ConsumerRecord): Effect.Effect<void, Halted, R> => {
      const span = startProcessSpan(record)
      status.lastOutcome = "handled"
      return handleRecord(record).pipe(
        Effect.provideService(Tracer.ParentSpan, span),
        Effect.onExit((exit) => Effect.sync(() => endProcessSpan(span, exit, status.lastOutcome))),
      )
    }
    /** The first try failed: apply the policy, retrying as it says, until the record is done. */
    const recover = (record: ConsumerRecord, firstFailure: Cause.Cause<unknown>, started: number): Effect.Effect<void, Halted, R> =>
      Effect.gen(function*() {
        status.lastOutcome = "handled"
        let attempt = 1
        let retries = 0
        const steps = new Map<ErrorPolicy, (now: number, input: unknown) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>>()
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
            const next = yield* Effect.exit(step(yield* Clock.currentTimeMillis, error))
            return Exit.isSuccess(next) ? next.value[1] : undefined
          })
        const terminal = (then: "dead-letter" | "skip" | "halt", error: { readonly _tag: string; readonly message?: string }) =>
          then === "dead-letter"
            ? deadLetter(record, error, attempt)
            : then === "skip"
            ? Effect.andThen(
              Effect.sync(() => {
                status.skipped++
                status.lastOutcome = "skipped"
              }),
              Effect.andThen(outcome("skipped"), Effect.logWarning(`Skipped ${record.topic}/${record.partition}@${record.offset}: ${describe(error)}`)),
            )
            : Effect.fail(new Halted({ reason: describe(error) }))

        let cause: Cause.Cause<unknown> | undefined = firstFailure
        while (true) {
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
          yield* outcome("failed")
          const policy = actor.policyFor(error._tag)
          yield* Effect.logWarning(
            `Record ${record.topic}/${record.partition}@${record.offset} failed on attempt ${attempt} with ${describe(error)} (policy ${policy._tag})`,
          )
          if (policy._tag === "Retry") {
            const delay = policy.times !== undefined && retries >= policy.times ? undefined : yield* nextDelay(policy, error)
            if (delay === undefined) {
              yield* terminal(policy.then, error)
              break
            }
            status.state = "retrying"
            status.retried++
            yield* outcome("retried")
            if (tracing.enabled) yield* spanEvent("retry", { attempt: attempt + 1, delay, error: error._tag })
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
            if (tracing.enabled) yield* spanEvent("pause", { attempt: attempt + 1, delay, error: error._tag })
            yield* pauseFor("policy")
            yield* Effect.sleep(delay)
            attempt++
            continue
          }
          if (policy._tag === "DeadLetter") yield* terminal("dead-letter", error)
          else if (policy._tag === "Skip") yield* terminal("skip", error)
          else yield* terminal("halt", error)
          break
        }
        yield* resumeFor("policy")
        status.state = "running"
        yield* settle(record, started)
      })

    // ---- chunks, by ordering -------------------------------------------------------------------
    /** False once a revocation stopped the actor, and for records a restarted processor already completed. */
    let resuming = false
    const startable = (record: ConsumerRecord) =>
      stopping !== "in-flight" && (!resuming || !tracker.isCompleted(record.offset))

    // Decided once per partition actor: with tracing off, the hot path has no span code at all.
    const handle = tracing.enabled ? handleTraced : handleRecord

    /**
     * Handles records one after another in the current fiber: the hot path of `partition` and
     * `byKey` ordering. Per record it puts the record (and, traced, its `process` span) into the
     * fiber's context with one `setContext`, where `provideService` per record would cost several
     * effects and an exit hook each, more than a fast handler; the fiber's own context is put
     * back after each record and whatever ends the loop. A failed first try goes to `recover`,
     * which provides the context per attempt as usual. In order, a record's start is the end of
     * the one before, so the clock is read once per record.
     */
    const processInOrder = (records: ReadonlyArray<ConsumerRecord>): Effect.Effect<void, Halted, R> =>
      Effect.withFiber((fiber) => {
        const base = fiber.context
        // The record's context on a flat copy of the fiber's: each record's context is new to the
        // fiber (a new span, when traced), and reading its settings walks every layer added on top.
        const flat = Context.makeUnsafe(base.mapUnsafe)
        /** The record's span while it is handled: ended however the loop ends, interrupted included. */
        let open: Tracer.Span | undefined
        return Effect.gen(function*() {
          let started = clock.currentTimeMillisUnsafe()
          // Traced, one record's span ends when the next one's starts: one read of the
          // nanosecond clock per record (a few BigInts each) rather than two.
          let spanTime = tracing.enabled ? clock.currentTimeNanosUnsafe() : 0n
          for (let index = 0; index < records.length; index++) {
            const record = records[index]!
            if (!startable(record)) continue
            const span = tracing.enabled ? startProcessSpan(record, spanTime) : undefined
            open = span
            const context = Context.add(flat, RecordContext, contextOf(record, 1))
            fiber.setContext(span === undefined ? context : Context.add(context, Tracer.ParentSpan, span))
            const exit = yield* Effect.exit(attemptBare(record))
            if (Exit.isSuccess(exit)) {
              fiber.setContext(base)
              started = settleUnsafe(record, started)
              open = undefined
              if (span !== undefined) {
                spanTime = clock.currentTimeNanosUnsafe()
                endProcessSpan(span, Exit.void, "handled", spanTime)
              }
              continue
            }
            // The policy's retries, events and dead letter run inside the record's span.
            const recovered = yield* Effect.exit(recover(record, exit.cause, started))
            fiber.setContext(base)
            open = undefined
            if (span !== undefined) {
              spanTime = clock.currentTimeNanosUnsafe()
              endProcessSpan(span, recovered, status.lastOutcome, spanTime)
            }
            if (Exit.isFailure(recovered)) return yield* Effect.failCause(recovered.cause)
            started = clock.currentTimeMillisUnsafe()
          }
        }).pipe(Effect.onExit((exit) =>
          Effect.sync(() => {
            fiber.setContext(base)
            if (open !== undefined) endProcessSpan(open, exit, status.lastOutcome)
            open = undefined
          })
        ))
      })

    const processChunk = (records: ReadonlyArray<ConsumerRecord>): Effect.Effect<void, Halted, R> => {
      const ordering = actor.ordering
      if (ordering._tag === "Partition") return processInOrder(records)
      if (ordering._tag === "Unordered") {
        return Effect.forEach(records, (record) => startable(record) ? handle(record) : Effect.void, {
          concurrency: ordering.concurrency,
          discard: true,
        })
      }
      // By key: each key's records in order, different keys concurrently.
      const byKey = new Map<string, Array<ConsumerRecord>>()
      for (const record of records) {
        const key = record.key === null ? "\u0000null" : keyString(record.key)
        const group = byKey.get(key)
        if (group === undefined) byKey.set(key, [record])
        else group.push(record)
      }
      return Effect.forEach(byKey.values(), processInOrder, { concurrency: ordering.concurrency, discard: true })
    }

    // ---- the processor, supervised ---------------------------------------------------------------
    const chunkSize = Math.min(actor.mailboxCapacity, 1000)
    let current: ReadonlyArray<ConsumerRecord> = []
    const processor: Effect.Effect<void, Halted, R> = Effect.gen(function*() {
      while (true) {
        // After a restart, first finish what the failed chunk left.
        if (resuming) {
          const pending = current.filter((record) => !tracker.isCompleted(record.offset))
          if (pending.length > 0 && stopping !== "in-flight") yield* processChunk(pending)
          resuming = false
          continue
        }
        if (stopping === "in-flight") return
        const taken = yield* Effect.exit(mailbox.take(chunkSize))
        if (Exit.isFailure(taken)) return // the mailbox ended: stopped, or the claim was revoked
        current = taken.value
        status.mailbox = mailbox.size
        if (status.pausedFor.has("mailbox") && status.mailbox <= actor.mailboxCapacity / 2) yield* resumeFor("mailbox")
        yield* Metric.update(consumedHere, current.length)
        if (actor.delivery === "at-most-once") {
          // Committed before handling: a crash loses these records instead of repeating them.
          yield* Effect.orDie(commitAhead(current[current.length - 1]!.offset + 1))
        }
        yield* processChunk(current)
        // Caught up: commit now rather than at the next interval, so a rebalance that finds this
        // partition idle (when Kafka may refuse a late commit) has nothing left to redo.
        if (mailbox.size === 0) requestCommit()
      }
    })

    const supervised = Effect.gen(function*() {
      const processing = Effect.provideService(processor, Producer, producer)
      const window = Duration.toMillis(actor.supervision.window)
      const restartTimes: Array<number> = []
      const step = yield* Schedule.toStep(actor.supervision.schedule)
      while (true) {
        const exit = yield* Effect.exit(processing)
        if (Exit.isSuccess(exit)) return
        const halted = Cause.findErrorOption(exit.cause)
        if (halted._tag === "Some") {
          status.state = "halted"
          status.lastError = halted.value.reason
          yield* pauseFor("halted")
          yield* Effect.logError(`Partition ${claim.topic}/${claim.partition} halted by policy: ${halted.value.reason}`)
          // Stay assigned and idle until revoked or stopped; nothing past the record is committed.
          return yield* Deferred.await(stopRequested)
        }
        if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
        const now = yield* Clock.currentTimeMillis
        restartTimes.push(now)
        while (restartTimes.length > 0 && restartTimes[0]! < now - window) restartTimes.shift()
        status.restarts++
        status.lastError = Cause.pretty(exit.cause)
        yield* Metric.update(Metric.withAttributes(restartsMetric, attributes), 1)
        yield* Effect.logError(`Partition actor ${claim.topic}/${claim.partition} died; restarting`, exit.cause)
        if (restartTimes.length > actor.supervision.maxRestarts) {
          if (actor.supervision.then === "fail-system") {
            status.state = "failed"
            return yield* Effect.fail(
              new RestartsExhausted({
                actor: actor.name,
                topic: claim.topic,
                partition: claim.partition,
                restarts: status.restarts,
                lastDefect: Cause.pretty(exit.cause),
              }),
            )
          }
          status.state = "stopped"
          yield* pauseFor("halted")
          yield* Effect.logError(
            `Partition ${claim.topic}/${claim.partition} stopped after ${restartTimes.length} restarts within ${window} ms`,
          )
          return yield* Deferred.await(stopRequested)
        }
        status.state = "restarting"
        resuming = true
        const next = yield* Effect.exit(step(now, exit.cause))
        yield* Effect.sleep(Exit.isSuccess(next) ? next.value[1] : Duration.seconds(10))
        status.state = "running"
      }
    })

    // ---- fetching -------------------------------------------------------------------------------
    let waitingSince = clock.currentTimeNanosUnsafe()
    /** A `poll {topic}` span (CLIENT) from when the actor asked for records to when they came, linking them. */
    const tracePoll = (batch: ReadonlyArray<ConsumerRecord>) => {
      const links: Array<{ readonly span: ReturnType<typeof Tracer.externalSpan>; readonly attributes: Record<string, unknown> }> = []
      // At most 128 links: reading more contexts than are kept would only repeat, per record,
      // the parsing each process span does anyway.
      for (const record of batch) {
        if (links.length >= 128) break
        const context = tracing.propagator.extract(record.headers)
        if (context !== undefined) links.push({ span: context, attributes: {} })
      }
      const span = tracer.span({
        name: `poll ${claim.topic}`,
        parent: Option.none(),
        annotations: Context.empty(),
        links,
        startTime: waitingSince,
        kind: "client",
        root: true,
        sampled: true,
      })
      OtlpTracer.setAll(span, pollAttributes)
      span.attribute("messaging.batch.message_count", batch.length)
      span.end(clock.currentTimeNanosUnsafe(), Exit.void)
    }
    const fetcher = claim.records.pipe(
      Stream.runForEach((batch) =>
        Effect.gen(function*() {
          if (tracing.enabled) tracePoll(batch)
          for (const record of batch) tracker.track(record.offset)
          status.position = batch[batch.length - 1]!.offset + 1
          // A batch larger than the mailbox goes in as pieces that fit, so the bound holds.
          const pieces = batch.length <= mailbox.capacity ? [batch] : piecesOf(batch, mailbox.capacity)
          let pauser: Fiber.Fiber<void> | undefined
          for (const piece of pieces) {
            if (pauser === undefined && !mailbox.fits(piece)) {
              // The mailbox is full: wait for room, and pause the partition on the transport only
              // if the wait lasts. A handler that keeps up frees room within milliseconds, and
              // pausing it would make Kafka drop and fetch again what it already fetched.
              pauser = yield* Effect.forkChild(Effect.andThen(Effect.sleep(actor.pauseAfter), pauseFor("mailbox")))
            }
            yield* mailbox.offer(piece)
            status.mailbox = mailbox.size
          }
          if (pauser !== undefined) yield* Fiber.interrupt(pauser)
          status.mailbox = mailbox.size
          waitingSince = clock.currentTimeNanosUnsafe()
        })
      ),
      Effect.catch((error) => Effect.logError(`Fetching ${claim.topic}/${claim.partition} failed: ${error.message}`)),
      Effect.ensuring(Effect.sync(() => mailbox.end())),
    )

    const fetcherFiber = yield* Effect.forkScoped(fetcher)
    // The committer: on the interval, or sooner when asked. Handling never waits on the broker
    // for a commit; revocation, shutdown and at-most-once still commit inline.
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(
      // Checked and armed in one step, so a request made while a commit ran is not missed; and
      // `wait` is read anew each round, as a signal's wait is for its next notification only.
      Effect.suspend(() =>
        commitPending ? Effect.void : Effect.raceFirst(Effect.sleep(actor.commit.interval), commitRequested.wait)
      ),
      commitCompleted,
    )))
    // Whatever ends this actor, what completed is committed.
    yield* Effect.addFinalizer(() => commitCompleted)

    onControl({
      stop: (mode) =>
        Effect.gen(function*() {
          stopping = mode
          yield* Deferred.succeed(stopRequested, undefined)
          if (status.state !== "halted" && status.state !== "stopped") status.state = "draining"
          yield* Fiber.interrupt(fetcherFiber)
          if (mode === "in-flight") mailbox.clear()
          mailbox.end()
        }),
    })

    yield* supervised
    if (status.state !== "halted") status.state = "stopped"
  }).pipe(
    Effect.scoped,
    Effect.annotateLogs({ actor: deps.actor.name, topic: deps.claim.topic, partition: deps.claim.partition }),
  )

const piecesOf = <A>(batch: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const pieces: Array<ReadonlyArray<A>> = []
  for (let from = 0; from < batch.length; from += size) pieces.push(batch.slice(from, from + size))
  return pieces
}

const keyString = (key: Uint8Array): string => {
  let out = ""
  for (let i = 0; i < key.length; i++) out += String.fromCharCode(key[i]!)
  return out
}
