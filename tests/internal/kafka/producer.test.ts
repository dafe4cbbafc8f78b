/**
 * The Kafka client's producer against the real broker: every record's metadata checked against
 * what a Fetch reads back, batching across many fibers counted in Produce requests, the three
 * acks, an idempotent retry through a proxy that cuts the connection after the broker wrote the
 * batch, a too-large record refused alone, the four codecs read by Kafka's own console
 * consumer, and linger under `TestClock`.
 *
 * PARTITA_PRODUCER_FIBERS / PARTITA_PRODUCER_RECORDS scale the many-fibers test (default 1000
 * fibers sending 10,000 records).
 */
import assert from "node:assert/strict"
import process from "node:process"
import { test } from "node:test"
import { Cause, Effect, Exit, Fiber, Layer, References, type Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Admin from "../../../lib/internal/kafka/admin.ts"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import * as Producer from "../../../lib/internal/kafka/producer.ts"
import { decodeRequestHeader } from "../../../lib/internal/kafka/protocol/api.ts"
import { ApiVersions } from "../../../lib/internal/kafka/protocol/ApiVersions.ts"
import { InitProducerId } from "../../../lib/internal/kafka/protocol/InitProducerId.ts"
import { Produce } from "../../../lib/internal/kafka/protocol/Produce.ts"
import { Reader } from "../../../lib/internal/kafka/protocol/wire.ts"
import { decodeRecordBatches } from "../../../lib/internal/kafka/recordBatch.ts"
import type { ProducerRecord, RecordMetadata } from "../../../lib/Transport.ts"
import { refusesBatch, TransportError } from "../../../lib/TransportError.ts"
import { fakeBroker, proxy, responseFrame } from "../../fixtures/brokerProxy.ts"
import { runJava } from "../../fixtures/kafkaTools.ts"
import { createTopic, readBack, testCluster, withConnection } from "../../fixtures/producerCluster.ts"
import { kafkaTest, uniqueName } from "../../fixtures/services.ts"

const quiet = Layer.succeed(References.MinimumLogLevel, "None")

const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>): Promise<A> =>
  Effect.runPromiseExit(Effect.scoped(effect).pipe(Effect.provide(quiet))).then((exit) => {
    if (Exit.isFailure(exit)) throw new Error(Cause.pretty(exit.cause))
    return exit.value
  })

const bytes = (text: string) => new TextEncoder().encode(text)
const text = (value: Uint8Array | null) => (value === null ? null : new TextDecoder().decode(value))

const metadataOf = (exit: Exit.Exit<RecordMetadata, TransportError>): RecordMetadata => {
  assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
  return exit.value
}

const errorOf = (exit: Exit.Exit<RecordMetadata, TransportError>): TransportError => {
  assert.ok(Exit.isFailure(exit), "the record fails")
  const error = Cause.squash(exit.cause)
  assert.ok(error instanceof TransportError)
  return error
}

/** Offsets of each partition are 0..n-1, each once. */
const assertContiguous = (metadata: ReadonlyArray<RecordMetadata>) => {
  const byPartition = new Map<number, Array<number>>()
  for (const m of metadata) byPartition.set(m.partition, [...(byPartition.get(m.partition) ?? []), m.offset])
  for (const [partition, offsets] of byPartition) {
    const sorted = [...offsets].sort((a, b) => a - b)
    assert.deepEqual(sorted, sorted.map((_, i) => i), `partition ${partition}: offsets 0..${offsets.length - 1}`)
  }
  return byPartition
}

