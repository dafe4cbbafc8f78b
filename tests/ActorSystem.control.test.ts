/**
 * `ActorSystem.layer` and run-time control on the embedded broker, under `TestClock`: the cases
 * every transport runs (tests/fixtures/control.ts), and what needs no real broker: the layer's
 * start and graceful shutdown, a paused actor's new partitions, a seek while paused, the
 * errors of control calls that name nothing this member can act on.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Context, Data, Deferred, Effect, Exit, Layer, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Ordering from "../lib/Ordering.ts"
import { RecordContext } from "../lib/RecordContext.ts"
import { Transport } from "../lib/Transport.ts"
import { createUniqueTopics, sendJson } from "./fixtures/actors.ts"
import { controlCases, type Target } from "./fixtures/control.ts"
import { run } from "./fixtures/effect.ts"

const layer = () => Layer.provideMerge(MemoryTransport.layer(), TestClock.layer())

/** Lets the fibers run, and the clock move by 10 ms steps, until `condition` holds: at most 20 s of test time. */
const waitUntil = (what: string, condition: Effect.Effect<boolean>) =>
  Effect.gen(function*() {
    for (let step = 0; step < 2000; step++) {
      if (yield* condition) return
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow
      yield* TestClock.adjust("10 millis")
    }
    return yield* Effect.die(new Error(`Waited 20 s of test time for ${what}`))
  })

/** One second of test time, for whatever would happen to happen. */
const quiet = Effect.gen(function*() {
  for (let step = 0; step < 100; step++) {
    for (let i = 0; i < 20; i++) yield* Effect.yieldNow
    yield* TestClock.adjust("10 millis")
  }
})

const target: Target = {
  test: (name, body) => test(`${name} (MemoryTransport)`, () => run(body, layer())),
  consumer: { heartbeatInterval: "100 millis", sessionTimeout: "1 second" },
  waitUntil,
  quiet,
}

controlCases(target)

const Event = Schema.Struct({ id: Schema.Number })
type Event = typeof Event.Type

const recorder = (topic: string, seen: Array<number>, options: Partial<Actor.Options<Event, Uint8Array | null, never, never>> = {}) =>
  Actor.make({
    name: "recorder",
    topics: [topic],
    value: Event,
    handle: (event: Event) => Effect.map(RecordContext, () => void seen.push(event.id)),
    onError: { default: ErrorPolicy.halt },
    commit: { interval: "20 millis" },
    consumer: target.consumer,
    ...options,
  })

test("ActorSystem.layer starts the system, provides it as ActorSystem.System, and shuts down gracefully when its scope closes", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["layer", 2])
      const seen: Array<number> = []
      const actor = recorder(topic!, seen)
      yield* sendJson(topic!, Array.from({ length: 20 }, (_, id) => ({ value: { id }, partition: id % 2 })))
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(ActorSystem.layer([actor]), scope)
      const system = Context.get(context, ActorSystem.System)
      yield* waitUntil("20 records handled", Effect.sync(() => seen.length === 20))
      assert.equal((yield* system.health).partitions.length, 2)
      yield* Scope.close(scope, Exit.void)
      // The shutdown committed everything handled: a new member of the group starts at the end.
      const transport = yield* Transport
      const subscription = yield* transport.subscribe({ group: actor.group, topics: [topic!] })
      const committed = yield* subscription.committed([{ topic: topic!, partition: 0 }, { topic: topic!, partition: 1 }])
      assert.deepEqual(committed.map((c) => c.offset).sort(), [10, 10])
      // The deprecated name is the same service.
      assert.equal(ActorSystem.ActorSystem, ActorSystem.System)
    }),
    layer(),
  ))

