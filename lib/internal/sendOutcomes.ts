/**
 * What `Transport.send` and `Transport.sendEach` share in every transport: `send` is `sendEach`
 * taking one failure for all, and a retry inside `sendEach` resends only the records still
 * without an outcome, so nothing written is written twice.
 */
import { Effect, Exit, type Schedule } from "effect"
import type { RecordMetadata } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"

export type Outcome = Exit.Exit<RecordMetadata, TransportError>

/** Every record's metadata, or the first failed record's error. */
export const allWritten = (outcomes: ReadonlyArray<Outcome>): Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError> => {
  const metadata: Array<RecordMetadata> = new Array(outcomes.length)
  for (let index = 0; index < outcomes.length; index++) {
    const outcome = outcomes[index]!
    if (outcome._tag === "Failure") return Effect.failCause(outcome.cause)
    metadata[index] = outcome.value
  }
  return Effect.succeed(metadata)
}

/** The error of a failed outcome (a `sendEach` failure is always one `TransportError`). */
export const errorOf = (outcome: Outcome): TransportError | undefined => {
  if (outcome._tag === "Success") return undefined
  for (const reason of outcome.cause.reasons) if (reason._tag === "Fail") return reason.error
  return undefined
}

/**
 * Runs `attempt` over the records still pending, retrying on `schedule` while the failures left
 * are retriable: each attempt gets the indices of the records without an outcome and returns
 * an outcome per index, `undefined` where a retriable failure leaves the record pending (it
 * was not written). `whole` fails an attempt before anything was written (an injected fault).
 */
export const retryPending = (
  count: number,
  schedule: Schedule.Schedule<unknown, TransportError>,
  attempt: (pending: ReadonlyArray<number>) => Effect.Effect<ReadonlyArray<Outcome>, TransportError>,
): Effect.Effect<ReadonlyArray<Outcome>> => {
  const outcomes: Array<Outcome | undefined> = new Array(count)
  let pending: ReadonlyArray<number> = Array.from({ length: count }, (_, index) => index)
  let wholeFailed = false
  const once = Effect.flatMap(Effect.suspend(() => {
    wholeFailed = true
    return attempt(pending)
  }), (results) => {
    wholeFailed = false
    const left: Array<number> = []
    let retriable: TransportError | undefined
    for (let position = 0; position < pending.length; position++) {
      const result = results[position]!
      const error = errorOf(result)
      if (error !== undefined && error.retriable) {
        left.push(pending[position]!)
        retriable ??= error
      }
      outcomes[pending[position]!] = result
    }
    pending = left
    return retriable === undefined ? Effect.void : Effect.fail(retriable)
  })
  return Effect.retry(once, { schedule, while: (error) => error.retriable }).pipe(
    Effect.catch((error) =>
      Effect.sync(() => {
        // A failure of the whole attempt (nothing written) is the outcome of what was pending;
        // otherwise each pending record keeps its own last retriable failure.
        if (wholeFailed) for (const index of pending) outcomes[index] = Exit.fail(error)
      })
    ),
    Effect.map(() => outcomes as ReadonlyArray<Outcome>),
  )
}