kafkaTest("Producer: every record's metadata is where a Fetch finds it, offsets contiguous per partition, keyed records on murmur2's partition", async ([broker]) => {
  const topic = uniqueName("producer-metadata")
  await run(Effect.gen(function*() {
    const cluster = Producer.fromBrokers(yield* Brokers.make({ bootstrap: [broker!] }))
    yield* createTopic(yield* cluster.any, topic, 3)
    const producer = yield* Producer.make(cluster)
    // Five calls at once, keyed and keyless, with headers and a given timestamp.
    const calls = Array.from({ length: 5 }, (_, call) =>
      Array.from({ length: 40 }, (_, i): ProducerRecord => ({
        topic,
        key: i % 2 === 0 ? bytes(`key-${i % 7}`) : null,
        value: bytes(`call-${call}-record-${i}`),
        headers: [{ key: "n", value: bytes(String(i)) }],
        ...(i === 3 ? { timestamp: 1_700_000_000_000 } : {}),
      })))
    const outcomes = yield* Effect.forEach(calls, (records) => producer.sendEach(records), { concurrency: "unbounded" })
    const metadata = outcomes.flat().map(metadataOf)
    assertContiguous(metadata)
    const records = calls.flat()
    // Kafka's partitioner for the keys: the Java client puts "key-0" .. "key-6" here on 3 partitions.
    for (let i = 0; i < records.length; i++) {
      assert.equal(metadata[i]!.topic, topic)
      if (records[i]!.timestamp !== undefined) assert.equal(metadata[i]!.timestamp, 1_700_000_000_000)
    }
    const conn = yield* cluster.any
    for (let partition = 0; partition < 3; partition++) {
      const mine = metadata.map((m, i) => ({ m, record: records[i]! })).filter(({ m }) => m.partition === partition)
      const { records: read, batches } = yield* readBack(conn, topic, partition, mine.length)
      assert.equal(read.length, mine.length, `partition ${partition} holds exactly what was sent`)
      for (const { m, record } of mine) {
        const found = read[m.offset]!
        assert.equal(found.offset, m.offset)
        assert.equal(text(found.value), text(record.value))
        assert.equal(text(found.key), text(record.key))
        assert.equal(found.timestamp, m.timestamp)
        assert.deepEqual(found.headers.map((h) => [h.key, text(h.value)]), [["n", text(record.headers![0]!.value)]])
      }
      assert.ok(batches.every((batch) => batch.producerId >= 0), "idempotent batches carry the producer id")
    }
    // The same key, the same partition.
    const byKey = new Map<string, Set<number>>()
    records.forEach((record, i) => {
      if (record.key === null) return
      const key = text(record.key)!
      byKey.set(key, (byKey.get(key) ?? new Set()).add(metadata[i]!.partition))
    })
    for (const [key, partitions] of byKey) assert.equal(partitions.size, 1, `${key} on one partition`)
    assert.equal(producer.metrics().producerIds, 1)
  }))
})

kafkaTest("Producer: many fibers sending one record at a time end up in few Produce requests", async ([broker]) => {
  const fibers = Number(process.env["PARTITA_PRODUCER_FIBERS"] ?? 1000)
  const total = Number(process.env["PARTITA_PRODUCER_RECORDS"] ?? 10_000)
  const each = Math.ceil(total / fibers)
  const topic = uniqueName("producer-fibers")
  await run(Effect.gen(function*() {
    const cluster = Producer.fromBrokers(yield* Brokers.make({ bootstrap: [broker!] }))
    yield* createTopic(yield* cluster.any, topic, 4)
    const producer = yield* Producer.make(cluster)
    const sent = yield* Effect.forEach(
      Array.from({ length: fibers }, (_, fiber) => fiber),
      (fiber) =>
        Effect.forEach(Array.from({ length: each }, (_, i) => i), (i) =>
          Effect.map(
            producer.sendEach([{ topic, key: null, value: bytes(`${fiber}:${i}`) }]),
            (outcomes) => metadataOf(outcomes[0]!),
          )),
      { concurrency: "unbounded" },
    )
    const metadata = sent.flat()
    assert.equal(metadata.length, fibers * each)
    assertContiguous(metadata)
    const requests = producer.metrics().requests
    // One record per request would be fibers * each. The fibers a request's answer resumes each
    // append their next record before the sender's next pass, so a request carries about one
    // record per fiber (not the first few fibers' records, the rest following in more requests):
    // at most 4 requests per round of `each`, whatever the machine's speed.
    assert.ok(requests <= 4 * each + 4, `${requests} Produce requests for ${fibers * each} records from ${fibers} fibers`)
    // Each fiber's own records keep their order within a partition.
    const conn = yield* cluster.any
    let read = 0
    for (let partition = 0; partition < 4; partition++) {
      const count = metadata.filter((m) => m.partition === partition).length
      read += (yield* readBack(conn, topic, partition, count)).records.length
    }
    assert.equal(read, fibers * each, "no record written twice")
  }))
})

