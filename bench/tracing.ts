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
 *   each sample says how many spans were sent and how many dropped (what exporting every span
 *   costs is `tracing_export`'s figure).
 * Every record carries a producer's `traceparent`, so the traced case parents each process span.
 * The first and third again on the real broker (`kafka, …`), for the ratio where a pipeline
 * waits on the network as production ones do.
 *
 *   bun bench/tracing.ts          (BENCH_RECORDS, BENCH_ROUNDS)
 */
import process from "node:process"
import { Context, Effect, Layer, Schema, Tracer } from "effect"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import { Tracing, Transport } from "../mod.ts"
import {
  type Case,
  consumeWithActors,
  instrument,
  kafkaResources,
  kafkaRuntime,
  produceRaw,
  randomTraceparent,
  records,
  runBench,
  memoryTopic,
  withSpanCounts,
} from "./common.ts"

const total = records(300_000)
const partitions = 3
const topic = "bench"
const endpoint = (process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "http://127.0.0.1:4318").replace(/\/+$/, "")
const { memory, ends, probe } = await memoryTopic(topic, total, partitions, true)
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

const consume = (name: string, layer: Layer.Layer<never> | undefined) => async () => {
  const run = consumeWithActors({ probe, topic, group: `${name}-${++groups}`, ends, value: Value })
  const measure = () => memory.runPromise(Effect.scoped(layer === undefined ? run : Effect.provide(run, layer)))
  return { [name]: layer === undefined ? await measure() : await withSpanCounts(measure) }
}

// The same on the real broker (bench/run starts it): where a pipeline is I/O-bound, as in production.
const kafka = kafkaRuntime()
const resources = kafkaResources()
const kafkaTopic = await resources.topic("tracing", partitions)
await produceRaw(kafkaTopic, total, partitions, () => ({ traceparent: randomTraceparent() }))
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
    { numerator: "tracing off", denominator: "no tracer layer", target: 0.97 },
    { numerator: "kafka, traced, exporting", denominator: "kafka, no tracer layer" },
  ],
  teardown: async () => {
    await memory.dispose()
    await kafka.dispose()
    await resources.cleanup()
  },
})
