/**
 * Partition actors on the embedded broker: records/s through a no-op handler. Target: ≥ 300k
 * records/s with a JSON schema, on one core (JavaScript runs on one thread; `per CPU-second` in
 * the bench's own table counts this process's CPU, GC threads included).
 *
 * The records are produced once, before the rounds; every case of every round reads all of them
 * from the start with a fresh consumer group. Cases:
 * - transport subscription: the memory transport without actors (each claim's stream drained and
 *   counted, one commit at the end): the floor the actors stand on;
 * - actor, raw bytes: one actor, `Codec.bytes` values, nothing decoded, every option at its default;
 * - actor, JSON schema: the same with `Schema.Struct({ id: Schema.Number })` decoded per record;
 * - batch actor, JSON schema: the same records and schema through a no-op batch handler
 *   (`handleBatch`, batches of up to 500 records, waiting at most 5 ms), next to the per-record one.
 * A window runs from the group's assignment to the moment every partition's end was committed.
 *
 *   bun bench/actors_memory.ts          (BENCH_RECORDS, BENCH_ROUNDS)
 */
import { Effect, Schema } from "effect"
import { Codec } from "../mod.ts"
import { type Case, consumeWithActors, consumeWithSubscription, memoryTopic, records, runBench } from "./common.ts"

const total = records(300_000)
const partitions = 3
const topic = "bench"
const { memory, ends, probe } = await memoryTopic(topic, total, partitions)
let groups = 0
const group = (what: string) => `${what}-${++groups}`

const cases: ReadonlyArray<Case> = [
  {
    name: "transport subscription",
    run: async () => ({
      "transport subscription": await memory.runPromise(Effect.scoped(
        consumeWithSubscription({ probe, topic, group: group("subscription"), ends }),
      )),
    }),
  },
  {
    name: "actor, raw bytes",
    run: async () => ({
      "actor, raw bytes": await memory.runPromise(Effect.scoped(
        consumeWithActors({ probe, topic, group: group("actor-bytes"), ends, value: Codec.bytes }),
      )),
    }),
  },
  {
    name: "actor, JSON schema",
    run: async () => ({
      "actor, JSON schema": await memory.runPromise(Effect.scoped(
        consumeWithActors({
          probe,
          topic,
          group: group("actor-json"),
          ends,
          value: Schema.Struct({ id: Schema.Number }),
        }),
      )),
    }),
  },
  {
    name: "batch actor, JSON schema",
    run: async () => ({
      "batch actor, JSON schema": await memory.runPromise(Effect.scoped(
        consumeWithActors({
          probe,
          topic,
          group: group("batch-json"),
          ends,
          value: Schema.Struct({ id: Schema.Number }),
          // A short maxWait: the last, partial batch of each partition waits it out, which at
          // the default 100 ms would be most of a small run's window.
          batch: { maxRecords: 500, maxWait: "5 millis" },
        }),
      )),
    }),
  },
]

await runBench({
  name: "actors_memory",
  title: "ActorSystem (no-op handler) on MemoryTransport",
  records: total,
  notes: [
    `${partitions} partitions, values {"id":n} (8-13 bytes), no keys; a fresh consumer group per case and round`,
    "window: the group's assignment -> every partition committed to its end",
  ],
  cases,
  ratios: [
    { numerator: "actor, JSON schema", denominator: "actor, raw bytes" },
    { numerator: "batch actor, JSON schema", denominator: "actor, JSON schema" },
  ],
  targets: [{ measure: "actor, JSON schema", atLeast: 300_000 }],
  teardown: () => memory.dispose(),
})