kafkaTest("Producer: fibers starting together on a topic share one partition-count lookup; on a topic that does not exist each of their records fails", async ([broker]) => {
  const topic = uniqueName("producer-first-count")
  const missing = uniqueName("producer-no-such-topic")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 3)
    const lookups = new Map<string, number>()
    const producer = yield* Producer.make({
      ...cluster,
      partitionCount: (name) => {
        lookups.set(name, (lookups.get(name) ?? 0) + 1)
        return cluster.partitionCount(name)
      },
    })
    const send = (name: string, i: number) => producer.sendEach([{ topic: name, key: null, value: bytes(`r${i}`) }])
    const fibers = Array.from({ length: 200 }, (_, i) => i)
    const written = yield* Effect.forEach(fibers, (i) => send(topic, i), { concurrency: "unbounded" })
    assert.ok(written.every((outcomes) => Exit.isSuccess(outcomes[0]!)))
    assert.equal(lookups.get(topic), 1, "one lookup for 200 fibers")
    const refused = yield* Effect.forEach(fibers, (i) => send(missing, i), { concurrency: "unbounded" })
    for (const outcomes of refused) assert.equal(errorOf(outcomes[0]!).code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.equal(lookups.get(missing), 1)
  }))
})

kafkaTest("Producer: each record of a call gets its own outcome in order; a partition out of range fails alone, in a one-record call too", async ([broker]) => {
  const topic = uniqueName("producer-outcomes")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 2)
    const producer = yield* Producer.make(cluster)
    const record = (value: string, partition: number) => ({ topic, partition, key: null, value: bytes(value) })
    const mixed = yield* producer.sendEach([record("a", 0), record("b", 5), record("c", 1), record("d", -1), record("e", 0)])
    assert.deepEqual([0, 2, 4].map((i) => [metadataOf(mixed[i]!).partition, metadataOf(mixed[i]!).offset]), [[0, 0], [1, 0], [0, 1]])
    for (const [i, partition] of [[1, 5], [3, -1]] as const) {
      const error = errorOf(mixed[i]!)
      assert.equal(error.code, "UNKNOWN_TOPIC_OR_PARTITION")
      assert.equal(error.partition, partition)
      assert.match(error.message, new RegExp(`${topic}/${partition}: the topic has 2 partitions`))
    }
    const alone = errorOf((yield* producer.sendEach([record("f", 2)]))[0]!)
    assert.match(alone.message, /the topic has 2 partitions/)
    assert.deepEqual(metadataOf((yield* producer.sendEach([record("g", 0)]))[0]!).offset, 2)
    const { records: read } = yield* readBack(yield* cluster.any, topic, 0, 3)
    assert.deepEqual(read.map((r) => text(r.value)), ["a", "e", "g"])
  }))
})

