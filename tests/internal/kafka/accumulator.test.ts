/**
 * The producer's accumulator as plain code: when a batch closes, when a partition is ready, what
 * the sender sleeps until, and sequence numbers wrapping as Kafka's do.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Exit } from "effect"
import { Accumulator, addSequence, batchOverhead, recordSize } from "../../../lib/internal/kafka/accumulator.ts"
import { encodeRecordBatch } from "../../../lib/internal/kafka/recordBatch.ts"
import type { RecordMetadata } from "../../../lib/Transport.ts"

const limits = { maxRecords: 3, maxBytes: 1000, lingerMs: 5, deliveryTimeoutMs: 120_000 }
const record = (size = 10) => ({ key: null, value: new Uint8Array(size), timestamp: 0 })
const noop = () => {}

test("Accumulator closes a batch at maxRecords and at maxBytes; a record larger than maxBytes goes alone", () => {
  const acc = new Accumulator(limits)
  const queue = acc.queue("t", 0, "all")
  for (let i = 0; i < 4; i++) acc.append(queue, record(), recordSize(null, new Uint8Array(10), undefined), 0, noop)
  assert.deepEqual(queue.batches.map((b) => [b.count, b.closed]), [[3, true], [1, false]])

  const bytes = acc.queue("t", 1, "all")
  acc.append(bytes, record(600), 600, 0, noop)
  acc.append(bytes, record(600), 600, 0, noop) // 61 + 600 + 600 > 1000: a new batch
  acc.append(bytes, record(5000), 5000, 0, noop) // too large for any batch: alone, closed
  acc.append(bytes, record(10), 10, 0, noop)
  assert.deepEqual(bytes.batches.map((b) => [b.count, b.closed]), [[1, true], [1, true], [1, true], [1, false]])
  assert.equal(bytes.batches[0]!.bytes, batchOverhead + 600)
  assert.equal(acc.pending, 8)
})

test("Accumulator: a partition is ready once its batch is full, lingered, flushed or followed by another; not while one is in flight", () => {
  const acc = new Accumulator(limits)
  const queue = acc.queue("t", 0, "all")
  assert.equal(acc.isReady(queue, 0, false), false, "nothing to send")
  acc.append(queue, record(), 31, 100, noop)
  assert.equal(acc.isReady(queue, 104, false), false, "lingering")
  assert.equal(acc.isSendable(queue, 104), true, "but may join a request to its broker")
  assert.equal(acc.nextDeadline(100), 105, "the sender wakes when the linger ends")
  assert.equal(acc.isReady(queue, 105, false), true, "lingered")
  assert.equal(acc.isReady(queue, 101, true), true, "flushed")
  acc.append(queue, record(), 31, 101, noop)
  acc.append(queue, record(), 31, 101, noop)
  assert.equal(acc.isReady(queue, 101, false), true, "full")

  const batch = acc.take(queue)
  acc.append(queue, record(), 31, 102, noop)
  assert.equal(acc.isReady(queue, 200, true), false, "one batch in flight per partition")
  assert.equal(acc.isSendable(queue, 200), false)
  // A retry goes back in front, after its backoff, ahead of the newer batch.
  acc.requeue(batch, 300)
  assert.equal(queue.batches[0], batch)
  assert.equal(acc.isReady(queue, 299, true), false, "backing off")
  assert.equal(acc.isReady(queue, 300, false), true, "a retried batch does not linger again")
})

test("Accumulator completes every record of a finished batch once, and finds batches past their delivery timeout", () => {
  const acc = new Accumulator(limits)
  const queue = acc.queue("t", 0, "leader")
  const outcomes: Array<Exit.Exit<RecordMetadata, unknown>> = []
  acc.append(queue, record(), 31, 0, (exit) => outcomes.push(exit))
  acc.append(queue, record(), 31, 0, (exit) => outcomes.push(exit))
  assert.deepEqual(acc.expired(119_999), [])
  const [batch] = acc.expired(120_000)
  assert.ok(batch !== undefined)
  const metadata = (i: number) => Exit.succeed({ topic: "t", partition: 0, offset: i, timestamp: 0 })
  acc.finish(batch, metadata)
  acc.finish(batch, metadata)
  assert.equal(outcomes.length, 2, "a late second answer changes nothing")
  assert.equal(acc.isEmpty, true)
  assert.equal(queue.batches.length, 0)
})

test("Accumulator: sequence numbers wrap from 2^31 - 1 to 0, as Kafka's", () => {
  assert.equal(addSequence(5, 3), 8)
  assert.equal(addSequence(0x7fffffff - 1, 1), 0x7fffffff)
  assert.equal(addSequence(0x7fffffff, 1), 0)
  assert.equal(addSequence(0x7fffffff - 2, 10), 7)
})

test("Accumulator: a batch the broker answered gives its buffer to a later batch, whose bytes are its own records' alone", () => {
  const acc = new Accumulator({ maxRecords: 100, maxBytes: 100_000, lingerMs: 5, deliveryTimeoutMs: 120_000 })
  const queue = acc.queue("t", 0, "all")
  const filled = (n: number, fill: number) =>
    Array.from({ length: n }, (_, i) => ({ key: null, value: new Uint8Array(200).fill(fill), timestamp: 1000 + i }))
  const first = filled(100, 0xaa)
  for (const r of first) acc.append(queue, r, recordSize(r.key, r.value, undefined), 0, noop)
  const sent = acc.take(queue)
  const written = sent.builder.finish({ producerId: 1, producerEpoch: 0, baseSequence: 0 })
  assert.deepEqual(written, encodeRecordBatch(first, { producerId: 1, producerEpoch: 0, baseSequence: 0 }))
  const buffer = written.buffer
  acc.recycle(sent)
  acc.finish(sent, () => Exit.succeed({ topic: "t", partition: 0, offset: 0, timestamp: 0 }))
  assert.equal(sent.encoded, undefined)
  assert.equal(sent.count, 100, "a recycled batch still counts its records")
  assert.ok(acc.isEmpty, "its records are answered")
  // Fewer, different records: the old bytes beyond them must not leak into the new batch.
  const second = filled(60, 0x55)
  for (const r of second) acc.append(queue, r, recordSize(r.key, r.value, undefined), 1, noop)
  const next = acc.take(queue).builder.finish({ producerId: 1, producerEpoch: 0, baseSequence: 100 })
  assert.equal(next.buffer, buffer, "the recycled buffer")
  assert.deepEqual(next, encodeRecordBatch(second, { producerId: 1, producerEpoch: 0, baseSequence: 100 }))
})
