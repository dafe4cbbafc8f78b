import assert from "node:assert/strict"
import process from "node:process"
import { test } from "node:test"
import { createHash } from "node:crypto"
import { Cause, Clock, Data, Deferred, type Duration, Effect, Exit, Fiber, Layer, Metric, Schedule, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as Main from "../lib/Main.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Ordering from "../lib/Ordering.ts"
import * as Producer from "../lib/Producer.ts"
import { RecordContext } from "../lib/RecordContext.ts"
import { Transport } from "../lib/Transport.ts"
import { createTopics, eventually, headerText, readAll, sendJson } from "./fixtures/actors.ts"
import { bytes, run, text } from "./fixtures/effect.ts"

const Event = Schema.Struct({ id: Schema.Number, user: Schema.String })
type Event = typeof Event.Type

class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}

const memory = () => MemoryTransport.layer()
const quick = { commit: { interval: "20 millis" }, consumer: { heartbeatInterval: "100 millis" } } as const

test("ActorSystem handles every record of every partition, in order, and commits them", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 3])
      const seen: Array<{ partition: number; offset: number; id: number }> = []
      const actor = Actor.make({
        name: "recorder",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          Effect.map(RecordContext, (record) => {
            seen.push({ partition: record.partition, offset: record.offset, id: event.id })
          }),
        onError: { default: ErrorPolicy.halt },
        ...quick,
      })
      yield* sendJson("events", Array.from({ length: 300 }, (_, id) => ({ key: `u${id % 7}`, value: { id, user: `u${id % 7}` } })))
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "300 records handled", () => seen.length === 300)
      for (let partition = 0; partition < 3; partition++) {
        const offsets = seen.filter((s) => s.partition === partition).map((s) => s.offset)
        assert.deepEqual(offsets, offsets.map((_, i) => i), `partition ${partition} in offset order`)
      }
      assert.deepEqual(seen.map((s) => s.id).sort((a, b) => a - b), Array.from({ length: 300 }, (_, i) => i))
      const health = yield* system.health
      assert.equal(health.partitions.length, 3)
      assert.equal(health.partitions.reduce((sum, p) => sum + p.processed, 0), 300)
      // The committer runs every 20 ms: wait for it to reach the end of each partition.
      let lags: Array<number | undefined> = []
      yield* eventually(5, "commits to reach the end of each partition", () => lags.every((lag) => lag === 0) && lags.length === 3)
        .pipe(Effect.raceFirst(Effect.forever(Effect.andThen(
          Effect.map(system.health, (h) => { lags = h.partitions.map((p) => p.lag) }),
          Effect.sleep("10 millis"),
        ))))
      assert.ok((yield* system.health).healthy)
    }),
    memory(),
  ))

test("Ordering.byKey runs different keys concurrently and each key in order", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      let running = 0
      let maxRunning = 0
      const perKey = new Map<string, Array<number>>()
      const actor = Actor.make({
        name: "by-key",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          Effect.gen(function*() {
            running++
            maxRunning = Math.max(maxRunning, running)
            yield* Effect.sleep("5 millis")
            perKey.set(event.user, [...(perKey.get(event.user) ?? []), event.id])
            running--
          }),
        onError: { default: ErrorPolicy.halt },
        ordering: Ordering.byKey({ concurrency: 4 }),
        ...quick,
      })
      yield* sendJson("events", Array.from({ length: 80 }, (_, id) => ({ key: `u${id % 8}`, value: { id, user: `u${id % 8}` } })))
      yield* ActorSystem.start([actor])
      yield* eventually(20, "80 records handled", () => [...perKey.values()].flat().length === 80)
      assert.ok(maxRunning > 1, "different keys ran concurrently")
      assert.ok(maxRunning <= 4, `at most 4 at once, saw ${maxRunning}`)
      for (const [user, ids] of perKey) assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `${user} in order`)
    }),
    memory(),
  ))

test("Ordering.unordered keeps at most N records in flight", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      let running = 0
      let maxRunning = 0
      let done = 0
      const actor = Actor.make({
        name: "unordered",
        topics: ["events"],
        value: Event,
        handle: () =>
          Effect.gen(function*() {
            running++
            maxRunning = Math.max(maxRunning, running)
            yield* Effect.sleep("2 millis")
            running--
            done++
          }),
        onError: { default: ErrorPolicy.halt },
        ordering: Ordering.unordered({ concurrency: 8 }),
        ...quick,
      })
      yield* sendJson("events", Array.from({ length: 100 }, (_, id) => ({ value: { id, user: "same" } })))
      yield* ActorSystem.start([actor])
      yield* eventually(20, "100 records handled", () => done === 100)
      assert.ok(maxRunning > 1 && maxRunning <= 8, `between 2 and 8 at once, saw ${maxRunning}`)
    }),
    memory(),
  ))

test("Retries follow the schedule exactly, and the handler sees the attempt number", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const attempts: Array<{ attempt: number; at: number }> = []
      const actor = Actor.make({
        name: "retrier",
        topics: ["events"],
        value: Event,
        handle: () =>
          Effect.gen(function*() {
            const record = yield* RecordContext
            attempts.push({ attempt: record.attempt, at: yield* Clock.currentTimeMillis })
            if (record.attempt < 4) return yield* Effect.fail(new StoreError({ reason: "down" }))
          }),
        onError: {
          StoreError: ErrorPolicy.retry(Schedule.exponential("1 second"), { times: 5, then: "halt" }),
          DecodeError: ErrorPolicy.halt,
          HandlerTimeout: ErrorPolicy.halt,
        },
        consumer: { heartbeatInterval: "1 hour", sessionTimeout: "10 hours" },
        commit: { interval: "1 hour" },
      })
      yield* sendJson("events", [{ value: { id: 1, user: "a" } }])
      const system = yield* ActorSystem.start([actor])
      for (let i = 0; i < 20 && attempts.length < 4; i++) {
        yield* Effect.yieldNow
        yield* TestClock.adjust("500 millis")
      }
      // Exponential from 1 s: 1 s, 2 s, 4 s after each failure.
      assert.deepEqual(attempts.map((a) => a.attempt), [1, 2, 3, 4])
      const start = attempts[0]!.at
      assert.deepEqual(attempts.map((a) => a.at - start), [0, 1000, 3000, 7000])
      const [partition] = (yield* system.health).partitions
      assert.equal(partition?.retried, 3)
      assert.equal(partition?.processed, 1)
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("A poison record reaches the dead-letter topic with its headers after the retries, while other partitions flow", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 2], ["events.dlq", 1])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "poisoned",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          event.id === 13
            ? Effect.fail(new StoreError({ reason: "cannot store 13" }))
            : Effect.sync(() => handled.push(event.id)),
        onError: {
          StoreError: ErrorPolicy.retry(Schedule.spaced("10 millis"), { times: 2, then: "dead-letter" }),
          DecodeError: ErrorPolicy.deadLetter,
          HandlerTimeout: ErrorPolicy.halt,
        },
        deadLetter: { topic: "events.dlq" },
        ...quick,
      })
      yield* sendJson("events", [
        ...Array.from({ length: 20 }, (_, id) => ({ value: { id, user: "p0" }, partition: 0 })),
        ...Array.from({ length: 20 }, (_, i) => ({ value: { id: 100 + i, user: "p1" }, partition: 1 })),
      ])
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "39 good records handled", () => handled.length === 39)
      const [letter] = yield* readAll("events.dlq", 1)
      assert.deepEqual(JSON.parse(text(letter!.value)!), { id: 13, user: "p0" }, "the original value, unchanged")
      assert.equal(headerText(letter!.headers, "partita.dlq.source.topic"), "events")
      assert.equal(headerText(letter!.headers, "partita.dlq.source.partition"), "0")
      assert.equal(headerText(letter!.headers, "partita.dlq.source.offset"), "13")
      assert.equal(headerText(letter!.headers, "partita.dlq.error.tag"), "StoreError")
      assert.equal(headerText(letter!.headers, "partita.dlq.attempts"), "3")
      assert.equal(headerText(letter!.headers, "partita.dlq.actor"), "poisoned")
      assert.ok(!Number.isNaN(Date.parse(headerText(letter!.headers, "partita.dlq.time") ?? "")))
      const health = yield* system.health
      const p0 = health.partitions.find((p) => p.partition === 0)
      assert.equal(p0?.deadLettered, 1)
      assert.equal(p0?.retried, 2)
      assert.ok(health.healthy)
    }),
    memory(),
  ))

