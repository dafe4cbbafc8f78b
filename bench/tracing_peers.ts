/**
 * Issue 14's tracing row, on the real broker: Partita traced at 100% sampling and exporting to
 * Jaeger, next to raw kafkajs traced the usual way (OpenTelemetry's
 * `@opentelemetry/instrumentation-kafkajs` with the SDK's `BatchSpanProcessor` and the OTLP/HTTP
 * exporter, to the same Jaeger), on the same pipeline: the same pre-produced records, each with a
 * sampled `traceparent`, read from the start by a fresh group and handled with a no-op. And
 * Partita traced ÷ untraced with a handler doing 10 µs of work per record, with the cost per span.
 *
 * Its own bench, apart from `tracing` (Partita alone, mostly on the embedded broker): it loads
 * the bench peers, whose instrumentation patches `require` and registers OpenTelemetry's global
 * context manager and propagator for the whole process; kept out of `tracing`, they cannot touch
 * its figures, and a peer that does not load (Bun, Deno) leaves `tracing` whole.
 *
 * Cases (every window: the group's join to every partition committed to its end):
 * - Partita actor, KafkaTransport / KafkaJsTransport, traced: `Tracing.layerOtlp` with its
 *   defaults (parent-based always-on, so every record is traced; a queue of 2048 spans, as the
 *   SDK's), `Codec.bytes`, no-op `Effect.sync` handler;
 * - raw kafkajs eachMessage, OpenTelemetry-instrumented: kafkajs from the bench peers, patched
 *   by the instrumentation (it makes a `process` span per message for `eachMessage`; for
 *   `eachBatch` a `poll` span per batch and a `process` span per message timed as the batch),
 *   `BatchSpanProcessor` defaults (2048 queued, 512 per export, 5 s delay), W3C propagation, an
 *   AsyncLocalStorage context manager (what the SDK's Node setup registers); kafkajs' auto-commit;
 * - raw kafkajs eachMessage, untraced: the same loop on the project's own (unpatched) kafkajs;
 * - 10 µs handler, KafkaTransport / KafkaJsTransport: the actor untraced and traced, one after
 *   the other in each round (order rotated), the handler busy-waiting 10 µs on
 *   `performance.now()` per record; the cost per span, (1/traced rate − 1/untraced rate) ÷ spans
 *   per record, the spans counted by the exporter (sent + dropped: every span made).
 * Each traced sample says how many spans were made, sent and dropped: with the default queues,
 * both tracers drop what Jaeger cannot take, so the ratios measure what making spans costs.
 * Jaeger: OTEL_EXPORTER_OTLP_ENDPOINT (default http://127.0.0.1:4318; bench/run starts it).
 *
 *   node --expose-gc bench/tracing_peers.ts          (KAFKA_BROKERS, BENCH_RECORDS, BENCH_ROUNDS)
 */
import { existsSync } from "node:fs"
import { createRequire } from "node:module"
import process from "node:process"
import { Context, Deferred, Effect, Exit, Metric } from "effect"
import { Actor, ActorSystem, Codec, ErrorPolicy, Tracing, Transport } from "../mod.ts"
import {
  type Case,
  collectGarbage,
  config,
  instrument,
  kafkaClient,
  kafkaResources,
  kafkaRuntime,
  mark,
  type Mark,
  type Measurement,
  observed,
  produceRaw,
  randomTraceparent,
  rate,
  records,
  runBench,
  since,
  type Unavailable,
} from "./common.ts"

const total = records(100_000)
const partitions = 3
const endpoint = (process.env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "http://127.0.0.1:4318").replace(/\/+$/, "")
const workMicros = 10
const resources = kafkaResources()

// --- OpenTelemetry's usual kafkajs setup, from the bench peers -------------------------------------

const peersPackage = new URL("../.cache/bench-peers/package.json", import.meta.url)