test("ActorSystem.pause of a whole actor holds partitions assigned to it later, and resume lets them go", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["paused-actor", 2])
      const seen: Array<number> = []
      const group = `paused-actor-${Math.random()}`
      const first = recorder(topic!, seen, { group })
      const system = yield* ActorSystem.start([first])
      yield* waitUntil("both partitions held", Effect.map(system.health, (h) => h.partitions.length === 2))
      const other = yield* Scope.make()
      const second = yield* Scope.provide(ActorSystem.start([recorder(topic!, [], { group })]), other)
      yield* waitUntil("the second member holds one", Effect.map(second.health, (h) => h.partitions.length === 1))
      yield* waitUntil("the first member holds one", Effect.map(system.health, (h) => h.partitions.length === 1))
      yield* system.pause("recorder")
      yield* Scope.close(other, Exit.void)
      yield* waitUntil("both partitions back", Effect.map(system.health, (h) => h.partitions.length === 2))
      const health = yield* system.health
      assert.deepEqual(health.partitions.map((p) => p.pausedFor), [["operator"], ["operator"]], "the newly assigned partition started paused")
      yield* sendJson(topic!, [{ value: { id: 1 }, partition: 0 }, { value: { id: 2 }, partition: 1 }])
      yield* quiet
      assert.deepEqual(seen, [])
      yield* system.resume(first)
      yield* waitUntil("both records handled", Effect.sync(() => seen.length === 2))
    }),
    layer(),
  ))

test("ActorSystem.seek while paused moves the partition and leaves it paused; records fetched past the seek are dropped", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["seek-paused", 1])
      const seen: Array<number> = []
      const actor = recorder(topic!, seen)
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 5 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* waitUntil("5 handled", Effect.sync(() => seen.length === 5))
      yield* system.pause(actor)
      yield* sendJson(topic!, Array.from({ length: 10 }, (_, i) => ({ value: { id: 5 + i }, partition: 0 })))
      assert.equal(yield* system.seek(actor, { topic: topic!, partition: 0 }, { offset: 12 }), 12)
      const moved = (yield* system.health).partitions[0]!
      assert.equal(moved.committed, 12, "the seek committed its offset")
      assert.equal(moved.position, 12)
      assert.deepEqual(moved.pausedFor, ["operator"])
      yield* quiet
      assert.deepEqual(seen, [0, 1, 2, 3, 4])
      yield* system.resume(actor, { topic: topic!, partition: 0 })
      yield* waitUntil("12 to 14 handled", Effect.sync(() => seen.length === 8))
      assert.deepEqual(seen, [0, 1, 2, 3, 4, 12, 13, 14])
    }),
    layer(),
  ))

test("ActorSystem.pause holds a key-lane actor at each lane's next turn, and resume lets every key go on", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["pause-lanes", 1])
      const seen: Array<number> = []
      const actor = recorder(topic!, seen, { ordering: Ordering.byKey({ concurrency: 4 }) })
      const system = yield* ActorSystem.start([actor])
      yield* system.pause(actor)
      yield* sendJson(topic!, Array.from({ length: 12 }, (_, id) => ({ key: `k${id % 4}`, value: { id }, partition: 0 })))
      yield* quiet
      assert.deepEqual(seen, [])
      yield* system.resume(actor)
      yield* waitUntil("12 handled", Effect.sync(() => seen.length === 12))
    }),
    layer(),
  ))