test("A record that does not decode is a DecodeError with the path, dead-lettered with its raw bytes", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "decoder",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => Effect.sync(() => handled.push(event.id)),
        onError: { DecodeError: ErrorPolicy.deadLetter, HandlerTimeout: ErrorPolicy.halt },
        deadLetter: { topic: "events.dlq" },
        ...quick,
      })
      const transport = yield* Transport
      const invalidUtf8 = Uint8Array.from([0x7b, 0xff, 0x7d])
      yield* transport.send([
        { topic: "events", key: null, value: bytes(`{"id":1,"user":"a"}`) },
        { topic: "events", key: null, value: bytes(`{"id":"2","user":"b"}`) },
        { topic: "events", key: null, value: bytes(`{not json`) },
        { topic: "events", key: null, value: invalidUtf8 },
        { topic: "events", key: null, value: bytes(`{"id":5,"user":"e"}`) },
      ])
      yield* ActorSystem.start([actor])
      yield* eventually(10, "the good records", () => handled.length === 2)
      const letters = yield* readAll("events.dlq", 3)
      assert.deepEqual(handled, [1, 5])
      assert.deepEqual(letters.map((l) => headerText(l.headers, "partita.dlq.source.offset")), ["1", "2", "3"])
      assert.deepEqual(letters.map((l) => headerText(l.headers, "partita.dlq.error.tag")), ["DecodeError", "DecodeError", "DecodeError"])
      assert.equal(
        headerText(letters[0]!.headers, "partita.dlq.error.message"),
        `Cannot decode the value of record events/0@1: Expected number at ["id"]`,
      )
      assert.match(headerText(letters[1]!.headers, "partita.dlq.error.message") ?? "", /Expected JSON/)
      assert.deepEqual(letters[2]!.value, invalidUtf8, "raw bytes kept as they were")
    }),
    memory(),
  ))

/** Advances the test clock in `step`s until `condition` holds, for at most `steps` steps. */
const advanceInSteps = (condition: () => boolean, step: string, steps: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < steps && !condition(); i++) {
      yield* Effect.yieldNow
      yield* TestClock.adjust(step as Duration.Input)
    }
  })
/** An actor whose record with id 0 fails with `StoreError` and is dead-lettered; the rest are handled. */
const poisonedAt0 = (handled: Array<number>, deadLetter: Actor.DeadLetterOptions, commitInterval = "10 millis") =>
  Actor.make({
    name: "poisoned-at-0",
    topics: ["events"],
    value: Event,
    handle: (event: Event) =>
      event.id === 0 ? Effect.fail(new StoreError({ reason: "poison" })) : Effect.sync(() => handled.push(event.id)),
    onError: { StoreError: ErrorPolicy.deadLetter, DecodeError: ErrorPolicy.deadLetter, HandlerTimeout: ErrorPolicy.halt },
    deadLetter,
    commit: { interval: commitInterval as Duration.Input },
    consumer: { heartbeatInterval: "1 hour", sessionTimeout: "100 hours" },
  })
const sha256Hex = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

test("A dead-letter outage pauses the partition, retries the write on its schedule, commits nothing past the record, and loses nothing", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      const handled: Array<number> = []
      const actor = poisonedAt0(handled, { topic: "events.dlq", retry: Schedule.spaced("1 second") })
      yield* sendJson("events", Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" } })))
      const sendsBefore = yield* broker.calls("send")
      // The dead-letter topic refuses the next 3 writes with a retriable error.
      yield* broker.failNext("send", "NOT_ENOUGH_REPLICAS", { times: 3 })
      const system = yield* ActorSystem.start([actor])
      yield* advanceInSteps(() => false, "100 millis", 25)
      const during = (yield* system.health).partitions[0]!
      assert.deepEqual(handled, [], "nothing after the poison record ran while its letter was not written")
      assert.equal(during.committed, 0, "nothing committed past the record")
      assert.ok(during.paused, "the partition is paused")
      assert.equal(during.state === "blocked", false, "a retriable failure does not block the partition")
      assert.match(during.lastError ?? "", /Dead-letter write of events\/0@0 to "events.dlq" failed with NOT_ENOUGH_REPLICAS/)
      assert.equal((yield* broker.calls("send")) - sendsBefore, 3, "tried at 0, 1 and 2 seconds")
      yield* advanceInSteps(() => handled.length === 4, "100 millis", 30)
      assert.deepEqual(handled, [1, 2, 3, 4], "the rest after the outage")
      assert.equal((yield* broker.calls("send")) - sendsBefore, 4, "written on the fourth try, at 3 seconds")
      let after = (yield* system.health).partitions[0]!
      for (let i = 0; i < 20 && after.committed < 5; i++) {
        yield* TestClock.adjust("10 millis")
        after = (yield* system.health).partitions[0]!
      }
      assert.equal(after.committed, 5, "committed past the record once its letter was written")
      assert.ok(!after.paused)
      assert.equal(after.deadLettered, 1)
      const [letter] = yield* readAll("events.dlq", 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.source.offset"), "0")
    }),
    Layer.provideMerge(MemoryTransport.layer({ retry: Schedule.recurs(0) }), TestClock.layer()),
  ))

