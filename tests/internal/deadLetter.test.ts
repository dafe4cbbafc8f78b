import assert from "node:assert/strict"
import { createHash } from "node:crypto"
import { test } from "node:test"
import { Data, Deferred, Effect, Exit, Fiber, Layer, Schedule, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../../lib/Actor.ts"
import * as ErrorPolicy from "../../lib/ErrorPolicy.ts"
import * as DeadLetter from "../../lib/internal/deadLetter.ts"
import type { PartitionStatus } from "../../lib/internal/partitionActor.ts"
import * as KafkaJsTransport from "../../lib/KafkaJsTransport.ts"
import * as MemoryTransport from "../../lib/MemoryTransport.ts"
import * as Producer from "../../lib/Producer.ts"
import { type ConsumerRecord, type ProducerRecord, Transport } from "../../lib/Transport.ts"
import { headerText, readAll } from "../fixtures/actors.ts"
import { bytes, run, text } from "../fixtures/effect.ts"
import { kafkaTest, uniqueName } from "../fixtures/services.ts"

class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}

const actorWith = (deadLetter: Actor.DeadLetterOptions) =>
  Actor.make({
    name: "letters",
    topics: ["events"],
    value: Schema.String,
    handle: () => Effect.void,
    onError: { default: ErrorPolicy.deadLetter },
    deadLetter,
  }) as Actor.Actor<unknown>

const recordOf = (value: Uint8Array | null, extra: Partial<ConsumerRecord> = {}): ConsumerRecord => ({
  topic: "events",
  partition: 2,
  offset: 41,
  key: bytes("k"),
  value,
  headers: [{ key: "app.trace", value: bytes("t-1") }],
  timestamp: 0,
  ...extra,
})

const statusOf = (): PartitionStatus => ({
  actor: "letters",
  group: "letters",
  topic: "events",
  partition: 2,
  state: "running",
  pausedFor: new Set(),
  processed: 0,
  failed: 0,
  retried: 0,
  deadLettered: 0,
  skipped: 0,
  restarts: 0,
  mailbox: 0,
  committed: 41,
  position: 42,
  lastProgress: 0,
  lastError: undefined,
  lastOutcome: "handled",
})

/** A partition actor's `deadLetter`, over a memory broker's producer, with its status and pauses. */
const writer = (deadLetter: Actor.DeadLetterOptions) =>
  Effect.gen(function*() {
    const producer = yield* Producer.make()
    const status = statusOf()
    const paused = { pauses: 0, resumes: 0 }
    const stop = yield* Deferred.make<void>()
    const write = DeadLetter.make({
      stopped: Deferred.await(stop),
      actor: actorWith(deadLetter),
      producer,
      status,
      around: (_record, send) => send,
      pause: Effect.sync(() => void paused.pauses++),
      resume: Effect.sync(() => void paused.resumes++),
      written: Effect.void,
    })
    return { write, status, paused, stop: Deferred.succeed(stop, undefined) }
  })

const withClock = (options?: MemoryTransport.Options) => Layer.provideMerge(MemoryTransport.layer(options), TestClock.layer())

const createTopic = (topic: string, partitions = 1, config?: Record<string, string>) =>
  Effect.flatMap(Transport, (transport) => transport.createTopic({ topic, partitions, config }))

test("letterOf keeps the record's key, value and headers and adds where it came from and why", () => {
  const record = recordOf(bytes("v"))
  const letter = DeadLetter.letterOf(record, new StoreError({ reason: "down" }), {
    topic: "events.dlq",
    actor: "letters",
    attempts: 3,
    now: Date.UTC(2026, 0, 2, 3, 4, 5),
  })
  assert.equal(letter.topic, "events.dlq")
  assert.deepEqual(letter.key, record.key)
  assert.equal(letter.value, record.value)
  assert.deepEqual(
    letter.headers!.map((header) => [header.key, text(header.value)]),
    [
      ["app.trace", "t-1"],
      ["partita.dlq.source.topic", "events"],
      ["partita.dlq.source.partition", "2"],
      ["partita.dlq.source.offset", "41"],
      ["partita.dlq.error.tag", "StoreError"],
      ["partita.dlq.error.message", `{"reason":"down"}`],
      ["partita.dlq.attempts", "3"],
      ["partita.dlq.time", "2026-01-02T03:04:05.000Z"],
      ["partita.dlq.actor", "letters"],
    ],
  )
})