test("Control calls that name nothing this member can act on fail with typed errors that say what exists", () =>
  run(
    Effect.gen(function*() {
      const [topic, other] = yield* createUniqueTopics(["control-errors", 1], ["control-errors-other", 1])
      const actor = recorder(topic!, [])
      const lanes = recorder(topic!, [], { name: "lanes", ordering: Ordering.unordered({ concurrency: 2 }) })
      const system = yield* ActorSystem.start([actor, lanes])
      yield* waitUntil("assigned", Effect.map(system.health, (h) => h.partitions.length === 2))
      const unknown = yield* Effect.flip(system.pause("nobody"))
      assert.equal(unknown._tag, "UnknownActor")
      assert.match(unknown.message, /No actor named "nobody".*"recorder", "lanes"/)
      const notConsumed = yield* Effect.flip(system.pause(actor, { topic: other!, partition: 0 }))
      assert.equal(notConsumed._tag, "PartitionNotHeld")
      assert.match(notConsumed.message, /does not consume/)
      const notHeld = yield* Effect.flip(system.seek(actor, { topic: topic!, partition: 5 }, { offset: 0 }))
      assert.equal(notHeld._tag, "PartitionNotHeld")
      assert.match(notHeld.message, new RegExp(`does not hold it now \\(it holds ${topic}/0\\)`))
      const notPaused = yield* Effect.flip(system.resume(actor, { topic: topic!, partition: 5 }))
      assert.equal(notPaused._tag, "PartitionNotHeld")
      // Paused ahead: a partition not held now may be paused, and then resumed.
      yield* system.pause(actor, { topic: topic!, partition: 5 })
      yield* system.resume(actor, { topic: topic!, partition: 5 })
      const outside = yield* Effect.flip(system.seek(actor, { topic: topic!, partition: 0 }, { offset: 7 }))
      assert.equal(outside._tag, "InvalidSeek")
      assert.match(outside.message, /outside the log, which holds offsets 0 to 0/)
      // An exactly-once batch actor: each batch is a transaction of its own.
      const eos = Actor.make({
        name: "eos",
        topics: [topic!],
        value: Event,
        handleBatch: () => Effect.void,
        onError: { default: ErrorPolicy.halt },
        delivery: "exactly-once",
        consumer: target.consumer,
      })
      const other2 = yield* ActorSystem.start([eos])
      const exactlyOnce = yield* Effect.flip(other2.seek(eos, { topic: topic!, partition: 0 }, { offset: 0 }))
      assert.equal(exactlyOnce._tag, "InvalidSeek")
      assert.match(exactlyOnce.message, /exactly-once batch actor cannot seek/)
    }),
    layer(),
  ))

class StoreError extends Data.TaggedError("StoreError")<{ readonly id: number }> {}

test("A halted key-lane partition restarts on resume: the halting record and the records behind it are handled, each key in order", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["halt-lanes", 1])
      const seen: Array<number> = []
      let failing = true
      const actor = Actor.make({
        name: "lanes",
        topics: [topic!],
        value: Event,
        handle: (event: Event) =>
          event.id === 5 && failing ? Effect.fail(new StoreError({ id: 5 })) : Effect.sync(() => void seen.push(event.id)),
        onError: { StoreError: ErrorPolicy.halt, default: ErrorPolicy.halt },
        ordering: Ordering.byKey({ concurrency: 4 }),
        commit: { interval: "20 millis" },
        consumer: target.consumer,
      })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 12 }, (_, id) => ({ key: `k${id % 3}`, value: { id }, partition: 0 })))
      yield* waitUntil("halted", Effect.map(system.health, (h) => h.partitions[0]?.state === "halted"))
      const halted = (yield* system.health).partitions[0]!
      assert.equal(halted.halted?.offset, 5)
      assert.ok(!seen.includes(5))
      failing = false
      yield* system.resume(actor, { topic: topic!, partition: 0 })
      yield* waitUntil("every record handled", Effect.sync(() => new Set(seen).size === 12))
      for (let key = 0; key < 3; key++) {
        const ids = seen.filter((id) => id % 3 === key)
        assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `key k${key} in order`)
      }
      yield* waitUntil("committed to the end", Effect.map(system.health, (h) => h.partitions[0]?.committed === 12 && h.partitions[0].halted === undefined))
    }),
    layer(),
  ))

