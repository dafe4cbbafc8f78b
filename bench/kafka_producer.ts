/**
 * The Kafka client's own producer (lib/internal/kafka/producer.ts) next to kafkajs, at equal
 * work: `BENCH_CONCURRENCY` senders (default 1000) each sending one record at a time until
 * `BENCH_RECORDS` (default 50k) `{"id":n}` records are written to a fresh 3-partition topic,
 * acks=all. Ours is idempotent (the default); kafkajs' idempotent producer allows one request in
 * flight, so it runs as a plain producer (its fastest). kafkajs sends one Produce request per
 * `send`, so that case writes a tenth of the records (records/s stays comparable); a third row is
 * kafkajs given the records already in arrays of 1000, the best it can do.
 *
 *   bun bench/kafka_producer.ts        (KAFKA_BROKERS, BENCH_RECORDS, BENCH_CONCURRENCY, BENCH_ROUNDS)
 *
 * Not part of bench/run yet: it prints its own table.
 */
import process from "node:process"
import kafkajs from "kafkajs"
import { Effect } from "effect"
import * as Brokers from "../lib/internal/kafka/brokers.ts"
import * as Producer from "../lib/internal/kafka/producer.ts"

const { Kafka, logLevel } = kafkajs
const broker = (process.env["KAFKA_BROKERS"] ?? "127.0.0.1:9092").split(",")[0]!
const total = Number(process.env["BENCH_RECORDS"] ?? 50_000)
const concurrency = Number(process.env["BENCH_CONCURRENCY"] ?? 1000)
const rounds = Number(process.env["BENCH_ROUNDS"] ?? 3)
const encoder = new TextEncoder()
const kafka = new Kafka({ clientId: "partita-bench", brokers: [broker], logLevel: logLevel.NOTHING })
const admin = kafka.admin()
await admin.connect()

const freshTopic = async () => {
  const topic = `partita-bench-producer-${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`
  await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true })
  return topic
}

/** `count` records sent by `concurrency` workers, one at a time each; resolves with records/s. */
const workers = async (count: number, send: (id: number) => Promise<void>): Promise<number> => {
  let next = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await send(next++)
  }))
  return count / ((performance.now() - started) / 1000)
}

const ours = (topic: string): Promise<{ rate: number; perRequest: number }> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const producer = yield* Producer.make(Producer.fromBrokers(yield* Brokers.make({ bootstrap: [broker] })))
    let next = 0
    const started = performance.now()
    yield* Effect.forEach(Array.from({ length: concurrency }), () =>
      Effect.whileLoop({
        while: () => next < total,
        body: () => producer.sendEach([{ topic, key: null, value: encoder.encode(`{"id":${next++}}`) }]),
        step: (outcomes) => {
          if (outcomes[0]!._tag === "Failure") throw new Error(String(outcomes[0]!.cause))
        },
      }), { concurrency: "unbounded", discard: true })
    const rate = total / ((performance.now() - started) / 1000)
    return { rate, perRequest: total / producer.metrics().requests }
  })))

const theirs = async (topic: string, batched: boolean): Promise<number> => {
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    if (!batched) {
      return await workers(Math.max(concurrency, Math.round(total / 10)), (id) =>
        producer.send({ topic, acks: -1, messages: [{ value: `{"id":${id}}` }] }).then(() => undefined))
    }
    const started = performance.now()
    const calls = Array.from({ length: Math.ceil(total / 1000) }, (_, call) =>
      producer.send({
        topic,
        acks: -1,
        messages: Array.from({ length: Math.min(1000, total - call * 1000) }, (_, i) => ({ value: `{"id":${call * 1000 + i}}` })),
      }))
    await Promise.all(calls)
    return total / ((performance.now() - started) / 1000)
  } finally {
    await producer.disconnect()
  }
}

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!
const rows: Record<string, Array<number>> = { partita: [], "kafkajs per record": [], "kafkajs arrays of 1000": [] }
let perRequest = 0
const topics: Array<string> = []
for (let round = 0; round <= rounds; round++) {
  const topic = await freshTopic()
  topics.push(topic)
  const mine = await ours(topic)
  const one = await theirs(topic, false)
  const many = await theirs(topic, true)
  if (round === 0) continue // warm-up
  rows["partita"]!.push(mine.rate)
  rows["kafkajs per record"]!.push(one)
  rows["kafkajs arrays of 1000"]!.push(many)
  perRequest = mine.perRequest
}
await admin.deleteTopics({ topics })
await admin.disconnect()
const base = median(rows["kafkajs per record"]!)
console.log(`${concurrency} senders, one record each at a time, acks=all, ${rounds} rounds (median records/s)`)
for (const [name, values] of Object.entries(rows)) {
  console.log(`${name.padEnd(24)} ${Math.round(median(values)).toString().padStart(9)}  ${(median(values) / base).toFixed(1)}x`)
}
console.log(`partita: ${perRequest.toFixed(0)} records per Produce request`)
