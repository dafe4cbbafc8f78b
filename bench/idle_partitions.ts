/**
 * Issue 12's memory figure: the heap each idle claimed partition costs, on the real broker.
 *
 * A topic of `BENCH_PARTITIONS` (default 256) empty partitions; per case and round a fresh group
 * joins, every partition is claimed and idle (its stream pulled, nothing arriving, fetches
 * long-polling), the heap is read after a full garbage collection, and the difference to the
 * heap before the join, divided by the partitions, is the reading. Cases:
 * - subscription, own client: `KafkaTransport` claims (target ≤ 16 KiB a partition);
 * - actor, own client: an `ActorSystem` with one no-op actor on `KafkaTransport`: a partition
 *   actor per claim on top (issue 14's memory row);
 * - subscription, kafkajs: `KafkaJsTransport` claims, for comparison.
 *
 *   bun bench/idle_partitions.ts       (BENCH_PARTITIONS, BENCH_ROUNDS, KAFKA_BROKERS)
 *   deno run -A --v8-flags=--expose-gc bench/idle_partitions.ts;  node --expose-gc bench/idle_partitions.ts
 */
import process from "node:process"
import { Effect, type ManagedRuntime, Stream } from "effect"
import { Transport } from "../mod.ts"
import {
  type BenchResult,
  heapAfterGc,
  idleActorSystem,
  kafkaResources,
  kafkaRuntime,
  type Reading,
  runtime,
  summarize,
  suiteTable,
  writeResult,
} from "./common.ts"

const partitions = Math.max(1, Number(process.env["BENCH_PARTITIONS"] ?? 256))
const rounds = Math.max(1, Number(process.env["BENCH_ROUNDS"] ?? 3))
const settleMillis = 2_000

const resources = kafkaResources()
const topic = await resources.topic("idle", partitions)
const own = kafkaRuntime("own")
const kafkajs = kafkaRuntime("kafkajs")

type Runtime = ManagedRuntime.ManagedRuntime<Transport.Transport, unknown>

/** Claims every partition with a bare subscription, pulls every claim, and reads the heap once all are idle. */
const subscriptionCase = (rt: Runtime) => async (): Promise<number> => {
  const before = await heapAfterGc()
  const ready = Promise.withResolvers<void>()
  const release = Promise.withResolvers<void>()
  const done = rt.runPromise(Effect.scoped(Effect.gen(function*() {
    const transport = yield* Transport.Transport
    const subscription = yield* transport.subscribe({ group: resources.group("idle"), topics: [topic] })
    let claimed = 0
    yield* subscription.events.pipe(
      Stream.runForEach((event) =>
        event._tag === "Assigned"
          ? Effect.gen(function*() {
            for (const claim of event.claims) yield* Effect.forkScoped(Stream.runDrain(claim.records))
            claimed += event.claims.length
            if (claimed >= partitions) ready.resolve()
          })
          : event.acknowledge
      ),
      Effect.forkScoped,
    )
    yield* Effect.promise(() => release.promise)
  })))
  await ready.promise
  await new Promise((resolve) => setTimeout(resolve, settleMillis))
  const after = await heapAfterGc()
  release.resolve()
  await done
  return (after - before) / partitions
}

/** One no-op actor on the topic: a partition actor per claim. */
const actorCase = (rt: Runtime) => async (): Promise<number> => {
  const before = await heapAfterGc()
  const system = await idleActorSystem(rt, { topic, group: resources.group("idle-actor"), partitions })
  await new Promise((resolve) => setTimeout(resolve, settleMillis))
  const after = await heapAfterGc()
  await system.stop()
  return (after - before) / partitions
}

const cases: ReadonlyArray<{ readonly name: string; readonly run: () => Promise<number>; readonly atMost?: number }> = [
  { name: "heap per idle claimed partition, own client", run: subscriptionCase(own as Runtime), atMost: 16 * 1024 },
  { name: "heap per idle partition actor, own client", run: actorCase(own as Runtime) },
  { name: "heap per idle claimed partition, kafkajs", run: subscriptionCase(kafkajs as Runtime) },
]

console.log(`\n## idle_partitions on ${runtime.name} ${runtime.version}: heap per idle claimed partition, ${partitions} partitions, ${rounds} rounds`)
const startedAt = new Date()
const samples = new Map<string, Array<number>>()
try {
  // Warm-up: the first join loads code and fills caches that later rounds reuse.
  for (const benchCase of cases) await benchCase.run()
  for (let round = 0; round < rounds; round++) {
    for (const benchCase of cases) {
      const bytes = await benchCase.run()
      samples.set(benchCase.name, [...(samples.get(benchCase.name) ?? []), bytes])
      console.log(`   round ${round + 1}/${rounds}   ${benchCase.name.padEnd(48)} ${Math.round(bytes)} bytes`)
    }
  }
} finally {
  await own.dispose()
  await kafkajs.dispose()
  await resources.cleanup()
}
const readings: Array<Reading> = cases.map((benchCase) => {
  const value = summarize(samples.get(benchCase.name) ?? [])
  return {
    name: benchCase.name,
    unit: "bytes",
    value,
    ...(benchCase.atMost === undefined ? {} : { atMost: benchCase.atMost, met: value.median <= benchCase.atMost }),
  }
})
const result: BenchResult = {
  bench: "idle_partitions",
  title: "heap per idle claimed partition (after GC), real broker",
  runtime: runtime.name,
  runtimeVersion: runtime.version,
  records: partitions,
  rounds,
  warmup: 1,
  notes: [`${partitions} empty partitions, every one claimed and idle ${settleMillis} ms before the reading`],
  startedAt: startedAt.toISOString(),
  wallSeconds: (Date.now() - startedAt.getTime()) / 1000,
  measures: [],
  ratios: [],
  targets: [],
  readings,
}
console.log("\n" + suiteTable([result]))
writeResult(result)
process.exit(0)
