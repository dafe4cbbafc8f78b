import assert from "node:assert/strict"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { test } from "node:test"
import { Data, Effect, Fiber, Layer, Tracer } from "effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import type * as HttpClient from "effect/http/HttpClient"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpResource from "effect/observability/OtlpResource"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as EffectOtlpTracer from "effect/observability/OtlpTracer"
import * as OtlpTracer from "../../lib/internal/otlpTracer.ts"
import * as TraceContext from "../../lib/internal/traceContext.ts"

class Refused extends Data.TaggedError("Refused")<{ readonly reason: string }> {}

/** Every kind of span content: attribute types, events, links, a child, a failure, an interruption. */
const program = Effect.gen(function*() {
  yield* Effect.withSpan(
    Effect.gen(function*() {
      yield* Effect.annotateCurrentSpan({
        text: "quoted \"and\" escaped\n ü",
        integer: 7,
        negative: -3,
        float: 1.5,
        huge: 2 ** 60,
        flag: true,
        big: 123n,
        list: ["a", 1, false],
      })
      const span = yield* Effect.currentSpan
      span.event("retry", 1_000n, { "messaging.retry.attempt": 2, "error.type": "StoreError" })
      span.event("bare", 2_000n)
      yield* Effect.withSpan(Effect.void, "child", { kind: "producer" })
    }),
    "parent",
    {
      kind: "consumer",
      links: [{
        span: Tracer.externalSpan({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" }),
        attributes: { "partita.link": "dead-lettered record" },
      }],
    },
  )
  // Continuing a trace that came in with a record, and linking to another: ids read from header bytes.
  const inbound = (traceparent: string) =>
    TraceContext.extract([{ key: "traceparent", value: new TextEncoder().encode(traceparent) }])!
  yield* Effect.withSpan(Effect.withSpan(Effect.void, "inbound grandchild"), "inbound child", {
    parent: inbound("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    links: [{ span: inbound("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), attributes: {} }],
    kind: "consumer",
  })
  yield* Effect.ignore(Effect.withSpan(Effect.fail(new Refused({ reason: "no" })), "fails", { kind: "client" }))
  const hanging = yield* Effect.forkChild(Effect.withSpan(Effect.never, "interrupted"))
  yield* Effect.yieldNow
  yield* Fiber.interrupt(hanging)
})

