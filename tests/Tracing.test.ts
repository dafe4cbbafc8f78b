import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, Context, Data, Deferred, Effect, Exit, Layer, Schedule, Schema, Tracer } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import { extract, InboundState, parseTraceparent, traceparent } from "../lib/internal/traceContext.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Ordering from "../lib/Ordering.ts"
import * as Producer from "../lib/Producer.ts"
import { RecordContext } from "../lib/RecordContext.ts"
import * as Tracing from "../lib/Tracing.ts"
import { Transport } from "../lib/Transport.ts"
import { createTopics, eventually, headerText, readAll } from "./fixtures/actors.ts"
import { bytes, run } from "./fixtures/effect.ts"
import { makeRecorder, parentId, type RecordedSpan } from "./fixtures/spans.ts"

const Order = Schema.Struct({ id: Schema.Number })
type Order = typeof Order.Type
class Flaky extends Data.TaggedError("Flaky")<{}> {}

const traced = (recorder: ReturnType<typeof makeRecorder>, settings?: Parameters<typeof Tracing.layer>[0]) =>
  Layer.mergeAll(Producer.layer(), Tracing.layer(settings), recorder.layer).pipe(Layer.provideMerge(MemoryTransport.layer()))

/** One record sent with a typed producer to "orders" and handled by an actor named `name`. */
const sendOneAndHandle = (name: string) =>
  Effect.gen(function*() {
    let done = false
    const actor = Actor.make({
      name,
      topics: ["orders"],
      value: Order,
      handle: () => Effect.sync(() => void (done = true)),
      onError: { default: ErrorPolicy.halt },
    })
    yield* ActorSystem.start([actor])
    yield* Producer.forTopic({ topic: "orders", value: Order }).send({ id: 1 })
    yield* eventually(10, "handled", () => done)
  })

const named = (spans: ReadonlyArray<RecordedSpan>, name: string) => spans.filter((span) => span.name === name)

test("A record entering through a traced entry point forms one trace across two actor hops", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 2], ["invoices", 1])
      const orders = Producer.forTopic({ topic: "orders", key: Schema.String, value: Order })
      const invoices = Producer.forTopic({ topic: "invoices", value: Order })
      let invoiced = 0
      const billing = Actor.make({
        name: "billing",
        topics: ["orders"],
        value: Order,
        handle: (order: Order) => Effect.asVoid(invoices.send(order)),
        onError: { default: ErrorPolicy.halt },
      })
      const mailer = Actor.make({
        name: "mailer",
        topics: ["invoices"],
        value: Order,
        handle: () => Effect.sync(() => invoiced++),
        onError: { default: ErrorPolicy.halt },
      })
      yield* ActorSystem.start([billing, mailer])
      yield* orders.send({ id: 7 }, { key: "customer-1" }).pipe(Effect.withSpan("POST /orders", { kind: "server" }))
      yield* eventually(10, "the second hop", () => invoiced === 1)
      yield* Effect.sleep("20 millis")

      const spans = recorder.spans
      const [entry] = named(spans, "POST /orders")
      const [sendOrders] = named(spans, "send orders")
      const [processOrders] = named(spans, "process orders")
      const [sendInvoices] = named(spans, "send invoices")
      const [processInvoices] = named(spans, "process invoices")
      for (const span of [entry, sendOrders, processOrders, sendInvoices, processInvoices]) assert.ok(span, "every hop has its span")
      assert.equal(new Set([entry, sendOrders, processOrders, sendInvoices, processInvoices].map((s) => s!.traceId)).size, 1, "one trace")
      assert.equal(parentId(sendOrders!), entry!.spanId)
      assert.equal(parentId(processOrders!), sendOrders!.spanId)
      assert.equal(parentId(sendInvoices!), processOrders!.spanId)
      assert.equal(parentId(processInvoices!), sendInvoices!.spanId)
      assert.deepEqual([sendOrders, processOrders, sendInvoices, processInvoices].map((s) => s!.kind), ["producer", "consumer", "producer", "consumer"])

      assert.deepEqual(Object.fromEntries(sendOrders!.attributes), {
        "server.address": "memory",
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "orders",
        "messaging.kafka.message.key": "customer-1",
        "messaging.destination.partition.id": String(processOrders!.attributes.get("messaging.destination.partition.id")),
        "messaging.kafka.offset": 0,
      })
      const process = Object.fromEntries(processOrders!.attributes)
      assert.equal(process["messaging.system"], "kafka")
      assert.equal(process["messaging.operation.name"], "process")
      assert.equal(process["messaging.operation.type"], "process")
      assert.equal(process["messaging.destination.name"], "orders")
      assert.equal(process["messaging.consumer.group.name"], "billing")
      assert.equal(process["messaging.kafka.offset"], 0)
      assert.equal(process["messaging.kafka.message.key"], "customer-1")
      assert.equal(process["messaging.kafka.message.tombstone"], undefined, "only set when true")
      assert.equal(process["messaging.kafka.consumer.group"], undefined, "not the deprecated name")
      assert.equal(process["messaging.kafka.message.offset"], undefined, "not the deprecated name")
      assert.equal(processInvoices!.attributes.get("messaging.kafka.message.key"), undefined, "never set for a null key")

      const polls = named(spans, "poll orders")
      assert.ok(polls.length >= 1)
      assert.equal(polls[0]!.kind, "client")
      assert.equal(polls[0]!.attributes.get("messaging.batch.message_count"), 1)
      assert.deepEqual(polls[0]!.links.map((link) => link.span.spanId), [sendOrders!.spanId], "poll links the records' contexts")
      assert.ok(named(spans, "commit orders").every((span) => span.kind === "client"))
    }),
    traced(recorder),
  )
})

