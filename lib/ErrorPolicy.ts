/**
 * What a partition actor does with a record whose handler failed, chosen per error tag.
 *
 * An actor's `onError` maps every tag in its handler's error channel (plus `DecodeError`, and
 * `HandlerTimeout` when the actor sets a `handlerTimeout`: the errors Partita raises itself) to
 * one policy, or gives a `default`; the compiler rejects a missing tag otherwise. Defects (thrown exceptions, `Effect.die`) are not
 * errors: they restart the partition actor under its supervision schedule.
 *
 * - `retry(schedule, { times, then })`: run the handler again after each delay of the schedule
 *   (the attempt number is in `RecordContext`); when the schedule or `times` runs out, do `then`
 *   (required: whether an exhausted record is dead-lettered, skipped or halts the partition is
 *   the decision that loses data or stops a pipeline, so it is written where the policy is).
 *   For an actor with a batch handler (`handleBatch`), the policy of the error a batch failed
 *   with applies to the whole batch, and `bisect: true` splits a batch whose retries ran out in
 *   halves and handles each, with the retries again, down to single records: only a record
 *   that fails alone gets `then`.
 * - `deadLetter`: write the record, unchanged, to the actor's dead-letter topic and move on.
 * - `skip`: log it, count it, move on.
 * - `pausePartition(schedule)`: stop fetching the partition and retry the record on the
 *   schedule until it succeeds (for a downstream that is down or rate limiting); the partition
 *   resumes once it does.
 * - `halt`: stop this partition actor and report it unhealthy; nothing past the record is
 *   committed, so a restart of the app takes it up again.
 *
 * @since 0.1.0
 */
import { type Duration, Schedule } from "effect"

/**
 * What to do when retries run out.
 *
 * @since 0.1.0
 * @category models
 */
export type Exhausted = "dead-letter" | "skip" | "halt"

/**
 * @since 0.1.0
 * @category models
 */
export type ErrorPolicy =
  | {
    readonly _tag: "Retry"
    readonly schedule: Schedule.Schedule<unknown, unknown>
    /** At most this many retries (attempts after the first); unbounded if absent. */
    readonly times: number | undefined
    readonly then: Exhausted
    /**
     * Batch handlers: when the retries of a batch of several records run out, split it in halves
     * and handle each (with the retries again) instead of doing `then` to all of its records.
     */
    readonly bisect: boolean
  }
  | { readonly _tag: "DeadLetter" }
  | { readonly _tag: "Skip" }
  | { readonly _tag: "PausePartition"; readonly schedule: Schedule.Schedule<unknown, unknown> }
  | { readonly _tag: "Halt" }

/**
 * The options of {@link retry}.
 *
 * @since 0.4.0
 * @category models
 */
export interface RetryOptions {
  /** At most this many retries (attempts after the first). Default: as many as the schedule gives. */
  readonly times?: number | undefined
  /**
   * What happens to the record when the retries run out: `dead-letter`, `skip` or `halt`.
   * Required since 0.4.0 (it used to default to `dead-letter` without saying so).
   */
  readonly then: Exhausted
  /**
   * Batch handlers only (`handleBatch`): when a batch of several records ran out of retries,
   * split it in halves and handle each half again, with its own retries, down to single
   * records, so a poison record gets `then` alone and every other record completes. Without it
   * every record of the failed batch gets `then`. Ignored by per-record handlers. Default false.
   */
  readonly bisect?: boolean | undefined
}

/**
 * Retries on `schedule`, at most `times` times, then does `then`.
 *
 * @example
 * ```ts
 * import { Schedule } from "effect"
 * import { ErrorPolicy } from "partita"
 *
 * // Three retries a second apart; a record still failing goes to the dead-letter topic.
 * const policy = ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 3, then: "dead-letter" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const retry = (schedule: Schedule.Schedule<unknown, any>, options: RetryOptions): ErrorPolicy => ({
  _tag: "Retry",
  schedule: schedule as Schedule.Schedule<unknown, unknown>,
  times: options.times,
  then: options.then,
  bisect: options.bisect ?? false,
})

/**
 * Exponential backoff with jitter from `base`, the usual retry: `retry(exponential(base) |> jittered)`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const retryWithBackoff = (base: Duration.Input, options: RetryOptions): ErrorPolicy =>
  retry(Schedule.exponential(base).pipe(Schedule.jittered), options)

/**
 * @since 0.1.0
 * @category constructors
 */
export const deadLetter: ErrorPolicy = { _tag: "DeadLetter" }

/**
 * @since 0.1.0
 * @category constructors
 */
export const skip: ErrorPolicy = { _tag: "Skip" }

/**
 * @since 0.1.0
 * @category constructors
 */
export const halt: ErrorPolicy = { _tag: "Halt" }

/**
 * Pauses fetching and retries the record on `schedule` until it succeeds.
 *
 * @since 0.1.0
 * @category constructors
 */
export const pausePartition = (schedule: Schedule.Schedule<unknown, any>): ErrorPolicy => ({
  _tag: "PausePartition",
  schedule: schedule as Schedule.Schedule<unknown, unknown>,
})

/** The `_tag`s of an error union. */
type Tags<E> = E extends { readonly _tag: infer Tag extends string } ? Tag : never

/**
 * A policy per error tag of `E`: every tag, or some tags and a `default`.
 *
 * @since 0.1.0
 * @category models
 */
export type Policies<E> =
  | { readonly [Tag in Tags<E>]: ErrorPolicy }
  | ({ readonly [Tag in Tags<E>]?: ErrorPolicy } & { readonly default: ErrorPolicy })

/**
 * The policy for an error tag: its own, or the default.
 *
 * @since 0.1.0
 * @category getters
 */
export const forTag = <E>(policies: Policies<E>, tag: string): ErrorPolicy => {
  const table = policies as Readonly<Record<string, ErrorPolicy | undefined>>
  return table[tag] ?? table["default"] ?? halt
}
