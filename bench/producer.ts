/**
 * What the batching `Producer` buys: many fibers each sending one record, either through a typed
 * `Producer.forTopic` handle (the producer batches them) or each calling `Transport.send` with a
 * one-record array. Both encode the value with the same JSON schema, so the difference is the
 * batching. On Kafka and on memory, side by side.
 *
 * `BENCH_CONCURRENCY` fibers (default 1000) send at once, as `Effect.forEach` with that
 * concurrency. A one-record `send` on Kafka is one produce request, about a thousand times slower
 * than the rest, so that case sends a fiftieth of the records (at least twice the concurrency):
 * records/s stays comparable, the round stays short. Each sample also shows how many records went
 * out per transport call, which is what batching is about. Every round writes to a fresh topic (a fresh broker, for
 * memory).
 *
 *   bun bench/producer.ts          (BENCH_RECORDS, BENCH_ROUNDS, BENCH_CONCURRENCY, KAFKA_BROKERS)
 */
import process from "node:process"
import { Context, Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Codec, MemoryTransport, Producer, Transport } from "../mod.ts"
import {
  type Case,
  kafkaResources,
  kafkaRuntime,
  loggingLayer,
  mark,
  type Measurement,
  records,
  runBench,
  since,
} from "./common.ts"

const total = records(50_000)
const concurrency = Math.max(1, Number(process.env["BENCH_CONCURRENCY"] ?? 1000))
const kafkaPerRecord = Math.min(total, Math.max(2 * concurrency, Math.round(total / 50)))
const partitions = 3
const Event = Schema.Struct({ id: Schema.Number })
const codec = Codec.json(Event)

const kafka = kafkaRuntime()
const kafkaTransport = Context.get(await kafka.context(), Transport.Transport)
const resources = kafkaResources()

const ids = (count: number) => Array.from({ length: count }, (_, index) => index)

/** The transport, counting its `send` calls. */
const counting = (transport: Transport.Transport["Service"]) => {
  let calls = 0
  return {
    transport: Transport.Transport.of({
      ...transport,
      send: (records, options) => {
        calls++
        return transport.send(records, options)
      },
      sendEach: (records, options) => {
        calls++
        return transport.sendEach(records, options)
      },
    }),
    detail: (count: number) => `${(count / calls).toFixed(1)} records per send call`,
  }
}

/** Every record through a typed handle on a batching `Producer`. */
const batched = (transport: Transport.Transport["Service"], topic: string, count: number) => {
  const counted = counting(transport)
  return Effect.gen(function* () {
    const events = Producer.forTopic({ topic, value: Event })
    const start = mark()
    yield* Effect.forEach(ids(count), (id) => events.send({ id }), { concurrency, discard: true })
    return { ...since(count, start), detail: counted.detail(count) }
  }).pipe(Effect.provide(Producer.layer()), Effect.provideService(Transport.Transport, counted.transport))
}

/** Every record encoded the same way, then sent alone with `Transport.send`. */
const oneByOne = (transport: Transport.Transport["Service"], topic: string, count: number) =>
  Effect.gen(function* () {
    const start = mark()
    yield* Effect.forEach(
      ids(count),
      (id) => Effect.flatMap(codec.encode({ id }), (value) => transport.send([{ topic, key: null, value }])),
      { concurrency, discard: true },
    )
    return since(count, start)
  })

let memoryRounds = 0
/** Both ways on a fresh memory broker, in the order the round's parity says. */
const memoryRound = async (round: number): Promise<Record<string, Measurement>> => {
  const memory = ManagedRuntime.make(MemoryTransport.layer().pipe(Layer.provideMerge(loggingLayer)))
  try {
    const transport = Context.get(await memory.context(), Transport.Transport)
    const topic = `bench-${++memoryRounds}`
    await memory.runPromise(transport.createTopic({ topic, partitions }))
    const producer = () => memory.runPromise(batched(transport, topic, total))
    const send = () => memory.runPromise(oneByOne(transport, topic, total))
    const [first, second] = round % 2 === 0
      ? [await producer(), await send()]
      : [await send(), await producer()]
    return round % 2 === 0
      ? { "memory, Producer": first, "memory, send per record": second }
      : { "memory, Producer": second, "memory, send per record": first }
  } finally {
    await memory.dispose()
  }
}

const cases: ReadonlyArray<Case> = [
  { name: "memory", run: memoryRound },
  {
    name: "kafka, Producer",
    run: async () => {
      const topic = await resources.topic("producer", partitions)
      return {
        "kafka, Producer": await kafka.runPromise(Effect.scoped(batched(kafkaTransport, topic, total))),
      }
    },
  },
  {
    name: "kafka, send per record",
    run: async () => {
      const topic = await resources.topic("producer", partitions)
      return {
        "kafka, send per record": await kafka.runPromise(oneByOne(kafkaTransport, topic, kafkaPerRecord)),
      }
    },
  },
]

await runBench({
  name: "producer",
  title: "batching Producer vs Transport.send per record, concurrent senders, Kafka and memory",
  records: total,
  notes: [
    `${concurrency} concurrent senders, values {"id":n} encoded with a JSON schema, no keys, ${partitions} partitions, acks all`,
    `kafka, send per record sends ${
      kafkaPerRecord.toLocaleString("en-US")
    } records (one produce request each)`,
  ],
  cases,
  ratios: [
    { numerator: "kafka, Producer", denominator: "kafka, send per record" },
    { numerator: "memory, Producer", denominator: "memory, send per record" },
  ],
  teardown: async () => {
    await kafka.dispose()
    await resources.cleanup()
  },
})
