/**
 * Issue 13's figures: what exactly-once costs on the real broker, against the same actor at
 * least once, on `KafkaTransport`. Every case reads the same pre-produced records with a fresh
 * group, values as `Codec.bytes`:
 * - forward, at-least-once / forward, exactly-once: the handler sends each value to an output
 *   topic through `Producer` (a typed handle, bytes), waiting for it, as a pipeline stage does;
 *   exactly-once puts each partition's sends and offsets in transactions of 500 records or 100 ms;
 * - no output, at-least-once / no output, exactly-once: a no-op handler: what transactions of
 *   offsets alone cost.
 * A window runs from the group's first assignment to every partition committed to its end.
 *
 *   bun bench/exactly_once.ts          (BENCH_RECORDS, BENCH_ROUNDS, KAFKA_BROKERS)
 */
import { Context, Effect, type Scope } from "effect"
import { Codec, Producer, Transport } from "../mod.ts"
import { type Case, consumeWithActors, instrument, kafkaResources, kafkaRuntime, type Measurement, produceRaw, records, runBench } from "./common.ts"

const total = records(20_000)
const partitions = 3
const own = kafkaRuntime("own")
const resources = kafkaResources()
const topic = await resources.topic("eos-in", partitions)
const output = await resources.topic("eos-out", partitions)
await produceRaw(topic, total, partitions)
const ends = await resources.ends(topic)
const probe = instrument(Context.get(await own.context(), Transport.Transport), { kafkajsJoin: false })
const forward = Producer.forTopic({ topic: output, value: Codec.bytes })

const run = (program: Effect.Effect<Measurement, unknown, Scope.Scope>) => own.runPromise(Effect.scoped(program))
const actorCase = (name: string, delivery: "at-least-once" | "exactly-once", sends: boolean): Case => ({
  name,
  run: async () => ({
    [name]: await run(consumeWithActors({
      probe,
      topic,
      group: resources.group(name.replaceAll(/[^a-z]+/g, "-")),
      ends,
      value: Codec.bytes,
      actor: { delivery },
      work: sends ? (value) => Effect.orDie(Effect.asVoid(forward.send(value))) : undefined,
    })),
  }),
})

await runBench({
  name: "exactly_once",
  title: "An actor exactly-once vs at-least-once on KafkaTransport, forwarding each record or not",
  records: total,
  rounds: 3,
  notes: [
    `${partitions} partitions, values {"id":n} as Codec.bytes; output topic of ${partitions} partitions; a fresh group per case and round`,
    "exactly-once: transactions of 500 records or 100 ms per partition (the defaults); each send waits for its acknowledgement",
  ],
  cases: [
    actorCase("forward, at-least-once", "at-least-once", true),
    actorCase("forward, exactly-once", "exactly-once", true),
    actorCase("no output, at-least-once", "at-least-once", false),
    actorCase("no output, exactly-once", "exactly-once", false),
  ],
  ratios: [
    { numerator: "forward, exactly-once", denominator: "forward, at-least-once" },
    { numerator: "no output, exactly-once", denominator: "no output, at-least-once" },
  ],
  teardown: async () => {
    await own.dispose()
    await resources.cleanup()
  },
})