test("A retried record shows its attempts on its process span, and a dead-lettered one's letter links to it", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 1], ["orders.dlq", 1])
      const actor = Actor.make({
        name: "flaky",
        topics: ["orders"],
        value: Order,
        handle: () => Effect.fail(new Flaky()),
        onError: { Flaky: ErrorPolicy.retry(Schedule.spaced("5 millis"), { times: 2, then: "dead-letter" }), DecodeError: ErrorPolicy.deadLetter, HandlerTimeout: ErrorPolicy.halt },
        deadLetter: { topic: "orders.dlq" },
      })
      const orders = Producer.forTopic({ topic: "orders", value: Order })
      yield* ActorSystem.start([actor])
      yield* orders.send({ id: 1 })
      const [letter] = yield* readAll("orders.dlq", 1)
      yield* Effect.sleep("20 millis")
      const spans = recorder.spans
      const [original] = named(spans, "send orders")
      const [process] = named(spans, "process orders")
      assert.deepEqual(process!.events.map(([name, , attributes]) => [name, attributes["messaging.retry.attempt"], attributes["error.type"]]), [
        ["retry", 2, "Flaky"],
        ["retry", 3, "Flaky"],
      ])
      assert.equal(process!.attributes.get("partita.outcome"), "dead_lettered")
      const [dlqSend] = named(spans, "send orders.dlq")
      assert.equal(parentId(dlqSend!), process!.spanId, "the letter is sent within the record's processing")
      assert.deepEqual(dlqSend!.links.map((link) => link.span.spanId), [original!.spanId], "and links to the original record's context")
      // The letter carries the original record's headers, traceparent included, and its own.
      assert.equal(headerText(letter!.headers, "traceparent"), traceparent(original!))
    }),
    traced(recorder),
  )
})

