/**
 * End to end: a two-hop pipeline on the real broker, traced to the real Jaeger through
 * Tracing.layerOtlp, read back from Jaeger's query API.
 */
import assert from "node:assert/strict"
import { Effect, Layer, Schema } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as Producer from "../lib/Producer.ts"
import * as Tracing from "../lib/Tracing.ts"
import { Transport } from "../lib/Transport.ts"
import { eventually } from "./fixtures/actors.ts"
import { run } from "./fixtures/effect.ts"
import { jaegerQueryUrl, kafkaJaegerTest, uniqueName } from "./fixtures/services.ts"

const Order = Schema.Struct({ id: Schema.Number })

interface JaegerSpan {
  readonly spanID: string
  readonly operationName: string
  readonly references: ReadonlyArray<{ readonly refType: string; readonly spanID: string }>
  readonly tags: ReadonlyArray<{ readonly key: string; readonly value: unknown }>
}

kafkaJaegerTest("A two-hop pipeline on Kafka shows up in Jaeger as one trace with its producer and consumer spans", async (brokers, endpoint) => {
  const service = uniqueName("partita-e2e")
  const first = uniqueName("e2e-orders")
  const second = uniqueName("e2e-invoices")
  await run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic: first, partitions: 1 })
      yield* transport.createTopic({ topic: second, partitions: 1 })
      const invoices = Producer.forTopic({ topic: second, value: Order })
      let done = false
      const billing = Actor.make({
        name: "billing",
        group: uniqueName("billing"),
        topics: [first],
        value: Order,
        handle: (order) => Effect.asVoid(invoices.send(order)),
        onError: { default: ErrorPolicy.halt },
      })
      const mailer = Actor.make({
        name: "mailer",
        group: uniqueName("mailer"),
        topics: [second],
        value: Order,
        handle: () => Effect.sync(() => void (done = true)),
        onError: { default: ErrorPolicy.halt },
      })
      yield* ActorSystem.start([billing, mailer])
      yield* Producer.forTopic({ topic: first, value: Order }).send({ id: 1 }).pipe(Effect.withSpan("checkout", { kind: "server" }))
      yield* eventually(60, "the second hop", () => done)
    }).pipe(Effect.scoped),
    Layer.mergeAll(Producer.layer(), Tracing.layerOtlp({ endpoint, serviceName: service, exportInterval: "200 millis" })).pipe(
      Layer.provideMerge(KafkaJsTransport.layer({ brokers: [...brokers], clientId: "tracing-e2e" })),
    ),
  )

  let spans: ReadonlyArray<JaegerSpan> = []
  for (let attempt = 0; attempt < 100; attempt++) {
    const response = await fetch(`${jaegerQueryUrl()}/api/traces?service=${service}&limit=20`)
    const body = await response.json() as { data: ReadonlyArray<{ spans: ReadonlyArray<JaegerSpan> }> }
    const trace = body.data.find((t) => t.spans.some((span) => span.operationName === "checkout"))
    if (trace !== undefined && trace.spans.some((span) => span.operationName === `process ${second}`)) {
      spans = trace.spans
      break
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  const byName = (name: string) => {
    const span = spans.find((s) => s.operationName === name)
    assert.ok(span, `Jaeger has "${name}" in the trace; it has ${spans.map((s) => s.operationName).join(", ")}`)
    return span
  }
  const parentOf = (span: JaegerSpan) => span.references.find((ref) => ref.refType === "CHILD_OF")?.spanID
  const checkout = byName("checkout")
  const sendFirst = byName(`send ${first}`)
  const processFirst = byName(`process ${first}`)
  const sendSecond = byName(`send ${second}`)
  const processSecond = byName(`process ${second}`)
  assert.equal(parentOf(sendFirst), checkout.spanID)
  assert.equal(parentOf(processFirst), sendFirst.spanID)
  assert.equal(parentOf(sendSecond), processFirst.spanID)
  assert.equal(parentOf(processSecond), sendSecond.spanID)
  const tag = (span: JaegerSpan, key: string) => span.tags.find((t) => t.key === key)?.value
  assert.equal(tag(sendFirst, "span.kind"), "producer")
  assert.equal(tag(processFirst, "span.kind"), "consumer")
  assert.equal(tag(processFirst, "messaging.system"), "kafka")
  assert.equal(tag(processFirst, "messaging.destination.name"), first)
  assert.equal(tag(processFirst, "server.address"), brokers[0]!.split(":")[0])
}, { timeoutMs: 120_000 })
