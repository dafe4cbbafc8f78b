/**
 * The Kafka client's own producer (lib/internal/kafka/producer.ts) next to raw
 * `@platformatic/kafka` and raw kafkajs, at equal work: `BENCH_CONCURRENCY` senders (default 1000)
 * each sending one record at a time and waiting for its acknowledgement, until `BENCH_RECORDS`
 * (default 50k) records are written to a fresh 3-partition topic, acks=all, values of 12 bytes
 * and of 1 KiB, no key.
 *
 * - partita: `KafkaProducer.sendEach([record])` per sender, idempotent (its default), linger 5 ms.
 * - platformatic: its batching producer, `producer.asStream()` (a `Producer.send` is one Produce
 *   request, so many one-record sends are what its stream exists for), idempotent, acks=all,
 *   with our limits: `batchTime` 5 ms (our linger), `batchSize` 10,000 (our `maxBatchRecords`);
 *   each sender waits for its record's delivery report (`reportMode: "message"`). With 1000
 *   senders neither fills a batch, so both linger 5 ms per round trip.
 * - platformatic, batchSize = senders (a diagnostic row, 12 B only): its stream sends as soon as
 *   every sender's record is in, without lingering, which our limits never do: its best case.
 * - partita via Producer (12 B only): the same senders calling `Producer.send` (lib/Producer.ts,
 *   its defaults) on a `Transport` whose `sendEach` is the client's producer: what the batching
 *   layer on top costs (it gathers the fibers' records into one `sendEach` per round trip).
 * - kafkajs: `producer.send` per record, one Produce request each, not idempotent (its
 *   idempotent producer allows one request in flight: this is its fastest); it writes a tenth of
 *   the records (records/s stays comparable, the round stays short).
 *
 * `@platformatic/kafka` is a bench-only peer, pinned in bench/peers/package.json and installed
 * by bench/run into .cache/bench-peers; a runtime it does not load on gets a row saying so.
 *
 *   bun bench/kafka_producer.ts        (KAFKA_BROKERS, BENCH_RECORDS, BENCH_CONCURRENCY, BENCH_ROUNDS)
 */
import { Buffer } from "node:buffer"
import process from "node:process"
import { Effect } from "effect"
import { Producer as BatchingProducer, Transport } from "../mod.ts"
import * as Brokers from "../lib/internal/kafka/brokers.ts"
import * as Producer from "../lib/internal/kafka/producer.ts"
import { type Case, config, kafkaClient, kafkaResources, loadPlatformatic, mark, type Measurement, records, runBench, sendFromFibers, since } from "./common.ts"

const total = records(50_000)
const concurrency = Math.max(1, Number(process.env["BENCH_CONCURRENCY"] ?? 1000))
const kafkajsTotal = Math.min(total, Math.max(2 * concurrency, Math.round(total / 10)))
const partitions = 3
const lingerMs = 5
const maxBatchRecords = 10_000
const broker = config.brokers[0]!
const resources = kafkaResources()

/** A value of `size` bytes starting with the record's number, so no two are alike. */
const valueOf = (size: number) => {
  const filler = "x".repeat(size)
  return (id: number): Uint8Array => {
    const head = `{"id":${id},"p":"`
    return Buffer.from(`${head}${filler.slice(0, Math.max(0, size - head.length - 2))}"}`)
  }
}
const sizes = [{ name: "12 B", value: valueOf(12) }, { name: "1 KiB", value: valueOf(1024) }] as const

/** `count` records, each sent alone by one of `concurrency` senders, each waiting for its own. */
const senders = async (count: number, send: (id: number) => Promise<void>): Promise<Measurement> => {
  let next = 0
  const start = mark()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await send(next++)
  }))
  return since(count, start)
}

const partita = (value: (id: number) => Uint8Array) => async (): Promise<Measurement> => {
  const topic = await resources.topic("kafka-producer", partitions)
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const producer = yield* Producer.make(Producer.fromBrokers(yield* Brokers.make({ bootstrap: [broker] })), {
      linger: lingerMs,
      maxBatchRecords,
    })
    let next = 0
    const start = mark()
    yield* Effect.forEach(Array.from({ length: concurrency }), () =>
      Effect.whileLoop({
        while: () => next < total,
        body: () => producer.sendEach([{ topic, key: null, value: value(next++) }]),
        step: (outcomes) => {
          if (outcomes[0]!._tag === "Failure") throw new Error(String(outcomes[0]!.cause))
        },
      }), { concurrency: "unbounded", discard: true })
    const measured = since(total, start)
    const { requests, batches } = producer.metrics()
    return { ...measured, detail: `${(total / requests).toFixed(0)} records per request, ${(total / batches).toFixed(0)} per batch` }
  })))
}

