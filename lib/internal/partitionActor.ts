/**
 * One partition actor: the fiber that owns one assigned partition for one actor.
 *
 * It wires small parts together:
 * - the fetcher (`fetcher.ts`) pulls batches from the claim's stream into the `Mailbox`, bounded
 *   by records and bytes; a full mailbox blocks it and pauses the partition on the transport, so
 *   memory stays bounded whatever the backlog;
 * - the processor (here) takes records from the mailbox and handles them under the ordering
 *   mode: a chunk at a time in partition order, or through key lanes (`lanes.ts`) that let keys
 *   progress independently; `processor.ts` handles one record under the error policy. A batch
 *   actor's records are gathered into batches (`batch.maxRecords`, `batch.maxWait`) for
 *   `batchProcessor.ts`, which applies the policy to a batch and bisects it. Defects
 *   restart it on the supervision schedule, and it resumes with the records that had not completed;
 * - the `OffsetTracker` says which offset is safe to commit, and the `Committer` commits it on
 *   an interval or when asked, backing off after failures;
 * - dead letters (`deadLetter.ts`) are written before their record counts as done;
 * - telemetry goes through `PartitionHooks` (`partitionTracing.ts` when tracing is on).
 * Whatever ends the actor (revocation, shutdown, interruption), it commits what completed.
 *
 * Exactly-once actors commit differently (`partitionTransactions.ts`): the partition's records
 * are handled in Kafka transactions of up to `transaction.records` records or
 * `transaction.interval`, each committing the handlers' output with the consumed offset. When a
 * transaction cannot commit (a failed try that produced, a send refused, a defect, a commit that
 * failed) the actor rewinds: it aborts the transaction, seeks back to the committed offset and
 * handles those records again. A fenced transaction ends the actor without a restart; whatever
 * else ends it (revocation, shutdown, a halting policy) aborts what is open.
 */
import { Cause, Clock, type Context, Data, Deferred, Duration, Effect, Exit, Fiber, Metric, Schedule } from "effect"
import type { Actor } from "../Actor.ts"
import { Producer } from "../Producer.ts"
import type { ConsumerRecord, PartitionClaim, Subscription, Transport } from "../Transport.ts"
import * as Tracing from "../Tracing.ts"
import * as BatchProcessor from "./batchProcessor.ts"
import * as Committer from "./committer.ts"
import * as DeadLetter from "./deadLetter.ts"
import { DurationHistogram } from "./durationHistogram.ts"
import { messageOf } from "./errorText.ts"
import * as Fetcher from "./fetcher.ts"
import * as Lanes from "./lanes.ts"
import { Mailbox } from "./mailbox.ts"
import { OffsetTracker } from "./offsetTracker.ts"
import { noHooks, type PartitionHooks } from "./partitionHooks.ts"
import * as PartitionTracing from "./partitionTracing.ts"
import * as MemberTransactions from "./memberTransactions.ts"
import * as PartitionTransactions from "./partitionTransactions.ts"
import * as Processor from "./processor.ts"
import { Signal } from "./signal.ts"

export { describe, messageOf } from "./errorText.ts"

/**
 * A partition actor's state, as the health report shows it.
 */
export interface PartitionStatus {
  readonly actor: string
  readonly group: string
  readonly topic: string
  readonly partition: number
  /**
   * `blocked`: a dead letter cannot be written (see `deadLetter.ts`); unhealthy until it is.
   * `fenced`: exactly-once, another instance owns the partition now; idle until it is revoked.
   */
  state: "running" | "retrying" | "paused" | "restarting" | "draining" | "halted" | "stopped" | "failed" | "blocked" | "fenced"
  /** Why the transport is paused for this partition, if it is. */
  readonly pausedFor: Set<Processor.PauseReason>
  processed: number
  failed: number
  retried: number
  deadLettered: number
  skipped: number
  restarts: number
  /** Records held against the mailbox's bound: waiting, or taken and not yet done. */
  mailbox: number
  /** The last committed offset (the next one a new owner would read). */
  committed: number
  /** Commits that failed, each try counted (set by the actor when it starts). */
  commitFailures?: number | undefined
  /** The next offset the partition actor will fetch. */
  position: number
  /** Clock millis of the last record completed (or of the start). */
  lastProgress: number
  lastError: string | undefined
  /** How the last record ended: handled, or by a policy. */
  lastOutcome: "handled" | "dead_lettered" | "skipped"
  /** While `state` is `halted`: the record a policy halted on, and its error. */
  halted?: { readonly offset: number; readonly error: string } | undefined
}

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
 * `context` under the partition's attributes when it records its first duration, until the
 * returned registration is removed. Not before: the series, its registry entry and its key cost
 * an idle partition actor about 1.4 KiB, for a histogram with nothing in it (OpenTelemetry's SDK
 * exports no series for attributes never recorded either).
 */
