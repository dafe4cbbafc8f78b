/**
 * The record a handler is working on, reached through the context rather than extra arguments.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RecordContext } from "partita"
 *
 * const handle = (value: string) =>
 *   Effect.gen(function*() {
 *     const record = yield* RecordContext.RecordContext
 *     yield* Effect.log(`${record.topic}/${record.partition}@${record.offset}, attempt ${record.attempt}: ${value}`)
 *   })
 * ```
 *
 * @since 0.1.0
 */
import { Context } from "effect"
import type { Header } from "./Transport.ts"

/**
 * @since 0.1.0
 * @category services
 */
export class RecordContext extends Context.Service<RecordContext, {
  readonly actor: string
  readonly group: string
  readonly topic: string
  readonly partition: number
  readonly offset: number
  /** The raw key bytes; the decoded key is the handler's second argument. */
  readonly key: Uint8Array | null
  readonly headers: ReadonlyArray<Header>
  /** Epoch milliseconds. */
  readonly timestamp: number
  /** 1 on the first try, 2 on the first retry, and so on. */
  readonly attempt: number
  /**
   * The guarantee the handler runs under. With `exactly-once`, what it produces through
   * `Producer` commits with the record's offset in one transaction, but the handler itself may
   * run again for the same record (after an aborted transaction): keep writes outside Kafka
   * idempotent, for example keyed by `${topic}/${partition}@${offset}`.
   */
  readonly delivery: "at-least-once" | "at-most-once" | "exactly-once"
}>()("partita/RecordContext") {}

/**
 * The first value of header `key` (matched case-insensitively), decoded as UTF-8.
 *
 * @since 0.1.0
 * @category getters
 */
export const header = (headers: ReadonlyArray<Header>, key: string): string | undefined => {
  const wanted = key.toLowerCase()
  for (const header of headers) {
    if (header.key.toLowerCase() === wanted) {
      return header.value === null ? undefined : new TextDecoder().decode(header.value)
    }
  }
  return undefined
}