/** Records through `lib/Producer.ts` over the client's producer (the only Transport method it uses is `sendEach`). */
const viaProducer = (value: (id: number) => Uint8Array) => async (): Promise<Measurement> => {
  const topic = await resources.topic("kafka-producer", partitions)
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const producer = yield* Producer.make(Producer.fromBrokers(yield* Brokers.make({ bootstrap: [broker] })), {
      linger: lingerMs,
      maxBatchRecords,
    })
    const transport = { sendEach: producer.sendEach } as unknown as Transport.Transport["Service"]
    return yield* Effect.gen(function*() {
      const measured = yield* sendFromFibers(yield* BatchingProducer.Producer, { topic, count: total, fibers: concurrency, value })
      return { ...measured, detail: `${(total / producer.metrics().requests).toFixed(0)} records per request` }
    }).pipe(Effect.provide(BatchingProducer.layer()), Effect.provideService(Transport.Transport, transport))
  })))
}

// --- @platformatic/kafka, from the bench peers ---------------------------------------------------

const platformatic = await loadPlatformatic()

const platformaticCase = (value: (id: number) => Uint8Array, batchSize: number) => async (): Promise<Measurement> => {
  const { Producer: PlatformaticProducer } = platformatic.module
  const topic = await resources.topic("kafka-producer", partitions)
  const producer = new PlatformaticProducer({
    clientId: "partita-bench-platformatic",
    bootstrapBrokers: [broker],
    idempotent: true,
    acks: -1,
    autocreateTopics: false,
  })
  const stream = producer.asStream({ batchSize, batchTime: lingerMs, reportMode: "message" })
  const waiting = new Map<object, () => void>()
  stream.on("delivery-report", (report: { message: object }) => {
    const resolve = waiting.get(report.message)
    waiting.delete(report.message)
    resolve?.()
  })
  let failed: unknown = undefined
  stream.on("error", (error: unknown) => {
    failed = error
  })
  try {
    return await senders(total, (id) =>
      new Promise<void>((resolve, reject) => {
        if (failed !== undefined) return reject(failed)
        const message = { topic, value: Buffer.from(value(id)) }
        waiting.set(message, resolve)
        stream.write(message)
      }))
  } finally {
    await stream.close()
    await producer.close()
  }
}

// --- kafkajs --------------------------------------------------------------------------------------

const kafkajsCase = (value: (id: number) => Uint8Array) => async (): Promise<Measurement> => {
  const topic = await resources.topic("kafka-producer", partitions)
  const producer = kafkaClient("partita-bench-kafkajs").producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    return await senders(kafkajsTotal, (id) =>
      producer.send({ topic, acks: -1, messages: [{ value: Buffer.from(value(id)) }] }).then(() => undefined))
  } finally {
    await producer.disconnect()
  }
}

/** A case that says why it did not run, as a sample of nothing (`-` in the table). */
const missing = (why: string) => async (): Promise<Measurement> => {
  console.log(`   platformatic: ${why}`)
  return { records: 0, seconds: Number.NaN, cpuSeconds: Number.NaN }
}

const one = (name: string, run: () => Promise<Measurement>): Case => ({
  name,
  run: async () => ({ [name]: await run() }),
})

const cases: Array<Case> = sizes.flatMap(({ name, value }) => [
  one(`partita, ${name}`, partita(value)),
  one(
    `platformatic, ${name}`,
    platformatic.module !== undefined ? platformaticCase(value, maxBatchRecords) : missing(platformatic.problem!),
  ),
  one(`kafkajs per record, ${name}`, kafkajsCase(value)),
])
cases.push(one("partita via Producer, 12 B", viaProducer(sizes[0].value)))
if (platformatic.module !== undefined) {
  cases.push(one(`platformatic batchSize=${concurrency}, 12 B`, platformaticCase(sizes[0].value, concurrency)))
}

await runBench({
  name: "kafka_producer",
  title: "the Kafka client's producer vs raw @platformatic/kafka and raw kafkajs, many senders of one record each",
  records: total,
  rounds: 3,
  notes: [
    `${concurrency} concurrent senders, one record each at a time, acks=all, no key, ${partitions} partitions, values of 12 B and 1 KiB`,
    `partita and platformatic idempotent, linger/batchTime ${lingerMs} ms, maxBatchRecords/batchSize ${maxBatchRecords.toLocaleString("en-US")}; kafkajs not idempotent`,
    `kafkajs sends ${kafkajsTotal.toLocaleString("en-US")} records per case (one Produce request each)`,
    ...(platformatic.problem === undefined ? [] : [`platformatic: ${platformatic.problem}`]),
  ],
  cases,
  ratios: [
    ...sizes.flatMap(({ name }) => [
      { numerator: `partita, ${name}`, denominator: `platformatic, ${name}`, target: 1.5 },
      { numerator: `partita, ${name}`, denominator: `kafkajs per record, ${name}` },
    ]),
    { numerator: "partita, 12 B", denominator: `platformatic batchSize=${concurrency}, 12 B` },
    { numerator: "partita via Producer, 12 B", denominator: "partita, 12 B" },
  ],
  teardown: () => resources.cleanup(),
})