export const registerDurations = (
  context: Context.Context<never>,
  partition: { readonly topic: string; readonly partition: number; readonly group: string },
): { readonly histogram: DurationHistogram; readonly remove: () => void } => {
  let registration: { readonly remove: () => void } | undefined
  let removed = false
  const histogram: DurationHistogram = new DurationHistogram(durationBoundaries, () => {
    if (removed) return
    const series = Metric.withAttributes(processDuration, partitionAttributes(partition))
    registration = Metric.registerUnsafe(series, context, histogram.hooks())
  })
  return {
    histogram,
    remove: () => {
      removed = true
      registration?.remove()
    },
  }
}
const restartsMetric = Metric.counter("partita.partition.restarts", {
  description: "Partition actor restarts after a defect",
  incremental: true,
})


export interface Deps<R> {
  readonly actor: Actor<R>
  readonly claim: PartitionClaim
  readonly subscription: Subscription
  /**
   * The system's producer, for dead letters. Handlers find it in the context: the caller
   * provides `Producer` once for all the partition actors it forks.
   */
  readonly producer: Producer["Service"]
  readonly status: PartitionStatus
  /** The transport's span attributes (server address, client id). */
  readonly telemetry: Readonly<Record<string, string | number>>
  /** This partition's `messaging.process.duration`, kept across restarts and reassignments. */
  readonly durations: DurationHistogram
  /** Opens transactional producers: exactly-once actors only. */
  readonly transactional: Transport["Service"]["transactional"]
  /** Exactly-once with one producer per member: the member's shared transactions. */
  readonly memberTransactions?: MemberTransactions.MemberTransactions | undefined
  /**
   * Whether the operator paused this partition (the system's `pause`), read once the actor can
   * take `Control` calls: a partition assigned while paused starts paused.
   */
  readonly startPaused?: (() => boolean) | undefined
}

export interface Control {
  /**
   * Stops taking records. `drain` handles what the mailbox holds first (shutdown);
   * `in-flight` only finishes the records already started (revocation).
   */
  readonly stop: (mode: "drain" | "in-flight") => Effect.Effect<void>
  /**
   * The operator's pause: fetching stops and no record starts until `resume`; records already
   * started finish, the others wait in the mailbox (nothing is dropped or skipped). In partition
   * order the rest of a chunk waits at the next record; in key lanes at each lane's next turn;
   * exactly-once, the open transaction's chunk finishes first.
   */
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  /**
   * Not exactly-once: the partition goes on from `offset`. The records in flight finish (in key
   * lanes, every one started), what was fetched is dropped, what completed is committed, then
   * `offset` is committed and fetched from. Completes once done (or once the actor stopped).
   */
  readonly seek: (offset: number) => Effect.Effect<void>
  /**
   * A halted partition handles its halting record again, where it stopped (nothing past it was
   * committed). False when the partition is not halted.
   */
  readonly restart: Effect.Effect<boolean>
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
    // Metric series of this partition are made when first fed, not per partition up front: an
    // idle partition actor then holds none (each is a few objects and closures).
    let consumedHere: Metric.Counter<number> | undefined
    const countConsumed = (records: number) =>
      Metric.update(consumedHere ??= Metric.withAttributes(consumed, attributes), records)
    const outcome = (name: "failed" | "retried" | "dead_lettered" | "skipped", records = 1) =>
      Metric.update(Metric.withAttributes(outcomes, { ...attributes, "partita.outcome": name }), records)

    // Read once: the hot path uses the clock synchronously, per record.
    const clock = yield* Clock.Clock
    const tracing = yield* Tracing.Settings
    const hooks = tracing.enabled
      ? PartitionTracing.make({
        topic: claim.topic,
        settings: tracing,
        tracer: yield* Effect.tracer,
        clock,
        attributes: { ...deps.telemetry, ...attributes },
      })
      : noHooks

    // ---- exactly-once: the partition's producer first, fencing older owners ---------------------
    const exactlyOnce = actor.delivery === "exactly-once"
    const transactions = !exactlyOnce
      ? undefined
      : deps.memberTransactions !== undefined
      ? yield* deps.memberTransactions.partition(tp, status)
      : yield* Effect.orDie(PartitionTransactions.make({
        transactionalId: PartitionTransactions.transactionalIdOf(actor.transaction.idPrefix, actor.group, claim.topic, claim.partition),
        group: actor.group,
        topic: claim.topic,
        partition: claim.partition,
        open: deps.transactional,
        timeout: actor.transaction.timeout,
        retry: actor.commit.retry,
        status,
      }))
    /** The committed offset, or where the claim started when the group has none (exactly-once only). */
    const committedOffset = () => Effect.map(
      subscription.committed([tp]),
      (committed) => committed.find((c) => c.topic === tp.topic && c.partition === tp.partition)?.offset ?? claim.startOffset,
    ).pipe(
      Effect.tapError((error) => Effect.logWarning(`Reading the committed offset of ${claim.topic}/${claim.partition} failed: ${error.message}`)),
      Effect.retry({ schedule: actor.commit.retry, while: (error) => error.retriable }),
      Effect.orDie,
    )
    /** Points the claim at `offset`; a claim revoked meanwhile ends its stream, which is all that matters then. */
    const seekTo = (offset: number) =>
      Effect.catch(subscription.seek(tp, offset), (error) => Effect.logDebug(`Seek of ${claim.topic}/${claim.partition} to ${offset}: ${error.message}`))
    let startOffset = claim.startOffset
    if (transactions !== undefined) {
      // Read after the producer fenced the old owner: no commit of its can land after this.
      startOffset = yield* committedOffset()
      if (startOffset !== claim.startOffset) yield* seekTo(startOffset)
    }
    /** Exactly-once: where the partition was last pointed; anything fetched from before is stale. */
    let fetchFrom = startOffset