kafkaTest("Producer: a record from JavaScript that leaves its key or value out is written with none; a key, value or header value that is not bytes fails alone with INVALID_RECORD", async ([broker]) => {
  const topic = uniqueName("producer-untyped")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 1)
    const producer = yield* Producer.make(cluster)
    // What plain JavaScript (or a cast) may hand over: the types say otherwise.
    const untyped = [
      { topic, partition: 0, value: bytes("no key") },
      { topic, partition: 0, key: "a string", value: bytes("x") },
      { topic, partition: 0, key: bytes("no value") },
      { topic, partition: 0, key: null, value: 42 },
      { topic, partition: 0, key: null, value: bytes("y"), headers: [{ key: "h", value: "text" }] },
    ] as unknown as ReadonlyArray<ProducerRecord>
    const outcomes = yield* producer.sendEach(untyped)
    assert.deepEqual([0, 2].map((i) => metadataOf(outcomes[i]!).offset), [0, 1])
    for (const [i, what] of [[1, "a key of type string"], [3, "a value of type number"], [4, "a header value"]] as const) {
      const error = errorOf(outcomes[i]!)
      assert.equal(error.code, "INVALID_RECORD")
      assert.equal(error.retriable, false)
      assert.match(error.message, new RegExp(`must be bytes \\(a Uint8Array\\) or null, got ${what}`))
    }
    const { records: read } = yield* readBack(yield* cluster.any, topic, 0, 2)
    assert.deepEqual(read.map((r) => [r.key === null ? null : text(r.key), r.value === null ? null : text(r.value)]), [[null, "no key"], ["no value", null]])
  }))
})

kafkaTest("Producer: acks none writes without offsets (-1), acks leader and all return offsets", async ([broker]) => {
  const topic = uniqueName("producer-acks")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 1)
    const producer = yield* Producer.make(cluster)
    const records = (label: string) => Array.from({ length: 5 }, (_, i) => ({ topic, key: null, value: bytes(`${label}-${i}`) }))
    const all = (yield* producer.sendEach(records("all"), { acks: "all" })).map(metadataOf)
    const leader = (yield* producer.sendEach(records("leader"), { acks: "leader" })).map(metadataOf)
    const none = (yield* producer.sendEach(records("none"), { acks: "none" })).map(metadataOf)
    assert.deepEqual(all.map((m) => m.offset), [0, 1, 2, 3, 4])
    assert.deepEqual(leader.map((m) => m.offset), [5, 6, 7, 8, 9])
    assert.deepEqual(none.map((m) => m.offset), [-1, -1, -1, -1, -1])
    const { records: read, batches } = yield* readBack(yield* cluster.any, topic, 0, 15)
    assert.deepEqual(read.map((r) => text(r.value)), [...records("all"), ...records("leader"), ...records("none")].map((r) => text(r.value)))
    assert.deepEqual(batches.map((b) => b.producerId >= 0), [true, false, false], "only acks=all batches are idempotent")
  }))
})

kafkaTest("Producer: a batch retried after the connection was cut is written once, in order (idempotence)", async ([broker]) => {
  const topic = uniqueName("producer-cut")
  const through = await proxy(broker!)
  try {
    await run(Effect.gen(function*() {
      yield* withConnection(broker!, (conn) => createTopic(conn, topic, 1))
      const cluster = yield* testCluster(through.address)
      const producer = yield* Producer.make(cluster, { linger: 0 })
      const first = yield* producer.sendEach([{ topic, key: null, value: bytes("before") }])
      assert.equal(metadataOf(first[0]!).offset, 0)
      through.hold()
      const framesBefore = through.framesFromClients()
      const records = Array.from({ length: 50 }, (_, i) => ({ topic, key: null, value: bytes(`held-${i}`) }))
      const sending = yield* Effect.forkChild(producer.sendEach(records))
      yield* Effect.promise(() => through.until(() => through.framesFromClients() > framesBefore))
      // The broker wrote the batch; its answer is held back, and then the connection is gone.
      yield* withConnection(broker!, (conn) => readBack(conn, topic, 0, 51))
      through.cut()
      through.release()
      const outcomes = (yield* Fiber.join(sending)).map(metadataOf)
      assert.deepEqual(outcomes.map((m) => m.offset), records.map((_, i) => i + 1), "the first write's offsets")
      const later = yield* producer.sendEach([{ topic, key: null, value: bytes("after") }])
      assert.equal(metadataOf(later[0]!).offset, 51)
      const { records: read } = yield* withConnection(broker!, (conn) => readBack(conn, topic, 0, 52))
      assert.deepEqual(read.map((r) => text(r.value)), ["before", ...records.map((r) => text(r.value)), "after"], "no duplicate, order kept")
      assert.ok(producer.metrics().retries >= 1, "the batch was sent again")
      assert.equal(producer.metrics().producerIds, 1, "same producer id and epoch: no bump was needed")
      assert.ok(cluster.opened() >= 2, "a new connection carried the retry")
    }))
  } finally {
    await through.close()
  }
})