test("128 partition actors handling 10k records produce no span with a wrong parent", { timeout: 120_000 }, () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["load", 128])
      const mismatches: Array<string> = []
      let handled = 0
      const actor = Actor.make({
        name: "load",
        topics: ["load"],
        value: Order,
        handle: (order: Order) =>
          Effect.gen(function*() {
            const record = yield* RecordContext
            const span = yield* Effect.currentSpan
            const parent = span.parent._tag === "Some" ? span.parent.value : undefined
            // The handler's own span sits under this record's process span, and nowhere else.
            if (
              parent?._tag !== "Span" || parent.name !== "process load" ||
              parent.attributes.get("messaging.kafka.offset") !== record.offset ||
              parent.attributes.get("messaging.destination.partition.id") !== String(record.partition)
            ) mismatches.push(`${record.partition}@${record.offset} (order ${order.id})`)
            yield* Effect.yieldNow
            handled++
          }).pipe(Effect.withSpan("handle order")),
        onError: { default: ErrorPolicy.halt },
        ordering: Ordering.unordered({ concurrency: 8 }),
      })
      const producer = yield* Producer.Producer
      yield* ActorSystem.start([actor])
      const orders = Producer.forTopic({ topic: "load", value: Order })
      yield* Effect.forEach(Array.from({ length: 10_000 }, (_, id) => id), (id) =>
        orders.send({ id }, { partition: id % 128 }).pipe(Effect.withSpan(`request ${id}`)), { concurrency: 64, discard: true })
      void producer
      yield* eventually(60, "10k records", () => handled === 10_000)
      assert.deepEqual(mismatches, [])
      // Every process span's parent is the send span whose context its record carried.
      const sends = new Map(named(recorder.spans, "send load").map((span) => [span.spanId, span]))
      const processes = named(recorder.spans, "process load")
      assert.equal(processes.length, 10_000)
      const wrong = processes.filter((span) => {
        const send = sends.get(parentId(span) ?? "")
        return send === undefined || send.traceId !== span.traceId ||
          send.attributes.get("messaging.kafka.offset") !== span.attributes.get("messaging.kafka.offset")
      })
      assert.equal(wrong.length, 0, `${wrong.length} process spans with a wrong parent`)
    }),
    traced(recorder),
  )
})

test("A malformed traceparent starts a new root trace and never fails the record", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 1])
      const transport = yield* Transport
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "tolerant",
        topics: ["orders"],
        value: Order,
        handle: (order: Order) => Effect.sync(() => handled.push(order.id)),
        onError: { default: ErrorPolicy.halt },
      })
      yield* ActorSystem.start([actor])
      const malformed = ["00-xyz-abc-01", "ff-" + "a".repeat(32) + "-" + "b".repeat(16) + "-01", "00-" + "0".repeat(32) + "-" + "b".repeat(16) + "-01"]
      yield* transport.send([
        ...malformed.map((value, id) => ({ topic: "orders", key: null, value: bytes(JSON.stringify({ id })), headers: [{ key: "traceparent", value: bytes(value) }] })),
        { topic: "orders", key: null, value: bytes(`{"id":3}`), headers: [{ key: "traceparent", value: Uint8Array.from([0xff, 0xfe]) }] },
        { topic: "orders", key: null, value: bytes(`{"id":4}`), headers: [{ key: "TraceParent", value: bytes(`00-${"a".repeat(32)}-${"b".repeat(16)}-01`) }] },
      ])
      yield* eventually(10, "all five", () => handled.length === 5)
      const processes = named(recorder.spans, "process orders")
      assert.deepEqual(processes.slice(0, 4).map((span) => span.parent._tag), ["None", "None", "None", "None"], "malformed: new roots")
      assert.equal(parentId(processes[4]!), "b".repeat(16), "header names match case-insensitively")
      assert.equal(processes[4]!.traceId, "a".repeat(32))
    }),
    traced(recorder),
  )
})

test("A record's process span ends, marked interrupted, when a shutdown past its deadline interrupts the handler", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 1])
      const transport = yield* Transport
      const started = yield* Deferred.make<void>()
      const actor = Actor.make({
        name: "stuck",
        topics: ["orders"],
        value: Order,
        handle: () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never),
        onError: { default: ErrorPolicy.halt },
      })
      yield* transport.send([{
        topic: "orders",
        key: null,
        value: bytes(`{"id":1}`),
        headers: [{ key: "traceparent", value: bytes(`00-${"a".repeat(32)}-${"b".repeat(16)}-01`) }],
      }])
      const stopped = yield* Effect.exit(Effect.scoped(
        Effect.andThen(ActorSystem.start([actor], { shutdownDeadline: "50 millis" }), Deferred.await(started)),
      ))
      assert.ok(Exit.isFailure(stopped), "a shutdown past its deadline says so")
      const [process] = named(recorder.spans, "process orders")
      assert.ok(process !== undefined)
      assert.equal(process.status._tag, "Ended", "the span is ended, so it is exported")
      assert.ok(process.status._tag === "Ended" && Exit.isFailure(process.status.exit) && Cause.hasInterruptsOnly(process.status.exit.cause))
    }),
    traced(recorder),
  )
})