/** What a tracer layer sends for `program`, as parsed JSON bodies, ids and times replaced. */
const capture = async (
  tracer: (url: string) => Layer.Layer<
    never,
    never,
    OtlpExporter.Flusher | HttpClient.HttpClient | OtlpSerialization.OtlpSerialization
  >,
) => {
  const bodies: Array<string> = []
  const server = createServer((request, response) => {
    let body = ""
    request.setEncoding("utf8")
    request.on("data", (chunk: string) => body += chunk)
    request.on("end", () => {
      bodies.push(body)
      response.writeHead(200, { "content-type": "application/json" }).end("{}")
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`
    // The layer's scope closes when the program ends: that is when the batch is sent.
    await Effect.runPromise(program.pipe(
      Effect.provide(tracer(url)),
      Effect.provide(Layer.mergeAll(OtlpExporter.layerFlusher, OtlpSerialization.layerJson, FetchHttpClient.layer)),
    ))
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  const ids = new Map<string, string>()
  const stable = (_key: string, value: unknown) => {
    if (_key === "traceId" || _key === "spanId" || _key === "parentSpanId") {
      const id = String(value)
      if (!ids.has(id)) ids.set(id, `id${ids.size}`)
      return ids.get(id)
    }
    if (/TimeUnixNano$|^timeUnixNano$/.test(_key)) return "time"
    return value
  }
  return bodies.map((body) => JSON.parse(body, stable) as unknown)
}

test("Partita's OTLP tracer sends, as JSON, what Effect's OTLP tracer sends for the same spans", async () => {
  const resource = { serviceName: "otlp-test" }
  const effect = await capture((url) =>
    Layer.effect(Tracer.Tracer, EffectOtlpTracer.make({ url, resource, exportInterval: "1 hour" }))
  )
  const lean = await capture((url) =>
    Layer.effect(Tracer.Tracer, OtlpTracer.make({ url, resource, exportInterval: "1 hour", protocol: "http/json" }))
  )
  assert.equal(effect.length, 1, "one batch, sent when the scope closed")
  // Stack traces differ by the frames each tracer adds; everything else must match.
  const withoutStacks = (bodies: Array<unknown>) =>
    JSON.parse(JSON.stringify(bodies).replace(/"exception\.stacktrace","value":\{"stringValue":"(?:[^"\\]|\\.)*"/g, '"exception.stacktrace","value":{"stringValue":"…"'))
  assert.deepEqual(withoutStacks(lean), withoutStacks(effect))
  assert.match(JSON.stringify(lean), /exception\.stacktrace","value":\{"stringValue":"Refused/, "the failure's stack is sent")
})

test("Shared attributes are written like any others, and a span's own value for one of them wins", () => {
  const shared = new OtlpTracer.SharedAttributes({ "messaging.system": "kafka", "messaging.destination.name": "orders" })
  const span = OtlpTracer.makeSpan({
    name: "process orders",
    parent: { _tag: "None" } as never,
    annotations: undefined as never,
    links: [],
    startTime: 1n,
    kind: "consumer",
    root: true,
    sampled: true,
  })
  OtlpTracer.setAll(span, shared)
  span.attribute("messaging.kafka.offset", 42)
  assert.deepEqual([...span.attributes], [["messaging.system", "kafka"], ["messaging.destination.name", "orders"], ["messaging.kafka.offset", 42]])
  span.attribute("messaging.destination.name", "renamed")
  span.end(2n, { _tag: "Success", value: undefined } as never)
  const written = JSON.parse(OtlpTracer.spanToJson(span)) as { attributes: Array<{ key: string; value: unknown }> }
  assert.deepEqual(written.attributes, [
    { key: "messaging.kafka.offset", value: { intValue: 42 } },
    { key: "messaging.system", value: { stringValue: "kafka" } },
    { key: "messaging.destination.name", value: { stringValue: "renamed" } },
  ])
})

test("Partita's OTLP/protobuf body is Effect's protobuf encoding of the same spans, byte for byte", async () => {
  const spans: Array<Tracer.Span> = []
  const collecting = Tracer.make({
    span: (options) => {
      const span = OtlpTracer.makeSpan(options)
      spans.push(span)
      return span
    },
  })
  await Effect.runPromise(Effect.withTracer(program, collecting))
  assert.deepEqual(spans.map((span) => span.name).sort(), ["child", "fails", "inbound child", "inbound grandchild", "interrupted", "parent"])
  assert.ok(spans.every((span) => span.status._tag === "Ended"))
  const resource = await Effect.runPromise(OtlpResource.fromConfig({ serviceName: "otlp-test" }))
  const bodies = OtlpTracer.bodiesFor(resource)
  const effectProtobuf = await Effect.runPromise(
    Effect.map(OtlpSerialization.OtlpSerialization, (serialization) =>
      serialization.traces(JSON.parse(bodies.json(spans)))).pipe(Effect.provide(OtlpSerialization.layerProtobuf)),
  )
  assert.equal(effectProtobuf._tag, "Uint8Array")
  const expected = (effectProtobuf as { readonly body: Uint8Array }).body
  const written = bodies.protobuf(spans)
  assert.equal(written.length, expected.length)
  assert.deepEqual(written, expected)
  // A batch over 16 KiB (its length no longer fits the two bytes a message starts with).
  const many = Array.from({ length: 200 }, () => spans).flat()
  const large = bodies.protobuf(many)
  assert.ok(large.length > 100_000)
  const effectLarge = await Effect.runPromise(
    Effect.map(OtlpSerialization.OtlpSerialization, (serialization) =>
      serialization.traces(JSON.parse(bodies.json(many)))).pipe(Effect.provide(OtlpSerialization.layerProtobuf)),
  )
  assert.deepEqual(large, (effectLarge as { readonly body: Uint8Array }).body)
})
