/**
 * Issue 14's Consume, Peers and Limit rows: pre-seeded records read back from the real broker by
 * a Partita actor (a no-op handler, at-least-once commits) on each Kafka transport, by the raw
 * clients a user could pick instead doing the same no-op work, and by Kafka's own
 * `ConsumerPerformance`, at 1, 16 and 128 partitions; with an A/A pair of raw kafkajs runs, and
 * the partition scaling (throughput at 128 partitions ÷ at 16) of each.
 *
 * The records (`BENCH_RECORDS`, default 1M; CI scale 3000) are produced once per partition count,
 * before the rounds, round-robin over the partitions, values `{"id":n}` (8-13 bytes), no key.
 * Every case of every round reads all of them from the start with a fresh consumer group and
 * commits every partition's end; its window runs from the group's join (or assignment) until that
 * commit returned. Cases, for each partition count:
 * - Partita actor, KafkaTransport: `ActorSystem` with one actor, values as `Codec.bytes` (nothing
 *   decoded), every option at its default, on Partita's own client; window from `Assigned`;
 * - Partita actor, KafkaJsTransport: the same actor on the kafkajs transport; window from
 *   kafkajs' join;
 * - raw kafkajs eachBatch A and B: `consumeRawKafkajs` (the actors_kafka baseline), twice: A is
 *   the denominator of the actor's ratio, A / B is the A/A ratio (more than 5% off 1: the run
 *   is noisy); window from kafkajs' `GROUP_JOIN`;
 * - raw @platformatic/kafka: its `Consumer.consume()` stream in flowing mode (`'data'` events,
 *   its fastest documented way), autocommit off, mode "committed" falling back to "earliest", the
 *   last offset of each partition committed with `consumer.commit` at the end; window from its
 *   `consumer:group:join` event;
 * - raw @confluentinc/kafka-javascript: its native (node-rdkafka) `KafkaConsumer`, batches of
 *   `consume(1000, cb)` in a loop (1.7-3x its KafkaJS-compatible `eachBatch` in a check at 200k
 *   records on 16 partitions: that API runs the same native consumer under a cache and a
 *   per-partition scheduler), auto commit off, every partition's end committed with
 *   `commitSync` at the end; window from its first assignment
 *   (its `rebalance` event). Node only: a nan addon built for Node's ABI, which neither Bun nor
 *   Deno loads; installed by bench/run from bench/peers-native, where the cells say why not;
 * - ConsumerPerformance (Kafka's limit): `org.apache.kafka.tools.ConsumerPerformance` in a fresh
 *   JVM, a fresh group each round, from its own report: `fetch.nMsg.sec`, the records over its
 *   fetch time, which leaves out its join (`rebalance.time.ms`, shown as the join), as our windows
 *   leave out the join; its window ends at the last record, before its consumer commits on close.
 *
 *   node --expose-gc bench/consume.ts     (KAFKA_BROKERS, BENCH_RECORDS, BENCH_ROUNDS, BENCH_CASES)
 */
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { Context, Effect, type ManagedRuntime, type Scope } from "effect"
import { Codec, Transport } from "../mod.ts"
import {
  type Case,
  config,
  consumeRawKafkajs,
  consumeWithActors,
  instrument,
  javaToolsMissing,
  kafkaResources,
  kafkaRuntime,
  type Mark,
  mark,
  type Measurement,
  payload,
  type RatioSpec,
  records,
  runBench,
  runJavaTool,
  runtime,
  since,
  type Unavailable,
} from "./common.ts"

const total = records(1_000_000, 3_000)
const partitionCounts = [1, 16, 128] as const
const broker = config.brokers[0]!
const resources = kafkaResources()
const kafka = kafkaRuntime()
const own = kafkaRuntime("own")
const probe = instrument(Context.get(await kafka.context(), Transport.Transport))
const ownProbe = instrument(Context.get(await own.context(), Transport.Transport), { kafkajsJoin: false })

const label = (partitions: number) => `${partitions} partition${partitions === 1 ? "" : "s"}`
const names = (partitions: number) => {
  const at = label(partitions)
  return {
    actorOwn: `Partita actor, KafkaTransport, ${at}`,
    actorKafkajs: `Partita actor, KafkaJsTransport, ${at}`,
    kafkajsA: `raw kafkajs eachBatch A, ${at}`,
    kafkajsB: `raw kafkajs eachBatch B, ${at}`,
    platformatic: `raw @platformatic/kafka, ${at}`,
    confluent: `raw @confluentinc/kafka-javascript, ${at}`,
    limit: `ConsumerPerformance (Kafka's limit), ${at}`,
  }
}