test("A letter too large for the dead-letter topic is written with its value truncated, the original's size and SHA-256, and the partition commits past it", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      const transport = yield* Transport
      const handled: Array<number> = []
      const actor = poisonedAt0(handled, { topic: "events.dlq" })
      // A record just under the broker's limit: the letter's partita.dlq.* headers take it over.
      const poison = bytes(JSON.stringify({ id: 0, user: "x".repeat(4000) }))
      assert.ok(poison.length > 4000 && poison.length < 4096)
      yield* transport.send([{ topic: "events", key: bytes("k0"), value: poison, headers: [{ key: "app.trace", value: bytes("t-1") }] }])
      yield* sendJson("events", [1, 2, 3].map((id) => ({ value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor])
      yield* advanceInSteps(() => handled.length === 3, "10 millis", 200)
      assert.deepEqual(handled, [1, 2, 3], "the partition moved on")
      const [letter] = yield* readAll("events.dlq", 1)
      const headers = letter!.headers
      assert.equal(headerText(headers, "partita.dlq.value"), "truncated")
      assert.equal(headerText(headers, "partita.dlq.original.size"), String(poison.length))
      assert.equal(headerText(headers, "partita.dlq.original.sha256"), sha256Hex(poison))
      assert.equal(headerText(headers, "partita.dlq.source.offset"), "0")
      assert.equal(headerText(headers, "partita.dlq.error.tag"), "StoreError")
      assert.equal(headerText(headers, "app.trace"), "t-1", "the original headers are kept")
      assert.equal(text(letter!.key), "k0")
      const value = letter!.value!
      assert.ok(value.length > 3000 && value.length < poison.length, `most of the value is kept: ${value.length} bytes`)
      assert.deepEqual(value, poison.subarray(0, value.length), "a prefix of the original value")
      let partition = (yield* system.health).partitions[0]!
      for (let i = 0; i < 20 && partition.committed < 4; i++) {
        yield* TestClock.adjust("10 millis")
        partition = (yield* system.health).partitions[0]!
      }
      assert.equal(partition.committed, 4, "committed past the record")
      assert.equal(partition.deadLettered, 1)
      assert.ok(partition.healthy && !partition.paused)
    }),
    Layer.provideMerge(MemoryTransport.layer({ maxRecordBytes: 4096 }), TestClock.layer()),
  ))

test("With the dead-letter topic's limit known, a letter too large is made to fit before its first write", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      const handled: Array<number> = []
      const actor = poisonedAt0(handled, { topic: "events.dlq", maxBytes: 4096, tooLarge: "omit-value" })
      const poison = bytes(JSON.stringify({ id: 0, user: "x".repeat(4000) }))
      yield* transport.send([{ topic: "events", key: null, value: poison }])
      yield* sendJson("events", [{ value: { id: 1, user: "a" } }])
      const sendsBefore = yield* broker.calls("send")
      yield* ActorSystem.start([actor])
      yield* advanceInSteps(() => handled.length === 1, "10 millis", 200)
      assert.equal((yield* broker.calls("send")) - sendsBefore, 1, "one write, and it fit")
      const [letter] = yield* readAll("events.dlq", 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.value"), "omitted")
      assert.equal(letter!.value?.length, 0, "an empty value, not a tombstone")
      assert.equal(headerText(letter!.headers, "partita.dlq.original.sha256"), sha256Hex(poison))
    }),
    Layer.provideMerge(MemoryTransport.layer({ maxRecordBytes: 4096 }), TestClock.layer()),
  ))

test("A dead-letter write refused for good blocks the partition: unhealthy with the reason, nothing committed past it, tried again only slowly", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      const handled: Array<number> = []
      // Committing every 10 ms would wake the test clock 360,000 times in the hour below.
      const actor = poisonedAt0(handled, { topic: "events.dlq" }, "30 seconds")
      yield* sendJson("events", Array.from({ length: 3 }, (_, id) => ({ value: { id, user: "a" } })))
      const sendsBefore = yield* broker.calls("send")
      yield* broker.failNext("send", "TOPIC_AUTHORIZATION_FAILED", { times: 10 })
      const system = yield* ActorSystem.start([actor])
      yield* advanceInSteps(() => false, "5 seconds", 120)
      const health = yield* system.health
      const partition = health.partitions[0]!
      assert.equal(partition.state, "blocked")
      assert.equal(partition.healthy, false)
      assert.equal(health.healthy, false)
      assert.ok(partition.paused)
      assert.match(partition.lastError ?? "", /Partition blocked: Dead-letter write of events\/0@0 to "events.dlq" failed with TOPIC_AUTHORIZATION_FAILED/)
      assert.match(partition.lastError ?? "", /grant this client write access to "events.dlq"/)
      assert.equal(partition.committed, 0, "nothing committed past the record")
      assert.deepEqual(handled, [])
      // The default blockedRetry: 30 s, 1, 2, 4 minutes apart: 5 writes in 10 minutes, not a loop.
      assert.equal((yield* broker.calls("send")) - sendsBefore, 5)
      // The cause goes away (the fault runs out after 10 writes): the next try writes the letter.
      yield* advanceInSteps(() => handled.length === 2, "30 seconds", 120)
      assert.equal((yield* broker.calls("send")) - sendsBefore, 11, "10 refused, then written")
      let after = (yield* system.health).partitions[0]!
      for (let i = 0; i < 40 && after.committed < 3; i++) {
        yield* TestClock.adjust("1 second")
        after = (yield* system.health).partitions[0]!
      }
      assert.equal(after.committed, 3)
      assert.ok(after.healthy && !after.paused, "unblocked")
      assert.notEqual(after.state, "blocked")
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("A missing dead-letter topic fails the start, naming the topic and the actor", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const actor = poisonedAt0([], { topic: "events.dlq" })
      const error = yield* Effect.flip(ActorSystem.start([actor]))
      assert.ok(error instanceof ActorSystem.DeadLetterTopicMissing)
      assert.equal(
        error.message,
        `Dead-letter topic "events.dlq" of actor "poisoned-at-0" does not exist: create it, or set deadLetter.create on the actor to have it created at start`,
      )
    }),
    memory(),
  ))

test("deadLetter.create creates a missing dead-letter topic at start, and the letters go there", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const transport = yield* Transport
      const handled: Array<number> = []
      const actor = poisonedAt0(handled, { topic: "events.dlq", create: { partitions: 2 } })
      yield* sendJson("events", [0, 1].map((id) => ({ value: { id, user: "a" } })))
      yield* ActorSystem.start([actor])
      assert.equal((yield* transport.describeTopic("events.dlq")).partitions.length, 2)
      yield* eventually(10, "the record after the poison one", () => handled.length === 1)
      const [letter] = yield* readAll("events.dlq", 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.source.offset"), "0")
    }),
    memory(),
  ))