/** What the instrumented case needs, or why it cannot run here. */
const otel: {
  readonly Kafka?: any
  readonly provider?: any
  readonly spans?: () => number
  readonly exported?: () => number
  readonly contextManager?: any
  readonly problem?: string
} = (() => {
  if (!existsSync(new URL("node_modules/@opentelemetry/instrumentation-kafkajs", peersPackage))) {
    return { problem: "the bench peers are not installed (bench/run installs bench/peers into .cache/bench-peers)" }
  }
  try {
    const require = createRequire(peersPackage)
    const api = require("@opentelemetry/api")
    const { TracerProvider, BatchSpanProcessor } = require("@opentelemetry/sdk-trace")
    const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-http")
    const { AsyncLocalStorageContextManager } = require("@opentelemetry/context-async-hooks")
    // core and resources come with the SDK (its dependencies), as in any SDK setup.
    const { W3CTraceContextPropagator } = require("@opentelemetry/core")
    const { resourceFromAttributes } = require("@opentelemetry/resources")
    const { registerInstrumentations } = require("@opentelemetry/instrumentation")
    const { KafkaJsInstrumentation } = require("@opentelemetry/instrumentation-kafkajs")
    let ended = 0
    let exported = 0
    // Counts every span that ends (whether the batch processor then keeps or drops it).
    const counting = { onStart: () => {}, onEnd: () => void ended++, forceFlush: async () => {}, shutdown: async () => {} }
    // Counts the spans handed to the exporter: the rest of those made were dropped (a full queue).
    const otlp = new OTLPTraceExporter({ url: `${endpoint}/v1/traces` })
    const exporter = {
      export: (spans: ReadonlyArray<unknown>, done: (result: unknown) => void) => {
        exported += spans.length
        otlp.export(spans, done)
      },
      shutdown: () => otlp.shutdown(),
      forceFlush: () => otlp.forceFlush(),
    }
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ "service.name": "partita-bench-kafkajs" }),
      spanProcessors: [counting, new BatchSpanProcessor({ exporter })],
    })
    api.trace.setGlobalTracerProvider(provider)
    const contextManager = new AsyncLocalStorageContextManager()
    api.context.setGlobalContextManager(contextManager.enable())
    api.propagation.setGlobalPropagator(new W3CTraceContextPropagator())
    registerInstrumentations({ instrumentations: [new KafkaJsInstrumentation()], tracerProvider: provider })
    // Required after the instrumentation is registered: its hook patches the module as it loads.
    const { Kafka } = require("kafkajs")
    const probe = new Kafka({ brokers: [...config.brokers], logLevel: 1 }).consumer({ groupId: "partita-bench-probe" })
    if (typeof probe.run?.__wrapped !== "boolean" || probe.run.__wrapped !== true) {
      return { problem: "@opentelemetry/instrumentation-kafkajs did not patch kafkajs here (its require hook makes no spans on this runtime)" }
    }
    return { Kafka, provider, spans: () => ended, exported: () => exported, contextManager }
  } catch (cause) {
    return { problem: `the OpenTelemetry peers do not load here: ${cause instanceof Error ? cause.message : String(cause)}`.slice(0, 200) }
  }
})()

// --- the data, once ----------------------------------------------------------------------------------

const topic = await resources.topic("tracing-peers", partitions)
await produceRaw(topic, total, partitions, () => ({ traceparent: randomTraceparent() }))
const ends = await resources.ends(topic)

// --- raw kafkajs eachMessage ---------------------------------------------------------------------------

/**
 * A no-op `eachMessage` loop over every record with kafkajs' auto-commit, from its group join to
 * the commit of every partition's end (kafkajs' own, seen in its COMMIT_OFFSETS event).
 */
const eachMessage = async (consumer: any): Promise<Measurement> => {
  const start = mark()
  let joined: Mark | undefined
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined ??= mark()
  })
  const committed = new Map<number, number>()
  const done = Promise.withResolvers<void>()
  consumer.on(consumer.events.COMMIT_OFFSETS, (event: { payload: { topics: ReadonlyArray<{ topic: string; partitions: ReadonlyArray<{ partition: string | number; offset: string }> }> } }) => {
    for (const entry of event.payload.topics) {
      if (entry.topic !== topic) continue
      // kafkajs gives the partition as a string here.
      for (const { partition, offset } of entry.partitions) committed.set(Number(partition), Math.max(committed.get(Number(partition)) ?? -1, Number(offset)))
    }
    if ([...ends].every(([partition, end]) => end === 0 || (committed.get(partition) ?? -1) >= end)) done.resolve()
  })
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({ partitionsConsumedConcurrently: partitions, eachMessage: async () => {} })
    await done.promise
    if (joined === undefined) throw new Error("tracing_peers: kafkajs finished without a GROUP_JOIN event")
    return since(total, joined, (joined.at - start.at) / 1000)
  } finally {
    await consumer.disconnect()
  }
}

const consumerOptions = () => ({ groupId: resources.group("tracing-peers-raw"), maxWaitTimeInMs: 500, allowAutoTopicCreation: false })

