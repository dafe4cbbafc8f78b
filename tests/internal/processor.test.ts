import assert from "node:assert/strict"
import { test } from "node:test"
import { Clock, Context, Data, Effect, Exit, Fiber, References, Schedule, Schema, Tracer } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../../lib/Actor.ts"
import * as Codec from "../../lib/Codec.ts"
import * as ErrorPolicy from "../../lib/ErrorPolicy.ts"
import * as Committer from "../../lib/internal/committer.ts"
import { DurationHistogram } from "../../lib/internal/durationHistogram.ts"
import { OffsetTracker } from "../../lib/internal/offsetTracker.ts"
import { noHooks } from "../../lib/internal/partitionHooks.ts"
import * as Processor from "../../lib/internal/processor.ts"
import { RecordContext } from "../../lib/RecordContext.ts"
import type { ConsumerRecord } from "../../lib/Transport.ts"
import { bytes } from "../fixtures/effect.ts"

/** The policies log each failure: quiet here, as in the other tests (`tests/fixtures/effect.ts`). */
const quietly = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(Effect.provideService(effect, References.MinimumLogLevel, "None"))

class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}

const recordOf = (offset: number, value: unknown): ConsumerRecord => ({
  topic: "t",
  partition: 0,
  offset,
  key: null,
  value: bytes(JSON.stringify(value)),
  headers: [],
  timestamp: 0,
})

/** A processor over `handle`, with a real offset tracker and committer (whose loop is not run). */
const setUp = (
  // Handlers read RecordContext, which the processor provides per record.
  handle: (value: { readonly id: number }) => Effect.Effect<void, StoreError, RecordContext>,
  onError: Actor.Options<{ readonly id: number }, Uint8Array | null, StoreError, never>["onError"],
  options: {
    readonly startable?: (record: ConsumerRecord) => boolean
    readonly handlerTimeout?: Actor.Options<{ readonly id: number }, Uint8Array | null, StoreError, never>["handlerTimeout"]
    /** Values as raw bytes (`Codec.bytes`) instead of the JSON schema: the handler gets the record's bytes. */
    readonly rawValues?: boolean
  } = {},
) =>
  Effect.gen(function*() {
    const actor = Actor.make({
      name: "p",
      topics: ["t"],
      value: (options.rawValues === true ? Codec.bytes : Schema.Struct({ id: Schema.Number })) as Schema.Struct<{ id: typeof Schema.Number }>,
      handle: handle as (value: { readonly id: number }) => Effect.Effect<void, StoreError>,
      onError,
      handlerTimeout: options.handlerTimeout,
    })
    const status: Processor.HandlingStatus = {
      state: "running",
      processed: 0,
      failed: 0,
      retried: 0,
      skipped: 0,
      lastProgress: 0,
      lastError: undefined,
      lastOutcome: "handled",
    }
    const tracker = new OffsetTracker(0)
    const settled: Array<number> = []
    const paused: Array<string> = []
    const committer = Committer.make({
      topic: "t",
      partition: 0,
      commit: () => Effect.void,
      committable: () => tracker.committable(),
      startOffset: 0,
      interval: "1 hour",
      records: 1000,
      retry: Schedule.spaced("1 second"),
      afterHandling: true,
      status: { committed: 0, lastError: undefined },
      attributes: {},
    })
    const durations = new DurationHistogram([0.001, 1])
    const processor = Processor.make<never>({
      actor,
      status,
      clock: yield* Clock.Clock,
      hooks: noHooks,
      tracker,
      committer,
      durations,
      pauseFor: (reason) => Effect.sync(() => paused.push(`pause ${reason}`)),
      resumeFor: (reason) => Effect.sync(() => paused.push(`resume ${reason}`)),
      deadLetter: (record, error, attempts) => Effect.sync(() => paused.push(`letter ${record.offset} ${error._tag} ${attempts}`)),
      outcome: () => Effect.void,
      startable: options.startable ?? (() => true),
      onSettled: (record) => settled.push(record.offset),
    })
    const records = (count: number) =>
      Array.from({ length: count }, (_, offset) => {
        tracker.track(offset)
        return recordOf(offset, { id: offset })
      })
    return { processor, status, tracker, settled, paused, records, durations }
  })

