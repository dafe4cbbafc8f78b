/**
 * What a partition actor does with a record whose handler failed, chosen per error tag.
 *
 * An actor's `onError` maps every tag in its handler's error channel (plus `DecodeError` and
 * `HandlerTimeout`, which Partita raises itself) to one policy, or gives a `default`; the
 * compiler rejects a missing tag otherwise. Defects (thrown exceptions, `Effect.die`) are not
 * errors: they restart the partition actor under its supervision schedule.
 *
 * - `retry(schedule, { times, then })`: run the handler again after each delay of the schedule
 *   (the attempt number is in `RecordContext`); when the schedule or `times` runs out, do `then`.
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
  }
  | { readonly _tag: "DeadLetter" }
  | { readonly _tag: "Skip" }
  | { readonly _tag: "PausePartition"; readonly schedule: Schedule.Schedule<unknown, unknown> }
  | { readonly _tag: "Halt" }

/**
 * Retries on `schedule`, at most `times` times, then does `then` (default: dead-letter).
 *
 * @since 0.1.0
 * @category constructors
 */
export const retry = (
  schedule: Schedule.Schedule<unknown, any>,
  options: { readonly times?: number | undefined; readonly then?: Exhausted | undefined } = {},
): ErrorPolicy => ({
  _tag: "Retry",
  schedule: schedule as Schedule.Schedule<unknown, unknown>,
  times: options.times,
  then: options.then ?? "dead-letter",
})

/**
 * Exponential backoff with jitter from `base`, the usual retry: `retry(exponential(base) |> jittered)`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const retryWithBackoff = (
  base: Duration.Input,
  options: { readonly times?: number | undefined; readonly then?: Exhausted | undefined } = {},
): ErrorPolicy => retry(Schedule.exponential(base).pipe(Schedule.jittered), options)

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