const instrumented = async (): Promise<Measurement> => {
  const before = otel.spans!()
  const exportedBefore = otel.exported!()
  const client = new otel.Kafka({ brokers: [...config.brokers], clientId: "partita-bench-otel", logLevel: 1 })
  const measured = await eachMessage(client.consumer(consumerOptions())).finally(() =>
    // Its AsyncLocalStorage, once run, tracks every promise of the process (async hooks, Node 22):
    // disabled between its runs, so the Partita cases do not pay for kafkajs' tracing.
    otel.contextManager.disable()
  )
  const made = otel.spans!() - before
  // Outside the window, as Partita's layer sends what is queued when its scope closes.
  const flushed = await otel.provider.forceFlush().then(() => "", (error: unknown) =>
    `, export failed: ${error instanceof Error ? error.message : String(error)}`)
  const sent = otel.exported!() - exportedBefore
  return { ...measured, detail: `spans made ${made} (${(made / total).toFixed(2)} per record), sent ${sent}, dropped ${made - sent}${flushed}` }
}

const untracedRaw = (): Promise<Measurement> => eachMessage(kafkaClient().consumer(consumerOptions()))

// --- Partita ------------------------------------------------------------------------------------------

/** Spans made so far by Partita's exporters (every span handed to the batch processor or dropped by it). */
const spansMade = async (): Promise<{ readonly made: number; readonly sent: number; readonly dropped: number }> => {
  const metrics = await Effect.runPromise(Metric.snapshot)
  const sum = (id: string, keep: (error: unknown) => boolean) =>
    metrics.filter((metric) => metric.id === id && keep(metric.attributes?.["error.type"]))
      .reduce((sum, metric) => sum + (metric.state as { readonly count: number }).count, 0)
  return {
    made: sum("otel.sdk.processor.span.processed", () => true),
    sent: sum("otel.sdk.exporter.span.exported", (error) => error === undefined),
    dropped: sum("otel.sdk.processor.span.processed", (error) => error === "queue_full"),
  }
}

const traced = Tracing.layerOtlp({ endpoint, serviceName: "partita-bench", sampler: "parentbased_always_on" })

/** The busy handler's work: `workMicros` of the CPU, measured on the same clock every runtime has. */
const spin = (): void => {
  const until = performance.now() + workMicros / 1000
  while (performance.now() < until) {
    // busy
  }
}

const transports = {
  KafkaTransport: { runtime: kafkaRuntime("own"), kafkajsJoin: false },
  KafkaJsTransport: { runtime: kafkaRuntime("kafkajs"), kafkajsJoin: true },
} as const
type TransportName = keyof typeof transports
const probes = new Map<TransportName, ReturnType<typeof instrument>>()
for (const [name, { runtime, kafkajsJoin }] of Object.entries(transports) as Array<[TransportName, (typeof transports)[TransportName]]>) {
  probes.set(name, instrument(Context.get(await runtime.context(), Transport.Transport), { kafkajsJoin }))
}

/**
 * One actor reading every record with an `Effect.sync` handler (the processor's fast path: no
 * fiber step per record) that spins `work` or does nothing; done once it committed every end.
 * Spans made, sent and dropped in the run are counted after the layer's scope closed (its last
 * spans sent), outside the window.
 */
const actor = async (transport: TransportName, options: { readonly traced: boolean; readonly work: boolean }) => {
  const probe = probes.get(transport)!
  const group = resources.group("tracing-peers")
  const before = await spansMade()
  const start = mark()
  const run = Effect.gen(function*() {
    const handledAll = Deferred.makeUnsafe<void>()
    let handled = 0
    const work = options.work
    yield* ActorSystem.start([Actor.make({
      name: "bench",
      group,
      topics: [topic],
      value: Codec.bytes,
      handle: () =>
        Effect.sync(() => {
          if (work) spin()
          if (++handled === total) Deferred.doneUnsafe(handledAll, Exit.void)
        }),
      onError: { default: ErrorPolicy.halt },
      consumer: { reset: "earliest" },
    })]).pipe(Effect.provideService(Transport.Transport, probe.transport))
    yield* Deferred.await(handledAll)
    yield* Effect.promise(() => probe.committedTo(group, ends))
    const joined = probe.joinedAt(group)
    if (joined === undefined) throw new Error(`tracing_peers: group ${group} finished without an assignment`)
    return since(total, joined, (joined.at - start.at) / 1000)
  })
  const measured = await transports[transport].runtime.runPromise(
    Effect.scoped(options.traced ? Effect.provide(run, traced) : run),
  )
  if (!options.traced) return { measured, spans: 0 }
  const after = await spansMade()
  const made = after.made - before.made
  return {
    measured: { ...measured, detail: `spans made ${made} (${(made / total).toFixed(2)} per record), sent ${after.sent - before.sent}, dropped ${after.dropped - before.dropped}` },
    spans: made,
  }
}