    const mailbox = new Mailbox<ConsumerRecord>(actor.mailboxCapacity, {
      maxBytes: actor.mailboxMaxBytes,
      sizeOf: Fetcher.recordBytes,
      onChange: (mailbox) => {
        status.mailbox = mailbox.size
      },
    })
    const tracker = new OffsetTracker(startOffset)
    let stopping: "no" | "drain" | "in-flight" = "no"
    /** Completes when the actor is asked to stop: a halted or stopped actor waits for it. */
    const stopRequested = yield* Deferred.make<void>()
    status.position = startOffset
    status.committed = startOffset
    status.lastProgress = yield* Clock.currentTimeMillis

    // ---- pausing, for any number of reasons at once ------------------------------------------
    const pauseFor = (reason: Processor.PauseReason) =>
      Effect.suspend(() => {
        const wasPaused = status.pausedFor.size > 0
        status.pausedFor.add(reason)
        return wasPaused ? Effect.void : subscription.pause([tp])
      })
    const resumeFor = (reason: Processor.PauseReason) =>
      Effect.suspend(() => {
        if (!status.pausedFor.delete(reason) || status.pausedFor.size > 0) return Effect.void
        return subscription.resume([tp])
      })

    const committer = Committer.make({
      ...tp,
      commit: (offset) => hooks.onCommit(offset, subscription.commit([{ ...tp, offset }])),
      committable: () => tracker.committable(),
      outstanding: () => tracker.outstanding(),
      startOffset,
      interval: actor.commit.interval,
      records: actor.commit.records,
      retry: actor.commit.retry,
      afterHandling: actor.delivery === "at-least-once",
      status,
      attributes,
    })

    /** True while a restarted processor finishes what the failed one left. */
    let resuming = false

    // ---- run-time control: the operator's pause, seeks, restarting a halted partition ---------
    /** Set while the operator's pause holds: completed by `resume`. */
    let unpaused: Deferred.Deferred<void> | undefined
    /** A seek asked for and not done yet: the processor does it between records. */
    let pendingSeek: { readonly offset: number; readonly done: Deferred.Deferred<void> } | undefined
    /** Wakes a processor waiting for the pause to end (or halted) to look at the requests; `mailbox.nudge` one waiting for records. */
    // Made by the first wait on it: most partitions are never paused nor halted.
    let controlled: Signal | undefined
    /**
     * Partition order: a pause or a seek refused a record of the current chunk, so the rest of it
     * is refused too (keeping partition order); the loop then waits, or seeks, and goes on.
     */
    let holding = false
    // Batch actors stop between batches instead: a batch is one unit, started or not.
    const chunked = actor.ordering._tag === "Partition" && actor.delivery !== "exactly-once" && actor.batch === undefined
    // Key lanes and batches: a seek asked for refuses what has not started; those records are dropped anyway.
    const startable = (record: ConsumerRecord) =>
      stopping !== "in-flight" &&
      !(chunked ? holding || ((unpaused !== undefined || pendingSeek !== undefined) && (holding = true)) : pendingSeek !== undefined) &&
      (!resuming || !tracker.isCompleted(record.offset))
    // Functions rather than effects made up front, here and in `Control`: a partition actor that
    // is never paused holds a closure for each, not an effect and its closure.
    /** Waits while the operator's pause holds, until a resume, a stop or another request. */
    const whilePaused = (): Effect.Effect<void> =>
      unpaused === undefined
        ? Effect.void
        : Effect.raceFirst(Effect.raceFirst(Deferred.await(unpaused), Deferred.await(stopRequested)), (controlled ??= new Signal()).wait)
    /** Waits until the operator's pause ends, the actor stops or a seek is asked for. */
    const untilUnpaused = (): Effect.Effect<void> =>
      unpaused === undefined || stopping !== "no" || pendingSeek !== undefined
        ? Effect.void
        : Effect.andThen(whilePaused(), Effect.suspend(untilUnpaused))
    /** Key lanes: a seek was done, so the lanes (closed for it, holding nothing current) are made anew. */
    let lanesStale = false
    /** Exactly-once: where the error policy of records whose transaction was rewound left off. */
    const carried = transactions === undefined ? undefined : new Map<number, Processor.Carried>()

