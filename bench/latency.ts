/**
 * Issue 14's end-to-end latency row: how long a record takes from its send to its handler, with
 * records sent open loop (on a schedule that never waits for the consumer) at 1k and 10k
 * records/s into a fresh 3-partition topic, and what Partita adds over raw kafkajs.
 *
 * One producer sends for every case, so only the consumer side differs: Partita's own client's
 * producer (lib/internal/kafka/producer.ts: idempotent, acks=all, linger 0, records round-robin
 * over the partitions), forked per tick of a 1 ms timer with every record due by then, never
 * awaited by the schedule. Each record carries its send time in a header (`sent-at`, a float64 of
 * `performance.timeOrigin + performance.now()` taken as the record is built: sub-millisecond, and
 * the consumer is in the same process, so both ends read the same clock); the handler notes
 * `now − sent-at` as it runs. Each case joins a fresh group, waits for its assignment, lets the
 * warm-up records through (half a second's worth, at least 300: the fetch path warmed, not
 * counted), then counts a window of `BENCH_WINDOW` seconds (10; CI scale 0.5, with 100 warm-up records).
 *
 * Consumers, each case in turn within a round (their order rotated per round), so that
 * "Partita added latency" (Partita's percentile − raw kafkajs's) is taken within one round:
 * - Partita actor, KafkaTransport / KafkaJsTransport: one actor, `partition` ordering, all
 *   defaults, whose handler reads the header from `RecordContext` (`useSync`);
 * - raw kafkajs eachMessage: the per-record API a latency-minded kafkajs user picks (each record
 *   handled as soon as its batch arrives, no batch to wait through), `partitionsConsumedConcurrently`
 *   3, kafkajs' own auto-commit (after each batch), `maxWaitTimeInMs` 500 as KafkaJsTransport;
 * - the Limit: Kafka's own `org.apache.kafka.tools.EndToEndLatency` (Java, same broker, a fresh
 *   3-partition topic, acks=all, 12-byte records). It is CLOSED loop: it sends one record, waits
 *   until its consumer has it, then sends the next; it reports whole milliseconds.
 * Readings are milliseconds (p50, p99, p99.9 of every counted record's latency).
 *
 *   bun bench/latency.ts          (KAFKA_BROKERS, BENCH_ROUNDS, BENCH_WINDOW)
 */
import { Buffer } from "node:buffer"
import process from "node:process"
import { Context, Deferred, Effect, Exit, Scope } from "effect"
import { Actor, ActorSystem, Codec, ErrorPolicy, RecordContext, Transport } from "../mod.ts"
import * as Brokers from "../lib/internal/kafka/brokers.ts"
import * as KafkaProducer from "../lib/internal/kafka/producer.ts"
import {
  type Case,
  collectGarbage,
  config,
  instrument,
  javaToolsMissing,
  kafkaClient,
  kafkaResources,
  kafkaRuntime,
  type Observed,
  observed,
  payload,
  runBench,
  runJavaTool,
  scaled,
} from "./common.ts"

const partitions = 3
const windowSeconds = Number(process.env["BENCH_WINDOW"] ?? scaled(0.5, 5))
const rates = [1_000, 10_000] as const
const limitRecords = scaled(100, 3_000)
const resources = kafkaResources()
const header = "sent-at"

/** The clock both ends read: milliseconds since the epoch, sub-millisecond. */
const now = (): number => performance.timeOrigin + performance.now()

const rateLabel = (rate: number): string => `${rate >= 1000 ? `${rate / 1000}k` : rate} records/s`

// --- the one producer ------------------------------------------------------------------------------

const producerScope = Effect.runSync(Scope.make())
const producer = await Effect.runPromise(
  Effect.gen(function*() {
    const brokers = yield* Brokers.make({ bootstrap: config.brokers, clientId: "partita-bench-latency" })
    return yield* KafkaProducer.make(KafkaProducer.fromBrokers(brokers), { linger: 0 })
  }).pipe(Scope.provide(producerScope)),
)

