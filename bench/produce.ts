/**
 * The Produce and Limit rows of the benchmark table (issue 14): records per second written at
 * acks=all by one caller that awaits each call before the next, with 1, 100 and 1000 records per
 * call, values of exactly 12 B and 1 KiB (no key), plain and idempotent, a fresh 3-partition
 * topic per value size and round (shared by its cases); beside Kafka's own `ProducerPerformance`,
 * and Partita's `Producer` fed by 1000 fibers sending one record each.
 *
 * - Partita on KafkaJsTransport: the same `Transport.send`, idempotent only (kafkajs' idempotent
 *   producer is how that transport writes acks=all), as many records as raw kafkajs.
 * - Partita: `Transport.send` on `KafkaTransport` (the user-facing path), its defaults (linger
 *   0, batches of at most 10,000 records or 1 MiB per partition), `idempotent: true` (its
 *   default) or `false`.
 * - kafkajs: `producer.send`, `acks: -1`; idempotent is `idempotent: true`, which kafkajs
 *   allows only with `maxInFlightRequests: 1` (one caller awaiting each call never has more than
 *   one request in flight, so that costs nothing here).
 * - @platformatic/kafka: `producer.send({ messages })` with the call's records, `acks: -1`,
 *   `idempotent` true or false.
 * - @confluentinc/kafka-javascript: its KafkaJS-compatible `producer.send`, `acks: -1` and
 *   `idempotent` in the producer's config (librdkafka's defaults otherwise, `linger.ms` 5 among
 *   them). It is a native addon, installed apart from the other peers into
 *   .cache/bench-peers-native; where it is missing or does not load, its measures are listed as
 *   unavailable with the reason.
 * - ProducerPerformance (the Limit): Kafka's Java tool, `--throughput -1`, `--record-size` 12
 *   or 1024, acks=all, `enable.idempotence` true or false, its own batching (no "records per
 *   call"); a fresh JVM per run, so its first fifth of the records are `--warmup-records` and the
 *   figure is its steady-state line.
 * - Partita Producer, 1000 fibers × 1 record: `sendFromFibers` (common.ts, as kafka_producer
 *   uses it) through `Producer.layer()` on an idempotent `KafkaTransport`.
 *
 * Every client connects, and sends one record to the case's topic, before its window opens
 * (connections, metadata, the producer id are set up outside it); the window runs from the first
 * counted call to the last acknowledgement. At 1 record per call every figure is bound by the
 * round trip (and by the client's linger), not by the client's throughput.
 *
 * Peers are bench-only installs (bench/peers → .cache/bench-peers, installed by bench/run).
 *
 *   bun bench/produce.ts        (KAFKA_BROKERS, BENCH_RECORDS, BENCH_ROUNDS, BENCH_SCALE)
 */
import { Buffer } from "node:buffer"
import kafkajs, { type Producer as KafkaJsProducer } from "kafkajs"
import { Effect, type Scope } from "effect"
import { KafkaJsTransport, KafkaTransport, Producer, Transport } from "../mod.ts"
import {
  type Case,
  config,
  javaToolsMissing,
  kafkaClient,
  kafkaResources,
  loadPeer,
  loadPlatformatic,
  loggingLayer,
  mark,
  type Measurement,
  type Peer,
  type RatioSpec,
  records,
  runBench,
  runJavaTool,
  runtime,
  sendFromFibers,
  since,
  type Unavailable,
} from "./common.ts"

const partitions = 3
const fibers = 1000
/** Records of a 1000-per-call case of 12 B values; every other case's count derives from it. */
const total = records(100_000, 1_000)
const resources = kafkaResources()

const sizes = [{ name: "12 B", bytes: 12 }, { name: "1 KiB", bytes: 1024 }] as const
const modes = [{ name: "plain", idempotent: false }, { name: "idempotent", idempotent: true }] as const
const perCalls = [1, 100, 1000] as const
type Size = (typeof sizes)[number]
type Mode = (typeof modes)[number]

/**
 * Records per case, so that each takes about a second at full scale: a call of one record is a
 * round trip (well under a thousandth of a second on a quiet machine), a call of 1000 about a
 * hundred times less per record; 1 KiB values move about a quarter as many records per second in
 * large calls. Never fewer than a few hundred (CI scale), always whole calls. confluent lingers
 * 5 ms per call (librdkafka's default): a fifth of the records at 1 per call, a quarter at 100,
 * half at 1000; kafkajs takes two to three times as long as the others for a large call: half of
 * them at 100 and 1000 per call.
 */