    let deadLetter: ReturnType<typeof DeadLetter.make> | undefined
    const processor = Processor.make<R>({
      // Key lanes finish records of several chunks at once: each leaves the mailbox's bound when done.
      onSettled: actor.ordering._tag === "Partition" ? undefined : (record) => mailbox.release(record),
      actor,
      status,
      clock,
      hooks,
      tracker,
      committer,
      durations: deps.durations,
      pauseFor,
      resumeFor,
      // Made for the first dead letter: most partitions never write one.
      deadLetter: (record, error, attempts) =>
        (deadLetter ??= DeadLetter.make({
          actor: actor as Actor<unknown>,
          // Exactly-once: a dead letter joins the transaction of its record's offset.
          producer: transactions?.producer ?? producer,
          status,
          around: hooks.onDeadLetter,
          pause: pauseFor("dead-letter"),
          resume: resumeFor("dead-letter"),
          written: outcome("dead_lettered"),
          stopped: Deferred.await(stopRequested),
        }))(record, error, attempts),
      outcome,
      startable,
      transactions: transactions === undefined || carried === undefined ? undefined : {
        produced: transactions.produced,
        carried,
        rewind: (reason) => Effect.die(new PartitionTransactions.TransactionAborted(reason, undefined)),
      },
    })
    // A batch actor's records go to its batch handler; exactly-once, each batch is a transaction.
    const batches = actor.batch === undefined ? undefined : BatchProcessor.make<R>({
      ...processor.deps,
      transaction: transactions === undefined ? undefined : {
        begin: transactions.begin,
        commit: Effect.suspend(() => transactions.commit(tracker.committable())),
        abort: transactions.abort,
      },
    })

    // ---- the processor -------------------------------------------------------------------------
    const chunkSize = Math.min(actor.mailboxCapacity, 1000)
    /** At-most-once: nothing of a chunk runs before the offset past it is committed, restarts included. */
    const commitAhead = (chunk: ReadonlyArray<ConsumerRecord>) => {
      const past = chunk[chunk.length - 1]!.offset + 1
      return actor.delivery === "at-most-once" && committer.committed < past ? committer.commitAhead(past) : Effect.void
    }
    /** A partition paused for a full mailbox resumes once the mailbox is half empty. */
    const resumeWhenRoom = Effect.suspend(() =>
      status.pausedFor.has("mailbox") && mailbox.size <= mailbox.capacity / 2 && mailbox.bytes <= mailbox.maxBytes / 2
        ? resumeFor("mailbox")
        : Effect.void
    )

    /**
     * Moves the partition to `offset` while no record is in flight: what was fetched is dropped,
     * what completed is committed first (it was handled), then `offset` itself, so the group's
     * position moves back or forth with the seek and later progress commits from there.
     */
    const seekNow = (request: { readonly offset: number; readonly done: Deferred.Deferred<void> }) =>
      Effect.gen(function*() {
        pendingSeek = undefined
        holding = false
        const { offset } = request
        yield* Fiber.interrupt(fetcherFiber)
        mailbox.clear()
        // Key lanes refused what they held and had not started: it leaves the mailbox's bound too.
        mailbox.forgetTaken()
        current = []
        lanesStale = true
        yield* committer.commitCompleted
        tracker.reset(offset)
        fetchFrom = offset
        yield* seekTo(offset)
        yield* committer.moveTo(offset)
        status.position = offset
        if (status.pausedFor.has("mailbox")) yield* resumeFor("mailbox")
        // Stopped meanwhile (a revocation, the shutdown): nothing more is fetched.
        if (stopping === "no") fetcherFiber = yield* Effect.forkIn(fetcher, scope)
        yield* Effect.logInfo(`Partition ${claim.topic}/${claim.partition} continues from offset ${offset} (seek)`)
        yield* Deferred.succeed(request.done, undefined)
      })

    /**
     * Partition order: a chunk at a time, in the processor's fiber (the hot path). After a
     * restart it first finishes what the failed chunk left; a pause waits between records, and a
     * seek is done there.
     */
    let current: ReadonlyArray<ConsumerRecord> = []
    const inPartitionOrder: Effect.Effect<void, Processor.Halted, R> = Effect.gen(function*() {
      while (true) {
        if (pendingSeek !== undefined && stopping === "no") {
          yield* seekNow(pendingSeek)
          continue
        }
        if (unpaused !== undefined && stopping === "no") {
          yield* whilePaused()
          continue
        }
        if (resuming || holding) {
          holding = false
          const pending = current.filter((record) => !tracker.isCompleted(record.offset))
          if (pending.length > 0 && stopping !== "in-flight") {
            yield* commitAhead(pending)
            yield* processor.inOrder(pending)
          }
          resuming = false
          continue
        }
        if (stopping === "in-flight") return
        // Waiting for records, a request (a seek, a pause) wakes the loop as well (`nudge`).
        const taken = mailbox.pollHeld(chunkSize, false)
        if (taken === undefined) {
          if (Exit.isFailure(yield* Effect.exit(mailbox.available))) return // the mailbox ended: stopped, or the claim was revoked
          continue
        }
        current = taken
        yield* resumeWhenRoom
        yield* countConsumed(current.length)
        // Committed before handling: a crash loses these records instead of repeating them.
        yield* commitAhead(current)
        yield* processor.inOrder(current)
        // Caught up: commit now rather than at the next interval, so a rebalance that finds this
        // partition idle (when Kafka may refuse a late commit) has nothing left to redo.
        if (mailbox.size === 0) committer.request()
      }
    })