/** Where one run's latencies go; `windowStart` is the send time of the first counted record. */
interface Tally {
  windowStart: number
  readonly latencies: Float64Array
  counted: number
  readonly done: ReturnType<typeof Promise.withResolvers<void>>
}

const tally = (window: number): Tally => ({
  windowStart: Number.POSITIVE_INFINITY,
  latencies: new Float64Array(window),
  counted: 0,
  done: Promise.withResolvers<void>(),
})

/** What a handler does with a record's send time, the moment it runs. */
const note = (t: Tally, sentAt: number): void => {
  const latency = now() - sentAt
  if (sentAt < t.windowStart || t.counted >= t.latencies.length) return
  t.latencies[t.counted++] = latency
  if (t.counted === t.latencies.length) t.done.resolve()
}

/**
 * Sends `warm` then `window` records to `topic` at `rate` per second on a 1 ms timer: each tick
 * sends every record due by then (a late tick catches up), stamping each as it is built; sends
 * are forked, never awaited by the schedule. Resolves once the last one is acknowledged, with the
 * worst lag of a tick behind its schedule.
 */
const openLoop = (topic: string, rate: number, warm: number, window: number, t: Tally): Promise<{ readonly maxLagMs: number }> => {
  const total = warm + window
  const pending: Array<Promise<void>> = []
  let sent = 0
  let maxLagMs = 0
  const start = performance.now()
  return new Promise((resolve, reject) => {
    const tick = () => {
      const elapsed = performance.now() - start
      const due = Math.min(total, Math.floor((elapsed * rate) / 1000) + 1)
      if (due > sent) maxLagMs = Math.max(maxLagMs, elapsed - ((sent) * 1000) / rate)
      const batch: Array<Transport.ProducerRecord> = []
      for (; sent < due; sent++) {
        const stamp = new Uint8Array(8)
        const at = now()
        new DataView(stamp.buffer).setFloat64(0, at)
        if (sent === warm) t.windowStart = at
        batch.push({ topic, key: null, value: payload(sent), partition: sent % partitions, headers: [{ key: header, value: stamp }] })
      }
      if (batch.length > 0) {
        pending.push(Effect.runPromise(producer.sendEach(batch)).then((outcomes) => {
          const failed = outcomes.find(Exit.isFailure)
          if (failed !== undefined) throw new Error(`latency: a send failed: ${String(failed.cause)}`)
        }))
      }
      if (sent < total) setTimeout(tick, 1)
      else Promise.all(pending).then(() => resolve({ maxLagMs }), reject)
    }
    tick()
  })
}

/** p50, p99 and p99.9 (nearest rank) of the first `count` latencies. */
const percentiles = (latencies: Float64Array, count: number) => {
  const sorted = latencies.slice(0, count).sort()
  const at = (q: number) => sorted[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))]!
  return { p50: at(0.5), p99: at(0.99), "p99.9": at(0.999), max: sorted[count - 1]! }
}

type Percentiles = ReturnType<typeof percentiles>
const quantiles = ["p50", "p99", "p99.9"] as const

/** Waits until `joined()` says the consumer has its partitions (setup, not measured). */
const untilJoined = async (what: string, joined: () => boolean): Promise<void> => {
  for (const deadline = Date.now() + 60_000; !joined(); await new Promise((resolve) => setTimeout(resolve, 5))) {
    if (Date.now() > deadline) throw new Error(`latency: ${what} was not assigned its partitions within 60 s`)
  }
}

/** What one consumer run reports: its percentiles, the send schedule's worst lag, its join time. */
interface Run {
  readonly result: Percentiles
  readonly maxLagMs: number
  readonly joinSeconds: number
}

/** One consumer case at one rate: its percentiles over the counted window. */
interface Consumer {
  readonly name: string
  readonly run: (topic: string, rate: number, warm: number, window: number) => Promise<Run>
}