kafkaTest("Producer: a record too large for the topic fails alone with MESSAGE_TOO_LARGE; its neighbours in other partitions are written", async ([broker]) => {
  const topic = uniqueName("producer-too-large")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 3, [{ name: "max.message.bytes", value: "10000" }])
    const producer = yield* Producer.make(cluster)
    const outcomes = yield* producer.sendEach([
      { topic, partition: 1, key: null, value: bytes("small-1") },
      { topic, partition: 0, key: null, value: new Uint8Array(20_000) },
      { topic, partition: 2, key: null, value: bytes("small-2") },
      { topic, partition: 1, key: null, value: bytes("small-1b") },
    ])
    const error = errorOf(outcomes[1]!)
    assert.equal(error.code, "MESSAGE_TOO_LARGE")
    assert.equal(refusesBatch(error), true)
    assert.equal(error.topic, topic)
    assert.equal(error.partition, 0)
    assert.match(error.message, new RegExp(`${topic}/0`))
    assert.deepEqual([outcomes[0], outcomes[2], outcomes[3]].map((o) => [metadataOf(o!).partition, metadataOf(o!).offset]), [[1, 0], [2, 0], [1, 1]])
    // The partition goes on: its sequence numbers were given back.
    const next = yield* producer.sendEach([{ topic, partition: 0, key: null, value: bytes("fits") }])
    assert.equal(metadataOf(next[0]!).offset, 0)
  }))
})

kafkaTest("Producer: records for a topic deleted meanwhile fail with UNKNOWN_TOPIC_OR_PARTITION after a few metadata answers, not after the delivery timeout", async ([broker]) => {
  const topic = uniqueName("producer-deleted")
  await run(Effect.gen(function*() {
    const brokers = yield* Brokers.make({ bootstrap: [broker!] })
    const admin = Admin.make(brokers)
    yield* admin.createTopics([{ topic, partitions: 1 }])
    // Ten minutes: were the records held for the delivery timeout, the test would time out.
    const producer = yield* Producer.make(Producer.fromBrokers(brokers), { deliveryTimeout: "10 minutes" })
    metadataOf((yield* producer.sendEach([{ topic, key: null, value: bytes("before") }]))[0]!)
    yield* admin.deleteTopics([topic])
    // The deletion reaches the brokers a moment after DeleteTopics returns (its leader may still
    // take a record): wait until a separate pool's metadata no longer knows the topic.
    const probe = yield* Brokers.make({ bootstrap: [broker!] })
    for (let i = 0; i < 200; i++) {
      yield* probe.invalidate(topic)
      if (Exit.isFailure(yield* Effect.exit(probe.topics([topic])))) break
      yield* Effect.sleep("50 millis")
    }
    const [outcome] = yield* producer.sendEach([{ topic, key: null, value: bytes("after") }])
    const error = errorOf(outcome!)
    assert.equal(error.code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.match(error.message, new RegExp(topic))
  }))
}, { timeoutMs: 60_000 })

kafkaTest("Producer: gzip, snappy, lz4 and zstd batches are read by Kafka's console consumer", async ([broker]) => {
  const topic = uniqueName("producer-codecs")
  const codecs = ["gzip", "snappy", "lz4", "zstd"] as const
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, codecs.length)
    for (let partition = 0; partition < codecs.length; partition++) {
      yield* Effect.scoped(Effect.gen(function*() {
        const producer = yield* Producer.make(cluster, { compression: codecs[partition]! })
        const outcomes = yield* producer.sendEach(
          Array.from({ length: 10 }, (_, i) => ({ topic, partition, key: null, value: bytes(`${codecs[partition]}-${i}-${"x".repeat(50)}`) })),
        )
        outcomes.forEach(metadataOf)
      }))
      const { batches } = yield* readBack(yield* cluster.any, topic, partition, 10)
      assert.deepEqual(batches.map((b) => b.attributes & 7), [partition + 1], `one ${codecs[partition]} batch`)
    }
  }))
  const out = await runJava([
    "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "--bootstrap-server",
    broker!,
    "--topic",
    topic,
    "--from-beginning",
    "--max-messages",
    String(codecs.length * 10),
    "--timeout-ms",
    "30000",
  ])
  const lines = out.split("\n").filter((line) => line !== "")
  for (const codec of codecs) {
    assert.deepEqual(
      lines.filter((line) => line.startsWith(`${codec}-`)),
      Array.from({ length: 10 }, (_, i) => `${codec}-${i}-${"x".repeat(50)}`),
      `${codec} records, in order`,
    )
  }
})

