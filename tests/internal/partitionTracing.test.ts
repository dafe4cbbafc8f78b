import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, Clock, Context, Effect, Exit, Option, Tracer } from "effect"
import { noHooks } from "../../lib/internal/partitionHooks.ts"
import * as PartitionTracing from "../../lib/internal/partitionTracing.ts"
import * as Tracing from "../../lib/Tracing.ts"
import type { ConsumerRecord } from "../../lib/Transport.ts"
import * as TransportErrors from "../../lib/TransportError.ts"
import { bytes } from "../fixtures/effect.ts"
import { makeRecorder, parentId } from "../fixtures/spans.ts"

const producerSpan = Tracer.nativeTracer.span({
  name: "send orders",
  parent: Option.none(),
  annotations: Context.empty(),
  links: [],
  startTime: 0n,
  kind: "producer",
  root: true,
  sampled: true,
})

const record = (offset: number, traced: boolean): ConsumerRecord => ({
  topic: "orders",
  partition: 2,
  offset,
  key: bytes(`k${offset}`),
  value: offset === 1 ? null : bytes("{}"),
  headers: traced ? Tracing.w3c.inject([], producerSpan) : [],
  timestamp: 0,
})

const hooksWith = (settings: Partial<Tracing.Settings> = {}) =>
  Effect.gen(function*() {
    const recorder = makeRecorder()
    const tracer = yield* Effect.provide(Effect.tracer, recorder.layer)
    const hooks = PartitionTracing.make({
      topic: "orders",
      settings: { enabled: true, consumerParent: "parent", producerSpans: true, propagator: Tracing.w3c, ...settings },
      tracer,
      clock: yield* Clock.Clock,
      attributes: { "messaging.system": "kafka", "messaging.destination.name": "orders" },
    })
    return { hooks, spans: recorder.spans, layer: recorder.layer }
  })

test("No hooks: disabled, and each hook leaves what it wraps alone", () =>
  Effect.runPromise(Effect.gen(function*() {
    assert.equal(noHooks.enabled, false)
    assert.equal(noHooks.onRecordStart(record(0, true)), undefined)
    const commit = Effect.succeed(undefined)
    assert.equal(noHooks.onCommit(3, commit), commit)
    assert.equal(noHooks.onDeadLetter(record(0, true), commit), commit)
  })))

test("Tracing hooks: a process span per record, child of the producer's span, with the record's attributes and outcome", () =>
  Effect.runPromise(Effect.gen(function*() {
    const { hooks, spans } = yield* hooksWith()
    assert.equal(hooks.enabled, true)
    const span = hooks.onRecordStart(record(0, true))!
    const end = hooks.onRecordEnd(span, Exit.void, "handled")
    const second = hooks.onRecordStart(record(1, false), end)!
    hooks.onRecordEnd(second, Exit.void, "skipped")
    const [first, next] = spans
    assert.equal(first!.name, "process orders")
    assert.equal(first!.kind, "consumer")
    assert.equal(parentId(first!), producerSpan.spanId)
    assert.equal(first!.attributes.get("messaging.kafka.offset"), 0)
    assert.equal(first!.attributes.get("messaging.kafka.message.key"), "k0")
    assert.equal(first!.attributes.get("messaging.destination.name"), "orders")
    assert.equal(first!.attributes.get("partita.outcome"), undefined, "handled is the default")
    assert.equal(next!.status._tag === "Ended" && next!.status.startTime, end, "the next record starts where the last ended")
    assert.equal(next!.attributes.get("messaging.kafka.message.tombstone"), true)
    assert.equal(next!.attributes.get("partita.outcome"), "skipped")
    assert.equal(parentId(next!), undefined, "no context in the headers: a root span")
  })))

test("Tracing hooks: with consumerParent link, the process span links to the producer's span; a halt sets error.type", () =>
  Effect.runPromise(Effect.gen(function*() {
    const { hooks, spans } = yield* hooksWith({ consumerParent: "link" })
    const span = hooks.onRecordStart(record(0, true))!
    hooks.onRecordEnd(span, Exit.fail({ _tag: "Halted" }), "handled")
    assert.equal(parentId(spans[0]!), undefined)
    assert.deepEqual(spans[0]!.links.map((link) => link.span.spanId), [producerSpan.spanId])
    assert.equal(spans[0]!.attributes.get("error.type"), "Halted")
    hooks.onRecordEnd(hooks.onRecordStart(record(2, false))!, Exit.failCause(Cause.die("boom")), "handled")
    assert.equal(spans[1]!.attributes.get("error.type"), "_OTHER")
  })))

test("Tracing hooks: a poll span per batch linking the records' contexts; a commit span with its offset and error code", () =>
  Effect.runPromise(Effect.gen(function*() {
    const { hooks, spans } = yield* hooksWith()
    hooks.onPollStart()
    hooks.onPoll([record(0, true), record(1, false)])
    const poll = spans[0]!
    assert.equal(poll.name, "poll orders")
    assert.equal(poll.kind, "client")
    assert.equal(poll.attributes.get("messaging.batch.message_count"), 2)
    assert.deepEqual(poll.links.map((link) => link.span.spanId), [producerSpan.spanId])
    const { hooks: committing, spans: commits, layer } = yield* hooksWith()
    const refused = TransportErrors.make("REBALANCE_IN_PROGRESS", "commit", "rebalancing")
    const exit = yield* Effect.exit(Effect.provide(committing.onCommit(7, Effect.fail(refused)), layer))
    assert.ok(Exit.isFailure(exit), "the commit's failure passes through")
    const [commit] = commits
    assert.equal(commit!.name, "commit orders")
    assert.equal(commit!.kind, "client")
    assert.equal(commit!.attributes.get("messaging.kafka.offset"), 7)
    assert.equal(commit!.attributes.get("messaging.operation.type"), "settle")
    assert.equal(commit!.attributes.get("error.type"), "REBALANCE_IN_PROGRESS")
  })))
