/**
 * Issue 3's figure: the raw throughput of each transport on a plain produce-then-consume run,
 * `MemoryTransport` and `KafkaJsTransport` side by side.
 *
 * Every round, for each transport: a fresh 3-partition topic (a fresh broker, for memory), then
 * - produce: the records through `Transport.send`, one call of `BENCH_BATCH` records (default
 *   1000) at a time, each waiting for its acknowledgement (`acks: all`);
 * - consume: the same records back through a `Subscription` with a fresh group, each claim's
 *   stream drained on its own fiber, counted, and the ends committed once all arrived. The
 *   window runs from the group's join (kafkajs' join on Kafka, the assignment on memory) to that
 *   commit; the join is reported apart.
 *
 *   bun bench/transports.ts          (BENCH_RECORDS, BENCH_ROUNDS, BENCH_BATCH, KAFKA_BROKERS)
 */
import process from "node:process"
import { Context, Effect, Layer, ManagedRuntime, type Scope } from "effect"
import { MemoryTransport, Transport } from "../mod.ts"
import {
  type Case,
  consumeWithSubscription,
  instrument,
  kafkaResources,
  kafkaRuntime,
  loggingLayer,
  mark,
  type Measurement,
  payload,
  records,
  runBench,
  since,
} from "./common.ts"

const total = records(100_000)
const batch = Math.max(1, Number(process.env["BENCH_BATCH"] ?? 1000))
const partitions = 3
const kafka = kafkaRuntime()
const resources = kafkaResources()
const kafkaProbe = instrument(Context.get(await kafka.context(), Transport.Transport))

/** Produces `total` records in calls of `batch`; returns the window and each partition's end. */
const produce = (transport: Transport.Transport["Service"], topic: string) =>
  Effect.gen(function* () {
    const start = mark()
    const ends = new Map<number, number>()
    for (let from = 0; from < total; from += batch) {
      const sent = yield* transport.send(
        Array.from({ length: Math.min(batch, total - from) }, (_, index) => ({
          topic,
          key: null,
          value: payload(from + index),
        })),
      )
      for (const { partition, offset } of sent) {
        ends.set(partition, Math.max(ends.get(partition) ?? 0, offset + 1))
      }
    }
    return { measurement: since(total, start), ends }
  })

const roundTrip = (
  probe: ReturnType<typeof instrument>,
  topic: string,
  group: string,
): Effect.Effect<{ produce: Measurement; consume: Measurement }, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const produced = yield* produce(probe.transport, topic)
    const consume = yield* consumeWithSubscription({ probe, topic, group, ends: produced.ends })
    return { produce: produced.measurement, consume }
  })

let memoryRounds = 0
const cases: ReadonlyArray<Case> = [
  {
    name: "memory",
    run: async () => {
      // A broker per round: nothing from earlier rounds is left to collect during this one.
      const memory = ManagedRuntime.make(MemoryTransport.layer().pipe(Layer.provideMerge(loggingLayer)))
      try {
        const probe = instrument(Context.get(await memory.context(), Transport.Transport))
        const topic = `bench-${++memoryRounds}`
        await memory.runPromise(probe.transport.createTopic({ topic, partitions }))
        const { produce, consume } = await memory.runPromise(
          Effect.scoped(roundTrip(probe, topic, `${topic}-group`)),
        )
        return { "memory produce": produce, "memory consume": consume }
      } finally {
        await memory.dispose()
      }
    },
  },
  {
    name: "kafka",
    run: async () => {
      const topic = await resources.topic("transports", partitions)
      const { produce, consume } = await kafka.runPromise(
        Effect.scoped(roundTrip(kafkaProbe, topic, resources.group("transports"))),
      )
      return { "kafka produce": produce, "kafka consume": consume }
    },
  },
]

await runBench({
  name: "transports",
  title: "MemoryTransport vs KafkaJsTransport: produce through send, consume through a subscription",
  records: total,
  notes: [
    `${partitions} partitions, values {"id":n} (8-13 bytes), no keys, send calls of ${batch} records, acks all`,
    "consume window: the group's join -> all records counted and the ends committed",
  ],
  cases,
  ratios: [
    { numerator: "kafka produce", denominator: "memory produce" },
    { numerator: "kafka consume", denominator: "memory consume" },
  ],
  teardown: async () => {
    await kafka.dispose()
    await resources.cleanup()
  },
})