test("Consumers can link to the producer's span instead of continuing its trace", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 1])
      yield* sendOneAndHandle("linker")
      yield* Effect.sleep("10 millis")
      const [send] = named(recorder.spans, "send orders")
      const [process] = named(recorder.spans, "process orders")
      assert.equal(process!.parent._tag, "None")
      assert.notEqual(process!.traceId, send!.traceId)
      assert.deepEqual(process!.links.map((link) => link.span.spanId), [send!.spanId])
    }),
    traced(recorder, { consumerParent: "link" }),
  )
})

test("A context the caller put in the headers is left alone; tracestate and baggage travel on", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["in", 1], ["out", 1])
      const producer = yield* Producer.Producer
      const callers = `00-${"c".repeat(32)}-${"d".repeat(16)}-01`
      const [metadata] = yield* producer.sendAll([{
        topic: "in",
        key: null,
        value: bytes(`{"id":1}`),
        headers: [
          { key: "traceparent", value: bytes(callers) },
          { key: "tracestate", value: bytes("vendor=1") },
          { key: "baggage", value: bytes("user=emma") },
        ],
      }])
      assert.ok(metadata)
      const forward = Producer.forTopic({ topic: "out", value: Order })
      const actor = Actor.make({
        name: "forwarder",
        topics: ["in"],
        value: Order,
        handle: (order: Order) => Effect.asVoid(forward.send(order)),
        onError: { default: ErrorPolicy.halt },
      })
      yield* ActorSystem.start([actor])
      const [forwarded] = yield* readAll("out", 1)
      const [inRecord] = yield* readAll("in", 1)
      assert.equal(headerText(inRecord!.headers, "traceparent"), callers, "left alone")
      const [send] = named(recorder.spans, "send out")
      assert.equal(send!.traceId, "c".repeat(32), "the caller's trace continues")
      assert.equal(headerText(forwarded!.headers, "traceparent"), traceparent(send!))
      assert.equal(headerText(forwarded!.headers, "tracestate"), "vendor=1")
      assert.equal(headerText(forwarded!.headers, "baggage"), "user=emma")
    }),
    traced(recorder),
  )
})

test("With tracing off there are no Partita spans and no trace headers", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 1])
      yield* sendOneAndHandle("untraced")
      const [record] = yield* readAll("orders", 1)
      assert.equal(headerText(record!.headers, "traceparent"), null)
      assert.deepEqual(recorder.spans.filter((span) => /^(send|process|poll|commit) /.test(span.name)), [])
    }),
    Layer.mergeAll(Producer.layer(), recorder.layer).pipe(Layer.provideMerge(MemoryTransport.layer())),
  )
})

test("parseTraceparent accepts W3C trace contexts and refuses everything else", () => {
  const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
  const span = "00f067aa0ba902b7"
  assert.deepEqual(parseTraceparent(`00-${trace}-${span}-01`), { traceId: trace, spanId: span, sampled: true })
  assert.deepEqual(parseTraceparent(`00-${trace}-${span}-00`), { traceId: trace, spanId: span, sampled: false })
  assert.deepEqual(parseTraceparent(`01-${trace}-${span}-01-future`), { traceId: trace, spanId: span, sampled: true }, "a later version may add fields")
  for (const bad of [undefined, "", `00-${trace}-${span}`, `00-${trace}-${span}-01-extra`, `00-${trace.toUpperCase()}-${span}-01`, `ff-${trace}-${span}-01`, `00-${"0".repeat(32)}-${span}-01`, `00-${trace}-${"0".repeat(16)}-01`, `00-${trace}-${span}-zz`]) {
    assert.equal(parseTraceparent(bad), undefined, String(bad))
  }
})

