/**
 * Issue 12's first performance target: a bare fetch loop of our own Kafka client
 * (lib/internal/kafka/fetchLoop.ts over brokers.ts) against a raw kafkajs `eachBatch` loop,
 * reading the same pre-produced records from the real broker. Target: fetch loop / raw ≥ 2.
 *
 * - raw kafkajs: `eachBatch`, a fresh group, `resolveOffset` per batch, no commit, no work per
 *   record (kafkajs has already decoded every record eagerly); the window starts at the join.
 * - fetch loop: every partition assigned from offset 0, each claim's stream pulled until it
 *   reached its end, reading each record's offset and value view (what a handler at least
 *   touches); the window starts at assignment (no group: that is the group helper's part).
 *
 *   bun bench/fetch_loop.ts            (BENCH_RECORDS, BENCH_ROUNDS, KAFKA_BROKERS)
 *   deno run -A bench/fetch_loop.ts
 */
import { Effect, Layer, References, Stream } from "effect"
import * as Brokers from "../lib/internal/kafka/brokers.ts"
import * as FetchLoop from "../lib/internal/kafka/fetchLoop.ts"
import {
  type Case,
  config,
  consumeRawKafkajs,
  kafkaResources,
  mark,
  type Measurement,
  produceRaw,
  records,
  runBench,
  since,
} from "./common.ts"

const total = records(300_000)
const partitions = 3
const resources = kafkaResources()
const topic = await resources.topic("fetch-loop", partitions)
await produceRaw(topic, total, partitions)
const ends = await resources.ends(topic)

/** Keeps the work observable so no runtime can drop it. */
let sink = 0

const raw = (): Promise<Measurement> =>
  consumeRawKafkajs({ topic, group: resources.group("raw"), total, partitions, commit: false })

const quiet = Layer.succeed(References.MinimumLogLevel, "Warn")

const fetchLoop = (): Promise<Measurement> =>
  Effect.runPromise(
    Effect.scoped(Effect.gen(function*() {
      const pool = yield* Brokers.make({ bootstrap: config.brokers, clientId: "partita-bench-fetch" })
      // Metadata first, outside the window, as the raw case's window starts after its join.
      yield* pool.topics([topic])
      const loop = yield* FetchLoop.make(FetchLoop.fromBrokers(pool))
      const start = mark()
      const claims = yield* loop.assign(Array.from({ length: partitions }, (_, partition) => ({ topic, partition, offset: 0 })))
      let count = 0
      yield* Effect.forEach(claims, (claim) => {
        const end = ends.get(claim.partition) ?? 0
        return claim.records.pipe(
          Stream.takeUntil((batch) => batch[batch.length - 1]!.offset + 1 >= end),
          Stream.runForEach((batch) =>
            Effect.sync(() => {
              for (let i = 0; i < batch.length; i++) {
                const record = batch[i]!
                sink += record.value!.length + record.offset
              }
              count += batch.length
            })
          ),
        )
      }, { concurrency: "unbounded", discard: true })
      return since(count, start)
    })).pipe(Effect.provide(quiet)),
  )

const cases: ReadonlyArray<Case> = [
  { name: "raw kafkajs", run: async () => ({ "raw kafkajs": await raw() }) },
  { name: "fetch loop", run: async () => ({ "fetch loop": await fetchLoop() }) },
]

await runBench({
  name: "fetch_loop",
  title: "a bare fetch loop of our own client vs a raw kafkajs eachBatch loop, same records, real broker",
  records: total,
  rounds: 3,
  notes: [
    `${partitions} partitions, values {"id":n} (8-13 bytes), no keys; kafkajs: a fresh group per round, window from its join`,
    "fetch loop: defaults (maxWait 500 ms, 1 MiB a partition, 500 records a batch), reads offset and value of every record",
  ],
  cases,
  ratios: [{ numerator: "fetch loop", denominator: "raw kafkajs", target: 2 }],
  teardown: () => resources.cleanup(),
})
console.log(`(sink ${sink > 0 ? "kept" : "empty"})`)