test("A defect restarts only its partition actor; the others keep flowing and nothing is skipped", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 2])
      const handled: Array<number> = []
      let exploded = false
      const actor = Actor.make({
        name: "crashy",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          Effect.suspend(() => {
            if (event.id === 5 && !exploded) {
              exploded = true
              throw new Error("boom")
            }
            handled.push(event.id)
            return Effect.void
          }),
        onError: { default: ErrorPolicy.halt },
        supervision: { schedule: Schedule.spaced("10 millis") },
        ...quick,
      })
      yield* sendJson("events", [
        ...Array.from({ length: 10 }, (_, id) => ({ value: { id, user: "p0" }, partition: 0 })),
        ...Array.from({ length: 10 }, (_, i) => ({ value: { id: 100 + i, user: "p1" }, partition: 1 })),
      ])
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "all 20 handled", () => handled.length === 20)
      assert.deepEqual(handled.filter((id) => id < 100), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "partition 0 resumed at the failed record")
      const health = yield* system.health
      assert.deepEqual(health.partitions.map((p) => [p.partition, p.restarts]).sort(), [[0, 1], [1, 0]])
      assert.ok(health.healthy)
    }),
    memory(),
  ))

test("Halt stops the partition, reports it unhealthy and commits nothing past the record", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "halter",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          event.id === 2 ? Effect.fail(new StoreError({ reason: "fatal" })) : Effect.sync(() => handled.push(event.id)),
        onError: { StoreError: ErrorPolicy.halt, DecodeError: ErrorPolicy.halt, HandlerTimeout: ErrorPolicy.halt },
        ...quick,
      })
      yield* sendJson("events", Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "the halt", () => handled.length === 2)
      yield* Effect.sleep("100 millis")
      const health = yield* system.health
      assert.deepEqual(handled, [0, 1])
      assert.equal(health.healthy, false)
      assert.equal(health.partitions[0]?.state, "halted")
      assert.equal(health.partitions[0]?.committed, 2)
      assert.equal(health.partitions[0]?.lastError, `StoreError: {"reason":"fatal"}`)
    }),
    memory(),
  ))

test("A full mailbox pauses fetching and memory stays bounded under a slow handler", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      let handled = 0
      let maxMailbox = 0
      let sawPaused = false
      const actor = Actor.make({
        name: "slow",
        topics: ["events"],
        value: Event,
        handle: () => Effect.andThen(Effect.sleep("1 millis"), Effect.sync(() => handled++)),
        onError: { default: ErrorPolicy.halt },
        mailbox: { capacity: 20 },
        ...quick,
      })
      yield* sendJson("events", Array.from({ length: 300 }, (_, id) => ({ value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor])
      while (handled < 300) {
        const [partition] = (yield* system.health).partitions
        if (partition !== undefined) {
          maxMailbox = Math.max(maxMailbox, partition.mailbox)
          sawPaused ||= partition.paused
        }
        yield* Effect.sleep("3 millis")
      }
      assert.ok(maxMailbox <= 20, `mailbox held at most its capacity, saw ${maxMailbox}`)
      assert.ok(sawPaused, "fetching paused while the mailbox was full")
      yield* Effect.sleep("50 millis")
      assert.equal((yield* system.health).partitions[0]?.paused, false, "resumed once drained")
    }),
    memory(),
  ))

test("A handler over its timeout fails with HandlerTimeout, handled by the policy", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const skipped: Array<number> = []
      const actor = Actor.make({
        name: "timeouts",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => event.id === 0 ? Effect.never : Effect.sync(() => skipped.push(event.id)),
        onError: { HandlerTimeout: ErrorPolicy.skip, DecodeError: ErrorPolicy.halt },
        handlerTimeout: "50 millis",
        ...quick,
      })
      yield* sendJson("events", [{ value: { id: 0, user: "a" } }, { value: { id: 1, user: "a" } }])
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "the record after the hung one", () => skipped.length === 1)
      const [partition] = (yield* system.health).partitions
      assert.equal(partition?.skipped, 1)
      assert.match(partition?.lastError ?? "", /^HandlerTimeout: Handler for record events\/0@0 did not finish within/)
    }),
    memory(),
  ))

test("At-most-once commits a chunk before handling it", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const running = yield* Deferred.make<ActorSystem.System>()
      let committedWhenHandling = -1
      const actor = Actor.make({
        name: "at-most-once",
        topics: ["events"],
        value: Event,
        handle: () =>
          Effect.gen(function*() {
            const system = yield* Deferred.await(running)
            committedWhenHandling = (yield* system.health).partitions[0]!.committed
          }),
        onError: { default: ErrorPolicy.halt },
        delivery: "at-most-once",
        ...quick,
      })
      yield* sendJson("events", Array.from({ length: 3 }, (_, id) => ({ value: { id, user: "a" } })))
      yield* Deferred.succeed(running, yield* ActorSystem.start([actor]))
      yield* eventually(10, "handled", () => committedWhenHandling >= 0)
      assert.equal(committedWhenHandling, 3, "the whole chunk was committed before its first record ran")
    }),
    memory(),
  ))

test("An actor that dead-letters without a dead-letter topic is refused before it starts", () =>
  run(
    Effect.gen(function*() {
      const actor = Actor.make({
        name: "no-dlq",
        topics: ["events"],
        value: Event,
        handle: () => Effect.void,
        onError: { default: ErrorPolicy.retry(Schedule.recurs(1), { then: "dead-letter" }) },
      })
      const error = yield* Effect.flip(ActorSystem.start([actor]))
      assert.equal(error._tag, "InvalidActor")
      assert.equal(error.message, `Actor "no-dlq" cannot run: a policy dead-letters records but no deadLetter topic is set`)
    }),
    memory(),
  ))

