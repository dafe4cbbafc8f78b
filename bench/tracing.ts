/**
 * What tracing costs a partition actor, on the embedded broker (the most CPU-bound setting, so
 * the hardest for the ratio). Target: ≥ 0.8× the untraced throughput with every record traced
 * (100% sampled) and exported over OTLP to Jaeger; with Partita's tracing off, ≥ 0.97× of the
 * same run with no tracer layer at all. Cases, one actor with a JSON schema, no-op handler:
 * - no tracer layer: nothing tracing-related provided;
 * - tracing off: an OTLP tracer provided for the application's own spans, Partita's tracing off;
 * - traced, exporting: `Tracing.layerOtlp` as configured by default (parent-based always-on, a
 *   queue of 2048 spans, one request at a time), exporting to OTEL_EXPORTER_OTLP_ENDPOINT
 *   (default http://127.0.0.1:4318: bench/run starts Jaeger). When the collector takes spans
 *   slower than they end, the queue drops the surplus, as OpenTelemetry's batch processor does;
 *   each sample says how many spans were sent and how many dropped;
 * - traced, every span sent: the same with a queue as large as the data, and the window held
 *   open until the last span is acknowledged: the whole cost of exporting every span.
 * Every record carries a producer's `traceparent`, so the traced case parents each process span.
 * The first and third again on the real broker (`kafka, …`), for the ratio where a pipeline
 * waits on the network as production ones do.
 *
 *   bun bench/tracing.ts          (BENCH_RECORDS, BENCH_ROUNDS)
 */
import process from "node:process"
import { Context, Effect, Layer, ManagedRuntime, Metric, Schema, Tracer } from "effect"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import { MemoryTransport, Tracing, Transport } from "../mod.ts"
import {
  type Case,
  consumeWithActors,
  instrument,
  kafkaResources,
  kafkaRuntime,
  loggingLayer,
  mark,
  type Measurement,
  payload,
  produceRaw,
  records,
  runBench,
} from "./common.ts"

const total = records(100_000)
const partitions = 3
const topic = "bench"
const endpoint = (process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "http://127.0.0.1:4318").replace(/\/+$/, "")
const memory = ManagedRuntime.make(MemoryTransport.layer().pipe(Layer.provideMerge(loggingLayer)))
const transport = Context.get(await memory.context(), Transport.Transport)
const encoder = new TextEncoder()
const hex = (bytes: number) => Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("")

await memory.runPromise(Effect.gen(function*() {
  yield* transport.createTopic({ topic, partitions })
  const batch = 10_000
  for (let from = 0; from < total; from += batch) {
    yield* transport.send(Array.from({ length: Math.min(batch, total - from) }, (_, index) => ({
      topic,
      key: null,
      value: payload(from + index),
      headers: [{ key: "traceparent", value: encoder.encode(`00-${hex(16)}-${hex(8)}-01`) }],
    })))
  }
}))
const ends = new Map((await memory.runPromise(transport.describeTopic(topic))).partitions.map((p) => [p.partition, p.highWatermark]))
const probe = instrument(transport)
let groups = 0
const Value = Schema.Struct({ id: Schema.Number })

/** An OTLP tracer for the application's own spans, with Partita's tracing left off. */
const tracerOnly = Layer.effect(
  Tracer.Tracer,
  OtlpTracer.make({ url: `${endpoint}/v1/traces`, resource: { serviceName: "partita-bench" } }),
).pipe(
  Layer.provide(OtlpExporter.layerFlusher),
  Layer.provide(OtlpSerialization.layerJson),
  Layer.provide(FetchHttpClient.layer),
)
const traced = Tracing.layerOtlp({ endpoint, serviceName: "partita-bench", sampler: "parentbased_always_on" })
const tracedUnbounded = Tracing.layerOtlp({
  endpoint,
  serviceName: "partita-bench",
  sampler: "parentbased_always_on",
  maxQueueSize: total * 2,
  shutdownTimeout: "60 seconds",
})

/** Spans sent and dropped so far, from the exporter's own metrics. */
const spanCounts = async () => {
  const metrics = await memory.runPromise(Metric.snapshot)
  const count = (id: string, error: string | undefined) =>
    metrics
      .filter((metric) => metric.id === id && metric.attributes?.["error.type"] === error)
      .reduce((sum, metric) => sum + (metric.state as { readonly count: number }).count, 0)
  return { sent: count("otel.sdk.exporter.span.exported", undefined), dropped: count("otel.sdk.processor.span.processed", "queue_full") }
}

