/**
 * Partita's spans joining an application's own OpenTelemetry SDK through Tracing.layerGlobal:
 * a real SDK tracer provider with an in-memory exporter, and the W3C propagator registered
 * globally, as an application would.
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import * as otel from "@opentelemetry/api"
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core"
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace"
import { Effect, Layer, Schema, Tracer } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Producer from "../lib/Producer.ts"
import * as Tracing from "../lib/Tracing.ts"
import { createTopics, eventually, headerText, readAll } from "./fixtures/actors.ts"
import { run } from "./fixtures/effect.ts"

const exporter = new InMemorySpanExporter()
const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] })

before(() => {
  otel.trace.setGlobalTracerProvider(provider)
  otel.propagation.setGlobalPropagator(
    new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
  )
})
after(() => {
  otel.trace.disable()
  otel.propagation.disable()
})

const Order = Schema.Struct({ id: Schema.Number })

test("With Tracing.layerGlobal, Partita's spans are the application's OpenTelemetry spans, across hops", () =>
  run(
    Effect.gen(function*() {
      exporter.reset()
      yield* createTopics(["orders", 1], ["invoices", 1])
      const invoices = Producer.forTopic({ topic: "invoices", value: Order })
      let done = false
      const billing = Actor.make({
        name: "billing",
        topics: ["orders"],
        value: Order,
        handle: (order) => Effect.asVoid(invoices.send(order)),
        onError: { default: ErrorPolicy.halt },
      })
      const mailer = Actor.make({
        name: "mailer",
        topics: ["invoices"],
        value: Order,
        handle: () => Effect.sync(() => void (done = true)),
        onError: { default: ErrorPolicy.halt },
      })
      yield* ActorSystem.start([billing, mailer])
      // The application's own span, started with its own OpenTelemetry tracer, is the entry point.
      const entry = otel.trace.getTracer("app").startSpan("POST /orders")
      const entryContext = entry.spanContext()
      yield* Producer.forTopic({ topic: "orders", value: Order }).send({ id: 1 }).pipe(
        Effect.withParentSpan(Tracer.externalSpan({ traceId: entryContext.traceId, spanId: entryContext.spanId, sampled: true })),
      )
      entry.end()
      yield* eventually(10, "the second hop", () => done)
      yield* Effect.sleep("20 millis")
      const [record] = yield* readAll("orders", 1)

      const spans = exporter.getFinishedSpans()
      const byName = (name: string) => {
        const span = spans.find((s) => s.name === name)
        assert.ok(span, `the SDK exported "${name}"; it has ${spans.map((s) => s.name).join(", ")}`)
        return span
      }
      const send = byName("send orders")
      const process = byName("process orders")
      const sendInvoices = byName("send invoices")
      const processInvoices = byName("process invoices")
      assert.equal(send.spanContext().traceId, entryContext.traceId, "joined the application's trace")
      assert.equal(send.parentSpanContext?.spanId, entryContext.spanId)
      assert.equal(process.parentSpanContext?.spanId, send.spanContext().spanId)
      assert.equal(sendInvoices.parentSpanContext?.spanId, process.spanContext().spanId)
      assert.equal(processInvoices.parentSpanContext?.spanId, sendInvoices.spanContext().spanId)
      assert.deepEqual([send, process].map((s) => s.kind), [otel.SpanKind.PRODUCER, otel.SpanKind.CONSUMER])
      assert.equal(process.attributes["messaging.destination.name"], "orders")
      assert.equal(process.attributes["messaging.consumer.group.name"], "billing")
      assert.equal(
        headerText(record!.headers, "traceparent"),
        `00-${send.spanContext().traceId}-${send.spanContext().spanId}-01`,
        "the global propagator wrote the header",
      )
    }),
    Layer.mergeAll(Producer.layer(), Tracing.layerGlobal()).pipe(Layer.provideMerge(MemoryTransport.layer())),
  ))