test("A second system joining the group moves partitions with no record lost and none handled by both at once", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 4])
      const handledBy = new Map<number, Array<string>>()
      const busy = new Map<number, string>()
      const overlaps: Array<string> = []
      const actorFor = (system: string) =>
        Actor.make({
          name: "mover",
          topics: ["events"],
          value: Event,
          handle: (event: Event) =>
            Effect.gen(function*() {
              const record = yield* RecordContext
              const other = busy.get(record.partition)
              if (other !== undefined && other !== system) overlaps.push(`${record.partition}: ${other} and ${system}`)
              busy.set(record.partition, system)
              yield* Effect.sleep("1 millis")
              busy.delete(record.partition)
              handledBy.set(event.id, [...(handledBy.get(event.id) ?? []), system])
            }),
          onError: { default: ErrorPolicy.halt },
          ...quick,
          consumer: { heartbeatInterval: "50 millis", rebalanceTimeout: "5 seconds" },
        })
      let sent = 0
      const produce = (count: number) =>
        Effect.flatMap(
          Effect.sync(() => {
            const from = sent
            sent += count
            return Array.from({ length: count }, (_, i) => ({ key: `k${from + i}`, value: { id: from + i, user: "x" } }))
          }),
          (records) => sendJson("events", records),
        )
      yield* produce(200)
      const a = yield* ActorSystem.start([actorFor("a")])
      yield* eventually(10, "a to start handling", () => handledBy.size > 20)
      // b joins while records keep arriving.
      const b = yield* Effect.scoped(Effect.gen(function*() {
        const b = yield* ActorSystem.start([actorFor("b")])
        for (let i = 0; i < 10; i++) {
          yield* produce(20)
          yield* Effect.sleep("10 millis")
        }
        yield* eventually(20, "every record handled", () => handledBy.size === sent)
        return yield* b.health
      }))
      // b left (its scope closed); a takes everything back and keeps going.
      yield* produce(50)
      yield* eventually(20, "the records after b left", () => handledBy.size === sent)
      assert.deepEqual(overlaps, [], "no partition was handled by both systems at once")
      assert.ok(b.partitions.length > 0, "b was given partitions")
      const ids = [...handledBy.keys()].sort((x, y) => x - y)
      assert.deepEqual(ids, Array.from({ length: sent }, (_, i) => i), "no record lost")
      const twice = [...handledBy].filter(([, systems]) => systems.length > 1)
      assert.deepEqual(twice, [], "a graceful rebalance commits before handing over: nothing handled twice")
      void a
    }),
    memory(),
  ))

test("After too many restarts, supervision can fail the whole system with RestartsExhausted", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const actor = Actor.make({
        name: "doomed",
        topics: ["events"],
        value: Event,
        handle: () => Effect.die(new Error("always")),
        onError: { default: ErrorPolicy.halt },
        supervision: { schedule: Schedule.spaced("5 millis"), maxRestarts: 2, window: "1 minute", then: "fail-system" },
        ...quick,
      })
      yield* sendJson("events", [{ value: { id: 1, user: "a" } }])
      const error = yield* Effect.flip(ActorSystem.run([actor]))
      assert.equal(error._tag, "RestartsExhausted")
      if (error._tag !== "RestartsExhausted") return
      assert.equal(error.restarts, 3)
      assert.match(error.message, /^Partition actor doomed for events\/0 restarted 3 times; last defect: /)
    }),
    memory(),
  ))

test("After too many restarts, by default the partition stops and is reported unhealthy while others flow", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 2])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "stopping",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => event.user === "bad" ? Effect.die(new Error("always")) : Effect.sync(() => handled.push(event.id)),
        onError: { default: ErrorPolicy.halt },
        supervision: { schedule: Schedule.spaced("5 millis"), maxRestarts: 2 },
        ...quick,
      })
      yield* sendJson("events", [
        { value: { id: 1, user: "bad" }, partition: 0 },
        ...Array.from({ length: 5 }, (_, i) => ({ value: { id: 10 + i, user: "good" }, partition: 1 })),
      ])
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "the good partition", () => handled.length === 5)
      let health = yield* system.health
      while (health.partitions.find((p) => p.partition === 0)?.state !== "stopped") {
        yield* Effect.sleep("10 millis")
        health = yield* system.health
      }
      assert.equal(health.healthy, false)
      assert.equal(health.partitions.find((p) => p.partition === 0)?.restarts, 3)
      assert.equal(health.partitions.find((p) => p.partition === 1)?.healthy, true)
    }),
    memory(),
  ))

test("The stall watchdog reports a partition with records waiting and no progress", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      // Record 1 hangs until the test releases it, so the shutdown (on the test clock) can drain.
      const release = yield* Deferred.make<void>()
      const actor = Actor.make({
        name: "stuck",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => event.id === 1 ? Deferred.await(release) : Effect.void,
        onError: { default: ErrorPolicy.halt },
        stallAfter: "10 seconds",
        commit: { interval: "1 hour" },
        consumer: { heartbeatInterval: "1 hour", sessionTimeout: "10 hours" },
      })
      yield* sendJson("events", [0, 1, 2].map((id) => ({ value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor])
      let partition = (yield* system.health).partitions[0]
      for (let i = 0; i < 50 && partition?.processed !== 1; i++) {
        yield* TestClock.adjust("10 millis")
        partition = (yield* system.health).partitions[0]
      }
      assert.equal(partition?.processed, 1)
      assert.equal(partition?.stalled, false, "not stalled yet")
      yield* TestClock.adjust("11 seconds")
      const health = yield* system.health
      assert.equal(health.partitions[0]?.stalled, true)
      assert.equal(health.healthy, false)
      yield* Deferred.succeed(release, undefined)
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("Partition actors report consumed records, outcomes, durations and lag as metrics", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["metered", 1])
      let handled = 0
      const actor = Actor.make({
        name: "metered",
        topics: ["metered"],
        value: Event,
        handle: (event: Event) => event.id === 0 ? Effect.fail(new StoreError({ reason: "skip me" })) : Effect.sync(() => handled++),
        onError: { StoreError: ErrorPolicy.skip, DecodeError: ErrorPolicy.halt, HandlerTimeout: ErrorPolicy.halt },
        ...quick,
      })
      yield* sendJson("metered", Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" } })))
      yield* ActorSystem.start([actor], { lagInterval: "10 millis" })
      yield* eventually(10, "handled", () => handled === 4)
      yield* Effect.sleep("50 millis")
      const snapshots = yield* Metric.snapshot
      const ours = (id: string) =>
        snapshots.filter((s) => s.id === id && s.attributes?.["messaging.destination.name"] === "metered")
      const [consumed] = ours("messaging.client.consumed.messages")
      assert.equal((consumed?.state as { count: number }).count, 5)
      assert.equal(consumed?.attributes?.["messaging.consumer.group.name"], "metered")
      const [duration] = ours("messaging.process.duration")
      assert.equal((duration?.state as { count: number }).count, 5)
      const skipped = ours("partita.records.outcome").find((s) => s.attributes?.["partita.outcome"] === "skipped")
      assert.equal((skipped?.state as { count: number }).count, 1)
      const [lag] = ours("partita.consumer.lag")
      assert.equal((lag?.state as { value: number }).value, 0)
    }),
    memory(),
  ))