    /**
     * Exactly-once, in partition order: records go through the open transaction, which commits
     * with the offset past them once it holds `transaction.records` records or has been open for
     * `transaction.interval`, whichever comes first, and waits for neither while records keep
     * coming. A stop returns at once: what is open is aborted (see supervision).
     */
    const transactionRecords = actor.transaction.records
    const transactionInterval = Duration.toMillis(Duration.fromInputUnsafe(actor.transaction.interval))
    /** Records handled in the open transaction. */
    let inTransaction = 0
    const inTransactions = (txns: PartitionTransactions.PartitionTransactions): Effect.Effect<void, Processor.Halted, R> =>
      Effect.gen(function*() {
        const commit = Effect.suspend(() => {
          inTransaction = 0
          return txns.commit(tracker.committable())
        })
        while (true) {
          if (stopping !== "no") return
          if (pendingSeek !== undefined) {
            yield* seekInTransactions(txns, pendingSeek, commit)
            continue
          }
          if (unpaused !== undefined) {
            // Paused: what the open transaction holds commits now rather than time out meanwhile.
            if (txns.openedAt !== undefined) yield* commit
            yield* untilUnpaused()
            continue
          }
          const openedAt = txns.openedAt
          const due = openedAt === undefined ? undefined : openedAt + transactionInterval - clock.currentTimeMillisUnsafe()
          if (due !== undefined && (due <= 0 || inTransaction >= transactionRecords)) {
            yield* commit
            continue
          }
          const chunk = mailbox.pollHeld(Math.max(1, transactionRecords - inTransaction), false)
          if (chunk === undefined) {
            if (due === undefined) {
              if (Exit.isFailure(yield* Effect.exit(mailbox.available))) return // ended: stopped, or revoked
            } else {
              const woke = yield* Effect.raceFirst(Effect.exit(mailbox.available), Effect.as(Effect.sleep(due), "due" as const))
              if (woke === "due") yield* commit
              else if (Exit.isFailure(woke)) return
            }
            continue
          }
          current = chunk
          yield* resumeWhenRoom
          yield* countConsumed(chunk.length)
          // A record whose policy was carried over a rewind runs in a transaction of its own:
          // what comes before it commits first, so a second failure further on never makes it
          // (its dead letter, say) run again.
          const at = carried!.size === 0 ? -1 : chunk.findIndex((record) => carried!.has(record.offset))
          if (at < 0) {
            yield* handleInTransaction(chunk)
            continue
          }
          yield* handleInTransaction(chunk.slice(0, at))
          yield* commit
          yield* handleInTransaction([chunk[at]!])
          yield* commit
          yield* handleInTransaction(chunk.slice(at + 1))
        }
      })
    /**
     * Exactly-once, a seek: what the open transaction holds was handled, so it commits first,
     * with its output; then the new offset is committed in a transaction of its own (offsets
     * only), as every transaction moves the group's position, and fetching goes on from there.
     * A commit that fails rewinds the partition (supervision) with the seek still asked for, so
     * it is tried again from the committed offset.
     */
    const seekInTransactions = (
      txns: PartitionTransactions.PartitionTransactions,
      request: { readonly offset: number; readonly done: Deferred.Deferred<void> },
      commitOpen: Effect.Effect<void>,
    ) =>
      Effect.gen(function*() {
        const { offset } = request
        if (txns.openedAt !== undefined) yield* commitOpen
        yield* txns.begin
        yield* txns.commit(offset)
        pendingSeek = undefined
        yield* Fiber.interrupt(fetcherFiber)
        mailbox.clear()
        current = []
        carried?.clear()
        tracker.reset(offset)
        fetchFrom = offset
        yield* seekTo(offset)
        status.position = offset
        if (status.pausedFor.has("mailbox")) yield* resumeFor("mailbox")
        if (stopping === "no") fetcherFiber = yield* Effect.forkIn(fetcher, scope)
        yield* Effect.logInfo(`Partition ${claim.topic}/${claim.partition} continues from offset ${offset} (seek, committed in a transaction)`)
        yield* Deferred.succeed(request.done, undefined)
      })
    const handleInTransaction = (records: ReadonlyArray<ConsumerRecord>) =>
      records.length === 0 ? Effect.void : Effect.andThen(
        transactions!.begin,
        Effect.andThen(processor.inOrder(records), Effect.sync(() => void (inTransaction += records.length))),
      )