const countOf = (perCall: number, size: Size, client?: "confluent" | "kafkajs"): number => {
  const share = perCall === 1 ? 1 / 200 : perCall === 100 ? 1 / 4 : size.bytes > 100 ? 1 / 4 : 1
  const least = perCall === 1 ? 200 : perCall === 100 ? 300 : 1000
  const fewer = client === "confluent" ? (perCall === 1 ? 5 : perCall === 100 ? 4 : 2) : client === "kafkajs" && perCall > 1 ? 2 : 1
  return Math.ceil(Math.max(least, total * share) / fewer / perCall) * perCall
}
/**
 * ProducerPerformance's records (a fifth of them warm-up): five times a 1000-per-call case's at
 * 12 B, as a fresh JVM needs seconds to reach its pace (on a busy 2-core machine 2M records of
 * 12 B ran at 344k/s steady, 100k at about 100k/s); at 1 KiB its 16 KiB batches hold it to a
 * tenth of the JavaScript clients' pace, so as many as theirs.
 */
const limitCountOf = (size: Size): number => Math.max(1000, Math.round(size.bytes > 100 ? total / 4 : total * 5))
const fiberCountOf = (size: Size): number => Math.max(fibers, Math.round(size.bytes > 100 ? total / 2 : total))

/** 1024 distinct values of exactly `bytes` bytes (the record's number, zero-padded, then `x`s), reused in turn. */
const valuesOf = (bytes: number): ReadonlyArray<Buffer> =>
  Array.from({ length: 1024 }, (_, index) => {
    const value = Buffer.alloc(bytes, "x")
    value.write(String(index).padStart(Math.min(bytes, 12), "0").slice(-bytes))
    return value
  })
const values = new Map(sizes.map((size) => [size.bytes, valuesOf(size.bytes)]))
const valueAt = (size: Size, index: number): Buffer => values.get(size.bytes)![index & 1023]!

const name = {
  partita: (perCall: number, size: Size, mode: Mode) => `Partita KafkaTransport.send, ${perCall} per call, ${size.name}, ${mode.name}`,
  partitaKafkajs: (perCall: number, size: Size, mode: Mode) => `Partita KafkaJsTransport.send, ${perCall} per call, ${size.name}, ${mode.name}`,
  kafkajs: (perCall: number, size: Size, mode: Mode) => `kafkajs send, ${perCall} per call, ${size.name}, ${mode.name}`,
  platformatic: (perCall: number, size: Size, mode: Mode) => `platformatic send, ${perCall} per call, ${size.name}, ${mode.name}`,
  confluent: (perCall: number, size: Size, mode: Mode) => `confluent send, ${perCall} per call, ${size.name}, ${mode.name}`,
  limit: (size: Size, mode: Mode) => `ProducerPerformance (Limit), ${size.name}, ${mode.name}`,
  /** Java's `batch.size` is 16 KiB, 16 records of 1 KiB; Partita's batches go to 1 MiB. */
  limitLargeBatches: (size: Size, mode: Mode) => `ProducerPerformance, ${size.name}, ${mode.name}, batch.size 1 MiB (diagnostic)`,
  fibers: (size: Size) => `Partita Producer, ${fibers} fibers × 1 record, ${size.name}, idempotent`,
}

/**
 * The round's topic for values of `size`: fresh each round, shared by that round's cases of that
 * size (creating a topic and waiting for it took longer than most cases at CI scale). Every
 * partition has taken a record before a case gets it: leaders show in metadata a moment before
 * the broker accepts produce requests for them, and a client's retry of that inside a window
 * (kafkajs' idempotent producer then fails with an out-of-order sequence; Partita's send fails
 * with UNKNOWN_TOPIC_OR_PARTITION) would measure the broker's start-up, not the client.
 */
const topicOf = (round: number, size: Size): Promise<string> => {
  const key = `${round} ${size.name}`
  const known = topics.get(key)
  if (known !== undefined) return known
  const made = (async () => {
    const topic = await resources.topic(`produce-${size.bytes}`, partitions)
    probe ??= (async () => {
      // Silent: it logs every "not the leader" it retries through.
      const producer = new kafkajs.Kafka({ brokers: [...config.brokers], clientId: "partita-bench-probe", logLevel: kafkajs.logLevel.NOTHING })
        .producer({ allowAutoTopicCreation: false })
      await producer.connect()
      return producer
    })()
    const producer = await probe
    await producer.send({ topic, acks: -1, messages: Array.from({ length: partitions }, (_, partition) => ({ partition, value: null })) })
    return topic
  })()
  topics.set(key, made)
  return made
}
const topics = new Map<string, Promise<string>>()
let probe: Promise<KafkaJsProducer> | undefined