test("A partition that never handled a record exports no duration series (none to read), and gets one with its first record", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["sparse", 2])
      let handled = 0
      const actor = Actor.make({
        name: "sparse",
        topics: ["sparse"],
        value: Event,
        handle: () => Effect.sync(() => handled++),
        onError: { default: ErrorPolicy.halt },
        ...quick,
      })
      yield* sendJson("sparse", [{ value: { id: 1, user: "a" }, partition: 1 }])
      yield* ActorSystem.start([actor], { lagInterval: "10 millis" })
      yield* eventually(10, "handled", () => handled === 1)
      const durationsOf = (partition: string) =>
        Effect.map(Metric.snapshot, (snapshots) =>
          snapshots.filter((s) =>
            s.id === "messaging.process.duration" && s.attributes?.["messaging.destination.name"] === "sparse" &&
            s.attributes?.["messaging.destination.partition.id"] === partition
          ))
      assert.equal((yield* durationsOf("0")).length, 0, "partition 0 handled nothing")
      assert.equal(((yield* durationsOf("1"))[0]?.state as { count: number } | undefined)?.count, 1)
      yield* sendJson("sparse", [{ value: { id: 2, user: "a" }, partition: 0 }])
      yield* eventually(10, "handled on partition 0", () => handled === 2)
      assert.equal(((yield* durationsOf("0"))[0]?.state as { count: number } | undefined)?.count, 1)
    }),
    memory(),
  ))

test("The health report says ready once every actor had its first assignment", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["a", 1], ["b", 1])
      const actorFor = (topic: string) =>
        Actor.make({ name: topic, topics: [topic], value: Event, handle: () => Effect.void, onError: { default: ErrorPolicy.halt } })
      const system = yield* ActorSystem.start([actorFor("a"), actorFor("b")])
      let health = yield* system.health
      for (let i = 0; i < 100 && !health.ready; i++) {
        yield* Effect.sleep("5 millis")
        health = yield* system.health
      }
      assert.equal(health.ready, true)
      assert.equal(health.partitions.length, 2)
    }),
    memory(),
  ))

test("Commits requested by count or by catching up go out once each, not in a loop", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      let handled = 0
      const actor = Actor.make({
        name: "committer",
        topics: ["events"],
        value: Event,
        handle: () => Effect.sync(() => handled++),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "1 hour", records: 2 },
      })
      yield* sendJson("events", Array.from({ length: 6 }, (_, id) => ({ value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor])
      yield* eventually(10, "handled", () => handled === 6)
      // Idle now: the committer must wait, not spin (a spinning committer burns a whole core).
      const before = process.cpuUsage()
      yield* Effect.sleep("300 millis")
      const busy = process.cpuUsage(before)
      assert.ok((busy.user + busy.system) / 1000 < 150, `idle, yet used ${Math.round((busy.user + busy.system) / 1000)} ms of CPU in 300 ms`)
      assert.equal((yield* system.health).partitions[0]?.committed, 6)
      const commits = yield* broker.calls("commit")
      assert.ok(commits >= 1 && commits <= 6, `${commits} commits for 6 records`)
    }),
    memory(),
  ))

/** Moves the test clock forward by `millis`, in steps, letting fibers run after each. */
const advance = (millis: number, step = 100) =>
  Effect.gen(function*() {
    for (let passed = 0; passed < millis; passed += step) {
      yield* TestClock.adjust(step)
      yield* Effect.yieldNow
    }
  })

/** Advances the test clock in steps until `condition` holds, for at most `millis`. */
const advanceUntil = (millis: number, what: string, condition: () => boolean, step = 10) =>
  Effect.gen(function*() {
    for (let passed = 0; !condition(); passed += step) {
      if (passed > millis) return yield* Effect.die(new Error(`Waited ${millis} ms of test time for ${what}`))
      yield* TestClock.adjust(step)
      yield* Effect.yieldNow
    }
  })

/** The group's committed offsets for the topic's partitions, read by a member that joins only to read them. */
const committedOffsets = (group: string, topic: string, partitions: number) =>
  Effect.scoped(Effect.gen(function*() {
    const transport = yield* Transport
    const subscription = yield* transport.subscribe({ group, topics: [topic] })
    const committed = yield* subscription.committed(Array.from({ length: partitions }, (_, partition) => ({ topic, partition })))
    return new Map(committed.map((c) => [c.partition, c.offset]))
  }))

const defectOf = (exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) return undefined
  const defect = Cause.findDefect(exit.cause)
  return defect._tag === "Success" ? defect.success : undefined
}

