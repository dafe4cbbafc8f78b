/**
 * A partition actor's fetcher: pulls the claim's batches into the mailbox, tracking each
 * record's offset as delivered. A full mailbox makes it wait, and a wait that lasts pauses the
 * partition on the transport, so memory stays bounded whatever the backlog. When the claim's
 * stream ends (revocation, shutdown) or fails, the mailbox ends.
 */
import { type Duration, Effect, Exit, Fiber, Stream } from "effect"
import type { ConsumerRecord, PartitionClaim } from "../Transport.ts"
import type { Mailbox } from "./mailbox.ts"
import type { OffsetTracker } from "./offsetTracker.ts"
import type { PartitionHooks } from "./partitionHooks.ts"

export interface FetcherDeps {
  readonly claim: PartitionClaim
  readonly mailbox: Mailbox<ConsumerRecord>
  readonly tracker: OffsetTracker
  readonly hooks: PartitionHooks
  readonly status: { position: number }
  /** How long a wait for room lasts before the partition is paused. */
  readonly pauseAfter: Duration.Input
  readonly pause: Effect.Effect<void>
  /** Told once a batch's records are tracked, before they go into the mailbox (starts the commit loop). */
  readonly delivered?: Effect.Effect<void> | undefined
  /**
   * Put what fits in as room comes (`Mailbox.fill`) rather than waiting for room for a whole
   * piece: for key lanes, whose records leave the mailbox's bound one by one.
   */
  readonly fill: boolean
  /**
   * Records below this offset are dropped: a transport may still deliver what it fetched before
   * the actor moved its position (an exactly-once actor seeks to its committed offset).
   */
  readonly from?: (() => number) | undefined
}

/**
 * The bytes a record pins, as the mailbox counts them: key, value and headers. A record of
 * Partita's own Kafka client says so itself (`pinnedBytes`, its encoded size, without building
 * its headers or views); others are counted field by field.
 */
export const recordBytes = (record: ConsumerRecord): number => {
  const pinned = (record as { readonly pinnedBytes?: number }).pinnedBytes
  if (pinned !== undefined) return pinned
  let bytes = (record.key?.byteLength ?? 0) + (record.value?.byteLength ?? 0)
  const headers = record.headers
  for (let i = 0; i < headers.length; i++) {
    const header = headers[i]!
    bytes += header.key.length + (header.value?.byteLength ?? 0)
  }
  return bytes
}

/** Runs until the claim's stream ends; never fails (a failed fetch is logged and ends the mailbox). */
export const run = (deps: FetcherDeps): Effect.Effect<void> => {
  const { claim, mailbox, tracker, hooks, status } = deps
  return claim.records.pipe(
    Stream.runForEach((fetched) =>
      Effect.gen(function*() {
        const from = deps.from?.()
        const batch = from === undefined || fetched[0]!.offset >= from ? fetched : fetched.filter((record) => record.offset >= from)
        if (batch.length === 0) return
        if (hooks.enabled) hooks.onPoll(batch)
        for (const record of batch) tracker.track(record.offset)
        status.position = batch[batch.length - 1]!.offset + 1
        if (deps.delivered !== undefined) yield* deps.delivered
        // A batch larger than the mailbox goes in as pieces that fit, so the bound holds.
        const pieces = piecesOf(batch, mailbox)
        let pauser: Fiber.Fiber<void> | undefined
        for (const [piece, bytes] of pieces) {
          if (pauser === undefined && !mailbox.fits(piece, bytes)) {
            // The mailbox is full: wait for room, and pause the partition on the transport only
            // if the wait lasts. A handler that keeps up frees room within milliseconds, and
            // pausing it would make Kafka drop and fetch again what it already fetched.
            pauser = yield* Effect.forkChild(Effect.andThen(Effect.sleep(deps.pauseAfter), deps.pause))
          }
          yield* (deps.fill ? mailbox.fill(piece, bytes) : mailbox.offer(piece, bytes))
        }
        if (pauser !== undefined) yield* Fiber.interrupt(pauser)
        if (hooks.enabled) hooks.onPollStart()
      })
    ),
    Effect.catch((error) => Effect.logError(`Fetching ${claim.topic}/${claim.partition} failed: ${error.message}`)),
    // Interrupted, it leaves the mailbox open: whoever interrupts it says what comes next (a stop
    // ends the mailbox itself; an exactly-once rewind starts a new fetcher on the same mailbox).
    Effect.onExit((exit) => Exit.hasInterrupts(exit) ? Effect.void : Effect.sync(() => mailbox.end())),
  )
}

/** `batch` as pieces the mailbox can take, each with its bytes: within its capacity and its bytes, or one record. */
const piecesOf = (
  batch: ReadonlyArray<ConsumerRecord>,
  mailbox: Mailbox<ConsumerRecord>,
): ReadonlyArray<readonly [ReadonlyArray<ConsumerRecord>, number]> => {
  const total = mailbox.bytesOf(batch)
  if (batch.length <= mailbox.capacity && total <= mailbox.maxBytes) return [[batch, total]]
  const pieces: Array<readonly [ReadonlyArray<ConsumerRecord>, number]> = []
  let from = 0
  let bytes = 0
  for (let i = 0; i < batch.length; i++) {
    const size = recordBytes(batch[i]!)
    if (i > from && (i - from >= mailbox.capacity || bytes + size > mailbox.maxBytes)) {
      pieces.push([batch.slice(from, i), bytes])
      from = i
      bytes = 0
    }
    bytes += size
  }
  pieces.push([batch.slice(from), bytes])
  return pieces
}
