/**
 * Issue 13's figures: what exactly-once costs on the real broker, against the same actor at
 * least once, on `KafkaTransport` (and `KafkaJsTransport`). Every case reads the same pre-produced records with a fresh
 * group, values as `Codec.bytes`:
 * - forward, at-least-once / forward, exactly-once: the handler sends each value to an output
 *   topic through `Producer` (a typed handle, bytes), waiting for it, as a pipeline stage does;
 *   exactly-once puts each partition's sends and offsets in transactions of 500 records or 100 ms;
 * - forward, exactly-once, 50 / 5000 a transaction: the curve over `transaction.records`;
 * - no output, at-least-once / no output, exactly-once: a no-op handler: what transactions of
 *   offsets alone cost;
 * - kafkajs: forward, at-least-once / exactly-once: the same pipeline on `KafkaJsTransport`.
 * Issue 13's goal: exactly-once ≥ 0.6 of at-least-once on the forwarding pipeline, per transport.
 * A window runs from the group's first assignment to every partition committed to its end.
 *
 *   bun bench/exactly_once.ts          (BENCH_RECORDS, BENCH_ROUNDS, KAFKA_BROKERS)
 */
import { Context, Effect } from "effect"
import { Codec, Producer, Transport } from "../mod.ts"
import { type Case, consumeWithActors, instrument, kafkaResources, kafkaRuntime, type Measurement, produceRaw, records, runBench } from "./common.ts"

const total = records(20_000)
const partitions = 3
const own = kafkaRuntime("own")
const kafkajs = kafkaRuntime()
const resources = kafkaResources()
const topic = await resources.topic("eos-in", partitions)
const output = await resources.topic("eos-out", partitions)
await produceRaw(topic, total, partitions)
const ends = await resources.ends(topic)
const probe = instrument(Context.get(await own.context(), Transport.Transport), { kafkajsJoin: false })
const kafkajsProbe = instrument(Context.get(await kafkajs.context(), Transport.Transport))
const forward = Producer.forTopic({ topic: output, value: Codec.bytes })

const actorCase = (
  name: string,
  delivery: "at-least-once" | "exactly-once",
  sends: boolean,
  options: { readonly transport?: "own" | "kafkajs"; readonly records?: number } = {},
): Case => ({
  name,
  run: async () => {
    const runtime = options.transport === "kafkajs" ? kafkajs : own
    return {
      [name]: await runtime.runPromise(Effect.scoped(consumeWithActors({
        probe: options.transport === "kafkajs" ? kafkajsProbe : probe,
        topic,
        group: resources.group(name.replaceAll(/[^a-z0-9]+/g, "-")),
        ends,
        value: Codec.bytes,
        actor: { delivery, ...(options.records === undefined ? {} : { transaction: { records: options.records } }) },
        work: sends ? (value) => Effect.orDie(Effect.asVoid(forward.send(value))) : undefined,
      }))) as Measurement,
    }
  },
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
    actorCase("forward, exactly-once, 50 a transaction", "exactly-once", true, { records: 50 }),
    actorCase("forward, exactly-once, 5000 a transaction", "exactly-once", true, { records: 5000 }),
    actorCase("no output, at-least-once", "at-least-once", false),
    actorCase("no output, exactly-once", "exactly-once", false),
    actorCase("kafkajs: forward, at-least-once", "at-least-once", true, { transport: "kafkajs" }),
    actorCase("kafkajs: forward, exactly-once", "exactly-once", true, { transport: "kafkajs" }),
  ],
  ratios: [
    { numerator: "forward, exactly-once", denominator: "forward, at-least-once", target: 0.6 },
    { numerator: "forward, exactly-once, 50 a transaction", denominator: "forward, at-least-once" },
    { numerator: "forward, exactly-once, 5000 a transaction", denominator: "forward, at-least-once" },
    { numerator: "no output, exactly-once", denominator: "no output, at-least-once" },
    { numerator: "kafkajs: forward, exactly-once", denominator: "kafkajs: forward, at-least-once", target: 0.6 },
  ],
  teardown: async () => {
    await own.dispose()
    await kafkajs.dispose()
    await resources.cleanup()
  },
})