test("extract reads the trace context from header bytes, as parseTraceparent reads text, header names in any case", () => {
  const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
  const span = "00f067aa0ba902b7"
  const read = (value: string | null, key = "traceparent", more: ReadonlyArray<{ key: string; value: Uint8Array | null }> = []) => {
    const found = extract([...more, { key, value: value === null ? null : new TextEncoder().encode(value) }])
    return found === undefined ? undefined : { traceId: found.traceId, spanId: found.spanId, sampled: found.sampled }
  }
  for (const flags of ["00", "01", "02", "03", "0f", "ff", "a0"]) {
    const value = `00-${trace}-${span}-${flags}`
    assert.deepEqual(read(value), parseTraceparent(value), value)
    assert.equal(read(value)?.sampled, (Number.parseInt(flags, 16) & 1) === 1, value)
  }
  assert.deepEqual(read(`00-${trace}-${span}-01`, "TraceParent"), { traceId: trace, spanId: span, sampled: true })
  assert.deepEqual(read(` 00-${trace}-${span}-01 `), { traceId: trace, spanId: span, sampled: true }, "padding still reads")
  assert.deepEqual(read(`01-${trace}-${span}-01-future`), { traceId: trace, spanId: span, sampled: true })
  for (const bad of [null, "", `00-${trace}-${span}`, `00-${trace}-${span}-01-extra`, `00-${trace.toUpperCase()}-${span}-01`, `ff-${trace}-${span}-01`, `00-${"0".repeat(32)}-${span}-01`, `00-${trace}-${"0".repeat(16)}-01`, `00-${trace}-${span}-zz`, `00-${trace}-${span}-0G`, `00_${trace}_${span}_01`]) {
    assert.equal(read(bad), undefined, String(bad))
  }
  const first = read(`00-${trace}-${span}-01`, "traceparent", [{ key: "other", value: null }])
  assert.equal(first?.spanId, span, "found among other headers")
  const state = extract([
    { key: "Tracestate", value: new TextEncoder().encode("vendor=1") },
    { key: "traceparent", value: new TextEncoder().encode(`00-${trace}-${span}-01`) },
    { key: "tracestate", value: new TextEncoder().encode("second=2") },
  ])
  assert.ok(state !== undefined)
  assert.equal(Context.getOrUndefined(state.annotations, InboundState)?.tracestate, "vendor=1", "the first tracestate counts")
})

test("Tracing.withSampler samples roots by the sampler and children as their parent", () => {
  const decide = (sampler: Tracing.Sampler, parent: boolean | undefined, ratio?: number) => {
    let seen: boolean | undefined
    const inner = Tracer.make({ span: (options) => (seen = options.sampled, Tracer.nativeTracer.span(options)) })
    const tracer = Tracing.withSampler(inner, sampler, ratio)
    const parentSpan = parent === undefined ? undefined : Tracer.externalSpan({ traceId: "a".repeat(32), spanId: "b".repeat(16), sampled: parent })
    tracer.span({
      name: "x",
      parent: parentSpan === undefined ? { _tag: "None" } as never : { _tag: "Some", value: parentSpan } as never,
      annotations: Context.empty(),
      links: [],
      startTime: 0n,
      kind: "internal",
      root: parentSpan === undefined,
      sampled: true,
    })
    return seen
  }
  assert.equal(decide("always_off", undefined), false)
  assert.equal(decide("always_on", false), true, "not parent-based: the parent is ignored")
  assert.equal(decide("parentbased_always_on", false), false)
  assert.equal(decide("parentbased_always_off", true), true)
  assert.equal(decide("parentbased_always_off", undefined), false)
  assert.equal(decide("traceidratio", undefined, 0), false)
  assert.equal(decide("traceidratio", undefined, 1), true)
})

