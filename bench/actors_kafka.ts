/**
 * Issue 4's figure: on the real broker, how close an `ActorSystem` with a no-op handler comes to
 * a raw kafkajs `eachBatch` loop reading the same records. Target: actor / raw ≥ 0.9.
 *
 * The records are produced once, before the rounds; every case of every round reads all of them
 * from the start with a fresh consumer group. The actor's values are `Codec.bytes`: nothing is
 * decoded, like for like with the raw loop (what a JSON schema adds per record is measured on the
 * memory transport, in `actors_memory`). Cases:
 * - raw kafkajs: `eachBatch`, `resolveOffset` per batch, one commit at the end, no work per record;
 * - transport subscription: `KafkaJsTransport` without actors (each claim's stream drained and
 *   counted, one commit at the end): what the transport alone costs;
 * - actor: one actor with every option at its default (the headline);
 * - actor, mailbox never full: the same with a mailbox as large as the data, so the partition is
 *   never paused: what backpressure costs on Kafka;
 * - subscription, own client / actor, own client: the same two on `KafkaTransport`, Partita's own
 *   Kafka client (issue 12's targets: ≥ 2× and ≥ 1.2× raw kafkajs). Its windows start at the
 *   `Assigned` event (there is no kafkajs join line), which comes after the join;
 * - actor, own client, mailbox never full: the actor on `KafkaTransport` never paused, beside
 *   "actor, own client": what pausing and resuming costs on the own client.
 * A window runs from the moment kafkajs joined the group to the moment every partition's end was
 * committed; the join itself is reported apart (`join s`).
 *
 *   bun bench/actors_kafka.ts          (BENCH_RECORDS, BENCH_ROUNDS, KAFKA_BROKERS)
 */
import { Context, Effect, type Scope } from "effect"
import { Codec, Transport } from "../mod.ts"
import {
  type Case,
  consumeWithActors,
  consumeRawKafkajs,
  consumeWithSubscription,
  instrument,
  kafkaResources,
  kafkaRuntime,
  type Measurement,
  produceRaw,
  records,
  runBench,
} from "./common.ts"

const total = records(200_000)
const partitions = 3
const kafka = kafkaRuntime()
const own = kafkaRuntime("own")
const resources = kafkaResources()
const topic = await resources.topic("actors", partitions)
await produceRaw(topic, total, partitions)
const ends = await resources.ends(topic)
const probe = instrument(Context.get(await kafka.context(), Transport.Transport))
const ownProbe = instrument(Context.get(await own.context(), Transport.Transport), { kafkajsJoin: false })

/** The baseline: kafkajs with nothing in between (see `consumeRawKafkajs`). */
const raw = (): Promise<Measurement> =>
  consumeRawKafkajs({ topic, group: resources.group("raw"), total, partitions })

const scoped = (program: Effect.Effect<Measurement, unknown, Scope.Scope>) =>
  kafka.runPromise(Effect.scoped(program))
const ownScoped = (program: Effect.Effect<Measurement, unknown, Scope.Scope>) =>
  own.runPromise(Effect.scoped(program))

const cases: ReadonlyArray<Case> = [
  { name: "raw kafkajs", run: async () => ({ "raw kafkajs": await raw() }) },
  {
    name: "transport subscription",
    run: async () => ({
      "transport subscription": await scoped(
        consumeWithSubscription({ probe, topic, group: resources.group("subscription"), ends }),
      ),
    }),
  },
  {
    name: "subscription, own client",
    run: async () => ({
      "subscription, own client": await ownScoped(
        consumeWithSubscription({ probe: ownProbe, topic, group: resources.group("own-subscription"), ends }),
      ),
    }),
  },
  {
    name: "actor, own client",
    run: async () => ({
      "actor, own client": await ownScoped(
        consumeWithActors({ probe: ownProbe, topic, group: resources.group("own-actor"), ends, value: Codec.bytes }),
      ),
    }),
  },
  {
    name: "actor, own client, mailbox never full",
    run: async () => ({
      "actor, own client, mailbox never full": await ownScoped(
        consumeWithActors({
          probe: ownProbe,
          topic,
          group: resources.group("own-actor-mailbox"),
          ends,
          value: Codec.bytes,
          actor: { mailbox: { capacity: total } },
        }),
      ),
    }),
  },
  {
    name: "actor",
    // "actor, mailbox never full" runs the same code and warms it up; this one is I/O-bound.
    warmup: false,
    run: async () => ({
      "actor": await scoped(
        consumeWithActors({ probe, topic, group: resources.group("actor"), ends, value: Codec.bytes }),
      ),
    }),
  },
  {
    name: "actor, mailbox never full",
    run: async () => ({
      "actor, mailbox never full": await scoped(
        consumeWithActors({
          probe,
          topic,
          group: resources.group("actor-mailbox"),
          ends,
          value: Codec.bytes,
          actor: { mailbox: { capacity: total } },
        }),
      ),
    }),
  },
]

await runBench({
  name: "actors_kafka",
  title: "ActorSystem (no-op handler) vs a raw kafkajs eachBatch loop, same records, real broker",
  records: total,
  rounds: 3,
  notes: [
    `${partitions} partitions, values {"id":n} (8-13 bytes) read as Codec.bytes, no keys; a fresh group per case and round`,
    "window: kafkajs group join -> every partition committed to its end; join time reported apart",
  ],
  cases,
  ratios: [
    { numerator: "actor", denominator: "raw kafkajs", target: 0.9 },
    { numerator: "subscription, own client", denominator: "raw kafkajs", target: 2 },
    { numerator: "actor, own client", denominator: "raw kafkajs", target: 1.2 },
    { numerator: "actor, mailbox never full", denominator: "raw kafkajs" },
    { numerator: "actor, own client, mailbox never full", denominator: "raw kafkajs" },
    { numerator: "transport subscription", denominator: "raw kafkajs" },
  ],
  teardown: async () => {
    await kafka.dispose()
    await own.dispose()
    await resources.cleanup()
  },
})