test("ActorSystem.seek back on an at-most-once actor commits the new offset ahead and handles the records from there once", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["seek-at-most-once", 1])
      const seen: Array<number> = []
      const actor = recorder(topic!, seen, { delivery: "at-most-once" })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 6 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* waitUntil("6 handled", Effect.sync(() => seen.length === 6))
      yield* system.pause(actor)
      yield* system.seek(actor, { topic: topic!, partition: 0 }, { offset: 2 })
      assert.equal((yield* system.health).partitions[0]?.committed, 2)
      yield* system.resume(actor)
      yield* waitUntil("2 to 5 handled again", Effect.sync(() => seen.length === 10))
      assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 2, 3, 4, 5])
      yield* waitUntil("committed to the end", Effect.map(system.health, (h) => h.partitions[0]?.committed === 6))
    }),
    layer(),
  ))

test("A partition the operator paused with records waiting stays healthy past its stallAfter, and counts from the resume", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["pause-stall", 1])
      const seen: Array<number> = []
      const started = yield* Deferred.make<void>()
      const open = yield* Deferred.make<void>()
      const actor = recorder(topic!, seen, {
        stallAfter: "1 second",
        handle: (event: Event) =>
          Effect.gen(function*() {
            if (event.id === 0) yield* Effect.andThen(Deferred.succeed(started, undefined), Deferred.await(open))
            seen.push(event.id)
          }),
      })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 3 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* Deferred.await(started)
      yield* system.pause(actor)
      yield* Deferred.succeed(open, undefined)
      yield* quiet
      yield* quiet
      const paused = (yield* system.health).partitions[0]!
      assert.deepEqual(seen, [0])
      assert.ok(paused.position > paused.committed, "records wait past the committed offset")
      assert.equal(paused.stalled, false)
      assert.equal(paused.healthy, true)
      yield* system.resume(actor)
      assert.equal((yield* system.health).partitions[0]!.stalled, false, "not stalled the moment it resumes")
      yield* waitUntil("3 handled", Effect.sync(() => seen.length === 3))
    }),
    layer(),
  ))

test("ActorSystem.pause of an exactly-once actor commits its open transaction and starts nothing more until resumed", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["pause-eos", 1])
      const seen: Array<number> = []
      const actor = recorder(topic!, seen, { delivery: "exactly-once", transaction: { records: 100, interval: "10 seconds" } })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 4 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* waitUntil("4 handled", Effect.sync(() => seen.length === 4))
      yield* system.pause(actor)
      yield* waitUntil("the open transaction committed", Effect.map(system.health, (h) => h.partitions[0]?.committed === 4))
      yield* sendJson(topic!, Array.from({ length: 4 }, (_, i) => ({ value: { id: 4 + i }, partition: 0 })))
      yield* quiet
      assert.equal(seen.length, 4)
      yield* system.resume(actor)
      yield* waitUntil("8 handled", Effect.sync(() => seen.length === 8))
      assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7])
    }),
    layer(),
  ))

test("ActorSystem.seek of a halted partition moves it past the halting record; it stays halted until resumed, then goes on from there", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["seek-halted", 1])
      const seen: Array<number> = []
      const actor = Actor.make({
        name: "recorder",
        topics: [topic!],
        value: Event,
        handle: (event: Event) => event.id === 3 ? Effect.fail(new StoreError({ id: 3 })) : Effect.sync(() => void seen.push(event.id)),
        onError: { StoreError: ErrorPolicy.halt, default: ErrorPolicy.halt },
        commit: { interval: "20 millis" },
        consumer: target.consumer,
      })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 8 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* waitUntil("halted", Effect.map(system.health, (h) => h.partitions[0]?.state === "halted"))
      assert.equal(yield* system.seek(actor, { topic: topic!, partition: 0 }, { offset: 5 }), 5)
      const moved = (yield* system.health).partitions[0]!
      assert.equal(moved.state, "halted")
      assert.equal(moved.committed, 5)
      yield* quiet
      assert.deepEqual(seen, [0, 1, 2])
      yield* system.resume(actor, { topic: topic!, partition: 0 })
      yield* waitUntil("5 to 7 handled", Effect.sync(() => seen.length === 6))
      assert.deepEqual(seen, [0, 1, 2, 5, 6, 7])
    }),
    layer(),
  ))