test("Processor.inOrder handles records in order with each in RecordContext, and books each one done", () =>
  quietly(Effect.gen(function*() {
    const seen: Array<string> = []
    const { processor, status, tracker, settled, records } = yield* setUp(
      (value) => Effect.map(RecordContext, (record) => void seen.push(`${record.offset}:${value.id}:${record.attempt}`)),
      { default: ErrorPolicy.halt },
    )
    yield* processor.inOrder(records(4))
    assert.deepEqual(seen, ["0:0:1", "1:1:1", "2:2:1", "3:3:1"])
    assert.equal(status.processed, 4)
    assert.equal(tracker.committable(), 4)
    assert.deepEqual(settled, [0, 1, 2, 3])
  })))

test("Processor.inOrder: handlers that answer at once (an Exit) and handlers that run mix in one chunk, in order, each in its own RecordContext", () =>
  quietly(Effect.gen(function*() {
    const seen: Array<string> = []
    const later: Array<Effect.Effect<number>> = []
    const { processor, status, tracker, settled, records } = yield* setUp(
      (value) =>
        value.id % 3 === 0
          ? Effect.void // an Exit: ends without a fiber step
          : value.id % 3 === 1
          ? Effect.map(RecordContext, (record) => void seen.push(`${record.offset}:${value.id}:${record.attempt}`))
          // A fiber forked by the handler keeps the record it was forked for.
          : Effect.map(Effect.forkDetach(Effect.map(RecordContext, (record) => record.offset)), (fiber) => void later.push(Fiber.join(fiber))),
      { StoreError: ErrorPolicy.skip, default: ErrorPolicy.halt },
      { handlerTimeout: "1 minute" },
    )
    yield* processor.inOrder(records(9))
    assert.deepEqual(seen, ["1:1:1", "4:4:1", "7:7:1"])
    assert.deepEqual(yield* Effect.all(later), [2, 5, 8])
    assert.equal(status.processed, 9)
    assert.equal(tracker.committable(), 9)
    assert.deepEqual(settled, [0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert.equal((yield* Effect.serviceOption(RecordContext))._tag, "None", "the fiber's own context is back")
  })))

test("Processor.inOrder: Effect.sync handlers, run in the loop itself, mix with handlers that run, in order; a throwing thunk is a defect", () =>
  quietly(Effect.gen(function*() {
    const seen: Array<string> = []
    const { processor, status, tracker, settled, records } = yield* setUp(
      (value) =>
        value.id % 2 === 0
          ? Effect.sync(() => void seen.push(`sync ${value.id}`))
          : Effect.map(RecordContext, (record) => void seen.push(`${record.offset}:${value.id}:${record.attempt}`)),
      { default: ErrorPolicy.halt },
    )
    yield* processor.inOrder(records(5))
    assert.deepEqual(seen, ["sync 0", "1:1:1", "sync 2", "3:3:1", "sync 4"])
    assert.equal(status.processed, 5)
    assert.equal(tracker.committable(), 5)
    assert.deepEqual(settled, [0, 1, 2, 3, 4])
    assert.equal((yield* Effect.serviceOption(RecordContext))._tag, "None", "the fiber's own context is back")

    const calls: Array<number> = []
    const dying = yield* setUp((value) =>
      Effect.sync(() => {
        calls.push(value.id)
        if (value.id === 1) throw new Error("boom")
      }), { default: ErrorPolicy.skip })
    const exit = yield* Effect.exit(dying.processor.inOrder(dying.records(3)))
    assert.ok(Exit.isFailure(exit) && exit.cause.reasons.some((reason) => reason._tag === "Die"), "a defect, not the skip policy")
    assert.deepEqual(calls, [0, 1], "run once each, nothing after the defect")
    assert.equal(dying.status.skipped, 0)
    assert.deepEqual(dying.settled, [0])
  })))

test("Processor.inOrder: an Effect.sync thunk, which cannot read RecordContext, never finds an earlier record's context in its fiber", () =>
  quietly(Effect.gen(function*() {
    const seen: Array<string> = []
    const { processor, records } = yield* setUp(
      (value) =>
        value.id % 2 === 0
          ? Effect.map(RecordContext, (record) => void seen.push(`effect ${record.offset}`))
          : Effect.sync(() => {
            const context = Fiber.getCurrent()!.context
            seen.push(`sync ${value.id} ${Context.getOption(context, RecordContext)._tag}`)
          }),
      { default: ErrorPolicy.halt },
    )
    yield* processor.inOrder(records(4))
    assert.deepEqual(seen, ["effect 0", "sync 1 None", "effect 2", "sync 3 None"])
  })))

test("Processor.inOrder: with a tracer that runs every primitive in its own context, Effect.sync handlers run in it", () =>
  quietly(Effect.gen(function*() {
    let inTracer = false
    const tracer = Tracer.make({
      span: (options) => Tracer.nativeTracer.span(options),
      context: (primitive, fiber) => {
        const outer = inTracer
        inTracer = true
        try {
          return primitive["~effect/Effect/evaluate"](fiber)
        } finally {
          inTracer = outer
        }
      },
    })
    const ran: Array<boolean> = []
    const { processor, status, records } = yield* setUp(() => Effect.sync(() => void ran.push(inTracer)), { default: ErrorPolicy.halt })
    yield* Effect.provideService(processor.inOrder(records(3)), Tracer.Tracer, tracer)
    assert.deepEqual(ran, [true, true, true])
    assert.equal(status.processed, 3)
  })))

test("Processor: with raw bytes for key and value (nothing to decode), the handler gets the record's own bytes", () =>
  quietly(Effect.gen(function*() {
    const seen: Array<unknown> = []
    const { processor, status, records } = yield* setUp(
      ((value: Uint8Array | null, key: Uint8Array | null) => Effect.sync(() => void seen.push([value, key]))) as never,
      { default: ErrorPolicy.halt },
      { rawValues: true },
    )
    const chunk = records(2)
    yield* processor.inOrder(chunk)
    assert.deepEqual(seen, chunk.map((record) => [record.value, null]))
    assert.equal(seen.length, 2)
    assert.ok((seen[0] as Array<unknown>)[0] === chunk[0]!.value, "the same bytes, not a copy")
    assert.equal(status.processed, 2)
  })))

test("Processor.inOrder books every record's duration: those ended in the loop's own step share its time, one that runs has its own", () =>
  quietly(Effect.gen(function*() {
    const { processor, status, durations, records } = yield* setUp(
      (value) => value.id === 2 ? Effect.sleep("2 seconds") : Effect.sync(() => {}),
      { default: ErrorPolicy.halt },
    )
    const fiber = yield* Effect.forkChild(processor.inOrder(records(5)))
    yield* TestClock.adjust("2 seconds")
    yield* Fiber.join(fiber)
    const state = durations.state()
    assert.equal(state.count, 5)
    assert.equal(state.sum, 2, "4 records in no time, one in 2 s")
    assert.equal(state.max, 2)
    assert.equal(status.processed, 5)
    assert.equal(status.lastProgress, 2000, "the last record's end, on the test clock")
  }).pipe(Effect.provide(TestClock.layer()))))

test("Processor: RecordContext's key and headers are the record's", () =>
  quietly(Effect.gen(function*() {
    const seen: Array<unknown> = []
    const { processor, tracker } = yield* setUp(
      () => Effect.map(RecordContext, (record) => void seen.push({ ...record, key: record.key, headers: record.headers })),
      { default: ErrorPolicy.halt },
    )
    tracker.track(0)
    tracker.track(1)
    const key = bytes("k")
    const headers = [{ key: "h", value: bytes("v") }]
    yield* processor.inOrder([{ ...recordOf(0, { id: 0 }), key, headers, timestamp: 7 }])
    yield* processor.handle({ ...recordOf(1, { id: 1 }), key: null, headers: [], timestamp: 8 })
    assert.deepEqual(seen, [
      { actor: "p", group: "p", topic: "t", partition: 0, offset: 0, key, headers, timestamp: 7, attempt: 1, delivery: "at-least-once" },
      { actor: "p", group: "p", topic: "t", partition: 0, offset: 1, key: null, headers: [], timestamp: 8, attempt: 1, delivery: "at-least-once" },
    ])
  })))

test("Processor.inOrder: a handler failing at once (an Exit) is retried in the record's context, attempt 2", () =>
  quietly(Effect.gen(function*() {
    const attempts: Array<string> = []
    let calls = 0
    const { processor, status, records } = yield* setUp(
      () =>
        ++calls === 2
          ? Effect.fail(new StoreError({ reason: "once" }))
          : Effect.map(RecordContext, (record) => void attempts.push(`${record.offset}:${record.attempt}`)),
      { StoreError: ErrorPolicy.retry(Schedule.spaced("1 second"), { then: "halt" }), default: ErrorPolicy.halt },
    )
    const fiber = yield* Effect.forkChild(processor.inOrder(records(3)))
    yield* TestClock.adjust("1 second")
    yield* Fiber.join(fiber)
    assert.deepEqual(attempts, ["0:1", "1:2", "2:1"])
    assert.equal(status.retried, 1)
    assert.equal(status.processed, 3)
  }).pipe(Effect.provide(TestClock.layer()))))

test("Processor retries on the policy's schedule with the attempt number, then settles the record", () =>
  quietly(Effect.gen(function*() {
    const attempts: Array<{ attempt: number; at: number }> = []
    const { processor, status, records } = yield* setUp(
      () =>
        Effect.gen(function*() {
          const record = yield* RecordContext
          attempts.push({ attempt: record.attempt, at: yield* Clock.currentTimeMillis })
          if (record.attempt < 3) return yield* Effect.fail(new StoreError({ reason: "down" }))
        }),
      { StoreError: ErrorPolicy.retry(Schedule.spaced("1 second"), { then: "halt" }), default: ErrorPolicy.halt },
    )
    const fiber = yield* Effect.forkChild(processor.inOrder(records(1)))
    yield* TestClock.adjust("1 second")
    assert.equal(status.state, "retrying")
    yield* TestClock.adjust("1 second")
    yield* Fiber.join(fiber)
    assert.deepEqual(attempts.map((a) => a.attempt), [1, 2, 3])
    assert.deepEqual(attempts.map((a) => a.at - attempts[0]!.at), [0, 1000, 2000])
    assert.equal(status.retried, 2)
    assert.equal(status.failed, 2)
    assert.equal(status.processed, 1)
    assert.equal(status.state, "running")
  }).pipe(Effect.provide(TestClock.layer()))))

test("Processor: skip and dead-letter settle the record; halt fails with Halted and leaves it uncompleted", () =>
  quietly(Effect.gen(function*() {
    const failing = (ids: ReadonlyArray<number>) => (value: { readonly id: number }) =>
      ids.includes(value.id) ? Effect.fail(new StoreError({ reason: `no ${value.id}` })) : Effect.void
    const skipping = yield* setUp(failing([1]), { StoreError: ErrorPolicy.skip, default: ErrorPolicy.halt })
    yield* skipping.processor.inOrder(skipping.records(3))
    assert.equal(skipping.status.skipped, 1)
    assert.equal(skipping.tracker.committable(), 3)

    const lettering = yield* setUp(failing([0]), { StoreError: ErrorPolicy.deadLetter, default: ErrorPolicy.halt })
    yield* lettering.processor.handle(lettering.records(1)[0]!)
    assert.deepEqual(lettering.paused, ["letter 0 StoreError 1", "resume policy"])
    assert.equal(lettering.tracker.committable(), 1)

    const halting = yield* setUp(failing([1]), { StoreError: ErrorPolicy.halt, default: ErrorPolicy.halt })
    const exit = yield* Effect.exit(halting.processor.inOrder(halting.records(3)))
    assert.ok(Exit.isFailure(exit))
    assert.equal(halting.status.lastError, `StoreError: {"reason":"no 1"}`)
    assert.equal(halting.tracker.committable(), 1, "nothing past the halted record")
    assert.deepEqual(halting.settled, [0])
  })))

test("Processor: a defect passes through to supervision; records that may not start are left alone", () =>
  quietly(Effect.gen(function*() {
    const dying = yield* setUp((value) => value.id === 1 ? Effect.die(new Error("boom")) : Effect.void, { default: ErrorPolicy.skip })
    const exit = yield* Effect.exit(dying.processor.inOrder(dying.records(3)))
    assert.ok(Exit.isFailure(exit) && exit.cause.reasons.some((reason) => reason._tag === "Die"), "a defect, not the skip policy")
    assert.equal(dying.status.skipped, 0)
    assert.deepEqual(dying.settled, [0])

    const handled: Array<number> = []
    const choosy = yield* setUp((value) => Effect.sync(() => void handled.push(value.id)), { default: ErrorPolicy.halt }, {
      startable: (record) => record.offset !== 1,
    })
    yield* choosy.processor.inOrder(choosy.records(3))
    assert.deepEqual(handled, [0, 2])
  })))
