import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, Effect, Exit, Fiber, Layer, Option, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Producer from "../lib/Producer.ts"
import { Transport } from "../lib/Transport.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, run, text } from "./fixtures/effect.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

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

// ---- One record's result is its own, on every transport ----

/** The transport under `layer`, recording how many records each of its send calls carried. */
const recordingCalls = <E>(layer: Layer.Layer<Transport, E>) => {
  const calls: Array<number> = []
  const recording = Layer.effect(
    Transport,
    Effect.map(Transport, (transport) =>
      Transport.of({
        ...transport,
        send: (records, options) => {
          calls.push(records.length)
          return transport.send(records, options)
        },
        sendEach: (records, options) => {
          calls.push(records.length)
          return transport.sendEach(records, options)
        },
      })),
  ).pipe(Layer.provide(layer))
  return { calls, layer: recording }
}

const transports: ReadonlyArray<{
  readonly name: string
  readonly layer: () => Layer.Layer<Transport, unknown>
  readonly test: (name: string, body: () => Promise<void>) => void
}> = [
  { name: "memory", layer: () => MemoryTransport.layer(), test: (name, body) => test(name, body) },
  {
    name: "kafka",
    layer: () => KafkaJsTransport.layerFromEnv(),
    test: (name, body) => kafkaTest(name, () => body(), { timeoutMs: 60_000 }),
  },
]

/** A topic whose broker limit (`max.message.bytes`) is 4 KiB, so a 20 kB record is too large. */
const smallLimitTopic = Effect.gen(function*() {
  const transport = yield* Transport
  const topic = uniqueName("producer")
  yield* transport.createTopic({ topic, partitions: 3, config: { "max.message.bytes": "4096" } })
  return topic
})

/** Every value on the topic, read back with a fresh group. */
const readBack = (topic: string, count: number) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const consumer = yield* startConsumer(transport, {
      group: uniqueName("g"),
      topics: [topic],
      sessionTimeout: "10 seconds",
      heartbeatInterval: "1 second",
    })
    yield* consumer.receivedAtLeast(count).pipe(
      Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.die(new Error(`${count} records never arrived`)) }),
    )
    // Time for a duplicate to show up too.
    yield* Effect.sleep("500 millis")
    return consumer.received.map((record) => text(record.value))
  })

for (const subject of transports) {
  subject.test(`Producer on ${subject.name}: a too-large record fails alone; the senders sharing its batch are written once, in order`, () => {
    const recorded = recordingCalls(subject.layer())
    return run(
      Effect.gen(function*() {
        const topic = yield* smallLimitTopic
        // A linger long enough that every concurrent sender joins the first batch.
        const producer = yield* Producer.make({ linger: "300 millis" })
        const records = Array.from({ length: 30 }, (_, i) => ({ topic, key: null, value: bytes(`r${i}`), partition: i % 3 }))
        const large = { topic, key: null, value: new Uint8Array(20_000), partition: 1 }
        const sent = [...records.slice(0, 10), large, ...records.slice(10)]
        const exits = yield* Effect.forEach(sent, (record) => Effect.exit(producer.send(record)), { concurrency: "unbounded" })
        assert.equal(recorded.calls[0], sent.length, "every sender's record went out in one batch")
        exits.forEach((exit, index) => {
          if (sent[index] !== large) {
            assert.ok(Exit.isSuccess(exit), `record ${index} was written: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
            return
          }
          assert.ok(Exit.isFailure(exit), "the too-large record failed")
          const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
          assert.ok(Option.isSome(error))
          if (Option.isNone(error)) return
          assert.equal(error.value._tag, "TransportError")
          assert.equal(error.value.code, "MESSAGE_TOO_LARGE")
          assert.equal(error.value.topic, topic)
          assert.equal(error.value.partition, 1)
          assert.ok(error.value.message.includes(topic), `the message names the topic: ${error.value.message}`)
        })
        // Each partition's records in the order they were sent, from offset 0, none twice.
        for (const partition of [0, 1, 2]) {
          const offsets = exits.flatMap((exit, index) =>
            Exit.isSuccess(exit) && sent[index]!.partition === partition ? [exit.value.offset] : []
          )
          assert.deepEqual(offsets, Array.from({ length: 10 }, (_, i) => i), `partition ${partition}`)
        }
        const values = yield* readBack(topic, 30)
        assert.deepEqual(values.sort(), records.map((record) => text(record.value)).sort(), "every good record exactly once")
      }),
      recorded.layer,
    )
  })

  subject.test(`Producer on ${subject.name}: a batch too large only as a whole is written in smaller batches`, () =>
    run(
      Effect.gen(function*() {
        const topic = yield* smallLimitTopic
        const producer = yield* Producer.Producer
        // Ten 1 kB records for one partition: each fits the 4 KiB limit, together they do not.
        const records = Array.from({ length: 10 }, (_, i) => ({
          topic,
          key: null,
          value: new Uint8Array(1000).fill(65 + i),
          partition: 2,
        }))
        const metadata = yield* producer.sendAll(records)
        assert.deepEqual(metadata.map((m) => [m.partition, m.offset]), records.map((_, i) => [2, i]))
        const values = yield* readBack(topic, 10)
        assert.deepEqual(values, records.map((record) => text(record.value)), "each once, in order")
      }),
      Layer.provideMerge(Producer.layer(), subject.layer()),
    ))
}