test("ActorSystem.seek back of an unordered actor handles every record from the offset again", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["seek-unordered", 1])
      const seen: Array<number> = []
      const actor = recorder(topic!, seen, { ordering: Ordering.unordered({ concurrency: 4 }) })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(topic!, Array.from({ length: 10 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* waitUntil("10 handled", Effect.sync(() => seen.length === 10))
      yield* waitUntil("committed", Effect.map(system.health, (h) => h.partitions[0]?.committed === 10))
      assert.equal(yield* system.seek(actor, { topic: topic!, partition: 0 }, { offset: 3 }), 3)
      yield* waitUntil("3 to 9 handled again", Effect.sync(() => seen.length === 17))
      assert.deepEqual(seen.slice(10).sort((a, b) => a - b), [3, 4, 5, 6, 7, 8, 9])
      const health = (yield* system.health).partitions[0]!
      assert.equal(health.mailbox, 0, "nothing refused for the seek still counts against the mailbox")
      yield* waitUntil("committed again", Effect.map(system.health, (h) => h.partitions[0]?.committed === 10))
    }),
    layer(),
  ))

test("A batch actor pauses between batches, seeks back from the next batch, and a halted batch restarts on resume", () =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["control-batch", 1])
      const seen: Array<number> = []
      const batches: Array<number> = []
      let failing = true
      const actor = Actor.make({
        name: "batch",
        topics: [topic!],
        value: Event,
        handleBatch: (records) =>
          records.some((record) => record.value.id === 13) && failing
            ? Effect.fail(new StoreError({ id: 13 }))
            : Effect.sync(() => {
              batches.push(records.length)
              for (const record of records) seen.push(record.value.id)
            }),
        batch: { maxRecords: 4, maxWait: "50 millis" },
        onError: { StoreError: ErrorPolicy.halt, default: ErrorPolicy.halt },
        commit: { interval: "20 millis" },
        consumer: target.consumer,
      })
      const system = yield* ActorSystem.start([actor])
      yield* system.pause(actor)
      yield* sendJson(topic!, Array.from({ length: 10 }, (_, id) => ({ value: { id }, partition: 0 })))
      yield* quiet
      assert.deepEqual(seen, [], "paused before the first batch: none handled")
      yield* system.resume(actor)
      yield* waitUntil("10 handled", Effect.sync(() => seen.length === 10))
      assert.deepEqual(seen, Array.from({ length: 10 }, (_, id) => id))
      yield* waitUntil("committed", Effect.map(system.health, (h) => h.partitions[0]?.committed === 10))
      assert.equal(yield* system.seek(actor, { topic: topic!, partition: 0 }, { offset: 6 }), 6)
      yield* waitUntil("6 to 9 handled again", Effect.sync(() => seen.length === 14))
      assert.deepEqual(seen.slice(10), [6, 7, 8, 9])
      // A batch holding the poison record halts the partition; resume hands the batch over again.
      yield* sendJson(topic!, Array.from({ length: 4 }, (_, i) => ({ value: { id: 10 + i }, partition: 0 })))
      yield* waitUntil("halted", Effect.map(system.health, (h) => h.partitions[0]?.state === "halted"))
      const halted = (yield* system.health).partitions[0]!
      assert.equal(halted.halted?.offset, 10, "the halting batch's first record")
      failing = false
      yield* system.resume(actor, { topic: topic!, partition: 0 })
      yield* waitUntil("10 to 13 handled", Effect.sync(() => seen.length === 18))
      assert.deepEqual(seen.slice(14), [10, 11, 12, 13])
      yield* waitUntil("committed to the end", Effect.map(system.health, (h) => h.partitions[0]?.committed === 14))
    }),
    layer(),
  ))