const sentAtOf = (headers: ReadonlyArray<Transport.Header>): number => {
  for (const h of headers) {
    if (h.key === header && h.value !== null) return new DataView(h.value.buffer, h.value.byteOffset, 8).getFloat64(0)
  }
  throw new Error(`latency: a record without its ${header} header`)
}

const partitaConsumer = (name: string, client: "kafkajs" | "own"): Consumer => {
  const runtime = kafkaRuntime(client)
  const probe = runtime.context().then((context) =>
    instrument(Context.get(context, Transport.Transport), client === "own" ? { kafkajsJoin: false } : {})
  )
  disposers.push(() => runtime.dispose())
  return {
    name,
    run: async (topic, rate, warm, window) => {
      const group = resources.group("latency")
      const t = tally(window)
      const instrumented = await probe
      const actor = Actor.make({
        name: "latency",
        group,
        topics: [topic],
        value: Codec.bytes,
        handle: () => RecordContext.RecordContext.useSync((record) => note(t, sentAtOf(record.headers))),
        onError: { default: ErrorPolicy.halt },
        consumer: { reset: "earliest" },
      })
      const start = performance.now()
      return runtime.runPromise(Effect.scoped(Effect.gen(function*() {
        yield* ActorSystem.start([actor]).pipe(Effect.provideService(Transport.Transport, instrumented.transport))
        yield* Effect.promise(() => untilJoined(name, () => instrumented.joinedAt(group) !== undefined))
        const joinSeconds = (performance.now() - start) / 1000
        const { maxLagMs } = yield* Effect.promise(() => openLoop(topic, rate, warm, window, t))
        yield* Effect.promise(() => t.done.promise)
        return { result: percentiles(t.latencies, t.counted), maxLagMs, joinSeconds }
      })))
    },
  }
}

const rawKafkajs: Consumer = {
  name: "raw kafkajs eachMessage",
  run: async (topic, rate, warm, window) => {
    const t = tally(window)
    const start = performance.now()
    const consumer = kafkaClient("partita-bench-latency-raw").consumer({
      groupId: resources.group("latency-raw"),
      maxWaitTimeInMs: 500,
      allowAutoTopicCreation: false,
    })
    let joined = false
    consumer.on(consumer.events.GROUP_JOIN, () => {
      joined = true
    })
    await consumer.connect()
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      await consumer.run({
        partitionsConsumedConcurrently: partitions,
        eachMessage: async ({ message }) => {
          const sentAt = message.headers?.[header]
          if (!Buffer.isBuffer(sentAt)) throw new Error(`latency: a record without its ${header} header`)
          note(t, sentAt.readDoubleBE(0))
        },
      })
      await untilJoined("raw kafkajs", () => joined)
      const joinSeconds = (performance.now() - start) / 1000
      const { maxLagMs } = await openLoop(topic, rate, warm, window, t)
      await t.done.promise
      return { result: percentiles(t.latencies, t.counted), maxLagMs, joinSeconds }
    } finally {
      await consumer.disconnect()
    }
  },
}

const disposers: Array<() => Promise<void>> = []
const consumers: ReadonlyArray<Consumer> = [
  partitaConsumer("Partita actor, KafkaTransport", "own"),
  partitaConsumer("Partita actor, KafkaJsTransport", "kafkajs"),
  rawKafkajs,
]

/**
 * One rate: every consumer in turn (order rotated per round), each on a fresh topic, then
 * Partita's added latency over raw kafkajs from this round's figures.
 */
