import { Cause, Effect } from "effect"
import { Signal } from "./signal.ts"

/**
 * A partition actor's mailbox: the batches its fetcher took from the transport, waiting for the
 * processor, bounded by the number of records held.
 *
 * Batches are kept as they came, never queued record by record: handing over a batch costs the
 * same for 1 record or 500, which is what keeps the hand-off off a per-record hot path.
 * A batch is accepted whole once it fits, or into an empty mailbox whatever its size (so a batch
 * larger than the capacity cannot block forever): the bound is `max(capacity, largest batch)`.
 */
export class Mailbox<A> {
  readonly capacity: number
  private batches: Array<ReadonlyArray<A>> = []
  private head = 0
  /** Records held. */
  size = 0
  private ended = false
  private readonly changed = new Signal()

  constructor(capacity: number) {
    this.capacity = capacity
  }

  /** Whether `batch` would be accepted now, without waiting. */
  fits(batch: ReadonlyArray<A>): boolean {
    return this.size === 0 || this.size + batch.length <= this.capacity
  }

  /** Adds a batch, waiting for room; after `end` the batch is dropped. */
  readonly offer = (batch: ReadonlyArray<A>): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (this.ended || batch.length === 0) return Effect.void
      if (!this.fits(batch)) {
        const wait = this.changed.wait
        return Effect.andThen(wait, this.offer(batch))
      }
      this.batches.push(batch)
      this.size += batch.length
      this.changed.notify()
      return Effect.void
    })

  /**
   * Takes the oldest batch, at most `max` records of it (the rest stays first in line); waits
   * while the mailbox is empty. Fails with `Cause.Done` once ended and empty.
   */
  readonly take = (max: number): Effect.Effect<ReadonlyArray<A>, Cause.Done> =>
    Effect.suspend(() => {
      if (this.size === 0) {
        if (this.ended) return Cause.done()
        const wait = this.changed.wait
        return Effect.andThen(wait, this.take(max))
      }
      const batch = this.batches[this.head]!
      let taken: ReadonlyArray<A>
      if (batch.length <= max) {
        taken = batch
        this.batches[this.head++] = undefined as never
        if (this.head > 64 && this.head * 2 > this.batches.length) {
          this.batches = this.batches.slice(this.head)
          this.head = 0
        }
      } else {
        taken = batch.slice(0, max)
        this.batches[this.head] = batch.slice(max)
      }
      this.size -= taken.length
      this.changed.notify()
      return Effect.succeed(taken)
    })

  /** Drops every batch held. */
  clear(): void {
    this.batches = []
    this.head = 0
    this.size = 0
    this.changed.notify()
  }

  /** No more batches: `take` fails with `Done` once the held ones are taken; `offer` drops. */
  end(): void {
    this.ended = true
    this.changed.notify()
  }
}