/** The window of `count` records sent `perCall` at a time by `send`, each call awaited. */
const sequential = async (count: number, perCall: number, send: (from: number, length: number) => Promise<unknown>): Promise<Measurement> => {
  const start = mark()
  for (let from = 0; from < count; from += perCall) await send(from, Math.min(perCall, count - from))
  return since(count, start)
}

// --- Partita ----------------------------------------------------------------------------------

/** `count` records through `Transport.send` on the transport `make` opens, `perCall` a call, each awaited. */
const transportSends = (
  make: Effect.Effect<Transport.Transport["Service"], unknown, Scope.Scope>,
  perCall: number,
  size: Size,
  count: number,
) =>
async (round: number): Promise<Measurement> => {
  const topic = await topicOf(round, size)
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const transport = yield* make
    yield* transport.send([{ topic, key: null, value: valueAt(size, 0) }])
    const start = mark()
    for (let from = 0; from < count; from += perCall) {
      yield* transport.send(Array.from({ length: perCall }, (_, index) => ({ topic, key: null, value: valueAt(size, from + index) })))
    }
    return since(count, start)
  })).pipe(Effect.provide(loggingLayer)))
}

const partitaCase = (perCall: number, size: Size, mode: Mode) =>
  transportSends(
    KafkaTransport.make({ brokers: config.brokers, clientId: "partita-bench-produce", idempotent: mode.idempotent }),
    perCall,
    size,
    countOf(perCall, size),
  )

/**
 * The same on `KafkaJsTransport`: it writes acks=all through kafkajs' idempotent producer, so it
 * has an idempotent cell only; as many records as raw kafkajs.
 */
const partitaKafkajsCase = (perCall: number, size: Size) =>
  transportSends(
    KafkaJsTransport.make({ brokers: config.brokers, clientId: "partita-bench-produce-kafkajs" }),
    perCall,
    size,
    countOf(perCall, size, "kafkajs"),
  )

const fibersCase = (size: Size) => async (round: number): Promise<Measurement> => {
  const topic = await topicOf(round, size)
  const count = fiberCountOf(size)
  return Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const transport = yield* KafkaTransport.make({ brokers: config.brokers, clientId: "partita-bench-produce", idempotent: true })
    yield* transport.send([{ topic, key: null, value: valueAt(size, 0) }])
    let calls = 0
    const counted = Transport.Transport.of({
      ...transport,
      sendEach: (records, options) => {
        calls++
        return transport.sendEach(records, options)
      },
    })
    return yield* Effect.gen(function*() {
      const measured = yield* sendFromFibers(yield* Producer.Producer, { topic, count, fibers, value: (id) => valueAt(size, id) })
      return { ...measured, detail: `${(count / calls).toFixed(0)} records per sendEach` }
    }).pipe(Effect.provide(Producer.layer()), Effect.provideService(Transport.Transport, counted))
  })).pipe(Effect.provide(loggingLayer)))
}

// --- kafkajs ----------------------------------------------------------------------------------

const kafkajsCase = (perCall: number, size: Size, mode: Mode) => async (round: number): Promise<Measurement> => {
  const topic = await topicOf(round, size)
  const producer = kafkaClient("partita-bench-kafkajs").producer({
    allowAutoTopicCreation: false,
    idempotent: mode.idempotent,
    ...(mode.idempotent ? { maxInFlightRequests: 1 } : {}),
  })
  await producer.connect()
  try {
    await producer.send({ topic, acks: -1, messages: [{ value: valueAt(size, 0) }] })
    return await sequential(countOf(perCall, size, "kafkajs"), perCall, (from, length) =>
      producer.send({ topic, acks: -1, messages: Array.from({ length }, (_, index) => ({ value: valueAt(size, from + index) })) }))
  } finally {
    await producer.disconnect()
  }
}

// --- the peers: @platformatic/kafka (bench/peers), @confluentinc/kafka-javascript (native) -----

