import assert from "node:assert/strict"
import { test } from "node:test"
import { type Cause, Effect, Fiber, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as Fetcher from "../../lib/internal/fetcher.ts"
import { decodeRecordBatches, encodeRecordBatch } from "../../lib/internal/kafka/recordBatch.ts"
import { Mailbox } from "../../lib/internal/mailbox.ts"
import { OffsetTracker } from "../../lib/internal/offsetTracker.ts"
import { noHooks } from "../../lib/internal/partitionHooks.ts"
import type { ConsumerRecord } from "../../lib/Transport.ts"
import { bytes } from "../fixtures/effect.ts"

const recordOf = (offset: number, value: string): ConsumerRecord => ({
  topic: "t",
  partition: 0,
  offset,
  key: bytes("k"),
  value: bytes(value),
  headers: [{ key: "h", value: bytes("vv") }],
  timestamp: 0,
})

/** A fetcher over the batches put into the returned queue (the claim's stream, as a transport gives it). */
const setUp = (capacity: number, maxBytes: number, fill = false) =>
  Effect.gen(function*() {
    const batches = yield* Queue.unbounded<ReadonlyArray<ConsumerRecord>, Cause.Done>()
    const mailbox = new Mailbox<ConsumerRecord>(capacity, { maxBytes, sizeOf: Fetcher.recordBytes })
    const tracker = new OffsetTracker(0)
    const status = { position: 0 }
    let pauses = 0
    const fiber = yield* Effect.forkChild(Fetcher.run({
      claim: { topic: "t", partition: 0, startOffset: 0, records: Stream.fromQueue(batches) },
      mailbox,
      tracker,
      hooks: noHooks,
      status,
      pauseAfter: "50 millis",
      pause: Effect.sync(() => void pauses++),
      fill,
    }))
    return { batches, mailbox, tracker, status, fiber, pauses: () => pauses }
  })

const settle = Effect.gen(function*() {
  for (let i = 0; i < 10; i++) yield* Effect.yieldNow
})

test("recordBytes takes a record of the own Kafka client at its encoded size, without reading its headers", () => {
  const encoded = encodeRecordBatch([
    { key: bytes("k"), value: bytes("12345"), headers: [{ key: "h", value: bytes("vv") }], timestamp: 0 },
    { key: null, value: null, timestamp: 0 },
  ])
  const [first, second] = [...decodeRecordBatches(encoded, { topic: "t", partition: 0 }).batches[0]!]
  // key (1+1) + value (1+5) + header count (1) + header key (1+1) + header value (1+2)
  assert.equal(Fetcher.recordBytes(first!), 14)
  // null key and value (1 each) and no headers (1)
  assert.equal(Fetcher.recordBytes(second!), 3)
  // At least what the fields hold.
  assert.ok(Fetcher.recordBytes(first!) >= Fetcher.recordBytes({ ...recordOf(0, "12345") }))
})

test("recordBytes counts key, value and headers", () => {
  assert.equal(Fetcher.recordBytes(recordOf(0, "12345")), 1 + 5 + 1 + 2)
  assert.equal(Fetcher.recordBytes({ ...recordOf(0, ""), key: null, value: null, headers: [] }), 0)
})

test("Fetcher tracks every offset, moves the position, and puts a batch larger than the bounds in as pieces within them", () =>
  Effect.runPromise(Effect.gen(function*() {
    // Each record is 1 + 10 + 3 = 14 bytes: 3 fit in 50 bytes, though 10 fit by count.
    const { batches, mailbox, tracker, status } = yield* setUp(10, 50)
    yield* Queue.offer(batches, Array.from({ length: 8 }, (_, offset) => recordOf(offset, "0123456789")))
    yield* settle
    assert.equal(status.position, 8)
    assert.equal(tracker.outstanding(), 8, "every record delivered is tracked")
    assert.equal(mailbox.size, 3, "a piece within the byte bound")
    assert.ok(mailbox.bytes <= 50)
    const taken: Array<number> = []
    while (taken.length < 8) {
      const piece = yield* mailbox.take(100)
      assert.ok(piece.length <= 3, `pieces of at most 3 records, got ${piece.length}`)
      taken.push(...piece.map((record) => record.offset))
      yield* settle
    }
    assert.deepEqual(taken, [0, 1, 2, 3, 4, 5, 6, 7])
  }).pipe(Effect.scoped)))

test("Fetcher pauses the partition only when a wait for room lasts past pauseAfter", () =>
  Effect.runPromise(Effect.gen(function*() {
    const { batches, mailbox, pauses } = yield* setUp(2, 1000)
    yield* Queue.offer(batches, [recordOf(0, "a"), recordOf(1, "b")])
    yield* Queue.offer(batches, [recordOf(2, "c")])
    yield* settle
    assert.equal(mailbox.size, 2, "full: the next batch waits")
    yield* TestClock.adjust("40 millis")
    assert.equal(pauses(), 0, "a short wait does not pause")
    yield* TestClock.adjust("20 millis")
    assert.equal(pauses(), 1)
    yield* mailbox.take(10)
    yield* settle
    assert.equal(mailbox.size, 1)
  }).pipe(Effect.scoped, Effect.provide(TestClock.layer()))))

test("Fetcher with fill puts in what fits as room comes; the mailbox ends with the claim's stream", () =>
  Effect.runPromise(Effect.gen(function*() {
    const { batches, mailbox, fiber } = yield* setUp(4, 1000, true)
    yield* Queue.offer(batches, [recordOf(0, "a"), recordOf(1, "b"), recordOf(2, "c")])
    yield* settle
    const held = yield* mailbox.takeHeld(10)
    assert.equal(held.length, 3)
    yield* Queue.offer(batches, [recordOf(3, "d"), recordOf(4, "e"), recordOf(5, "f")])
    yield* settle
    assert.equal(mailbox.size, 4, "one place was left: one record of the batch went in")
    mailbox.release(held[0]!)
    yield* settle
    assert.equal(mailbox.size, 4, "and the next as soon as a place freed")
    yield* Queue.end(batches)
    mailbox.release(held[1]!)
    mailbox.release(held[2]!)
    yield* Fiber.join(fiber)
    // Each record went in as a place freed.
    for (const offset of [3, 4, 5]) assert.deepEqual((yield* mailbox.takeHeld(10)).map((record) => record.offset), [offset])
    assert.ok((yield* Effect.exit(mailbox.take(10)))._tag === "Failure", "ended")
  }).pipe(Effect.scoped)))
