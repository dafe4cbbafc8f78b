import { Cause, Effect } from "effect"
import { Signal } from "./signal.ts"

/**
 * A partition actor's mailbox: the batches its fetcher took from the transport, waiting for the
 * processor, bounded by the number of records and by their bytes.
 *
 * Batches are kept as they came, never queued record by record: handing over a batch costs the
 * same for 1 record or 500, which is what keeps the hand-off off a per-record hot path.
 * A batch is accepted whole once it fits, or into an empty mailbox whatever its size (so a batch
 * larger than the bounds cannot block forever): the bound is `max(capacity, largest batch)`
 * records and `max(maxBytes, largest batch's bytes)` bytes.
 *
 * Records taken with `take` leave the bound at once; records taken with `takeHeld` count
 * against it until each is `release`d, for a processor that keeps records of several batches in
 * flight at once (key lanes): what it holds, waiting or started, is bounded too.
 */
export class Mailbox<A> {
  readonly capacity: number
  readonly maxBytes: number
  private readonly sizeOf: (item: A) => number
  private batches: Array<ReadonlyArray<A>> = []
  private batchBytes: Array<number> = []
  private head = 0
  /** Records in batches, not taken yet. */
  private held = 0
  private heldBytes = 0
  /** Records taken with `takeHeld` and not released yet. */
  private out = 0
  private outBytes = 0
  /** An offer is waiting for room: releases must wake it. */
  private blocked = false
  /** The room (records, bytes) a waiting `fill` waits for: releases wake it only once there is as much. */
  private wantedRecords = 0
  private wantedBytes = 0
  private ended = false
  /** `nudge` was called: the next `available` returns at once, records or not. */
  private nudged = false
  private readonly changed = new Signal()

  constructor(capacity: number, options?: {
    /** Bytes held at most, as `sizeOf` counts them. Default: no bound. */
    readonly maxBytes?: number | undefined
    /** An item's bytes. Default: none, so only the record count bounds the mailbox. */
    readonly sizeOf?: ((item: A) => number) | undefined
    /** Told after every change of `size`, for a status to show it. */
    readonly onChange?: ((mailbox: Mailbox<A>) => void) | undefined
  }) {
    this.capacity = capacity
    this.maxBytes = options?.maxBytes ?? Infinity
    this.sizeOf = options?.sizeOf ?? (() => 0)
    this.onChange = options?.onChange ?? (() => {})
  }
  private readonly onChange: (mailbox: Mailbox<A>) => void

  /** Records counted against the bound: waiting, and taken with `takeHeld` but not released. */
  get size(): number {
    return this.held + this.out
  }

  /** Bytes counted against the bound, likewise. */
  get bytes(): number {
    return this.heldBytes + this.outBytes
  }

  /** The bytes of `batch`, as the mailbox counts them. */
  bytesOf(batch: ReadonlyArray<A>): number {
    let bytes = 0
    for (let i = 0; i < batch.length; i++) bytes += this.sizeOf(batch[i]!)
    return bytes
  }

  /** Whether `batch` (of `bytes`, if already counted) would be accepted now, without waiting. */
  fits(batch: ReadonlyArray<A>, bytes: number = this.bytesOf(batch)): boolean {
    return this.size === 0 || (this.size + batch.length <= this.capacity && this.bytes + bytes <= this.maxBytes)
  }

