/**
 * A partition actor's commits: at-least-once progress on an interval or when asked, and
 * at-most-once commits ahead of handling.
 *
 * Handling never waits on the broker for an at-least-once commit: records completing only count
 * towards the next request, and a background loop (`run`) commits the offset tracker's
 * committable offset. After a failure the loop backs off on the actor's commit schedule, and
 * requests made meanwhile wait for the next try: a broker refusing commits sees one attempt per
 * step of the schedule, not one per completed record. A commit ahead of handling (at-most-once)
 * is retried on the same schedule until it lands, since nothing of its chunk may run before it.
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Metric, Schedule, type Scope } from "effect"
import type { TransportError } from "../TransportError.ts"
import { Signal } from "./signal.ts"

const failuresMetric = Metric.counter("partita.commit.failures", {
  description: "Offset commits the broker refused or that did not reach it",
  incremental: true,
})

/** What of a partition's status the committer keeps current. */
export interface CommitStatus {
  /** The last committed offset. */
  committed: number
  /** Commits that failed, each try counted. */
  commitFailures?: number | undefined
  lastError: string | undefined
}

export interface CommitterOptions {
  readonly topic: string
  readonly partition: number
  /** One commit of `offset`, telemetry hooks included. */
  readonly commit: (offset: number) => Effect.Effect<void, TransportError>
  /** The offset safe to commit now: where a new owner must start. */
  readonly committable: () => number
  /** Records delivered and not completed yet (for `delivered`; without it, none). */
  readonly outstanding?: (() => number) | undefined
  readonly startOffset: number
  readonly interval: Duration.Input
  /** Ask for a commit once this many records completed since the last one. */
  readonly records: number
  /** The delays between tries after a failed commit. */
  readonly retry: Schedule.Schedule<unknown, unknown>
  /** False at-most-once, where progress is committed ahead of handling only. */
  readonly afterHandling: boolean
  readonly status: CommitStatus
  /** The partition's metric attributes. */
  readonly attributes: Readonly<Record<string, string>>
}

export interface Committer {
  /** The last offset committed. */
  readonly committed: number
  /** A record completed: ask for a commit once enough did. Synchronous: on the hot path. */
  readonly completed: () => void
  /** Asks the loop to commit now (at most one request outstanding). */
  readonly request: () => void
  /** One try at committing what completed; succeeds with whether nothing is left uncommitted. */
  readonly commitCompleted: Effect.Effect<boolean>
  /**
   * Commits `offset` before the records below it are handled (at-most-once), trying again on
   * the retry schedule until it lands: nothing of the chunk may run before.
   */
  readonly commitAhead: (offset: number) => Effect.Effect<void>
  /**
   * A seek: commits `offset` as the partition's position, back or forth, in one try, and counts
   * from there (a seek back would otherwise commit nothing until progress passed the old offset).
   * If the try fails, the next commit of progress commits whatever is committable then.
   */
  readonly moveTo: (offset: number) => Effect.Effect<void>
  /**
   * The commit loop: on the interval or when asked, backing off after failures; parked while
   * nothing is left to commit. Runs until interrupted; at-most-once (nothing to commit after
   * handling) it only waits.
   */
  readonly run: Effect.Effect<never>
  /**
   * Records were delivered (and tracked): starts the loop in `scope` unless one runs. That loop
   * ends once everything delivered is completed and committed (`outstanding` says), so an idle
   * partition has no commit fiber at all; a record cannot complete before it is delivered, so one
   * runs whenever something may need committing. At-most-once it does nothing.
   */
  readonly delivered: (scope: Scope.Scope) => Effect.Effect<void>
}

type Step = (now: number, input: unknown) => Effect.Effect<readonly [unknown, Duration.Duration], unknown>

export const make = (options: CommitterOptions): Committer => new PartitionCommitter(options)

/**
 * A class rather than closures over `make`'s locals: one object per partition, its methods
 * shared, where a dozen closures and their context were kept per partition whether it ever
 * committed or not (an object literal with a getter also went to dictionary mode).
 */
class PartitionCommitter implements Committer {
  private lastCommitted: number
  private sinceCommit = 0
  private pending = false
  /** The loop is parked with nothing to commit, without a timer: the next completion wakes it. */
  private idle = false
  /** A loop started by `delivered` runs. */
  private running = false
  private readonly requested = new Signal()
  /** Made on the first failure: an idle partition's committer holds no metric series of its own. */
  private failures: Metric.Counter<number> | undefined
  private readonly options: CommitterOptions
  /**
   * The loop's commit waiting for its answer: `moveTo` waits for it, so a commit of progress
   * made before a seek cannot land after the seek's and put its offset forward again.
   */
  private inFlight: Deferred.Deferred<void> | undefined
  readonly commitCompleted: Effect.Effect<boolean>

  constructor(options: CommitterOptions) {
    this.options = options
    this.lastCommitted = options.startOffset
    options.status.committed = options.startOffset
    options.status.commitFailures ??= 0
    this.commitCompleted = Effect.suspend(() => {
      this.pending = false
      const offset = options.committable()
      if (offset <= this.lastCommitted || !options.afterHandling) return Effect.succeed(true)
      this.sinceCommit = 0
      const inFlight = this.inFlight = Deferred.makeUnsafe<void>()
      return Effect.matchEffect(options.commit(offset), {
        onSuccess: () => Effect.sync(() => (this.succeeded(offset), true)),
        onFailure: (error) => Effect.as(this.failed(offset, error, undefined), false),
      }).pipe(Effect.ensuring(Effect.sync(() => {
        if (this.inFlight === inFlight) this.inFlight = undefined
        Deferred.doneUnsafe(inFlight, Exit.void)
      })))
    })
  }