kafkaTest("Producer: a partition's first batch waits `linger` under TestClock, a full batch goes at once", async ([broker]) => {
  const topic = uniqueName("producer-linger")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 1)
    const producer = yield* Producer.make(cluster, { linger: "50 millis", maxBatchRecords: 10 })
    const settle = Effect.yieldNow.pipe(Effect.repeat({ times: 200 }))
    // A full batch goes at once: the first call waits only for InitProducerId and metadata.
    const warm = yield* producer.sendEach(Array.from({ length: 10 }, (_, i) => ({ topic, key: null, value: bytes(`warm-${i}`) })))
    assert.deepEqual(warm.map((o) => metadataOf(o).offset), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "a full batch does not linger")
    const before = cluster.produceRequests()

    const one = yield* Effect.forkChild(producer.sendEach([{ topic, key: null, value: bytes("one") }]))
    // Appended at the clock's current time, before it moves (no clock involved in waiting).
    yield* Effect.yieldNow.pipe(Effect.repeat({ until: () => producer.metrics().waiting === 1, times: 10_000 }))
    assert.equal(producer.metrics().waiting, 1)
    yield* settle
    yield* TestClock.adjust("49 millis")
    yield* settle
    assert.equal(cluster.produceRequests(), before, "not before the linger ends")
    yield* TestClock.adjust("1 millis")
    assert.equal(metadataOf((yield* Fiber.join(one))[0]!).offset, 10)
    assert.equal(cluster.produceRequests(), before + 1)
  }).pipe(Effect.provide(TestClock.layer())))
})

/** What the scripted broker saw of one Produce request's batch. */
interface SeenBatch {
  readonly producerId: number
  readonly producerEpoch: number
  readonly baseSequence: number
  readonly values: ReadonlyArray<string | null>
}

/**
 * A fake broker that answers Produce for partition 0 of topic `t` with the next planned error
 * (0 once the plan is used up), keeping a log whose offsets grow only on success, and
 * InitProducerId with id 1000 and the next epoch (a bump names the id and epoch it bumps).
 */
