/**
 * The fault suite's workload and witness: topics, a producer that logs every record the broker
 * acknowledged (key, sequence number for the key, partition, offset), and a read-back of topics
 * and committed offsets through a plain kafkajs client, independent of Partita's consumer.
 *
 * Records are keyed `k0`..`k{keys-1}`, round robin, so each key's sequence numbers rise by one;
 * Kafka's partitioner spreads the keys over the topic's partitions.
 */
import { Effect, Exit, ManagedRuntime, Scope, Stream } from "effect"
import kafkajs, { Kafka, logLevel } from "kafkajs"
import * as KafkaJsTransport from "../../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../../lib/KafkaTransport.ts"
import { type ProducerRecord, Transport } from "../../lib/Transport.ts"
import type { DerivedRecord, TopicRecord } from "./history.ts"
import { type Scenario, sleep } from "./runner.ts"

// kafkajs is CommonJS, and Node's ESM loader does not see every export by name.
const { AssignerProtocol } = kafkajs
const encoder = new TextEncoder()
const decoder = new TextDecoder()

export interface ReadBack {
  /** Records of the input topic, with the key and sequence number their value carries. */
  readonly records: Array<TopicRecord & { readonly value: Uint8Array | null }>
  /** For a dead-letter or output topic: the source each record names. */
  readonly derived: Array<DerivedRecord & { readonly headers: Record<string, string>; readonly value: Uint8Array | null }>
}

/** Talks to the broker for a scenario; `close` ends its connections. */
export class Broker {
  private readonly runtime
  private readonly kafka: Kafka
  private counter = 0

  readonly brokers: ReadonlyArray<string>
  readonly keys: number

  constructor(brokers: ReadonlyArray<string>, keys = 64) {
    this.brokers = brokers
    this.keys = keys
    this.runtime = ManagedRuntime.make(KafkaJsTransport.layer({ brokers: [...brokers], clientId: "faults-test", logLevel: "nothing" }))
    this.kafka = new Kafka({ clientId: "faults-witness", brokers: [...brokers], logLevel: logLevel.NOTHING })
  }

  createTopic(topic: string, partitions: number, config?: Record<string, string>): Promise<void> {
    return this.runtime.runPromise(Effect.flatMap(Transport, (transport) => transport.createTopic({ topic, partitions, config })))
  }

  /** Sends raw records and returns where each landed. */
  sendRaw(records: ReadonlyArray<ProducerRecord>) {
    return this.runtime.runPromise(Effect.flatMap(Transport, (transport) => transport.send(records)))
  }

  /** The next `count` workload records: round-robin keys, each with its next sequence number. */
  next(count: number): Array<{ readonly key: string; readonly seq: number }> {
    return Array.from({ length: count }, () => {
      const n = this.counter++
      return { key: `k${n % this.keys}`, seq: Math.floor(n / this.keys) }
    })
  }

  /** Produces `records` in one batch and logs each acknowledged one to the scenario. */
  async produce(
    scenario: Scenario,
    topic: string,
    records: ReadonlyArray<{ readonly key: string; readonly seq: number }>,
    padding = 0,
  ): Promise<void> {
    const pad = padding > 0 ? "x".repeat(padding) : undefined
    const metadata = await this.sendRaw(records.map((record) => ({
      topic,
      key: encoder.encode(record.key),
      value: encoder.encode(JSON.stringify(pad === undefined ? record : { ...record, pad })),
    })))
    const t = Date.now()
    records.forEach((record, index) => {
      const landed = metadata[index]!
      scenario.log({ e: "produced", key: record.key, seq: record.seq, p: landed.partition, o: landed.offset, t })
    })
  }

  /** Produces `total` records in batches of `batch`, each value padded by `padding` bytes. */
  async produceMany(scenario: Scenario, topic: string, total: number, options: { readonly batch?: number; readonly padding?: number } = {}): Promise<void> {
    const batch = options.batch ?? 500
    for (let sent = 0; sent < total; sent += batch) {
      await this.produce(scenario, topic, this.next(Math.min(batch, total - sent)), options.padding)
    }
  }

  /**
   * Produces `batch` records every `everyMs` until stopped. A failed send is retried with the same
   * records (what landed unacknowledged is in the topic but not in the log), so nothing
   * acknowledged is skipped.
   */
  steady(scenario: Scenario, topic: string, options: { readonly batch: number; readonly everyMs: number }) {
    let stopped = false
    let acknowledged = 0
    let failures = 0
    const loop = (async () => {
      while (!stopped) {
        const records = this.next(options.batch)
        while (true) {
          try {
            await this.produce(scenario, topic, records)
            acknowledged += records.length
            break
          } catch (error) {
            failures++
            scenario.log({ e: "send-failed", t: Date.now(), error: String(error).slice(0, 200) })
            if (stopped) return
            await sleep(200)
          }
        }
        await sleep(options.everyMs)
      }
    })()
    return {
      acknowledged: () => acknowledged,
      failures: () => failures,
      stop: async () => {
        stopped = true
        await loop
      },
    }
  }

