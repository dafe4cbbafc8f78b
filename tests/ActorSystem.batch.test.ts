/**
 * Batch handlers on the embedded broker: the cases every transport runs (tests/fixtures/batch.ts),
 * and what only the embedded broker can drive: batches gathered under `TestClock`, the exact
 * tries of a bisected poison record on its schedule, a batch's timeout, and the definitions
 * `ActorSystem` refuses.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Clock, Effect, Layer, Schedule } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Ordering from "../lib/Ordering.ts"
import { createTopics, eventually, headerText, readAll, sendJson } from "./fixtures/actors.ts"
import { batchCases, bisectionSizes, type Call, callOf, committedTo, Event, StoreError } from "./fixtures/batch.ts"
import { run } from "./fixtures/effect.ts"

batchCases({
  test: (name, body) => test(`${name} (MemoryTransport)`, () => run(body(undefined), MemoryTransport.layer())),
  consumer: { heartbeatInterval: "100 millis" },
  patience: 20,
})

const underTestClock = () => Layer.provideMerge(MemoryTransport.layer(), TestClock.layer())
/** Lets the partition actor's fibers run as far as they can without the clock moving. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})
const slow = { commit: { interval: "1 hour" }, consumer: { heartbeatInterval: "1 hour", sessionTimeout: "10 hours" } } as const

test("A batch is handed over once it holds maxRecords, or maxWait (by the clock) after its first record", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const calls: Array<Call & { readonly at: number }> = []
      const actor = Actor.make({
        name: "gatherer",
        topics: ["events"],
        value: Event,
        handleBatch: (records) => Effect.map(Clock.currentTimeMillis, (at) => void calls.push({ ...callOf(records), at })),
        batch: { maxRecords: 10, maxWait: "1 second" },
        onError: { default: ErrorPolicy.halt },
        ...slow,
      })
      yield* ActorSystem.start([actor])
      const start = yield* Clock.currentTimeMillis
      yield* sendJson("events", Array.from({ length: 3 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* settle
      yield* TestClock.adjust("999 millis")
      yield* settle
      assert.equal(calls.length, 0, "3 of 10 records wait for maxWait")
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.deepEqual(calls.map((call) => [call.ids, call.at - start]), [[[0, 1, 2], 1000]])
      // 25 at once: two full batches without waiting, then 5 that wait for maxWait.
      yield* sendJson("events", Array.from({ length: 25 }, (_, i) => ({ value: { id: 3 + i }, partition: 0 })))
      yield* settle
      assert.deepEqual(calls.slice(1).map((call) => [call.offsets.length, call.at - start]), [[10, 1000], [10, 1000]])
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.deepEqual(calls.slice(1).map((call) => [call.offsets.length, call.at - start]), [[10, 1000], [10, 1000], [5, 2000]])
      assert.deepEqual(calls.flatMap((call) => call.offsets), Array.from({ length: 28 }, (_, i) => i))
    }),
    underTestClock(),
  ))

test("A poison record in a batch of 500 gets exactly its schedule's retries at every bisection, then alone its dead letter", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      const poison = 100
      const poisonTries: Array<{ readonly size: number; readonly at: number; readonly attempt: number }> = []
      const succeeded: Array<number> = []
      const actor = Actor.make({
        name: "bisector",
        topics: ["events"],
        value: Event,
        handleBatch: (records) =>
          Effect.gen(function*() {
            const found = records.find((record) => record.value.id === poison)
            if (found === undefined) return void succeeded.push(...records.map((record) => record.value.id))
            poisonTries.push({ size: records.length, at: yield* Clock.currentTimeMillis, attempt: found.attempt })
            return yield* Effect.fail(new StoreError({ reason: "poison" }))
          }),
        batch: { maxRecords: 500, maxWait: "1 second" },
        onError: {
          StoreError: ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 2, then: "dead-letter", bisect: true }),
          DecodeError: ErrorPolicy.deadLetter,
        },
        deadLetter: { topic: "events.dlq" },
        ...slow,
      })
      yield* sendJson("events", Array.from({ length: 500 }, (_, id) => ({ value: { id }, partition: 0 })))
      const system = yield* ActorSystem.start([actor])
      for (let i = 0; i < 200 && succeeded.length < 499; i++) {
        yield* settle
        yield* TestClock.adjust("500 millis")
      }
      // Ten sizes (offsets 0-499, 0-249, 0-124, 63-124, 94-124, 94-109, 94-101, 98-101, 100-101, 100),
      // each tried once and retried twice, a second apart.
      const sizes = bisectionSizes(500, poison)
      assert.deepEqual(sizes, [500, 250, 125, 62, 31, 16, 8, 4, 2, 1])
      assert.deepEqual(poisonTries.map((t) => t.size), sizes.flatMap((size) => [size, size, size]))
      assert.deepEqual(poisonTries.map((t) => t.attempt), Array.from({ length: 30 }, (_, i) => i + 1))
      for (let level = 0; level < sizes.length; level++) {
        const [first, second, third] = poisonTries.slice(level * 3, level * 3 + 3)
        assert.deepEqual([second!.at - first!.at, third!.at - second!.at], [1000, 1000], `size ${sizes[level]}: retried on the schedule`)
      }
      assert.deepEqual([...succeeded].sort((a, b) => a - b), Array.from({ length: 500 }, (_, id) => id).filter((id) => id !== poison))
      assert.equal(new Set(succeeded).size, 499, "each good record completed once")
      const [letter] = yield* readAll("events.dlq", 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.source.offset"), String(poison))
      assert.equal(headerText(letter!.headers, "partita.dlq.attempts"), "30")
      const [partition] = (yield* system.health).partitions
      assert.equal(partition?.processed, 500, "every record is done")
      assert.equal(partition?.deadLettered, 1)
      assert.equal(partition?.state, "running")
    }),
    underTestClock(),
  ))

test("Without bisect, a batch out of retries gets the policy's end whole: every record dead-lettered", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1], ["events.dlq", 1])
      let tries = 0
      const actor = Actor.make({
        name: "whole",
        topics: ["events"],
        value: Event,
        handleBatch: () => Effect.suspend(() => (tries++, Effect.fail(new StoreError({ reason: "down" })))),
        batch: { maxRecords: 5, maxWait: "1 second" },
        onError: { StoreError: ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 1, then: "dead-letter" }), DecodeError: ErrorPolicy.deadLetter },
        deadLetter: { topic: "events.dlq" },
        ...slow,
      })
      yield* sendJson("events", Array.from({ length: 5 }, (_, id) => ({ value: { id }, partition: 0 })))
      const system = yield* ActorSystem.start([actor])
      for (let i = 0; i < 20; i++) {
        yield* settle
        yield* TestClock.adjust("500 millis")
      }
      assert.equal(tries, 2)
      const letters = yield* readAll("events.dlq", 5)
      assert.deepEqual(letters.map((letter) => headerText(letter.headers, "partita.dlq.source.offset")), ["0", "1", "2", "3", "4"])
      const [partition] = (yield* system.health).partitions
      assert.deepEqual([partition?.processed, partition?.failed, partition?.retried, partition?.deadLettered], [5, 10, 5, 5], "counted in records")
    }),
    underTestClock(),
  ))

test("handlerTimeout applies to each batch call: a batch past it fails with HandlerTimeout for the batch", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const timeouts: Array<string> = []
      let calls = 0
      const actor = Actor.make({
        name: "slow-batch",
        topics: ["events"],
        value: Event,
        handleBatch: () => Effect.suspend(() => ++calls === 1 ? Effect.sleep("10 seconds") : Effect.void),
        batch: { maxRecords: 4, maxWait: "1 second" },
        handlerTimeout: "2 seconds",
        onError: { HandlerTimeout: ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 1, then: "halt" }), DecodeError: ErrorPolicy.halt },
        ...slow,
      })
      yield* sendJson("events", Array.from({ length: 4 }, (_, id) => ({ value: { id }, partition: 0 })))
      const system = yield* ActorSystem.start([actor])
      for (let i = 0; i < 20 && calls < 2; i++) {
        yield* settle
        yield* TestClock.adjust("500 millis")
      }
      yield* settle
      const [partition] = (yield* system.health).partitions
      timeouts.push(partition?.lastError ?? "")
      assert.equal(calls, 2)
      assert.equal(partition?.processed, 4)
      assert.match(timeouts[0]!, /HandlerTimeout/)
      assert.match(timeouts[0]!, /Batch handler for 4 records of events\/0 from offset 0 did not finish within/)
    }),
    underTestClock(),
  ))

test("ActorSystem refuses a batch actor with key or unordered ordering, or per-member transactions, or two handlers", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const base = {
        topics: ["events"],
        value: Event,
        handleBatch: () => Effect.void,
        onError: { default: ErrorPolicy.halt },
      }
      const refused = (actor: Actor.Actor<never>) => Effect.map(Effect.flip(ActorSystem.start([actor])), (error) => error.message)
      // @ts-expect-error a batch is one partition's records in order: no key ordering
      const byKey = Actor.make({ ...base, name: "by-key", ordering: Ordering.byKey({ concurrency: 4 }) })
      assert.equal(
        yield* refused(byKey),
        `Actor "by-key" cannot run: it has a batch handler with ByKey ordering; a batch is one partition's records in offset order, so use partition ordering (or handle, for ByKey)`,
      )
      const perMember = Actor.make({ ...base, name: "per-member", delivery: "exactly-once", transaction: { producer: "per-member" } })
      assert.match(yield* refused(perMember), /batch handler and per-member transactions/)
      const untyped = Actor.make({ ...base, name: "both", handle: () => Effect.void } as never) as Actor.Actor<never>
      assert.match(yield* refused(untyped), /sets both handle and handleBatch/)
    }),
    MemoryTransport.layer(),
  ))

test("A defect in a batch handler restarts the partition actor, which hands the batch's records over again", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const calls: Array<Call> = []
      const actor = Actor.make({
        name: "defective",
        topics: ["events"],
        value: Event,
        handleBatch: (records): Effect.Effect<void> =>
          Effect.suspend(() => {
            calls.push(callOf(records))
            return calls.length === 1 ? Effect.die(new Error("boom")) : Effect.void
          }),
        batch: { maxRecords: 20, maxWait: "10 millis" },
        onError: { default: ErrorPolicy.halt },
        supervision: { schedule: Schedule.spaced("10 millis") },
        commit: { interval: "20 millis" },
      })
      yield* sendJson("events", Array.from({ length: 20 }, (_, id) => ({ value: { id }, partition: 0 })))
      const system = yield* ActorSystem.start([actor])
      yield* committedTo(system, [20], 10)
      assert.deepEqual(calls.slice(0, 2).map((call) => call.offsets), [calls[0]!.offsets, calls[0]!.offsets], "the same records again")
      assert.deepEqual(calls.slice(1).flatMap((call) => call.offsets), Array.from({ length: 20 }, (_, i) => i))
      const [partition] = (yield* system.health).partitions
      assert.deepEqual([partition?.restarts, partition?.processed, partition?.state], [1, 20, "running"])
    }),
    MemoryTransport.layer(),
  ))

test("pausePartition pauses and retries a failed batch until it succeeds; skip ends it whole; halt stops the partition before it", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["paused", 1], ["skipped", 1], ["halted", 1])
      let pausedTries = 0
      const pausing = Actor.make({
        name: "pausing",
        topics: ["paused"],
        value: Event,
        handleBatch: () => Effect.suspend(() => ++pausedTries < 3 ? Effect.fail(new StoreError({ reason: "down" })) : Effect.void),
        batch: { maxRecords: 5, maxWait: "10 millis" },
        onError: { StoreError: ErrorPolicy.pausePartition(Schedule.spaced("10 millis")), DecodeError: ErrorPolicy.halt },
        commit: { interval: "20 millis" },
      })
      const skipping = Actor.make({
        name: "skipping",
        topics: ["skipped"],
        value: Event,
        handleBatch: () => Effect.fail(new StoreError({ reason: "never" })),
        batch: { maxRecords: 5, maxWait: "10 millis" },
        onError: { StoreError: ErrorPolicy.skip, DecodeError: ErrorPolicy.halt },
        commit: { interval: "20 millis" },
      })
      const halting = Actor.make({
        name: "halting",
        topics: ["halted"],
        value: Event,
        handleBatch: () => Effect.fail(new StoreError({ reason: "never" })),
        batch: { maxRecords: 5, maxWait: "10 millis" },
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "20 millis" },
      })
      for (const topic of ["paused", "skipped", "halted"]) {
        yield* sendJson(topic, Array.from({ length: 5 }, (_, id) => ({ value: { id }, partition: 0 })))
      }
      const system = yield* ActorSystem.start([pausing, skipping, halting])
      const byActor = (name: string) => Effect.map(system.health, (health) => health.partitions.find((p) => p.actor === name))
      let states: Array<string> = []
      yield* Effect.raceFirst(
        eventually(10, "each actor's end", () => states.join() === "running 5 5,running 5 0,halted 0 0"),
        Effect.forever(Effect.andThen(
          Effect.map(Effect.all([byActor("pausing"), byActor("skipping"), byActor("halting")]), (partitions) => {
            states = partitions.map((p) => p === undefined ? "unassigned" : `${p.state} ${p.committed} ${p.processed - p.skipped}`)
          }),
          Effect.sleep("10 millis"),
        )),
      )
      assert.equal(pausedTries, 3)
      assert.equal((yield* byActor("pausing"))?.paused, false, "resumed once the batch succeeded")
      assert.equal((yield* byActor("skipping"))?.skipped, 5, "skip counts records")
      assert.match((yield* byActor("halting"))?.lastError ?? "", /StoreError/)
    }),
    MemoryTransport.layer(),
  ))