const scriptedBroker = async (plan: Array<{ code: number; recordErrors?: ReadonlyArray<{ batchIndex: number; batchIndexErrorMessage: string | null }> }>) => {
  const seen: Array<SeenBatch> = []
  const inits: Array<{ producerId: number | undefined; producerEpoch: number | undefined }> = []
  let epoch = -1
  let logEnd = 0
  const fake = await fakeBroker((request) => {
    if (request.apiKey === ApiVersions.key) {
      return responseFrame(ApiVersions, request.version, request.correlationId, {
        errorCode: 0,
        apiKeys: [
          { apiKey: ApiVersions.key, minVersion: 0, maxVersion: 4 },
          { apiKey: Produce.key, minVersion: 3, maxVersion: 12 },
          { apiKey: InitProducerId.key, minVersion: 0, maxVersion: 5 },
        ],
        throttleTimeMs: 0,
      } as never)
    }
    const reader = new Reader(request.frame)
    if (request.apiKey === InitProducerId.key) {
      decodeRequestHeader(reader, InitProducerId.requestHeaderVersion(request.version))
      const body = InitProducerId.decodeRequest(reader, request.version)
      inits.push({ producerId: body.producerId, producerEpoch: body.producerEpoch })
      epoch++
      return responseFrame(InitProducerId, request.version, request.correlationId, {
        throttleTimeMs: 0,
        errorCode: 0,
        producerId: 1000,
        producerEpoch: epoch,
      })
    }
    decodeRequestHeader(reader, Produce.requestHeaderVersion(request.version))
    const body = Produce.decodeRequest(reader, request.version)
    const records = body.topicData[0]!.partitionData[0]!.records!
    const batch = decodeRecordBatches(records, { topic: "t", partition: 0 }).batches[0]!
    const values = [...batch].map((record) => text(record.value))
    seen.push({ producerId: batch.producerId, producerEpoch: batch.producerEpoch, baseSequence: batch.baseSequence, values })
    const next = plan.shift() ?? { code: 0 }
    const baseOffset = next.code === 0 || next.code === 46 ? logEnd : -1
    if (next.code === 0) logEnd += values.length
    return responseFrame(Produce, request.version, request.correlationId, {
      responses: [{
        name: "t",
        partitionResponses: [{
          index: 0,
          errorCode: next.code,
          baseOffset,
          logAppendTimeMs: -1,
          logStartOffset: 0,
          recordErrors: next.recordErrors ?? [],
          errorMessage: null,
        }],
      }],
      throttleTimeMs: 0,
    })
  })
  return { fake, seen, inits }
}