  /** Creates a topic through a plain kafkajs admin, waiting for its leaders (no Partita in the way). */
  async createTopicPlain(topic: string, partitions: number): Promise<void> {
    const admin = this.kafka.admin()
    await admin.connect()
    try {
      await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true, timeout: 10_000 })
    } finally {
      await admin.disconnect()
    }
  }

  async deleteTopic(topic: string): Promise<void> {
    const admin = this.kafka.admin()
    await admin.connect()
    try {
      await admin.deleteTopics({ topics: [topic], timeout: 10_000 })
    } finally {
      await admin.disconnect()
    }
  }

  /** The group's committed offsets, by partition (absent: never committed). */
  async committed(group: string, topic: string): Promise<Map<number, number>> {
    const admin = this.kafka.admin()
    await admin.connect()
    try {
      const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
      return new Map(offsets!.partitions.filter((p) => Number(p.offset) >= 0).map((p) => [p.partition, Number(p.offset)]))
    } finally {
      await admin.disconnect()
    }
  }

  /**
   * The group as its coordinator sees it: its state (`Stable`, `PreparingRebalance`, `Empty`...)
   * and each member's client and partitions, for a stalled scenario's report.
   */
  async describeGroup(group: string): Promise<string> {
    const admin = this.kafka.admin()
    await admin.connect()
    try {
      const { groups: [described] } = await admin.describeGroups([group])
      if (described === undefined) return "not described"
      const members = described.members.map((member) => {
        let partitions = "?"
        try {
          const assignment = AssignerProtocol.MemberAssignment.decode(member.memberAssignment)
          partitions = assignment === null ? "none" : Object.entries(assignment.assignment).map(([topic, ps]) => `${topic}:${ps.join(",")}`).join(" ")
        } catch {
          // An assignment kafkajs cannot decode: leave it as "?".
        }
        return `${member.clientId} (${member.memberId}): ${partitions}`
      })
      return `${described.state}, protocol ${described.protocol || "none"}, ${members.length} member(s)${members.length === 0 ? "" : ": " + members.join("; ")}`
    } finally {
      await admin.disconnect()
    }
  }

  /** The next offset of every partition (the high watermark). */
  async highWatermarks(topic: string): Promise<Map<number, number>> {
    const admin = this.kafka.admin()
    await admin.connect()
    try {
      return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)]))
    } finally {
      await admin.disconnect()
    }
  }

  /** Everything in `topic` up to its high watermark, read with a fresh group that commits nothing. */
  async readBack(topic: string, timeoutMs = 60_000): Promise<ReadBack> {
    const high = await this.highWatermarks(topic)
    const remaining = new Set([...high].filter(([, offset]) => offset > 0).map(([partition]) => partition))
    const result: ReadBack = { records: [], derived: [] }
    if (remaining.size === 0) return result
    const consumer = this.kafka.consumer({ groupId: `faults-reader-${Date.now()}-${Math.random().toString(36).slice(2)}`, maxWaitTimeInMs: 200 })
    await consumer.connect()
    try {
      await consumer.subscribe({ topic, fromBeginning: true })
      let done!: () => void
      const finished = new Promise<void>((resolve) => (done = resolve))
      await consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch }) => {
          for (const message of batch.messages) {
            const offset = Number(message.offset)
            if (offset >= (high.get(batch.partition) ?? 0)) continue
            const headers: Record<string, string> = {}
            for (const [key, value] of Object.entries(message.headers ?? {})) {
              const first = Array.isArray(value) ? value[0] : value
              if (first !== undefined) headers[key] = typeof first === "string" ? first : decoder.decode(first)
            }
            let key: string | undefined
            let seq: number | undefined
            let source: { sp?: number; so?: number } = {}
            try {
              const parsed = JSON.parse(message.value === null ? "null" : decoder.decode(message.value))
              key = typeof parsed?.key === "string" ? parsed.key : undefined
              seq = typeof parsed?.seq === "number" ? parsed.seq : undefined
              source = parsed ?? {}
            } catch {
              // Not JSON: a bad-input record.
            }
            const value = message.value === null ? null : new Uint8Array(message.value)
            result.records.push({
              partition: batch.partition,
              offset,
              key: key ?? (message.key === null ? null : decoder.decode(message.key)),
              seq,
              value,
            })
            const sourcePartition = headers["partita.dlq.source.partition"] ?? source.sp
            const sourceOffset = headers["partita.dlq.source.offset"] ?? source.so
            if (sourcePartition !== undefined && sourceOffset !== undefined) {
              result.derived.push({ sourcePartition: Number(sourcePartition), sourceOffset: Number(sourceOffset), headers, value })
            }
          }
          const last = batch.messages.length === 0 ? -1 : Number(batch.messages[batch.messages.length - 1]!.offset)
          if (last + 1 >= (high.get(batch.partition) ?? 0)) remaining.delete(batch.partition)
          if (remaining.size === 0) done()
        },
      })
      let timer: ReturnType<typeof setTimeout> | undefined
      await Promise.race([
        finished,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`Reading ${topic} back did not finish within ${timeoutMs} ms; partitions left: ${[...remaining]}`)), timeoutMs)
        }),
      ]).finally(() => clearTimeout(timer))
    } finally {
      await consumer.disconnect()
    }
    return result
  }

  async close(): Promise<void> {
    await this.committedReaders?.dispose()
    await this.runtime.dispose()
  }

  private committedReaders: ManagedRuntime.ManagedRuntime<Transport, unknown> | undefined

  /**
   * A read-committed reader of `topic` through Partita's own client, from the start, until
   * `stop`: for transactional output, which plain kafkajs misreads (it returned records of aborted
   * transactions when several transactional producers wrote to a partition) and cannot tell
   * complete (transaction markers end its partitions). `finish` writes a sentinel to every
   * partition and resolves once each has come back: a read-committed reader passes it only
   * after every transaction before it has ended, so what it returned then is the topic's
   * committed content.
   */
  startCommittedReader(topic: string, partitions: number) {
    this.committedReaders ??= ManagedRuntime.make(KafkaTransport.layer({ brokers: [...this.brokers], clientId: "faults-reader" }))
    const runtime = this.committedReaders
    const records: Array<{ readonly partition: number; readonly offset: number; readonly value: Uint8Array | null }> = []
    const sentinels = new Set<number>()
    const started = runtime.runPromise(Effect.gen(function*() {
      const scope = yield* Scope.make()
      const transport = yield* Transport
      const subscription = yield* Scope.provide(transport.subscribe({ group: `faults-committed-${Date.now()}-${Math.random().toString(36).slice(2)}`, topics: [topic] }), scope)
      yield* subscription.events.pipe(
        Stream.flatMap((event) => event._tag === "Assigned" ? Stream.mergeAll(event.claims.map((claim) => claim.records), { concurrency: "unbounded" }) : Stream.fromEffect(Effect.as(event.acknowledge, [] as ReadonlyArray<never>))),
        Stream.runForEach((batch) => Effect.sync(() => {
          for (const record of batch) {
            if (record.value !== null && decoder.decode(record.value) === sentinel) sentinels.add(record.partition)
            else records.push({ partition: record.partition, offset: record.offset, value: record.value })
          }
        })),
        Effect.forkIn(scope),
      )
      return scope
    }))
    const derived = () =>
      records.flatMap((record) => {
        try {
          const parsed = JSON.parse(record.value === null ? "null" : decoder.decode(record.value)) as { key?: string; seq?: number; sp?: number; so?: number }
          if (parsed?.sp === undefined || parsed.so === undefined) return []
          return [{ sourcePartition: parsed.sp, sourceOffset: parsed.so, key: parsed.key, seq: parsed.seq, partition: record.partition, offset: record.offset }]
        } catch {
          return []
        }
      })
    return {
      records,
      derived,
      /** Writes the sentinels (once per topic is enough) and waits for them. */
      finish: async (writeSentinels: boolean, timeoutMs = 60_000) => {
        await started
        if (writeSentinels) {
          await this.sendRaw(Array.from({ length: partitions }, (_, partition) => ({ topic, partition, key: null, value: encoder.encode(sentinel) })))
        }
        const deadline = Date.now() + timeoutMs
        while (sentinels.size < partitions) {
          if (Date.now() > deadline) throw new Error(`The read-committed reader of ${topic} saw sentinels from ${[...sentinels]} of ${partitions} partitions within ${timeoutMs} ms`)
          await sleep(50)
        }
      },
      stop: () => started.then((scope) => runtime.runPromise(Scope.close(scope, Exit.void))),
    }
  }
}

const sentinel = "faults-sentinel"