const atRate = (rate: number): Case => ({
  name: rateLabel(rate),
  // Each consumer warms itself up with its first records; a warm-up round would double the time.
  warmup: false,
  run: async (round) => {
    const warm = scaled(100, Math.max(300, Math.round(rate / 2)))
    const window = Math.round(rate * windowSeconds)
    const readings: Record<string, Observed> = {}
    const results = new Map<string, Run>()
    const order = consumers.map((_, index) => consumers[(index + round) % consumers.length]!)
    for (const consumer of order) {
      const topic = await resources.topic("latency", partitions)
      // As runBench does before each case: one run's garbage is not collected in the next one's window.
      collectGarbage()
      results.set(consumer.name, await consumer.run(topic, rate, warm, window))
    }
    // In the declared order, whatever the order they ran in: the table lists readings as first returned.
    for (const consumer of consumers) {
      const { result, maxLagMs, joinSeconds } = results.get(consumer.name)!
      for (const q of quantiles) {
        readings[`${consumer.name}, ${rateLabel(rate)}, ${q}`] = observed(
          result[q],
          "ms",
          q === "p50" ? `${window.toLocaleString("en-US")} records, max ${result.max.toFixed(1)} ms, send schedule lag ≤ ${maxLagMs.toFixed(1)} ms, join ${joinSeconds.toFixed(2)} s` : undefined,
        )
      }
    }
    const raw = results.get(rawKafkajs.name)!.result
    for (const [transport, name] of [["KafkaTransport", consumers[0]!.name], ["KafkaJsTransport", consumers[1]!.name]] as const) {
      const partita = results.get(name)!.result
      for (const q of quantiles) readings[`Partita added latency, ${transport}, ${rateLabel(rate)}, ${q}`] = observed(partita[q] - raw[q], "ms")
    }
    return readings
  },
})

const limitName = "Limit: Kafka EndToEndLatency (closed loop)"
const limit: Case = {
  name: limitName,
  warmup: false,
  run: async () => {
    const topic = await resources.topic("latency-limit", partitions)
    const out = await runJavaTool("org.apache.kafka.tools.EndToEndLatency", [config.brokers.join(","), topic, String(limitRecords), "all", "12"])
    const found = /Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99\.9th = ([\d.]+)/.exec(out)
    const average = /Avg latency: ([\d.]+) ms/.exec(out)
    if (found === null) throw new Error(`EndToEndLatency printed no percentiles: ${out.slice(-500)}`)
    return {
      [`${limitName}, p50`]: observed(Number(found[1]), "ms", `${limitRecords.toLocaleString("en-US")} records, one at a time; whole ms, truncated`),
      [`${limitName}, p99`]: observed(Number(found[2]), "ms"),
      [`${limitName}, p99.9`]: observed(Number(found[3]), "ms"),
      // Its percentiles are whole milliseconds (truncated); its average is the one finer figure.
      ...(average === null ? {} : { [`${limitName}, average`]: observed(Number(average[1]), "ms") }),
    }
  },
}

const javaMissing = javaToolsMissing()

await runBench({
  name: "latency",
  title: "end-to-end latency, open loop at 1k and 10k records/s: Partita actor vs raw kafkajs, and Kafka's EndToEndLatency",
  records: rates.reduce((sum, rate) => sum + rate * windowSeconds, 0),
  notes: [
    `${partitions} partitions, a fresh topic and group per case; ${windowSeconds} s counted per case and rate, after max(300, rate/2) warm-up records`,
    "sender (every case): Partita's own client's producer, idempotent, acks=all, linger 0, open loop on a 1 ms timer;" +
    " send time in a header, performance.timeOrigin + performance.now()",
    "added latency = Partita's percentile − raw kafkajs eachMessage's, same round; the Limit is closed loop (one record in flight) and whole ms",
  ],
  cases: [...rates.map(atRate), ...(javaMissing === undefined ? [limit] : [])],
  readings: rates.flatMap((rate) =>
    ["KafkaTransport", "KafkaJsTransport"].flatMap((transport) => [
      { name: `Partita added latency, ${transport}, ${rateLabel(rate)}, p50`, atMost: 1 },
      { name: `Partita added latency, ${transport}, ${rateLabel(rate)}, p99`, atMost: 5 },
    ])
  ),
  unavailable: javaMissing === undefined ? [] : [...quantiles, "average"].map((q) => ({ measure: `${limitName}, ${q}`, why: javaMissing })),
  teardown: async () => {
    for (const dispose of disposers) await dispose()
    await Effect.runPromise(Scope.close(producerScope, Exit.void))
    await resources.cleanup()
  },
})