    /**
     * By key, or unordered: the dispatcher moves records from the mailbox into key lanes (one
     * lane per record, unordered) as they come, whatever chunk they came in, and the lanes'
     * workers handle them. Taken records stay counted in the mailbox until done, so the lanes
     * hold at most what the mailbox may. Made only for those orderings: a partition-order actor
     * holds no lanes.
     */
    const inLanes = (concurrency: number): Effect.Effect<void, Processor.Halted, R> => {
      let lanes = Lanes.make<ConsumerRecord>()
      const laneKey = actor.ordering._tag === "ByKey"
        ? (record: ConsumerRecord) => record.key === null ? "\u0000null" : keyString(record.key)
        : () => undefined
      const handleOne = actor.ordering._tag === "ByKey"
        ? processor.inOrder
        : (records: ReadonlyArray<ConsumerRecord>) => startable(records[0]!) ? processor.handle(records[0]!) : Effect.void
      // The operator's pause holds each lane at its next turn.
      const handleLane = (records: ReadonlyArray<ConsumerRecord>) =>
        unpaused === undefined ? handleOne(records) : Effect.andThen(untilUnpaused(), handleOne(records))
      const afterLane = () => {
        if (mailbox.size === 0) committer.request()
        return status.pausedFor.has("mailbox") ? resumeWhenRoom : undefined
      }
      /** Taken from the mailbox, not in the lanes yet: a restart picks it up where the dispatcher left it. */
      let undispatched: ReadonlyArray<ConsumerRecord> = []
      const dispatcher = Effect.gen(function*() {
        while (true) {
          // A seek: the lanes finish what they started and end; the processor seeks, then runs anew.
          if (pendingSeek !== undefined && stopping === "no") break
          if (undispatched.length === 0) {
            if (stopping === "in-flight") break
            if (unpaused !== undefined && stopping === "no") {
              yield* untilUnpaused()
              continue
            }
            // Polled in the step that keeps it: a sibling's failure interrupting the dispatcher
            // cannot come between taking records and holding them.
            const chunk = mailbox.pollHeld(chunkSize)
            if (chunk === undefined) {
              if (Exit.isFailure(yield* Effect.exit(mailbox.available))) break // ended: stopped, or revoked
              continue
            }
            undispatched = chunk
          }
          yield* commitAhead(undispatched)
          const chunk = undispatched
          for (const record of chunk) lanes.push(laneKey(record), record)
          undispatched = []
          yield* countConsumed(chunk.length)
        }
        lanes.close()
      })
      return Effect.suspend(() => {
        if (lanesStale) {
          // After a seek nothing of before is current: no lane to recover, nothing undispatched.
          lanes = Lanes.make<ConsumerRecord>()
          undispatched = []
          lanesStale = false
          resuming = false
        } else if (resuming) {
          lanes.recover((record) => tracker.isCompleted(record.offset))
          resuming = false
        }
        return Effect.all([dispatcher, lanes.run(concurrency, handleLane, afterLane)], {
          concurrency: "unbounded",
          discard: true,
        })
      })
    }

    /**
     * Batch actors, in partition order: a batch at a time, gathered from the mailbox, handed to the
     * batch processor; after a restart it first finishes what the failed batch left, as
     * `inPartitionOrder` does for records. Exactly-once, each batch commits in a transaction of its
     * own (see `batchProcessor.ts`), and a stop returns at once. Made only for a batch actor.
     */
    const inBatches = (batches: BatchProcessor.BatchProcessor<R>, maxRecords: number, maxWait: Duration.Input): Effect.Effect<void, Processor.Halted, R> => {
      const maxWaitMillis = Duration.toMillis(Duration.fromInputUnsafe(maxWait))
      /**
       * The next batch: up to `maxRecords` records, waiting for more for at most `maxWait` from the
       * first one taken (by the clock, so TestClock drives it) unless the actor is stopping;
       * undefined once the mailbox ended empty, empty when an operator's request (a seek, a pause)
       * woke the wait for a first record.
       */
      const gather = Effect.gen(function*() {
        const taken = mailbox.pollHeld(maxRecords, false)
        if (taken === undefined) {
          if (Exit.isFailure(yield* Effect.exit(mailbox.available))) return undefined
          return noRecords
        }
        if (taken.length >= maxRecords) return taken
        const parts = [taken]
        let count = taken.length
        const due = clock.currentTimeMillisUnsafe() + maxWaitMillis
        while (count < maxRecords) {
          const more = mailbox.pollHeld(maxRecords - count, false)
          if (more !== undefined) {
            parts.push(more)
            count += more.length
            continue
          }
          const left = due - clock.currentTimeMillisUnsafe()
          if (stopping !== "no" || left <= 0) break
          const woke = yield* Effect.raceFirst(Effect.exit(mailbox.available), Effect.as(Effect.sleep(left), "due" as const))
          if (woke === "due" || Exit.isFailure(woke)) break
        }
        return parts.length === 1 ? parts[0]! : parts.flat()
      })
      const transactional = transactions !== undefined
      const noRecords: ReadonlyArray<ConsumerRecord> = []
      return Effect.gen(function*() {
        while (true) {
          // The operator's requests are looked at between batches: a batch is one unit.
          if (pendingSeek !== undefined && stopping === "no") {
            yield* seekNow(pendingSeek)
            continue
          }
          if (unpaused !== undefined && stopping === "no") {
            yield* untilUnpaused()
            continue
          }
          if (resuming) {
            const pending = current.filter((record) => !tracker.isCompleted(record.offset))
            if (pending.length > 0 && stopping !== "in-flight") {
              yield* commitAhead(pending)
              yield* batches.handle(pending)
            }
            resuming = false
            continue
          }
          if (transactional ? stopping !== "no" : stopping === "in-flight") return
          const gathered = yield* gather
          if (gathered === undefined) return
          if (gathered.length === 0) continue
          current = gathered
          yield* resumeWhenRoom
          yield* countConsumed(current.length)
          // At-most-once: committed before handling.
          yield* commitAhead(current)
          yield* batches.handle(current)
          if (!transactional && mailbox.size === 0) committer.request()
        }
      })
    }