test("Producer retries with the same sequence, takes DUPLICATE_SEQUENCE_NUMBER as written, bumps the epoch after OUT_OF_ORDER_SEQUENCE_NUMBER and UNKNOWN_PRODUCER_ID, and names the record at fault", async () => {
  const { fake, seen, inits } = await scriptedBroker([
    { code: 6 }, // NOT_LEADER_OR_FOLLOWER: the same batch again
    { code: 0 },
    { code: 46 }, // DUPLICATE_SEQUENCE_NUMBER: written before
    { code: 45 }, // OUT_OF_ORDER_SEQUENCE_NUMBER: fails, and a new epoch follows
    { code: 0 },
    { code: 87, recordErrors: [{ batchIndex: 1, batchIndexErrorMessage: "keyless record on a compacted topic" }] },
    { code: 59 }, // UNKNOWN_PRODUCER_ID: a new epoch, then the batch again
  ])
  try {
    await run(Effect.gen(function*() {
      const cluster = yield* testCluster(fake.address, { t: 1 })
      const producer = yield* Producer.make(cluster, { linger: 0, retryBackoff: "1 millis" })
      const send = (...values: Array<string>) =>
        producer.sendEach(values.map((value) => ({ topic: "t", partition: 0, key: null, value: bytes(value) })))

      // NOT_LEADER_OR_FOLLOWER, then success: sent twice with one sequence.
      assert.deepEqual((yield* send("a", "b")).map((o) => metadataOf(o).offset), [0, 1])
      assert.deepEqual(seen.slice(0, 2), [
        { producerId: 1000, producerEpoch: 0, baseSequence: 0, values: ["a", "b"] },
        { producerId: 1000, producerEpoch: 0, baseSequence: 0, values: ["a", "b"] },
      ])
      // DUPLICATE_SEQUENCE_NUMBER: success.
      assert.equal((yield* send("c")).map(metadataOf).length, 1)
      assert.equal(seen[2]!.baseSequence, 2)
      // OUT_OF_ORDER_SEQUENCE_NUMBER: fails; the next batch goes under a bumped epoch from 0.
      const outOfOrder = errorOf((yield* send("d"))[0]!)
      assert.equal(outOfOrder.code, "OUT_OF_ORDER_SEQUENCE_NUMBER")
      assert.equal(outOfOrder.partition, 0)
      assert.equal((yield* send("e")).map(metadataOf).length, 1)
      assert.deepEqual(seen[4], { producerId: 1000, producerEpoch: 1, baseSequence: 0, values: ["e"] })
      assert.deepEqual(inits, [{ producerId: -1, producerEpoch: -1 }, { producerId: 1000, producerEpoch: 0 }], "KIP-360: the bump names the id and epoch")
      // INVALID_RECORD naming record 1: every record fails, record 1 with the broker's reason.
      const refused = (yield* send("f", "g", "h")).map(errorOf)
      assert.deepEqual(refused.map((e) => [e.code, refusesBatch(e)]), [["INVALID_RECORD", true], ["INVALID_RECORD", true], ["INVALID_RECORD", true]])
      assert.match(refused[1]!.message, /refused record 1 of its batch \(INVALID_RECORD\): keyless record on a compacted topic/)
      assert.match(refused[0]!.message, /for another record in it: record 1: keyless record/)
      // The refused batch gave its sequence numbers back ("i" goes at 1, as "f" did);
      // UNKNOWN_PRODUCER_ID: a new epoch, and the batch goes again, sequence 0 under it.
      assert.equal((yield* send("i")).map(metadataOf).length, 1)
      assert.deepEqual(seen.slice(5).map((b) => [b.producerEpoch, b.baseSequence, b.values]), [
        [1, 1, ["f", "g", "h"]],
        [1, 1, ["i"]],
        [2, 0, ["i"]],
      ])
      assert.equal(producer.producerId().epoch, 2)
      assert.equal(producer.metrics().producerIds, 3)
    }))
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

kafkaTest("Producer: closing its scope sends what is lingering and waits for the answer; later calls fail saying it is closed", async ([broker]) => {
  const topic = uniqueName("producer-close")
  await run(Effect.gen(function*() {
    const cluster = yield* testCluster(broker!)
    yield* createTopic(yield* cluster.any, topic, 1)
    yield* cluster.partitionCount(topic) // cached: the call below appends without a round trip
    const outer = yield* Effect.scope
    let producer: Producer.KafkaProducer | undefined
    let sending: Fiber.Fiber<ReadonlyArray<Exit.Exit<RecordMetadata, TransportError>>> | undefined
    yield* Effect.scoped(Effect.gen(function*() {
      producer = yield* Producer.make(cluster, { linger: "1 hour" })
      sending = yield* Effect.forkIn(producer.sendEach([{ topic, key: null, value: bytes("lingering") }]), outer)
      yield* Effect.yieldNow.pipe(Effect.repeat({ times: 50 }))
      assert.equal(cluster.produceRequests(), 0, "still lingering")
    }))
    // The scope closed: the record was sent, not dropped, and answered before the close ended
    // (what is unanswered when the close ends fails with "closed before it was acknowledged").
    assert.equal(cluster.produceRequests(), 1)
    assert.equal(metadataOf((yield* Fiber.join(sending!))[0]!).offset, 0)
    const late = errorOf((yield* producer!.sendEach([{ topic, key: null, value: bytes("late") }]))[0]!)
    assert.match(late.message, /the producer is closed/)
    assert.equal(late.topic, topic)
    const { records } = yield* readBack(yield* cluster.any, topic, 0, 1)
    assert.deepEqual(records.map((r) => text(r.value)), ["lingering"])
  }))
})