  get committed(): number {
    return this.lastCommitted
  }

  completed(): void {
    if (++this.sinceCommit >= this.options.records) this.request()
    else if (this.idle) {
      this.idle = false
      this.requested.notify()
    }
  }

  request(): void {
    if (this.pending) return
    this.pending = true
    this.requested.notify()
  }

  private succeeded(offset: number): void {
    this.lastCommitted = Math.max(this.lastCommitted, offset)
    this.options.status.committed = this.lastCommitted
  }

  private failed(offset: number, error: TransportError, retryIn: Duration.Duration | undefined): Effect.Effect<void> {
    const { status, topic, partition } = this.options
    status.commitFailures = (status.commitFailures ?? 0) + 1
    status.lastError = `Commit of ${topic}/${partition}@${offset} failed: ${error.message}`
    return Effect.andThen(
      Metric.update(this.failures ??= Metric.withAttributes(failuresMetric, this.options.attributes), 1),
      Effect.logWarning(retryIn === undefined ? status.lastError : `${status.lastError}; trying again in ${Duration.format(retryIn)}`),
    )
  }

  private newStep(): Effect.Effect<Step> {
    return Schedule.toStep(this.options.retry) as unknown as Effect.Effect<Step>
  }

  /** The next delay of `step`, or the commit interval once the schedule is over. */
  private delayOf(step: Step, input: unknown): Effect.Effect<Duration.Duration> {
    const interval = this.options.interval
    return Effect.gen(function*() {
      const next = yield* Effect.exit(step(yield* Clock.currentTimeMillis, input))
      return Exit.isSuccess(next) ? next.value[1] : Duration.fromInputUnsafe(interval)
    })
  }

  commitAhead(offset: number): Effect.Effect<void> {
    const self = this
    return Effect.gen(function*() {
      let step: Step | undefined
      while (true) {
        const exit = yield* Effect.exit(self.options.commit(offset))
        if (Exit.isSuccess(exit)) return self.succeeded(offset)
        const error = Cause.findErrorOption(exit.cause)
        if (error._tag === "None") return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
        step ??= yield* self.newStep()
        const delay = yield* self.delayOf(step, error.value)
        yield* self.failed(offset, error.value, delay)
        yield* Effect.sleep(delay)
      }
    })
  }

  moveTo(offset: number): Effect.Effect<void> {
    const commit = Effect.suspend(() => {
      this.sinceCommit = 0
      this.pending = false
      return Effect.matchEffect(this.options.commit(offset), {
        onSuccess: () =>
          Effect.sync(() => {
            this.lastCommitted = offset
            this.options.status.committed = offset
          }),
        onFailure: (error) =>
          Effect.suspend(() => {
            // Below any offset: the next commit of progress is made whatever it is.
            this.lastCommitted = -1
            this.pending = true
            return this.failed(offset, error, undefined)
          }),
      })
    })
    return Effect.suspend(() => this.inFlight === undefined ? commit : Effect.andThen(Deferred.await(this.inFlight), commit))
  }

  /**
   * The loop; with `untilDone`, it ends once every record delivered is completed and committed
   * (what `delivered` starts), else it runs until interrupted.
   */
  private loop(untilDone: boolean): Effect.Effect<void> {
    const self = this
    const options = this.options
    const outstanding = options.outstanding ?? (() => 0)
    return Effect.gen(function*() {
      let step: Step | undefined
      while (true) {
        // Nothing to commit: parked on the signal alone, with no timer (and no fibers racing it),
        // until a record completes or a commit is asked for; its interval starts with the first
        // record completed rather than ticking for nothing. With nothing delivered left either, no
        // record can complete before the next delivery, which starts a loop again: this one ends.
        const done = yield* Effect.suspend(() => {
          if (self.pending || options.committable() > self.lastCommitted) return Effect.succeed(false)
          if (untilDone && outstanding() === 0) return Effect.succeed(true)
          self.idle = true
          return Effect.as(self.requested.wait, false)
        })
        if (done) return
        self.idle = false
        // Checked and armed in one step, so a request made while a commit ran is not missed; and
        // `wait` is read anew each round, as a signal's wait is for its next notification only.
        yield* Effect.suspend(() =>
          self.pending ? Effect.void : Effect.raceFirst(Effect.sleep(options.interval), self.requested.wait)
        )
        if (yield* self.commitCompleted) {
          step = undefined
          // Let the processor run before looking again: commits then gather more records each.
          yield* Effect.yieldNow
          continue
        }
        step ??= yield* self.newStep()
        yield* Effect.sleep(yield* self.delayOf(step, undefined))
        // What failed is still to commit, asked again or not.
        self.pending = true
      }
    })
  }

  get run(): Effect.Effect<never> {
    return this.options.afterHandling ? Effect.andThen(this.loop(false), Effect.never) : Effect.never
  }

  delivered(scope: Scope.Scope): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.running || !this.options.afterHandling) return Effect.void
      this.running = true
      return Effect.asVoid(Effect.forkIn(Effect.ensuring(this.loop(true), Effect.sync(() => void (this.running = false))), scope))
    })
  }
}