test("encodedSize counts at least every key, value and header byte, and more for Kafka's batch and varints", () => {
  const record: ProducerRecord = { topic: "t", key: bytes("key"), value: new Uint8Array(1950), headers: [{ key: "h", value: bytes("v") }] }
  const raw = 3 + 1950 + 1 + 1
  const size = DeadLetter.encodedSize(record)
  assert.ok(size > raw + 61, `${size} includes the 61-byte batch header`)
  assert.ok(size < raw + 61 + 40, `${size} is within a few varints of the truth`)
  // A multi-byte header key counts its UTF-8 bytes.
  assert.equal(
    DeadLetter.encodedSize({ ...record, headers: [{ key: "é", value: null }] }) -
      DeadLetter.encodedSize({ ...record, headers: [{ key: "e", value: null }] }),
    1,
  )
})

test("reduce cuts the value to fit the limit, or leaves it out, and says so with the original's size and SHA-256", () => {
  const value = Uint8Array.from({ length: 5000 }, (_, i) => i % 256)
  const letter: ProducerRecord = { topic: "events.dlq", key: bytes("k"), value, headers: [{ key: "a", value: bytes("b") }] }
  const original = { value, sha256: "ab".repeat(32) }
  const truncated = DeadLetter.reduce(letter, original, "truncated", 2000)
  assert.ok(DeadLetter.encodedSize(truncated) <= 2000)
  assert.ok(DeadLetter.encodedSize(truncated) > 1990, "and uses the room there is")
  assert.deepEqual(truncated.value, value.subarray(0, truncated.value!.length))
  assert.deepEqual(truncated.headers!.map((header) => [header.key, text(header.value)]), [
    ["a", "b"],
    ["partita.dlq.value", "truncated"],
    ["partita.dlq.original.size", "5000"],
    ["partita.dlq.original.sha256", "ab".repeat(32)],
  ])
  const omitted = DeadLetter.reduce(letter, original, "omitted", 2000)
  assert.deepEqual(omitted.value, new Uint8Array(0), "empty, not a tombstone")
  assert.equal(headerText(omitted.headers!, "partita.dlq.value"), "omitted")
  // No room for any of the value: it is left out rather than cut to nothing.
  const tight = DeadLetter.reduce(letter, original, "truncated", 100)
  assert.equal(headerText(tight.headers!, "partita.dlq.value"), "omitted")
  assert.equal(tight.value!.length, 0)
})

test("ensureTopics fails for a missing dead-letter topic, names it, and creates the ones an actor asks for", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* createTopic("present.dlq")
      const missing = yield* Effect.flip(DeadLetter.ensureTopics([actorWith({ topic: "present.dlq" }), actorWith({ topic: "absent.dlq" })], transport))
      assert.ok(missing instanceof DeadLetter.DeadLetterTopicMissing)
      assert.equal(missing.topic, "absent.dlq")
      assert.equal(missing.actor, "letters")
      // Two actors share a topic; one of them asks for it to be created.
      yield* DeadLetter.ensureTopics(
        [actorWith({ topic: "shared.dlq" }), actorWith({ topic: "shared.dlq", create: { partitions: 3, config: { "retention.ms": "-1" } } })],
        transport,
      )
      assert.equal((yield* transport.describeTopic("shared.dlq")).partitions.length, 3)
      // And once it exists, asking again is no error.
      yield* DeadLetter.ensureTopics([actorWith({ topic: "shared.dlq", create: {} })], transport)
    }),
    MemoryTransport.layer(),
  ))

test("ensureTopics passes on a broker failure that is not a missing topic", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      yield* broker.failNext("describeTopic", "CLUSTER_AUTHORIZATION_FAILED")
      const error = yield* Effect.flip(DeadLetter.ensureTopics([actorWith({ topic: "x.dlq", create: {} })], transport))
      assert.equal(error._tag, "TransportError")
      assert.equal((error as { readonly code?: string }).code, "CLUSTER_AUTHORIZATION_FAILED")
    }),
    MemoryTransport.layer(),
  ))

test("A retriable failure is retried on deadLetter.retry; when that schedule ends the partition is blocked and tried slowly", () =>
  run(
    Effect.gen(function*() {
      yield* createTopic("events.dlq")
      const broker = yield* MemoryTransport.MemoryBroker
      const { write, status, paused } = yield* writer({
        topic: "events.dlq",
        retry: Schedule.max([Schedule.spaced("1 second"), Schedule.recurs(2)]),
        blockedRetry: Schedule.spaced("1 minute"),
      })
      yield* broker.failNext("send", "NOT_LEADER_OR_FOLLOWER", { times: 4 })
      const fiber = yield* Effect.forkChild(write(recordOf(bytes("v")), new StoreError({ reason: "x" }), 1))
      for (let i = 0; i < 25; i++) yield* TestClock.adjust("100 millis")
      assert.equal(yield* broker.calls("send"), 3, "the first try and two retries, a second apart")
      assert.equal(status.state, "blocked")
      assert.match(status.lastError ?? "", /the deadLetter.retry schedule ran out/)
      assert.ok(paused.pauses >= 1 && paused.resumes === 0)
      yield* TestClock.adjust("1 minute")
      assert.equal(yield* broker.calls("send"), 4)
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(fiber)
      assert.equal(yield* broker.calls("send"), 5, "written once the failures stopped")
      assert.equal(status.state, "running", "unblocked")
      assert.equal(status.deadLettered, 1)
      assert.equal(paused.resumes, 1)
    }),
    withClock({ retry: Schedule.recurs(0) }),
  ))

