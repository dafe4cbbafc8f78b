import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Fiber, Layer, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Producer from "../lib/Producer.ts"
import { Transport } from "../lib/Transport.ts"
import { bytes, run } from "./fixtures/effect.ts"

const topics = [{ topic: "events", partitions: 3 }]
const broker = () => MemoryTransport.layer({ topics })
const withProducer = (options?: Producer.Options) =>
  Layer.provideMerge(Producer.layer(options), broker())

const Event = Schema.Struct({ id: Schema.Number, name: Schema.String })
const events = Producer.forTopic({ topic: "events", key: Schema.String, value: Event })

test("Producer batches concurrent sends into few transport calls, keeping order per partition", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const sent = yield* Effect.forEach(
        Array.from({ length: 300 }, (_, i) => i),
        (i) => events.send({ id: i, name: `e${i}` }, { key: `k${i % 5}` }),
        { concurrency: "unbounded" },
      )
      const calls = yield* broker.calls("send")
      assert.ok(calls < 30, `300 concurrent sends took ${calls} transport calls`)
      // Each key's records got increasing offsets in its partition, in the order they were sent.
      for (let key = 0; key < 5; key++) {
        const offsets = sent.filter((_, i) => i % 5 === key).map((m) => m.offset)
        assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b))
        assert.equal(new Set(sent.filter((_, i) => i % 5 === key).map((m) => m.partition)).size, 1)
      }
      const transport = yield* Transport
      const description = yield* transport.describeTopic("events")
      assert.equal(description.partitions.reduce((sum, p) => sum + p.highWatermark, 0), 300)
    }),
    withProducer(),
  ))

test("Producer caps a batch by record count and by bytes", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const producer = yield* Producer.Producer
      // 10 records of 100 bytes with a 250-byte cap: batches of 2.
      yield* producer.sendAll(Array.from({ length: 10 }, () => ({ topic: "events", key: null, value: new Uint8Array(100) })))
      assert.equal(yield* broker.calls("send"), 5)
    }),
    withProducer({ maxBatchBytes: 250, maxBatchRecords: 4 }),
  ))

test("Producer rejects a value the schema rejects before anything is sent", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const error = yield* Effect.flip(events.send({ id: "1", name: 2 } as never, { key: "k" }))
      assert.equal(error._tag, "EncodeError")
      if (error._tag !== "EncodeError") return
      assert.equal(error.part, "value")
      assert.equal(error.topic, "events")
      assert.match(error.message, /^Cannot encode the value of a record for "events": Expected number at \["id"\]/)
      assert.equal(yield* broker.calls("send"), 0)
    }),
    withProducer(),
  ))

test("Producer lingers for more records when asked to, on the Clock", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const first = yield* Effect.forkChild(events.send({ id: 1, name: "a" }), { startImmediately: true })
      yield* TestClock.adjust("2 millis")
      const second = yield* Effect.forkChild(events.send({ id: 2, name: "b" }), { startImmediately: true })
      // Step the clock a millisecond at a time until the batch goes out.
      let elapsed = 2
      while ((yield* broker.calls("send")) === 0) {
        assert.ok(elapsed < 100, "the records were never sent")
        yield* TestClock.adjust("1 millis")
        elapsed++
      }
      assert.ok(elapsed >= 10, `sent after ${elapsed} ms, before the 10 ms linger`)
      assert.equal(yield* broker.calls("send"), 1, "both records went in one call")
      const [a, b] = [yield* Fiber.join(first), yield* Fiber.join(second)]
      assert.equal(a.timestamp, b.timestamp, "written together")
    }),
    Layer.provideMerge(withProducer({ linger: "10 millis" }), TestClock.layer()),
  ))

test("Producer fails every record of a batch the transport refused, with its typed error", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const producer = yield* Producer.Producer
      yield* broker.failNext("send", "TOPIC_AUTHORIZATION_FAILED")
      const error = yield* Effect.flip(
        producer.sendAll([{ topic: "events", key: null, value: bytes("a") }, { topic: "events", key: null, value: bytes("b") }]),
      )
      assert.equal(error.code, "TOPIC_AUTHORIZATION_FAILED")
      const [ok] = yield* producer.sendAll([{ topic: "events", key: null, value: bytes("c") }])
      assert.equal(ok?.offset, 0, "the refused records were not written")
    }),
    withProducer(),
  ))

test("Producer sends what is pending when its scope closes", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* Effect.scoped(Effect.gen(function*() {
        const producer = yield* Producer.make({ linger: "1 hour" })
        yield* Effect.forkChild(producer.send({ topic: "events", key: null, value: bytes("late"), partition: 0 }))
        yield* Effect.yieldNow
      }))
      const [partition] = (yield* transport.describeTopic("events")).partitions
      assert.equal(partition?.highWatermark, 1)
    }),
    broker(),
  ))
