/**
 * What exporting every span costs, apart from `tracing` so that the collector's work after a run
 * (Jaeger keeps ingesting once it has acknowledged) cannot slow the cases the targets compare.
 * Cases, the `tracing` bench's actor on the embedded broker, every record with a sampled
 * `traceparent`:
 * - no tracer layer: nothing tracing-related provided;
 * - traced, every span sent: `Tracing.layerOtlp` with a span queue as large as the data, so none
 *   is dropped, and the window held open until the collector acknowledged the last span (the
 *   layer's scope closed): the whole cost of tracing and exporting every record to
 *   OTEL_EXPORTER_OTLP_ENDPOINT (default http://127.0.0.1:4318: bench/run starts Jaeger).
 * Where the collector shares the machine, its own work (about 9 µs of CPU per span for this
 * Jaeger) is in the figure, as it would be in production on a shared host.
 *
 *   bun bench/tracing_export.ts          (BENCH_RECORDS, BENCH_ROUNDS)
 */
import process from "node:process"
import { Effect, Schema } from "effect"
import { Tracing } from "../mod.ts"
import { type Case, consumeWithActors, mark, records, runBench, memoryTopic, withSpanCounts } from "./common.ts"

const total = records(100_000)
const partitions = 3
const topic = "bench"
const endpoint = (process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "http://127.0.0.1:4318").replace(/\/+$/, "")
const { memory, ends, probe } = await memoryTopic(topic, total, partitions, true)
const Value = Schema.Struct({ id: Schema.Number })
let groups = 0

const everySpan = Tracing.layerOtlp({
  endpoint,
  serviceName: "partita-bench",
  sampler: "parentbased_always_on",
  maxQueueSize: total * 2,
  shutdownTimeout: "60 seconds",
})

const untraced = async () => ({
  "no tracer layer": await memory.runPromise(
    Effect.scoped(consumeWithActors({ probe, topic, group: `untraced-${++groups}`, ends, value: Value })),
  ),
})

/** Consumed and traced, the window held open until the layer has sent every span (its scope closed). */
const everySpanSent = async () => {
  const run = consumeWithActors({ probe, topic, group: `traced-${++groups}`, ends, value: Value })
  let consumed = mark()
  const measured = await withSpanCounts(() =>
    memory.runPromise(
      Effect.scoped(Effect.provide(Effect.tap(run, () => Effect.sync(() => consumed = mark())), everySpan)),
    )
  )
  const sent = mark()
  const flushCpu = process.cpuUsage(consumed.cpu)
  return {
    "traced, every span sent": {
      ...measured,
      seconds: measured.seconds + (sent.at - consumed.at) / 1000,
      cpuSeconds: measured.cpuSeconds + (flushCpu.user + flushCpu.system) / 1e6,
    },
  }
}

const cases: ReadonlyArray<Case> = [
  { name: "no tracer layer", run: untraced },
  { name: "traced, every span sent", run: everySpanSent },
]

await runBench({
  name: "tracing_export",
  title: "ActorSystem on MemoryTransport, every record traced and every span exported, vs untraced",
  records: total,
  rounds: 3,
  notes: [
    `${partitions} partitions, values {"id":n} with a JSON schema, each record with a sampled traceparent`,
    `traced: span queue of ${total * 2}, OTLP/HTTP protobuf to ${endpoint}; window: join -> last span acknowledged`,
  ],
  cases,
  ratios: [{ numerator: "traced, every span sent", denominator: "no tracer layer" }],
  teardown: async () => {
    await memory.dispose()
  },
})