const withSpanCounts = async (measure: () => Promise<Measurement>): Promise<Measurement> => {
  const before = await spanCounts()
  const measurement = await measure()
  const after = await spanCounts()
  return { ...measurement, detail: `spans sent ${after.sent - before.sent}, dropped ${after.dropped - before.dropped}` }
}

const consume = (name: string, layer: Layer.Layer<never> | undefined) => async () => {
  const run = consumeWithActors({ probe, topic, group: `${name}-${++groups}`, ends, value: Value })
  const measure = () => memory.runPromise(Effect.scoped(layer === undefined ? run : Effect.provide(run, layer)))
  return { [name]: layer === undefined ? await measure() : await withSpanCounts(measure) }
}

/** Consumed and traced, the window held open until the layer has sent every span (its scope closed). */
const consumeAllSent = (name: string, layer: Layer.Layer<never>) => async () => {
  const run = consumeWithActors({ probe, topic, group: `${name}-${++groups}`, ends, value: Value })
  let consumed = mark()
  const measured = await withSpanCounts(() =>
    memory.runPromise(Effect.scoped(Effect.provide(Effect.tap(run, () => Effect.sync(() => consumed = mark())), layer)))
  )
  const sent = mark()
  const flushCpu = process.cpuUsage(consumed.cpu)
  return {
    [name]: {
      ...measured,
      seconds: measured.seconds + (sent.at - consumed.at) / 1000,
      cpuSeconds: measured.cpuSeconds + (flushCpu.user + flushCpu.system) / 1e6,
    },
  }
}

// The same on the real broker (bench/run starts it): where a pipeline is I/O-bound, as in production.
const kafka = kafkaRuntime()
const resources = kafkaResources()
const kafkaTopic = await resources.topic("tracing", partitions)
await produceRaw(kafkaTopic, total, partitions, () => ({ traceparent: `00-${hex(16)}-${hex(8)}-01` }))
const kafkaEnds = await resources.ends(kafkaTopic)
const kafkaProbe = instrument(Context.get(await kafka.context(), Transport.Transport))
const consumeKafka = (name: string, layer: Layer.Layer<never> | undefined) => async () => {
  const run = consumeWithActors({ probe: kafkaProbe, topic: kafkaTopic, group: resources.group("tracing"), ends: kafkaEnds, value: Value })
  const measure = () => kafka.runPromise(Effect.scoped(layer === undefined ? run : Effect.provide(run, layer)))
  return { [name]: layer === undefined ? await measure() : await withSpanCounts(measure) }
}

const cases: ReadonlyArray<Case> = [
  { name: "no tracer layer", run: consume("no tracer layer", undefined) },
  { name: "tracing off", run: consume("tracing off", tracerOnly as Layer.Layer<never>) },
  { name: "traced, exporting", run: consume("traced, exporting", traced) },
  { name: "traced, every span sent", run: consumeAllSent("traced, every span sent", tracedUnbounded) },
  { name: "kafka, no tracer layer", run: consumeKafka("kafka, no tracer layer", undefined) },
  { name: "kafka, traced, exporting", run: consumeKafka("kafka, traced, exporting", traced) },
]

await runBench({
  name: "tracing",
  title: "ActorSystem on MemoryTransport with tracing on, off, and absent",
  records: total,
  notes: [
    `${partitions} partitions, values {"id":n} with a JSON schema, each record with a sampled traceparent`,
    `traced: a process span per record, a poll span per batch, a commit span per commit, OTLP/HTTP protobuf to ${endpoint}`,
  ],
  cases,
  ratios: [
    { numerator: "traced, exporting", denominator: "no tracer layer", target: 0.8 },
    { numerator: "traced, every span sent", denominator: "no tracer layer" },
    { numerator: "tracing off", denominator: "no tracer layer", target: 0.97 },
    { numerator: "kafka, traced, exporting", denominator: "kafka, no tracer layer" },
  ],
  teardown: async () => {
    await memory.dispose()
    await kafka.dispose()
    await resources.cleanup()
  },
})