  /** Adds a batch (of `bytes`, if already counted), waiting for room; after `end` the batch is dropped. */
  offer(batch: ReadonlyArray<A>, bytes?: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.ended || batch.length === 0) return Effect.void
      const counted = bytes ?? this.bytesOf(batch)
      if (!this.fits(batch, counted)) {
        this.blocked = true
        this.wantedRecords = batch.length
        this.wantedBytes = counted
        const wait = this.changed.wait
        return Effect.andThen(wait, this.offer(batch, counted))
      }
      this.blocked = false
      this.batches.push(batch)
      this.batchBytes.push(counted)
      this.held += batch.length
      this.heldBytes += counted
      this.onChange(this)
      this.changed.notify()
      return Effect.void
    })
  }

  /**
   * As `offer`, but when the whole batch does not fit, what fits goes in now and the rest waits
   * for room: for a processor whose taken records leave the bound one by one (key lanes), where
   * waiting for room for a whole batch could wait for a record stuck in a retry.
   */
  fill(batch: ReadonlyArray<A>, bytes?: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.ended || batch.length === 0) return Effect.void
      const counted = bytes ?? this.bytesOf(batch)
      if (this.fits(batch, counted)) return this.offer(batch, counted)
      const room = this.capacity - this.size
      const roomBytes = this.maxBytes - this.bytes
      let count = 0
      let prefixBytes = 0
      while (count < batch.length && count < room) {
        const size = this.sizeOf(batch[count]!)
        if (prefixBytes + size > roomBytes) break
        prefixBytes += size
        count++
      }
      if (count === 0) {
        // Woken for room for a quarter of the mailbox (or the whole rest of the batch), not for
        // each record released: a batch per released record would cost more than the records.
        this.blocked = true
        this.wantedRecords = Math.min(batch.length, Math.ceil(this.capacity / 4))
        this.wantedBytes = Math.min(counted, this.maxBytes / 4)
        const wait = this.changed.wait
        return Effect.andThen(wait, this.fill(batch, counted))
      }
      return Effect.andThen(this.offer(batch.slice(0, count), prefixBytes), this.fill(batch.slice(count), counted - prefixBytes))
    })
  }

  /**
   * Takes the oldest batch, at most `max` records of it (the rest stays first in line); waits
   * while the mailbox is empty. Fails with `Cause.Done` once ended and empty.
   */
  take(max: number): Effect.Effect<ReadonlyArray<A>, Cause.Done> {
    return this.takeFrom(max, false)
  }

  /** As `take`, but the records taken count against the bound until each is `release`d. */
  takeHeld(max: number): Effect.Effect<ReadonlyArray<A>, Cause.Done> {
    return this.takeFrom(max, true)
  }

  private takeFrom(max: number, hold: boolean): Effect.Effect<ReadonlyArray<A>, Cause.Done> {
    return Effect.suspend(() => {
      if (this.held === 0) {
        if (this.ended) return Cause.done()
        const wait = this.changed.wait
        return Effect.andThen(wait, this.takeFrom(max, hold))
      }
      return Effect.succeed(this.pollHeld(max, hold)!)
    })
  }

  /**
   * Waits until there is something to take; fails with `Cause.Done` once ended and empty. With
   * `pollHeld` after it, what is taken is in the caller's hands in the same synchronous step,
   * which an interruption cannot split.
   */
  readonly available: Effect.Effect<void, Cause.Done> = Effect.suspend(() => {
    if (this.held > 0) return Effect.void
    if (this.ended) return Cause.done()
    if (this.nudged) {
      this.nudged = false
      return Effect.void
    }
    return Effect.andThen(this.changed.wait, this.available)
  })

  /**
   * Wakes the processor waiting in `available` (now, or the next time it waits), records or not:
   * for a request it must look at (a seek, a pause), without a second fiber parked beside it.
   */
  nudge(): void {
    this.nudged = true
    this.changed.notify()
  }

  /** As `takeHeld` (or `take`, with `hold` false), without waiting: undefined while empty. */
  pollHeld(max: number, hold = true): ReadonlyArray<A> | undefined {
    if (this.held === 0) return undefined
    const batch = this.batches[this.head]!
    let taken: ReadonlyArray<A>
    let takenBytes: number
    if (batch.length <= max) {
      taken = batch
      takenBytes = this.batchBytes[this.head]!
      this.batches[this.head] = undefined as never
      this.batchBytes[this.head++] = 0
      if (this.head > 64 && this.head * 2 > this.batches.length) {
        this.batches = this.batches.slice(this.head)
        this.batchBytes = this.batchBytes.slice(this.head)
        this.head = 0
      }
    } else {
      taken = batch.slice(0, max)
      takenBytes = this.bytesOf(taken)
      this.batches[this.head] = batch.slice(max)
      this.batchBytes[this.head] = this.batchBytes[this.head]! - takenBytes
    }
    this.held -= taken.length
    this.heldBytes -= takenBytes
    if (hold) {
      this.out += taken.length
      this.outBytes += takenBytes
    }
    this.onChange(this)
    this.changed.notify()
    return taken
  }

  /** A record taken with `takeHeld` is done: it no longer counts against the bound. */
  release(item: A): void {
    this.out--
    this.outBytes -= this.sizeOf(item)
    this.onChange(this)
    if (this.blocked && this.capacity - this.size >= this.wantedRecords && this.maxBytes - this.bytes >= this.wantedBytes) {
      this.changed.notify()
    }
  }

  /** Drops every batch held (records taken with `takeHeld` stay counted until released). */
  clear(): void {
    this.batches = []
    this.batchBytes = []
    this.head = 0
    this.held = 0
    this.heldBytes = 0
    this.onChange(this)
    this.changed.notify()
  }

  /**
   * Forgets the records taken with `takeHeld` and not released: for a seek, once nothing taken
   * is still being handled (what was refused will never be released).
   */
  forgetTaken(): void {
    this.out = 0
    this.outBytes = 0
    this.onChange(this)
    this.changed.notify()
  }

  /** No more batches: `take` fails with `Done` once the held ones are taken; `offer` drops. */
  end(): void {
    this.ended = true
    this.changed.notify()
  }
}