test("An actor removed from its group joins again on the schedule, and health reports the gap", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 2])
      const broker = yield* MemoryTransport.MemoryBroker
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "rejoiner",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => Effect.sync(() => handled.push(event.id)),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "100 millis" },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 seconds" },
      })
      yield* sendJson("events", Array.from({ length: 10 }, (_, id) => ({ key: `k${id}`, value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor], { rejoinSchedule: Schedule.spaced("3 seconds"), membershipGrace: "5 seconds" })
      yield* advanceUntil(5_000, "the first records", () => handled.length === 10)
      yield* advance(200)
      const before = yield* system.health
      assert.equal(before.members[0]?.member, true)
      assert.ok(before.healthy && before.ready)

      // The coordinator forgets the member at its next heartbeat; its first rejoin is refused.
      const [memberId] = yield* broker.members("rejoiner")
      yield* broker.failNext("heartbeat", "UNKNOWN_MEMBER_ID", { member: memberId })
      yield* broker.failNext("subscribe", "GROUP_AUTHORIZATION_FAILED")
      const timeline: Array<{ at: number; member: boolean; healthy: boolean; ready: boolean; rejoins: number; partitions: number }> = []
      for (let i = 0; i < 120; i++) {
        yield* advance(100)
        const health = yield* system.health
        timeline.push({
          at: yield* Clock.currentTimeMillis,
          member: health.members[0]!.member,
          healthy: health.healthy,
          ready: health.ready,
          rejoins: health.members[0]!.rejoins,
          partitions: health.partitions.length,
        })
      }
      const lost = timeline.find((t) => !t.member)
      assert.ok(lost !== undefined, "the loss shows in health")
      assert.equal(lost.partitions, 0, "the lost member's partition actors are gone")
      assert.equal(lost.ready, false, "not ready while out of the group")
      assert.equal(lost.healthy, true, "healthy within the grace")
      const unhealthy = timeline.find((t) => !t.healthy)
      assert.ok(unhealthy !== undefined && !unhealthy.member, "unhealthy once out past the grace")
      assert.ok(unhealthy.at - lost.at >= 4_900 && unhealthy.at - lost.at <= 5_200, `unhealthy ${unhealthy.at - lost.at} ms after the loss`)
      assert.ok(timeline.some((t) => !t.member && t.rejoins === 1), "the refused rejoin is counted")
      const back = timeline.find((t) => t.at > lost.at && t.member)
      assert.ok(back !== undefined, "joined again")
      assert.ok(back.at - lost.at >= 5_900 && back.at - lost.at <= 6_200, `joined again ${back.at - lost.at} ms after the loss (two tries 3 s apart)`)
      const last = timeline[timeline.length - 1]!
      assert.deepEqual([last.member, last.healthy, last.ready, last.rejoins, last.partitions], [true, true, true, 0, 2])

      yield* sendJson("events", Array.from({ length: 10 }, (_, i) => ({ key: `k${10 + i}`, value: { id: 10 + i, user: "a" } })))
      yield* advanceUntil(5_000, "the records after the rejoin", () => handled.length >= 20)
      assert.deepEqual([...handled].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i), "each record once, none lost")
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("After too many failed rejoins the system fails with MembershipLost", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      const actor = Actor.make({
        name: "outcast",
        topics: ["events"],
        value: Event,
        handle: () => Effect.void,
        onError: { default: ErrorPolicy.halt },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 seconds" },
      })
      const running = yield* Effect.forkChild(ActorSystem.run([actor], { rejoinSchedule: Schedule.spaced("1 second"), maxRejoins: 3 }))
      yield* advance(500)
      const [memberId] = yield* broker.members("outcast")
      assert.ok(memberId !== undefined)
      yield* broker.failNext("subscribe", "GROUP_AUTHORIZATION_FAILED", { times: Number.POSITIVE_INFINITY })
      yield* broker.failNext("heartbeat", "UNKNOWN_MEMBER_ID", { member: memberId })
      yield* advance(10_000)
      const exit = running.pollUnsafe()
      assert.ok(exit !== undefined, "run ended")
      const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : undefined
      assert.equal(error?._tag === "Some" ? error.value._tag : undefined, "MembershipLost")
      const lost = (error as { value: ActorSystem.MembershipLost }).value
      assert.equal(lost.rejoins, 3)
      assert.match(lost.message, /^Actor "outcast" lost its membership of group "outcast" and 3 rejoins failed; last error: .*GROUP_AUTHORIZATION_FAILED/)
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("A shutdown finishes only the records in flight, commits them, and leaves the prefetched ones to the next owner", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "prefetcher",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => Effect.andThen(Effect.sleep("40 millis"), Effect.sync(() => handled.push(event.id))),
        onError: { default: ErrorPolicy.halt },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 seconds" },
      })
      yield* sendJson("events", Array.from({ length: 1000 }, (_, id) => ({ value: { id, user: "a" } })))
      const scope = yield* Scope.make()
      const system = yield* Scope.provide(ActorSystem.start([actor]), scope)
      yield* advanceUntil(5_000, "a few records", () => handled.length >= 5)
      assert.ok((yield* system.health).partitions[0]!.position >= 900, "hundreds of records are prefetched")
      const began = yield* Clock.currentTimeMillis
      const closing = yield* Effect.forkChild(Effect.exit(Scope.close(scope, Exit.void)))
      yield* advanceUntil(31_000, "the shutdown", () => closing.pollUnsafe() !== undefined)
      const took = (yield* Clock.currentTimeMillis) - began
      assert.ok(took <= 100, `the shutdown took ${took} ms: one record in flight, not the mailbox`)
      assert.ok(Exit.isSuccess((yield* Fiber.join(closing))), "a clean shutdown")
      const first = handled.length
      assert.ok(first < 10, `${first} handled: the prefetched records were left`)
      assert.deepEqual(yield* committedOffsets("prefetcher", "events", 1), new Map([[0, first]]), "what was handled was committed")

      // The next owner starts where the first stopped.
      yield* ActorSystem.start([actor])
      yield* advanceUntil(60_000, "the rest", () => handled.length >= 1000, 100)
      assert.deepEqual(handled, Array.from({ length: 1000 }, (_, i) => i), "each record once, in order")
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("A shutdown ends by its deadline plus one second when a handler never returns and the broker stops answering, and says what was left", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 2], ["out", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "stuck",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          event.id === 3
            ? Effect.never
            : event.id === 103
            ? Effect.flatMap(Producer.Producer, (producer) => producer.send({ topic: "out", key: null, value: bytes("x") }))
            : Effect.sync(() => handled.push(event.id)),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "1 hour", records: 1000 },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 minutes" },
      })
      yield* sendJson("events", [
        ...Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" }, partition: 0 })),
        ...Array.from({ length: 5 }, (_, i) => ({ value: { id: 100 + i, user: "b" }, partition: 1 })),
      ])
      // From now on the broker takes an hour to acknowledge a record or a commit.
      yield* broker.delayNext("send", "1 hour")
      const scope = yield* Scope.make()
      yield* Scope.provide(ActorSystem.start([actor], { shutdownDeadline: "5 seconds" }), scope)
      yield* advanceUntil(5_000, "the records before the stuck ones", () => handled.length === 6)
      yield* advance(100)
      yield* broker.delayNext("commit", "1 hour", { times: Number.POSITIVE_INFINITY })
      const began = yield* Clock.currentTimeMillis
      const closing = yield* Effect.forkChild(Effect.exit(Scope.close(scope, Exit.void)))
      yield* advanceUntil(60_000, "the shutdown", () => closing.pollUnsafe() !== undefined)
      const took = (yield* Clock.currentTimeMillis) - began
      assert.ok(took >= 5_000 && took <= 6_000, `the shutdown took ${took} ms: within the deadline plus one second`)
      const failure = defectOf(yield* Fiber.join(closing)) as ActorSystem.ShutdownDeadlineExceeded | undefined
      assert.equal(failure?._tag, "ShutdownDeadlineExceeded")
      assert.deepEqual([...failure!.left].sort(), [
        "stuck: events/0 was still handling records and was interrupted",
        "stuck: events/0: offsets below 3 completed but not committed (the commit got no answer in time)",
        "stuck: events/1 was still handling records and was interrupted",
        "stuck: events/1: offsets below 3 completed but not committed (the commit got no answer in time)",
        "the producer did not finish flushing: records sent by handlers may not have been acknowledged",
      ])
      assert.match(failure!.message, /^Shutdown did not finish within 5s \(plus 1s for commits, flush and leaving the groups\): /)
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("A shutdown past its deadline still commits what completed when the broker answers in time", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      let handled = 0
      const actor = Actor.make({
        name: "late-commit",
        topics: ["events"],
        value: Event,
        handle: (event: Event) => event.id === 3 ? Effect.never : Effect.sync(() => handled++),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "1 hour", records: 1000 },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 minutes" },
      })
      yield* sendJson("events", Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" } })))
      const scope = yield* Scope.make()
      yield* Scope.provide(ActorSystem.start([actor], { shutdownDeadline: "5 seconds" }), scope)
      yield* advanceUntil(5_000, "the records before the stuck one", () => handled === 3)
      yield* broker.delayNext("commit", "500 millis", { times: Number.POSITIVE_INFINITY })
      const began = yield* Clock.currentTimeMillis
      const closing = yield* Effect.forkChild(Effect.exit(Scope.close(scope, Exit.void)))
      yield* advanceUntil(60_000, "the shutdown", () => closing.pollUnsafe() !== undefined)
      assert.ok((yield* Clock.currentTimeMillis) - began <= 6_000)
      const failure = defectOf(yield* Fiber.join(closing)) as ActorSystem.ShutdownDeadlineExceeded | undefined
      assert.deepEqual(failure?.left, ["late-commit: events/0 was still handling records and was interrupted"])
      assert.deepEqual(yield* committedOffsets("late-commit", "events", 1), new Map([[0, 3]]), "the completed records were committed")
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("Health answers at once while the broker does not; lag reports its age and readiness follows the broker", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      let handled = 0
      const actor = Actor.make({
        name: "probed",
        topics: ["events"],
        value: Event,
        handle: () => Effect.sync(() => handled++),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "100 millis" },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 minutes" },
      })
      yield* sendJson("events", Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" } })))
      const system = yield* ActorSystem.start([actor], { lagInterval: "1 second", brokerTimeout: "500 millis", brokerWindow: "5 seconds" })
      yield* advanceUntil(5_000, "handled and committed", () => handled === 5)
      yield* advance(1_200)
      const before = yield* system.health
      assert.equal(before.partitions[0]?.lag, 0)
      assert.ok(before.ready && before.broker.reachable)

      // The broker stops answering describeTopic for 8 tries (12 s at 1.5 s a try).
      yield* broker.delayNext("describeTopic", "1 hour", { times: 8 })
      yield* advance(1_000)
      const probe = yield* Effect.forkChild(system.health)
      yield* Effect.yieldNow
      assert.ok(probe.pollUnsafe() !== undefined, "health answered without waiting for the broker")
      const samples: Array<{ at: number; ready: boolean; lagAge: number; lag: number | undefined }> = []
      const began = yield* Clock.currentTimeMillis
      for (let i = 0; i < 150; i++) {
        yield* advance(100)
        const health = yield* system.health
        samples.push({ at: (yield* Clock.currentTimeMillis) - began, ready: health.ready, lagAge: health.partitions[0]!.lagAge!, lag: health.partitions[0]!.lag })
      }
      assert.ok(samples.every((s) => s.lag === 0), "the cached lag is still reported")
      const oldest = Math.max(...samples.map((s) => s.lagAge))
      assert.ok(oldest > 10_000, `the lag's age grew while the broker was silent (at most ${oldest} ms)`)
      const notReady = samples.find((s) => !s.ready)
      assert.ok(notReady !== undefined, "not ready once the broker was silent past the window")
      const readyAgain = samples.find((s) => s.at > notReady.at && s.ready)
      assert.ok(readyAgain !== undefined, "ready again once the broker answered")
      const last = samples[samples.length - 1]!
      assert.ok(last.ready && last.lagAge < 1_600, `fresh again: ${JSON.stringify(last)}`)
      const health = yield* system.health
      assert.ok(health.healthy, "liveness does not depend on the broker")
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("run interrupted with a shutdown past its deadline fails with ShutdownDeadlineExceeded, so runMain exits 1", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      let started = false
      const actor = Actor.make({
        name: "never",
        topics: ["events"],
        value: Event,
        handle: () => Effect.andThen(Effect.sync(() => void (started = true)), Effect.never),
        onError: { default: ErrorPolicy.halt },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 minutes" },
      })
      yield* sendJson("events", [{ value: { id: 1, user: "a" } }])
      const running = yield* Effect.forkChild(ActorSystem.run([actor], { shutdownDeadline: "2 seconds" }))
      yield* advanceUntil(5_000, "the handler", () => started)
      const began = yield* Clock.currentTimeMillis
      running.interruptUnsafe()
      yield* advanceUntil(10_000, "the shutdown", () => running.pollUnsafe() !== undefined)
      assert.ok((yield* Clock.currentTimeMillis) - began <= 3_000)
      const exit = running.pollUnsafe()!
      assert.equal(Main.exitCode(exit), 1)
      const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : undefined
      assert.equal(error?._tag === "Some" ? error.value._tag : undefined, "ShutdownDeadlineExceeded")
      assert.match(
        (error as { value: ActorSystem.ShutdownDeadlineExceeded }).value.message,
        /^Shutdown did not finish within 2s \(plus 1s for commits, flush and leaving the groups\): never: events\/0 was still handling records and was interrupted$/,
      )
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))

test("A shutdown whose records finished but whose commit gets no answer names only the uncommitted offsets", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      let handled = 0
      const actor = Actor.make({
        name: "unanswered",
        topics: ["events"],
        value: Event,
        handle: () => Effect.sync(() => handled++),
        onError: { default: ErrorPolicy.halt },
        consumer: { heartbeatInterval: "1 second", sessionTimeout: "10 minutes" },
      })
      yield* sendJson("events", Array.from({ length: 3 }, (_, id) => ({ value: { id, user: "a" } })))
      const scope = yield* Scope.make()
      const system = yield* Scope.provide(ActorSystem.start([actor], { shutdownDeadline: "5 seconds" }), scope)
      yield* advanceUntil(5_000, "the first records committed", () => handled === 3)
      yield* advance(100)
      assert.equal((yield* system.health).partitions[0]?.committed, 3)
      // The broker stops answering commits; two more records are handled meanwhile.
      yield* broker.delayNext("commit", "1 hour", { times: Number.POSITIVE_INFINITY })
      yield* sendJson("events", [3, 4].map((id) => ({ value: { id, user: "a" } })))
      yield* advanceUntil(5_000, "the later records", () => handled === 5)
      const began = yield* Clock.currentTimeMillis
      const closing = yield* Effect.forkChild(Effect.exit(Scope.close(scope, Exit.void)))
      yield* advanceUntil(60_000, "the shutdown", () => closing.pollUnsafe() !== undefined)
      const took = (yield* Clock.currentTimeMillis) - began
      assert.ok(took <= 6_000, `the shutdown took ${took} ms`)
      const failure = defectOf(yield* Fiber.join(closing)) as ActorSystem.ShutdownDeadlineExceeded | undefined
      assert.deepEqual(failure?.left, [
        "unanswered: events/0: offsets below 5 completed but not committed (the commit got no answer in time)",
      ])
    }),
    Layer.provideMerge(memory(), TestClock.layer()),
  ))