    const processing = batches !== undefined
      ? inBatches(batches, actor.batch!.maxRecords, actor.batch!.maxWait)
      : transactions !== undefined
      ? inTransactions(transactions)
      : actor.ordering._tag === "Partition"
      ? inPartitionOrder
      : inLanes(actor.ordering.concurrency)

    /**
     * Exactly-once: aborts the open transaction and handles the partition again from its
     * committed offset, with a new fetcher (what was fetched is from the old position).
     */
    const rewind = (txns: PartitionTransactions.PartitionTransactions) =>
      Effect.gen(function*() {
        yield* txns.abort
        inTransaction = 0
        yield* Fiber.interrupt(fetcherFiber)
        // What this actor committed itself counts even if the group does not show it yet
        // (kafkajs reads offsets without waiting for transactions to settle).
        const offset = Math.max(yield* committedOffset(), status.committed)
        mailbox.clear()
        tracker.reset(offset)
        current = []
        resuming = false
        fetchFrom = offset
        yield* seekTo(offset)
        status.position = offset
        if (status.pausedFor.has("mailbox")) yield* resumeFor("mailbox")
        fetcherFiber = yield* Effect.forkScoped(fetcher)
        return offset
      })

    // ---- fetching -------------------------------------------------------------------------------
    const scope = yield* Effect.scope
    const fetcher = Fetcher.run({
      claim,
      mailbox,
      tracker,
      hooks,
      status,
      pauseAfter: actor.pauseAfter,
      pause: pauseFor("mailbox"),
      delivered: committer.delivered(scope),
      fill: actor.ordering._tag !== "Partition",
      // After a seek (or an exactly-once rewind) a transport may still hand over what it fetched before.
      from: () => fetchFrom,
    })

    let fetcherFiber = yield* Effect.forkScoped(fetcher)
    // Handling never waits on the broker for a commit (the fetcher starts the commit loop as it
    // delivers records; see `Committer.delivered`); revocation, shutdown and at-most-once still
    // commit inline.
    // Whatever ends this actor, what completed is committed.
    yield* Effect.addFinalizer(() => committer.commitCompleted)
    // Exactly-once: interrupted mid-transaction (a stop past its deadline), it aborts.
    if (transactions !== undefined) yield* Effect.addFinalizer(() => transactions.abort)

    /** Asked by `Control.restart` while halted: completes the halted wait. */
    let restartRequested: Deferred.Deferred<void> | undefined
    const operate = (request: OperatorRequest): Effect.Effect<unknown> => {
      switch (request) {
        case "pause": {
          if (unpaused !== undefined) return Effect.void
          unpaused = Deferred.makeUnsafe<void>()
          controlled?.notify()
          mailbox.nudge()
          return pauseFor("operator")
        }
        case "resume": {
          const paused = unpaused
          if (paused === undefined) return Effect.void
          unpaused = undefined
          Deferred.doneUnsafe(paused, Exit.void)
          // The stall watchdog counts from the resume: the pause was no lack of progress.
          status.lastProgress = clock.currentTimeMillisUnsafe()
          return resumeFor("operator")
        }
        case "restart": {
          if (restartRequested === undefined) return Effect.succeed(false)
          Deferred.doneUnsafe(restartRequested, Exit.void)
          restartRequested = undefined
          return Effect.succeed(true)
        }
        default: {
          if (stopping !== "no") return Effect.void
          // A later seek replaces one not done yet: the last one asked for wins.
          const done = pendingSeek?.done ?? Deferred.makeUnsafe<void>()
          pendingSeek = { offset: request, done }
          controlled?.notify()
          mailbox.nudge()
          return Deferred.await(done)
        }
      }
    }
    const control: Control = new OperatedControl((mode) =>
        Effect.gen(function*() {
          stopping = mode
          yield* Deferred.succeed(stopRequested, undefined)
          if (status.state !== "halted" && status.state !== "stopped") status.state = "draining"
          yield* Fiber.interrupt(fetcherFiber)
          if (mode === "in-flight") mailbox.clear()
          mailbox.end()
          if (pendingSeek !== undefined) yield* Deferred.succeed(pendingSeek.done, undefined)
        }), operate)
    onControl(control)
    // Read right after `onControl`, in the same step: a pause asked for before goes by this, after it by `control`.
    if (deps.startPaused?.() === true) yield* control.pause

