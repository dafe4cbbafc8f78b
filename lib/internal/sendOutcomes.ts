/**
 * What callers of `Transport.sendEach` share: its outcomes as `send`'s answer (every record's
 * metadata, or the first failure), and the error of one failed outcome.
 */
import { Effect, type Exit } from "effect"
import type { RecordMetadata } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"

export type Outcome = Exit.Exit<RecordMetadata, TransportError>

/** Every record's metadata, or the first failed record's error. */
export const allWritten = (
  outcomes: ReadonlyArray<Outcome>,
): Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError> => {
  const metadata: Array<RecordMetadata> = new Array(outcomes.length)
  for (let index = 0; index < outcomes.length; index++) {
    const outcome = outcomes[index]!
    if (outcome._tag === "Failure") return Effect.failCause(outcome.cause)
    metadata[index] = outcome.value
  }
  return Effect.succeed(metadata)
}

/** The error of a failed outcome (a `sendEach` failure is one `TransportError`). */
export const errorOf = (outcome: Outcome): TransportError | undefined => {
  if (outcome._tag === "Success") return undefined
  for (const reason of outcome.cause.reasons) if (reason._tag === "Fail") return reason.error
  return undefined
}