const platformatic = await loadPlatformatic()
const confluent: Peer = await loadPeer({
  directory: "bench-peers-native",
  entry: "@confluentinc/kafka-javascript/",
  how: "require",
  missing: "a native addon: it goes into .cache/bench-peers-native",
}).then((peer) =>
  peer.module !== undefined && peer.module.KafkaJS?.Kafka === undefined
    ? { problem: `loaded on ${runtime.name} without its KafkaJS API` }
    : peer
)

const platformaticCase = (perCall: number, size: Size, mode: Mode) => async (round: number): Promise<Measurement> => {
  const topic = await topicOf(round, size)
  const producer = new platformatic.module.Producer({
    clientId: "partita-bench-platformatic",
    bootstrapBrokers: [...config.brokers],
    idempotent: mode.idempotent,
    acks: -1,
    autocreateTopics: false,
  })
  try {
    await producer.send({ messages: [{ topic, value: valueAt(size, 0) }] })
    return await sequential(countOf(perCall, size), perCall, (from, length) =>
      producer.send({ messages: Array.from({ length }, (_, index) => ({ topic, value: valueAt(size, from + index) })) }))
  } finally {
    await producer.close()
  }
}

const confluentCase = (perCall: number, size: Size, mode: Mode) => async (round: number): Promise<Measurement> => {
  const topic = await topicOf(round, size)
  const { Kafka, logLevel } = confluent.module.KafkaJS
  const kafka = new Kafka({ kafkaJS: { brokers: [...config.brokers], clientId: "partita-bench-confluent", logLevel: logLevel.ERROR } })
  const producer = kafka.producer({ kafkaJS: { acks: -1, idempotent: mode.idempotent } })
  await producer.connect()
  try {
    await producer.send({ topic, messages: [{ value: valueAt(size, 0) }] })
    return await sequential(countOf(perCall, size, "confluent"), perCall, (from, length) =>
      producer.send({ topic, messages: Array.from({ length }, (_, index) => ({ value: valueAt(size, from + index) })) }))
  } finally {
    await producer.disconnect()
  }
}

// --- the Limit: ProducerPerformance -------------------------------------------------------------

/** ProducerPerformance's steady-state summary: "<n> steady state records sent, <r> records/sec (…)…". */
const steadyState = /^(\d+) steady state records sent, ([\d.]+) records\/sec \(([\d.]+) MB\/sec\), ([\d.]+) ms avg latency/m
/** Its whole-run summary, the last line without a warm-up: "<n> records sent, <r> records/sec (…), …, <p> ms 99th, …". */
const wholeRun = /^(\d+) records sent, ([\d.]+) records\/sec \(([\d.]+) MB\/sec\), ([\d.]+) ms avg latency, [\d.]+ ms max latency, \d+ ms 50th/m

const limitCase = (size: Size, mode: Mode, properties: ReadonlyArray<string> = []) => async (round: number): Promise<Measurement> => {
  const topic = await topicOf(round, size)
  const count = limitCountOf(size)
  const warmup = Math.floor(count / 5)
  const output = await runJavaTool("org.apache.kafka.tools.ProducerPerformance", [
    "--bootstrap-server",
    config.brokers.join(","),
    "--topic",
    topic,
    "--num-records",
    String(count),
    "--warmup-records",
    String(warmup),
    "--record-size",
    String(size.bytes),
    "--throughput",
    "-1",
    "--command-property",
    "acks=all",
    `enable.idempotence=${mode.idempotent}`,
    "client.id=partita-bench-producer-performance",
    ...properties,
  ])
  const steady = steadyState.exec(output)
  const whole = wholeRun.exec(output)
  if (steady === null || whole === null) {
    throw new Error(`ProducerPerformance printed no summary line: ${output.slice(-500)}`)
  }
  const sent = Number(steady[1])
  const perSecond = Number(steady[2])
  // Its process, not this one, did the work: no CPU figure.
  return {
    records: sent,
    seconds: sent / perSecond,
    cpuSeconds: Number.NaN,
    detail: `steady state, avg latency ${steady[4]} ms; the whole run with warm-up ${Math.round(Number(whole[2]))} records/s`,
  }
}

// --- the bench -----------------------------------------------------------------------------------

const one = (caseName: string, run: (round: number) => Promise<Measurement>, warmup = true): Case => ({
  name: caseName,
  warmup,
  run: async (round) => ({ [caseName]: await run(round) }),
})