    // ---- supervision --------------------------------------------------------------------------
    // Inline in the actor's own generator rather than an effect of its own: a parked partition
    // actor then holds one generator frame less.
    // Exactly-once: what handlers produce joins the partition's transaction. Otherwise handlers
    // find the system's producer in the context, provided once for all partitions (see
    // `systemMembership.ts`), not here per partition.
    const provided = transactions === undefined ? processing : Effect.provideService(processing, Producer, transactions.producer)
    const window = Duration.toMillis(actor.supervision.window)
    const restartTimes: Array<number> = []
    // The schedule's state is made at the first restart: most partition actors never restart.
    let step: RestartStep | undefined
    supervision: while (true) {
      const exit = yield* Effect.exit(provided)
      // Key lanes end for a seek: it is done here, and the lanes run again from the new offset.
      if (Exit.isSuccess(exit) && pendingSeek !== undefined && stopping === "no") {
        yield* seekNow(pendingSeek)
        continue
      }
      if (Exit.isSuccess(exit)) {
        // Stopped (revocation, shutdown): the open transaction is the next owner's to redo.
        if (transactions !== undefined) yield* transactions.abort
        break supervision
      }
      const aborted = transactions === undefined ? undefined : PartitionTransactions.abortedBy(exit.cause)
      if (aborted !== undefined && transactions !== undefined) {
        if (aborted.fenced !== undefined) {
          yield* transactions.abort
          status.state = "fenced"
          status.lastError = aborted.fenced.message
          yield* pauseFor("halted")
          yield* Effect.logInfo(`Partition ${claim.topic}/${claim.partition} ended: ${aborted.fenced.message}`)
          yield* Deferred.await(stopRequested)
          break supervision
        }
        if (stopping !== "no") {
          yield* transactions.abort
          break supervision
        }
        const offset = yield* rewind(transactions)
        yield* Effect.logInfo(`Partition ${claim.topic}/${claim.partition} aborted its transaction and handles again from offset ${offset}: ${aborted.reason}`)
        continue
      }
      const halted = Cause.findErrorOption(exit.cause)
      if (halted._tag === "Some") {
        // What the open transaction holds is before the halting record: the next owner redoes it.
        if (transactions !== undefined) yield* transactions.abort
        status.state = "halted"
        status.lastError = halted.value.reason
        status.halted = { offset: halted.value.offset ?? tracker.committable(), error: halted.value.reason }
        yield* pauseFor("halted")
        yield* Effect.logError(`Partition ${claim.topic}/${claim.partition} halted by policy: ${halted.value.reason}`)
        // Stay assigned and idle until revoked or stopped, or restarted (`Control.restart`);
        // nothing past the record is committed. A seek asked for meanwhile is done at once.
        const restart = restartRequested = Deferred.makeUnsafe<void>()
        while (true) {
          if (pendingSeek !== undefined && stopping === "no") {
            yield* seekNow(pendingSeek)
            continue
          }
          const woke = yield* Effect.raceFirst(
            Effect.raceFirst(Effect.as(Deferred.await(stopRequested), "stop" as const), Effect.as(Deferred.await(restart), "restart" as const)),
            Effect.as((controlled ??= new Signal()).wait, "controlled" as const),
          )
          if (woke === "stop") break supervision
          if (woke === "restart") break
        }
        status.halted = undefined
        status.state = "running"
        yield* resumeFor("halted")
        yield* Effect.logInfo(`Partition ${claim.topic}/${claim.partition} restarted after its halt; handling its halting record again`)
        // As after a defect: the halting record (and what its chunk left) is handled again.
        if (transactions !== undefined) yield* rewind(transactions)
        else resuming = true
        continue
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
        yield* Deferred.await(stopRequested)
        break supervision
      }
      status.state = "restarting"
      // Exactly-once: what the failed run left open aborts, and the records are handled again.
      if (transactions !== undefined) yield* rewind(transactions)
      else resuming = true
      step ??= yield* Schedule.toStep(actor.supervision.schedule)
      const next = yield* Effect.exit(step(now, exit.cause))
      yield* Effect.sleep(Exit.isSuccess(next) ? next.value[1] : Duration.seconds(10))
      status.state = "running"
    }
    if (status.state !== "halted") status.state = "stopped"
  }).pipe(
    Effect.scoped,
    Effect.annotateLogs({ actor: deps.actor.name, topic: deps.claim.topic, partition: deps.claim.partition }),
  )

/** What the operator asks of a partition actor: a number is a seek to that offset. */
type OperatorRequest = "pause" | "resume" | "restart" | number

/**
 * `Control` over two closures of the partition actor's: one object per partition, its members
 * on the prototype and their effects made when asked for (most partitions are never operated).
 */
class OperatedControl implements Control {
  readonly stop: Control["stop"]
  readonly #operate: (request: OperatorRequest) => Effect.Effect<unknown>
  constructor(stop: Control["stop"], operate: (request: OperatorRequest) => Effect.Effect<unknown>) {
    this.stop = stop
    this.#operate = operate
  }
  get pause(): Effect.Effect<void> {
    return Effect.suspend(() => this.#operate("pause")) as Effect.Effect<void>
  }
  get resume(): Effect.Effect<void> {
    return Effect.suspend(() => this.#operate("resume")) as Effect.Effect<void>
  }
  get restart(): Effect.Effect<boolean> {
    return Effect.suspend(() => this.#operate("restart")) as Effect.Effect<boolean>
  }
  seek(offset: number): Effect.Effect<void> {
    return Effect.suspend(() => this.#operate(offset)) as Effect.Effect<void>
  }
}

/** A supervision schedule's step function (`Schedule.toStep`). */
type RestartStep = (now: number, input: unknown) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>

const keyString = (key: Uint8Array): string => {
  let out = ""
  for (let i = 0; i < key.length; i++) out += String.fromCharCode(key[i]!)
  return out
}