test("A too-large letter: omit-value writes it without its value; block blocks the partition", () =>
  run(
    Effect.gen(function*() {
      yield* createTopic("events.dlq")
      const value = new Uint8Array(1000).fill(7)
      const omitting = yield* writer({ topic: "events.dlq", tooLarge: "omit-value" })
      yield* omitting.write(recordOf(value), new StoreError({ reason: "x" }), 1)
      const [letter] = yield* readAll("events.dlq", 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.value"), "omitted")
      assert.equal(headerText(letter!.headers, "partita.dlq.original.size"), "1000")
      assert.equal(headerText(letter!.headers, "partita.dlq.original.sha256"), createHash("sha256").update(value).digest("hex"))

      const blocking = yield* writer({ topic: "events.dlq", tooLarge: "block" })
      const fiber = yield* Effect.forkChild(blocking.write(recordOf(value), new StoreError({ reason: "x" }), 1))
      for (let i = 0; i < 10; i++) yield* TestClock.adjust("1 second")
      assert.equal(blocking.status.state, "blocked")
      assert.match(blocking.status.lastError ?? "", /MESSAGE_TOO_LARGE/)
      assert.match(blocking.status.lastError ?? "", /raise the topic's max.message.bytes, or set deadLetter.tooLarge/)
      assert.equal(blocking.status.deadLettered, 0)
      yield* Fiber.interrupt(fiber)
    }),
    withClock({ maxRecordBytes: 1100 }),
  ))

test("A letter too large even without its value (a huge key) blocks the partition rather than drop anything", () =>
  run(
    Effect.gen(function*() {
      yield* createTopic("events.dlq")
      const { write, status } = yield* writer({ topic: "events.dlq" })
      const fiber = yield* Effect.forkChild(
        write(recordOf(bytes("v".repeat(500)), { key: new Uint8Array(2000) }), new StoreError({ reason: "x" }), 1),
      )
      for (let i = 0; i < 10; i++) yield* TestClock.adjust("1 second")
      assert.equal(status.state, "blocked")
      assert.match(status.lastError ?? "", /without its value is still too large/)
      yield* Fiber.interrupt(fiber)
    }),
    withClock({ maxRecordBytes: 1100 }),
  ))

kafkaTest("encodedSize is never less than what the broker counts against max.message.bytes", (brokers) =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = uniqueName("encoded-size")
      yield* transport.createTopic({ topic, partitions: 1, config: { "max.message.bytes": "3000" } })
      const shapes: ReadonlyArray<Omit<ProducerRecord, "topic" | "value">> = [
        { key: null },
        { key: bytes("a key") },
        { key: bytes("k"), headers: Array.from({ length: 40 }, (_, i) => ({ key: `header-${i}`, value: bytes(`value ${i}`) })) },
        { key: null, headers: [{ key: "clé", value: new Uint8Array(300) }] },
      ]
      for (const shape of shapes) {
        const empty = DeadLetter.encodedSize({ ...shape, value: new Uint8Array(0) })
        // The largest value that encodedSize says fits: the broker must take it.
        const record = { ...shape, topic, value: new Uint8Array(3000 - empty - 2) }
        assert.ok(DeadLetter.encodedSize(record) <= 3000)
        yield* transport.send([record])
      }
    }),
    KafkaJsTransport.layer({ brokers: [...brokers], clientId: "dead-letter-tests" }),
  ))

test("A stop while a letter waits to be tried again ends the wait: the record is interrupted, not dead-lettered", () =>
  run(
    Effect.gen(function*() {
      yield* createTopic("events.dlq")
      const broker = yield* MemoryTransport.MemoryBroker
      const { write, status, stop } = yield* writer({ topic: "events.dlq" })
      yield* broker.failNext("send", "TOPIC_AUTHORIZATION_FAILED", { times: Infinity })
      const fiber = yield* Effect.forkChild(write(recordOf(bytes("v")), new StoreError({ reason: "x" }), 1))
      yield* TestClock.adjust("1 second")
      assert.equal(status.state, "blocked")
      yield* stop
      const exit = yield* Fiber.await(fiber)
      assert.ok(Exit.isFailure(exit) && Exit.hasInterrupts(exit), "interrupted, so nothing completes the record")
      assert.equal(status.deadLettered, 0)
      assert.equal(yield* broker.calls("send"), 1, "and no further write")
    }),
    withClock(),
  ))