const javaMissing = javaToolsMissing()
const unavailable: Array<Unavailable> = []
const cases: Array<Case> = []
const ratios: Array<RatioSpec> = []
for (const size of sizes) {
  for (const mode of modes) {
    for (const perCall of perCalls) {
      const partita = name.partita(perCall, size, mode)
      cases.push(one(partita, partitaCase(perCall, size, mode)))
      cases.push(one(name.kafkajs(perCall, size, mode), kafkajsCase(perCall, size, mode)))
      ratios.push({ numerator: partita, denominator: name.kafkajs(perCall, size, mode) })
      const onKafkajs = name.partitaKafkajs(perCall, size, mode)
      if (mode.idempotent) {
        cases.push(one(onKafkajs, partitaKafkajsCase(perCall, size)))
        ratios.push({ numerator: onKafkajs, denominator: name.kafkajs(perCall, size, mode) })
      } else {
        unavailable.push({ measure: onKafkajs, why: "KafkaJsTransport writes acks=all through kafkajs' idempotent producer only" })
      }
      for (const [peer, loaded, make] of [["platformatic", platformatic, platformaticCase], ["confluent", confluent, confluentCase]] as const) {
        const measure = name[peer](perCall, size, mode)
        if (loaded.problem === undefined) cases.push(one(measure, make(perCall, size, mode)))
        else unavailable.push({ measure, why: `${peer === "platformatic" ? "@platformatic/kafka" : "@confluentinc/kafka-javascript"} ${loaded.problem}` })
        ratios.push({ numerator: partita, denominator: measure })
      }
    }
    const limit = name.limit(size, mode)
    // A fresh JVM each run: warming this process warms nothing of it.
    if (javaMissing === undefined) cases.push(one(limit, limitCase(size, mode), false))
    else unavailable.push({ measure: limit, why: javaMissing })
    ratios.push({ numerator: name.partita(1000, size, mode), denominator: limit })
  }
  if (size.bytes > 100) {
    const large = name.limitLargeBatches(size, modes[1])
    if (javaMissing === undefined) cases.push(one(large, limitCase(size, modes[1], ["batch.size=1048576"]), false))
    else unavailable.push({ measure: large, why: javaMissing })
  }
  cases.push(one(name.fibers(size), fibersCase(size)))
  ratios.push({ numerator: name.fibers(size), denominator: name.limit(size, modes[1]), target: 0.8 })
  if (size.bytes > 100) ratios.push({ numerator: name.fibers(size), denominator: name.limitLargeBatches(size, modes[1]) })
}

const counts = (size: Size) =>
  `${size.name}: ${perCalls.map((perCall) => `${countOf(perCall, size).toLocaleString("en-US")} at ${perCall} per call`).join(", ")} ` +
  `(kafkajs ${countOf(100, size, "kafkajs").toLocaleString("en-US")} and ${countOf(1000, size, "kafkajs").toLocaleString("en-US")} at 100 and 1000, ` +
  `confluent ${perCalls.map((perCall) => countOf(perCall, size, "confluent").toLocaleString("en-US")).join(", ")}), ` +
  `${limitCountOf(size).toLocaleString("en-US")} for ProducerPerformance (a fifth warm-up), ${fiberCountOf(size).toLocaleString("en-US")} from the fibers`

await runBench({
  name: "produce",
  title: "records/s written at acks=all, 1, 100 and 1000 records per awaited call, beside the peers and ProducerPerformance",
  records: total,
  notes: [
    `one caller awaiting each call before the next (at 1 record per call a round-trip-bound figure); acks=all, no key, values of exactly 12 B and 1 KiB, ${partitions} partitions, a fresh topic per value size and round, shared by that round's cases of that size`,
    "plain: not idempotent; idempotent: Partita idempotent: true, kafkajs idempotent: true (which it allows only with maxInFlightRequests 1), platformatic and confluent idempotent: true, ProducerPerformance enable.idempotence=true",
    "every client at its defaults otherwise (Partita's linger 0, confluent's librdkafka linger.ms 5); each sends one record before its window opens",
    `records per case: ${counts(sizes[0])}; ${counts(sizes[1])}`,
    `ProducerPerformance: a fresh JVM per run, its steady-state figure after --warmup-records; no CPU-second figure (another process); its defaults otherwise (batch.size 16 KiB, linger.ms 5): the diagnostic row gives it 1 MiB batches, as Partita's`,
    `Partita Producer: ${fibers} fibers each sending one record and awaiting it, Producer.layer() on an idempotent KafkaTransport`,
  ],
  cases,
  ratios,
  unavailable,
  teardown: async () => {
    await (await probe)?.disconnect()
    await resources.cleanup()
  },
})