const tracedName = (transport: TransportName) => `Partita actor, ${transport}, traced`
const busyName = (transport: TransportName, traced: boolean) => `Partita actor, ${transport}, 10 µs handler, ${traced ? "traced" : "untraced"}`
const costName = (transport: TransportName) => `cost per span, ${transport} (10 µs handler)`
const spansName = (transport: TransportName) => `spans per record, ${transport} (10 µs handler)`
const instrumentedName = "raw kafkajs eachMessage, OpenTelemetry-instrumented"
const untracedRawName = "raw kafkajs eachMessage, untraced"

/** Untraced and traced with the 10 µs handler, in this round's order, and the cost per span. */
const busy = (transport: TransportName): Case => ({
  name: `10 µs handler, ${transport}`,
  run: async (round) => {
    const order = round % 2 === 0 ? [false, true] : [true, false]
    const results = new Map<boolean, Awaited<ReturnType<typeof actor>>>()
    for (const isTraced of order) {
      // As runBench does before each case: one run's garbage is not collected on the other's clock.
      collectGarbage()
      results.set(isTraced, await actor(transport, { traced: isTraced, work: true }))
    }
    const untraced = results.get(false)!
    const tracedRun = results.get(true)!
    const perRecord = tracedRun.spans / total
    const extraMicros = 1e6 / rate(tracedRun.measured) - 1e6 / rate(untraced.measured)
    return {
      [busyName(transport, false)]: untraced.measured,
      [busyName(transport, true)]: tracedRun.measured,
      [costName(transport)]: observed(extraMicros / perRecord, "µs", `${extraMicros.toFixed(2)} µs more per record, ${perRecord.toFixed(2)} spans per record`),
      [spansName(transport)]: observed(perRecord, "spans"),
    }
  },
})

const cases: Array<Case> = [
  { name: tracedName("KafkaTransport"), run: async () => ({ [tracedName("KafkaTransport")]: (await actor("KafkaTransport", { traced: true, work: false })).measured }) },
  { name: tracedName("KafkaJsTransport"), run: async () => ({ [tracedName("KafkaJsTransport")]: (await actor("KafkaJsTransport", { traced: true, work: false })).measured }) },
  ...(otel.problem === undefined ? [{ name: instrumentedName, run: async () => ({ [instrumentedName]: await instrumented() }) }] : []),
  { name: untracedRawName, run: async () => ({ [untracedRawName]: await untracedRaw() }) },
  busy("KafkaTransport"),
  busy("KafkaJsTransport"),
]

const unavailable: Array<Unavailable> = otel.problem === undefined ? [] : [
  { measure: instrumentedName, why: otel.problem },
  ...(["KafkaTransport", "KafkaJsTransport"] as const).map((transport) => ({ measure: `${tracedName(transport)} / ${instrumentedName}`, why: otel.problem! })),
  { measure: `${instrumentedName} / ${untracedRawName}`, why: otel.problem },
]

await runBench({
  name: "tracing_peers",
  title: "Partita traced vs kafkajs with OpenTelemetry's instrumentation, real broker, and the cost per span with a 10 µs handler",
  records: total,
  notes: [
    `${partitions} partitions, pre-produced {"id":n} records each with a sampled traceparent, read as bytes; a fresh group per case and round`,
    `Partita: Tracing.layerOtlp defaults, OTLP/HTTP protobuf to ${endpoint}; kafkajs: instrumentation-kafkajs 0.33, BatchSpanProcessor defaults, OTLP/HTTP JSON to the same`,
    "cost per span = (1/traced − 1/untraced rate) ÷ spans per record (counted), the 10 µs handler's two runs in the same round",
    ...(otel.problem === undefined ? [] : [`kafkajs instrumented: ${otel.problem}`]),
  ],
  cases,
  ratios: [
    { numerator: tracedName("KafkaTransport"), denominator: instrumentedName, target: 2 },
    { numerator: tracedName("KafkaJsTransport"), denominator: instrumentedName, target: 2 },
    { numerator: instrumentedName, denominator: untracedRawName },
    { numerator: busyName("KafkaTransport", true), denominator: busyName("KafkaTransport", false), target: 0.8 },
    { numerator: busyName("KafkaJsTransport", true), denominator: busyName("KafkaJsTransport", false), target: 0.8 },
  ],
  unavailable,
  teardown: async () => {
    for (const { runtime } of Object.values(transports)) await runtime.dispose()
    await otel.provider?.shutdown().catch(() => undefined)
    await resources.cleanup()
  },
})