// --- the data: one topic per partition count, seeded once -----------------------------------

/**
 * Writes the records through `KafkaTransport` (acks=all, idempotent), round-robin over the
 * partitions, four sends of 10,000 in flight: a few times faster than kafkajs' `produceRaw` at
 * 128 partitions, where each of its calls of 1000 records is one round trip.
 */
const seed = async (topic: string, partitions: number): Promise<void> => {
  const transport = Context.get(await own.context(), Transport.Transport)
  const batch = 10_000
  let next = 0
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (next < total) {
      const from = next
      next = Math.min(total, next + batch)
      const records = Array.from({ length: next - from }, (_, index) => ({
        topic,
        key: null,
        value: payload(from + index),
        partition: (from + index) % partitions,
      }))
      await own.runPromise(transport.send(records))
    }
  }))
}

const seeded = new Map<number, { readonly topic: string; readonly ends: ReadonlyMap<number, number> }>()
for (const partitions of partitionCounts) {
  const topic = await resources.topic(`consume-${partitions}`, partitions)
  const started = performance.now()
  await seed(topic, partitions)
  console.log(`   seeded ${total.toLocaleString("en-US")} records on ${label(partitions)} in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  seeded.set(partitions, { topic, ends: await resources.ends(topic) })
}
const data = (partitions: number) => seeded.get(partitions)!

// --- the peers ---------------------------------------------------------------------------------

const peers = new URL("../.cache/bench-peers/node_modules/", import.meta.url)
const nativePeers = new URL("../.cache/bench-peers-native/", import.meta.url)

/** `@platformatic/kafka`'s module, or why it is not here. */
const platformatic: { readonly module?: any; readonly problem?: string } = await (async () => {
  const entry = new URL("@platformatic/kafka/dist/index.js", peers)
  if (!existsSync(entry)) return { problem: "not installed (bench/run installs bench/peers into .cache/bench-peers)" }
  try {
    return { module: await import(entry.href) }
  } catch (cause) {
    return { problem: `does not load on this runtime: ${cause instanceof Error ? cause.message : String(cause)}`.slice(0, 200) }
  }
})()

/** `@confluentinc/kafka-javascript` (CommonJS with a native addon), or why it is not here. */
const confluent: { readonly module?: any; readonly problem?: string } = (() => {
  const root = new URL("node_modules/@confluentinc/kafka-javascript/", nativePeers)
  if (!existsSync(new URL("build/Release/confluent-kafka-javascript.node", root))) {
    const failed = new URL("install-failed.txt", nativePeers)
    if (!existsSync(failed)) {
      return { problem: "not installed (bench/run builds bench/peers-native into .cache/bench-peers-native when Node is among BENCH_RUNTIMES)" }
    }
    // bench/run's first line (how long it ran), then npm's last one (what failed).
    const lines = readFileSync(failed, "utf8").split("\n").map((line) => line.trim()).filter((line) => line !== "")
    const what = `${lines[0] ?? ""} ${lines.length > 1 ? lines.at(-1) : ""}`.trim().slice(0, 200)
    return { problem: `its install failed: ${what} (log: .cache/bench-peers-native/install.log)` }
  }
  try {
    return { module: createRequire(new URL("package.json", root))(root.pathname) }
  } catch (cause) {
    // The runtime's own words, without the addon's path.
    const why = (cause instanceof Error ? cause.message : String(cause)).replace(/^Cannot load native addon at \S+: /, "")
    return { problem: `does not load on ${runtime.name}: ${why}`.slice(0, 200) }
  }
})()

const javaProblem = javaToolsMissing()

// --- the cases ---------------------------------------------------------------------------------

const actor = (
  runtimeOf: ManagedRuntime.ManagedRuntime<Transport.Transport, unknown>,
  probeOf: ReturnType<typeof instrument>,
  partitions: number,
  what: string,
): Promise<Measurement> => {
  const { topic, ends } = data(partitions)
  const program: Effect.Effect<Measurement, unknown, Scope.Scope> = consumeWithActors({
    probe: probeOf,
    topic,
    group: resources.group(`${what}-${partitions}`),
    ends,
    value: Codec.bytes,
  })
  return runtimeOf.runPromise(Effect.scoped(program))
}

const kafkajs = (partitions: number): Promise<Measurement> =>
  consumeRawKafkajs({ topic: data(partitions).topic, group: resources.group(`kafkajs-${partitions}`), total, partitions })

const platformaticConsume = async (partitions: number): Promise<Measurement> => {
  const { Consumer } = platformatic.module
  const { topic } = data(partitions)
  const start = mark()
  let joined: Mark | undefined
  const consumer = new Consumer({
    groupId: resources.group(`platformatic-${partitions}`),
    clientId: "partita-bench-platformatic",
    bootstrapBrokers: [broker],
    autocommit: false,
  })
  consumer.on("consumer:group:join", () => {
    joined ??= mark()
  })
  try {
    const stream = await consumer.consume({ topics: [topic], mode: "committed", fallbackMode: "earliest", autocommit: false })
    const last = new Map<number, { readonly offset: bigint; readonly leaderEpoch: number }>()
    let count = 0
    await new Promise<void>((resolve, reject) => {
      stream.on("error", reject)
      stream.on("data", (message: { partition: number; offset: bigint; leaderEpoch: number }) => {
        last.set(message.partition, message)
        if (++count === total) resolve()
      })
    })
    stream.pause()
    await consumer.commit({
      offsets: [...last].map(([partition, { offset, leaderEpoch }]) => ({ topic, partition, offset: offset + 1n, leaderEpoch })),
    })
    const from = joined ?? start
    return since(total, from, (from.at - start.at) / 1000)
  } finally {
    await consumer.close(true)
  }
}

const confluentConsume = async (partitions: number): Promise<Measurement> => {
  const { KafkaConsumer } = confluent.module
  const { topic } = data(partitions)
  const start = mark()
  let assigned: Mark | undefined
  const consumer = new KafkaConsumer({
    "group.id": resources.group(`confluent-${partitions}`),
    "client.id": "partita-bench-confluent",
    "metadata.broker.list": broker,
    "enable.auto.commit": false,
    "rebalance_cb": true,
  }, { "auto.offset.reset": "earliest" })
  consumer.on("rebalance", (error: { code: number }) => {
    if (error.code === -175 /* ERR__ASSIGN_PARTITIONS */) assigned ??= mark()
  })
  await new Promise<void>((resolve, reject) => consumer.connect({}, (error: unknown) => (error ? reject(error) : resolve())))
  try {
    // What its KafkaJS-compatible consumer sets: a consume call returns what is ready once one record arrived.
    consumer.setDefaultIsTimeoutOnlyForFirstMessage(true)
    consumer.setDefaultConsumeTimeout(100)
    consumer.subscribe([topic])
    const next = new Map<number, number>()
    let count = 0
    while (count < total) {
      const batch = await new Promise<ReadonlyArray<{ partition: number; offset: number }>>((resolve, reject) =>
        consumer.consume(1000, (error: unknown, messages: ReadonlyArray<{ partition: number; offset: number }>) =>
          error ? reject(error) : resolve(messages)
        )
      )
      for (const message of batch) next.set(message.partition, message.offset + 1)
      count += batch.length
    }
    consumer.commitSync([...next].map(([partition, offset]) => ({ topic, partition, offset })))
    const from = assigned ?? start
    return since(total, from, (from.at - start.at) / 1000)
  } finally {
    await new Promise<void>((resolve) => consumer.disconnect(() => resolve()))
  }
}

/** Kafka's `ConsumerPerformance` on the same topic, a fresh group; its own figure, read from its report. */
const consumerPerformance = async (partitions: number): Promise<Measurement> => {
  const output = await runJavaTool("org.apache.kafka.tools.ConsumerPerformance", [
    "--bootstrap-server", broker,
    "--topic", data(partitions).topic,
    "--group", resources.group(`consumer-performance-${partitions}`),
    "--num-records", String(total),
    "--timeout", "30000",
  ])
  // One header line, one line of figures: start.time, end.time, data.consumed.in.MB, MB.sec,
  // data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec.
  const lines = output.split("\n").map((line) => line.trim()).filter((line) => line !== "")
  const header = lines.findIndex((line) => line.startsWith("start.time"))
  const columns = (lines[header] ?? "").split(",").map((cell) => cell.trim())
  const values = (lines[header + 1] ?? "").split(",").map((cell) => cell.trim())
  const column = (name: string) => {
    const value = Number(values[columns.indexOf(name)])
    if (!columns.includes(name) || !Number.isFinite(value)) {
      throw new Error(`ConsumerPerformance's report has no ${name}; it printed:\n${output.slice(-1000)}`)
    }
    return value
  }
  const consumed = column("data.consumed.in.nMsg")
  if (consumed < total) throw new Error(`ConsumerPerformance read ${consumed} of ${total} records (its --timeout ran out)`)
  return {
    records: consumed,
    seconds: column("fetch.time.ms") / 1000,
    // The JVM's CPU is not this process's: no per-CPU-second figure.
    cpuSeconds: Number.NaN,
    joinSeconds: column("rebalance.time.ms") / 1000,
    detail: `${Math.round(column("nMsg.sec")).toLocaleString("en-US")} records/s with the join`,
  }
}