test("Tracing.layerFromEnv is off without an endpoint and refuses settings it cannot use, with a typed error", () =>
  run(
    Effect.gen(function*() {
      const off = yield* Effect.provide(Effect.map(Tracing.Settings, (settings) => settings.enabled), Tracing.layerFromEnv({}, {}))
      assert.equal(off, false)
      const on = yield* Effect.provide(
        Effect.map(Tracing.Settings, (settings) => settings.enabled),
        Tracing.layerFromEnv({}, {
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
          OTEL_SERVICE_NAME: "test",
          OTEL_BSP_MAX_QUEUE_SIZE: "4096",
          OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "1024",
          OTEL_BSP_SCHEDULE_DELAY: "500",
          OTEL_BSP_EXPORT_TIMEOUT: "10000",
        }),
      )
      assert.equal(on, true)
      const sampler = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_TRACES_SAMPLER: "jaeger_remote",
      }))))
      assert.equal(sampler._tag, "InvalidTracingConfig")
      assert.match(sampler.message, /^OTEL_TRACES_SAMPLER is "jaeger_remote": expected one of always_on, /)
      const ratio = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_TRACES_SAMPLER: "traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "half",
      }))))
      assert.equal(ratio.message, `OTEL_TRACES_SAMPLER_ARG is "half": expected a number from 0 to 1`)
      const grpc = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4317",
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      }))))
      assert.equal(grpc.message, `OTEL_EXPORTER_OTLP_PROTOCOL is "grpc": expected http/protobuf or http/json (gRPC is not supported)`)
      const tracesOnly = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/thrift",
      }))))
      assert.equal(tracesOnly.variable, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "the traces setting wins")
      const queue = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_BSP_MAX_QUEUE_SIZE: "0",
      }))))
      assert.equal(queue.message, `OTEL_BSP_MAX_QUEUE_SIZE is "0": expected a whole number from 1`)
      const delay = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_BSP_SCHEDULE_DELAY: "soon",
      }))))
      assert.equal(delay.message, `OTEL_BSP_SCHEDULE_DELAY is "soon": expected a whole number of milliseconds from 1`)
      const noTimeout = yield* Effect.flip(Effect.scoped(Layer.build(Tracing.layerFromEnv({}, {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_BSP_EXPORT_TIMEOUT: "0",
      }))))
      assert.equal(noTimeout.message, `OTEL_BSP_EXPORT_TIMEOUT is "0": expected a whole number of milliseconds from 1`)
    }),
    Layer.empty,
  ))

test("A batch handler's batch has one process span, with the batch's size and a link to each record's context", () => {
  const recorder = makeRecorder()
  return run(
    Effect.gen(function*() {
      yield* createTopics(["orders", 1], ["orders.dlq", 1])
      const orders = Producer.forTopic({ topic: "orders", value: Order })
      let handled = 0
      let retried = false
      const actor = Actor.make({
        name: "bulk",
        topics: ["orders"],
        value: Order,
        handleBatch: (records) =>
          Effect.gen(function*() {
            // The batch span is the handler's parent, as a record's is for `handle`.
            yield* Effect.withSpan(Effect.void, "insert rows")
            if (!retried) {
              retried = true
              return yield* Effect.fail(new Flaky())
            }
            handled += records.length
          }),
        batch: { maxRecords: 3, maxWait: "5 seconds" },
        onError: { Flaky: ErrorPolicy.retry(Schedule.spaced("5 millis"), { times: 1, then: "dead-letter" }), DecodeError: ErrorPolicy.deadLetter },
        deadLetter: { topic: "orders.dlq" },
      })
      for (const id of [1, 2, 3]) yield* orders.send({ id })
      yield* ActorSystem.start([actor])
      yield* eventually(10, "the batch handled", () => handled === 3)
      yield* Effect.sleep("20 millis")
      const sends = named(recorder.spans, "send orders")
      const processes = named(recorder.spans, "process orders")
      assert.equal(sends.length, 3)
      assert.equal(processes.length, 1, "one span for the batch, not one per record")
      const [process] = processes
      assert.equal(process!.kind, "consumer")
      assert.equal(parentId(process!), undefined, "a batch has no one parent")
      assert.equal(process!.attributes.get("messaging.batch.message_count"), 3)
      assert.equal(process!.attributes.get("messaging.operation.type"), "process")
      assert.deepEqual(process!.links.map((link) => link.span.spanId), sends.map((send) => send.spanId), "a link to each record's context")
      assert.deepEqual(process!.links.map((link) => link.attributes["messaging.kafka.offset"]), [0, 1, 2])
      assert.deepEqual(process!.events.map(([name, , attributes]) => [name, attributes["messaging.retry.attempt"]]), [["retry", 2]])
      const inserts = named(recorder.spans, "insert rows")
      assert.equal(inserts.length, 2, "one per try")
      for (const insert of inserts) assert.equal(parentId(insert), process!.spanId)
      assert.equal(process!.status._tag, "Ended")
    }),
    traced(recorder),
  )
})