const cases: Array<Case> = []
const unavailable: Array<Unavailable> = []
const ratios: Array<RatioSpec> = []
for (const partitions of partitionCounts) {
  const name = names(partitions)
  // Warm-up runs each client once, at 16 partitions: the same code reads 1 and 128 (and keeps a
  // full-scale run within its minutes). kafkajs A warms up what B runs; the JVM starts cold in
  // every round anyway.
  const warmup = partitions === 16
  cases.push(
    { name: name.actorOwn, warmup, run: async () => ({ [name.actorOwn]: await actor(own, ownProbe, partitions, "actor-own") }) },
    { name: name.actorKafkajs, warmup, run: async () => ({ [name.actorKafkajs]: await actor(kafka, probe, partitions, "actor-kafkajs") }) },
    { name: name.kafkajsA, warmup, run: async () => ({ [name.kafkajsA]: await kafkajs(partitions) }) },
    { name: name.kafkajsB, warmup: false, run: async () => ({ [name.kafkajsB]: await kafkajs(partitions) }) },
  )
  if (platformatic.problem === undefined) {
    cases.push({ name: name.platformatic, warmup, run: async () => ({ [name.platformatic]: await platformaticConsume(partitions) }) })
  } else unavailable.push({ measure: name.platformatic, why: platformatic.problem })
  if (confluent.problem === undefined) {
    cases.push({ name: name.confluent, warmup, run: async () => ({ [name.confluent]: await confluentConsume(partitions) }) })
  } else unavailable.push({ measure: name.confluent, why: confluent.problem })
  if (javaProblem === undefined) {
    cases.push({ name: name.limit, warmup: false, run: async () => ({ [name.limit]: await consumerPerformance(partitions) }) })
  } else unavailable.push({ measure: name.limit, why: javaProblem })
  ratios.push(
    { numerator: name.actorOwn, denominator: name.kafkajsA, target: 1.2 },
    { numerator: name.actorOwn, denominator: name.platformatic, target: 1.2 },
    { numerator: name.actorOwn, denominator: name.confluent },
    { numerator: name.actorOwn, denominator: name.limit },
    { numerator: name.actorKafkajs, denominator: name.kafkajsA },
    { numerator: name.kafkajsA, denominator: name.kafkajsB, aa: true },
  )
}
// Partition scaling: each client at 128 partitions over itself at 16, in the same round.
const [wide, narrow] = [names(128), names(16)]
for (const key of ["actorOwn", "actorKafkajs", "kafkajsA", "platformatic", "confluent", "limit"] as const) {
  ratios.push({
    numerator: wide[key],
    denominator: narrow[key],
    ...(key === "actorOwn" || key === "actorKafkajs" ? { target: 0.9 } : {}),
  })
}

await runBench({
  name: "consume",
  title: "consume pre-seeded records at 1, 16 and 128 partitions: Partita actor vs raw clients vs ConsumerPerformance",
  records: total,
  notes: [
    `values {"id":n} (8-13 bytes), no keys, seeded once per partition count; no-op handler, a fresh group per case and round`,
    "window: the group's join (kafkajs, platformatic) or first assignment (KafkaTransport, confluent) -> every partition committed to its end",
    "ConsumerPerformance: its own fetch.nMsg.sec (join left out, ends at the last record); per CPU-second not measured (another process)",
  ],
  cases,
  ratios,
  unavailable,
  teardown: async () => {
    await kafka.dispose()
    await own.dispose()
    await resources.cleanup()
  },
})
