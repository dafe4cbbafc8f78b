/**
 * The fetch loop against the real broker (records written by kafkajs, its transactional
 * producer included), through a proxy a test can cut, and against a scripted broker for what a
 * real one does not do on demand (a corrupt batch, a leader that moved). Routing is a small real
 * one (tests/fixtures/fetchRouting.ts) that records every Fetch sent, which is how these tests
 * count requests.
 */
import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import { test } from "node:test"
import { Cause, Effect, Exit, Fiber, Layer, Logger, References, type Scope, Stream } from "effect"
import { Kafka, logLevel } from "kafkajs"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import * as Connection from "../../../lib/internal/kafka/connection.ts"
import * as FetchLoop from "../../../lib/internal/kafka/fetchLoop.ts"
import { ApiVersions } from "../../../lib/internal/kafka/protocol/ApiVersions.ts"
import { Fetch } from "../../../lib/internal/kafka/protocol/Fetch.ts"
import { zeroUuid } from "../../../lib/internal/kafka/protocol/wire.ts"
import { encodeRecordBatch } from "../../../lib/internal/kafka/recordBatch.ts"
import type { ConsumerRecord, PartitionClaim } from "../../../lib/Transport.ts"
import { TransportError } from "../../../lib/TransportError.ts"
import { fakeBroker, proxy, responseFrame } from "../../fixtures/brokerProxy.ts"
import { type RecordingRouting, recordingRouting } from "../../fixtures/fetchRouting.ts"
import { kafkaTest, uniqueName } from "../../fixtures/services.ts"

const captureLogs = () => {
  const lines: Array<string> = []
  const layer = Layer.mergeAll(
    Logger.layer([Logger.map(Logger.formatJson, (line) => void lines.push(line))]),
    Layer.succeed(References.MinimumLogLevel, "Info"),
  )
  return { lines, layer }
}

const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>, layer: Layer.Layer<never> = captureLogs().layer): Promise<A> =>
  Effect.runPromiseExit(Effect.scoped(effect).pipe(Effect.provide(layer))).then((exit) => {
    if (Exit.isFailure(exit)) throw new Error(Cause.pretty(exit.cause))
    return exit.value
  })

const text = (bytes: Uint8Array | null) => (bytes === null ? null : Buffer.from(bytes).toString())

/** Waits for a condition on what the network did: polls, bounded, never a fixed sleep. */
const until = (what: string, condition: () => boolean, timeoutMs = 20_000) =>
  Effect.gen(function*() {
    const start = Date.now()
    while (!condition()) {
      if (Date.now() - start > timeoutMs) return yield* Effect.die(new Error(`timed out waiting until ${what}`))
      yield* Effect.sleep("5 millis")
    }
  })

/** A claim's records, pulled one batch at a time. */
const puller = (claim: PartitionClaim, maxBatchSize = Number.POSITIVE_INFINITY) =>
  Effect.gen(function*() {
    const pull = yield* Stream.toPull(claim.records)
    const batches: Array<ReadonlyArray<ConsumerRecord>> = []
    const records: Array<ConsumerRecord> = []
    const next = Effect.gen(function*() {
      const chunk = yield* pull
      for (const batch of chunk) {
        assert.ok(batch.length > 0 && batch.length <= maxBatchSize, `a batch of ${batch.length} records`)
        batches.push(batch)
        records.push(...batch)
      }
    })
    /** Pulls until at least `n` records came in all. */
    const upTo = (n: number) => Effect.whileLoop({ while: () => records.length < n, body: () => next, step: () => {} })
    return { batches, records, next, upTo }
  })

const kafkaOf = (brokers: ReadonlyArray<string>) =>
  new Kafka({ brokers: [...brokers], clientId: "fetch-loop-test", logLevel: logLevel.NOTHING })

/** A topic with `partitions` partitions, deleted when the test ends. */
const withTopic = async <A>(brokers: ReadonlyArray<string>, partitions: number, body: (topic: string, kafka: Kafka) => Promise<A>) => {
  const kafka = kafkaOf(brokers)
  const admin = kafka.admin()
  await admin.connect()
  const topic = uniqueName("fetch-loop")
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: false })
    // A loaded broker may answer Metadata for a new topic with UNKNOWN_TOPIC_OR_PARTITION for a
    // while after creating it, which kafkajs' waitForLeaders and producer do not retry: wait here.
    for (let tries = 0; ; tries++) {
      const known = await admin.fetchTopicMetadata({ topics: [topic] }).then(
        (metadata) => metadata.topics[0]!.partitions.length === partitions && metadata.topics[0]!.partitions.every((p) => p.leader >= 0),
        () => false,
      )
      if (known) break
      if (tries > 200) throw new Error(`topic ${topic} never showed in metadata`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return await body(topic, kafka)
  } finally {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined)
    await admin.disconnect()
  }
}

const produce = async (kafka: Kafka, topic: string, batches: ReadonlyArray<{ partition: number; from: number; count: number }>) => {
  const producer = kafka.producer()
  await producer.connect()
  try {
    for (const { partition, from, count } of batches) {
      await producer.send({
        topic,
        messages: Array.from({ length: count }, (_, i) => ({
          partition,
          key: `k-${partition}-${from + i}`,
          value: `v-${partition}-${from + i}`,
          headers: { index: `${from + i}`, partition: `${partition}` },
        })),
      })
    }
  } finally {
    await producer.disconnect()
  }
}

const checkRecord = (record: ConsumerRecord, topic: string, partition: number, offset: number) => {
  assert.equal(record.topic, topic)
  assert.equal(record.partition, partition)
  assert.equal(record.offset, offset)
  assert.equal(text(record.key), `k-${partition}-${offset}`)
  assert.equal(text(record.value), `v-${partition}-${offset}`)
  assert.deepEqual(record.headers.map((h) => [h.key, text(h.value)]), [["index", `${offset}`], ["partition", `${partition}`]])
  assert.ok(Math.abs(record.timestamp - Date.now()) < 10 * 60_000, `timestamp ${record.timestamp} is about now`)
}

const fetchesOf = (routing: RecordingRouting, topic: string, partition: number) =>
  routing.fetches.filter((fetch) => fetch.partitions.some((p) => p.startsWith(`${topic}/${partition}@`)))

kafkaTest("FetchLoop hands out produced records in order, with their offsets, keys, values and headers, in batches of at most maxBatchSize", async (brokers) => {
  await withTopic(brokers, 3, async (topic, kafka) => {
    await produce(kafka, topic, [0, 1, 2].flatMap((partition) => [0, 10, 20].map((from) => ({ partition, from, count: 10 }))))
    await run(Effect.gen(function*() {
      const routing = yield* recordingRouting(brokers[0]!)
      const loop = yield* FetchLoop.make(routing, { maxBatchSize: 7 })
      // Partition 2 starts inside a batch: the records before its start offset are not handed out.
      const claims = yield* loop.assign([{ topic, partition: 0, offset: 0 }, { topic, partition: 1, offset: 0 }, { topic, partition: 2, offset: 12 }])
      yield* Effect.forEach(claims, (claim) =>
        Effect.gen(function*() {
          const pulled = yield* puller(claim, 7)
          const start = claim.startOffset
          yield* pulled.upTo(30 - start)
          assert.equal(pulled.records.length, 30 - start)
          pulled.records.forEach((record, i) => checkRecord(record, topic, claim.partition, start + i))
          assert.equal(loop.position(claim), 30)
        }), { concurrency: "unbounded" })
      assert.equal(routing.maxInFlight(), 1)
    }))
  })
})

kafkaTest("FetchLoop keeps one Fetch in flight per broker, covering every partition it leads that has room", async (brokers) => {
  const partitions = 24
  await withTopic(brokers, partitions, async (topic, kafka) => {
    await produce(kafka, topic, Array.from({ length: partitions }, (_, partition) => ({ partition, from: 0, count: 5 })))
    await run(Effect.gen(function*() {
      const routing = yield* recordingRouting(brokers[0]!)
      const loop = yield* FetchLoop.make(routing, { maxWait: "50 millis" })
      const claims = yield* loop.assign(Array.from({ length: partitions }, (_, partition) => ({ topic, partition, offset: 0 })))
      yield* Effect.forEach(claims, (claim) =>
        Effect.gen(function*() {
          const pulled = yield* puller(claim)
          yield* pulled.upTo(5)
          pulled.records.forEach((record, i) => checkRecord(record, topic, claim.partition, i))
        }), { concurrency: "unbounded" })
      assert.equal(routing.maxInFlight(), 1, "never two Fetches in flight to the broker")
      assert.equal(routing.fetches[0]!.partitions.length, partitions, "the first Fetch covers every partition")
      assert.ok(routing.fetches.length < partitions, `${routing.fetches.length} Fetches for ${partitions} partitions`)
    }))
  })
})

kafkaTest("FetchLoop fetches one batch ahead: a claim whose records are not pulled is not fetched again", async (brokers) => {
  await withTopic(brokers, 4, async (topic, kafka) => {
    await produce(kafka, topic, [0, 1, 2].map((partition) => ({ partition, from: 0, count: 10 })))
    await run(Effect.gen(function*() {
      const routing = yield* recordingRouting(brokers[0]!)
      const loop = yield* FetchLoop.make(routing, { maxWait: "20 millis" })
      const claims = yield* loop.assign([0, 1, 2, 3].map((partition) => ({ topic, partition, offset: 0 })))
      // Partition 3 has no records, so it always has room: the loop keeps fetching it, and
      // each of those Fetches is a chance to fetch the others again, which it must not take.
      yield* until("ten Fetches were answered", () => routing.answered() >= 10)
      for (const partition of [0, 1, 2]) {
        assert.deepEqual(fetchesOf(routing, topic, partition).length, 1, `partition ${partition} was fetched once`)
      }
      // A fetch session: after the first, requests are incremental and list only what changed,
      // and the partitions that have no room are dropped from the session.
      assert.equal(routing.fetches[0]!.sessionEpoch, 0)
      assert.ok(routing.fetches.slice(2).every((fetch) => fetch.sessionEpoch > 0 && fetch.partitions.length === 0))
      assert.deepEqual([...routing.fetches[1]!.forgotten].sort(), [0, 1, 2].map((p) => `${topic}/${p}`))
      // Pulling partition 0's batch gives it room: its next Fetch starts after the batch.
      const pulled = yield* puller(claims[0]!)
      yield* pulled.next
      assert.equal(pulled.records.length, 10)
      yield* until("partition 0 is fetched from offset 10", () =>
        routing.fetches.some((fetch) => fetch.partitions.includes(`${topic}/0@10`)))
      assert.equal(fetchesOf(routing, topic, 1).length, 1)
    }))
  })
})

kafkaTest("FetchLoop pauses, resumes and seeks a partition while the others keep flowing", async (brokers) => {
  await withTopic(brokers, 2, async (topic, kafka) => {
    await produce(kafka, topic, [0, 1].map((partition) => ({ partition, from: 0, count: 5 })))
    await run(Effect.gen(function*() {
      const routing = yield* recordingRouting(brokers[0]!)
      const loop = yield* FetchLoop.make(routing, { maxWait: "20 millis" })
      const [zero, one] = yield* loop.assign([0, 1].map((partition) => ({ topic, partition, offset: 0 })))
      const p0 = yield* puller(zero!)
      const p1 = yield* puller(one!)
      // Partition 1's records come in the same Fetch as partition 0's, which then waits, fetched.
      yield* p1.upTo(5)
      yield* loop.pause([zero!])
      // What was fetched before the pause is still handed out.
      yield* p0.upTo(5)
      const pausedAt = routing.fetches.length
      yield* Effect.promise(() => produce(kafka, topic, [0, 1].map((partition) => ({ partition, from: 5, count: 5 }))))
      yield* p1.upTo(10)
      p1.records.forEach((record, i) => checkRecord(record, topic, 1, i))
      const whilePaused = routing.fetches.slice(pausedAt)
      assert.ok(whilePaused.length > 0)
      assert.ok(whilePaused.every((fetch) => fetch.partitions.every((p) => !p.startsWith(`${topic}/0@`))), "a paused partition is not fetched")
      assert.equal(p0.records.length, 5)

      yield* loop.resume([zero!])
      yield* p0.upTo(10)
      p0.records.forEach((record, i) => checkRecord(record, topic, 0, i))

      yield* loop.seek(zero!, 2)
      assert.equal(loop.position(zero!), 2)
      yield* p0.upTo(18)
      p0.records.slice(10).forEach((record, i) => checkRecord(record, topic, 0, 2 + i))
    }))
  })
})

kafkaTest("FetchLoop in read-committed skips an aborted transaction; read-uncommitted hands it out; markers advance the position", async (brokers) => {
  await withTopic(brokers, 1, async (topic, kafka) => {
    const producer = kafka.producer({ transactionalId: uniqueName("fetch-loop-txn"), idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    try {
      const aborted = await producer.transaction()
      await aborted.send({ topic, messages: ["a1", "a2", "a3"].map((value) => ({ partition: 0, value })) })
      await aborted.abort()
      const committed = await producer.transaction()
      await committed.send({ topic, messages: ["c1", "c2"].map((value) => ({ partition: 0, value })) })
      await committed.commit()
    } finally {
      await producer.disconnect()
    }
    const plain = kafka.producer()
    await plain.connect()
    await plain.send({ topic, messages: [{ partition: 0, value: "plain" }] })
    await plain.disconnect()
    // Offsets: a1-a3 0-2, abort marker 3, c1-c2 4-5, then the commit marker and plain at 6 and
    // 7 in either order (the coordinator writes markers after EndTxn returns).
    for (const [isolation, expected] of [
      ["read-committed", [[4, "c1"], [5, "c2"]]],
      ["read-uncommitted", [[0, "a1"], [1, "a2"], [2, "a3"], [4, "c1"], [5, "c2"]]],
    ] as const) {
      await run(Effect.gen(function*() {
        const routing = yield* recordingRouting(brokers[0]!)
        const loop = yield* FetchLoop.make(routing, { isolation, maxWait: "20 millis" })
        const [claim] = yield* loop.assign([{ topic, partition: 0, offset: 0 }])
        const pulled = yield* puller(claim!)
        yield* pulled.upTo(expected.length + 1)
        assert.deepEqual(pulled.records.slice(0, -1).map((r) => [r.offset, text(r.value)]), expected, isolation)
        const last = pulled.records.at(-1)!
        assert.equal(text(last.value), "plain")
        assert.ok(last.offset === 6 || last.offset === 7, `plain at ${last.offset}`)
        yield* until("the position is past the last record", () => loop.position(claim!) === 8)
      }))
    }
  })
})

kafkaTest("FetchLoop resets an out-of-range position with ListOffsets, once: after deleteRecords to earliest, past the end to latest", async (brokers) => {
  await withTopic(brokers, 1, async (topic, kafka) => {
    await produce(kafka, topic, [{ partition: 0, from: 0, count: 10 }])
    const admin = kafka.admin()
    await admin.connect()
    await admin.fetchTopicMetadata({ topics: [topic] })
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "5" }] })
    await admin.disconnect()

    const earliest = captureLogs()
    await run(Effect.gen(function*() {
      const routing = yield* recordingRouting(brokers[0]!)
      const loop = yield* FetchLoop.make(routing, { reset: "earliest", maxWait: "20 millis" })
      const [claim] = yield* loop.assign([{ topic, partition: 0, offset: 0 }])
      const pulled = yield* puller(claim!)
      yield* pulled.upTo(5)
      pulled.records.forEach((record, i) => checkRecord(record, topic, 0, 5 + i))
    }), earliest.layer)
    const resets = earliest.lines.filter((line) => line.includes("out of range"))
    assert.equal(resets.length, 1, resets.join("\n"))
    assert.match(resets[0]!, new RegExp(`Offset 0 of ${topic}/0 is out of range; the partition restarts at its earliest offset, 5`))

    const latest = captureLogs()
    await run(Effect.gen(function*() {
      const routing = yield* recordingRouting(brokers[0]!)
      const loop = yield* FetchLoop.make(routing, { reset: "latest", maxWait: "20 millis" })
      const [claim] = yield* loop.assign([{ topic, partition: 0, offset: 5 }])
      const pulled = yield* puller(claim!)
      yield* pulled.upTo(1)
      assert.equal(pulled.records[0]!.offset, 5)
      yield* loop.seek(claim!, 1000)
      yield* until("the position is reset to the end", () => loop.position(claim!) === 10)
      yield* Effect.promise(() => produce(kafka, topic, [{ partition: 0, from: 10, count: 1 }]))
      yield* pulled.upTo(6)
      // Partition 0's first fetched batch may have held more records than the one pulled; after the
      // seek, only record 10 comes.
      const after = pulled.records.filter((record) => record.offset >= 10)
      assert.deepEqual(after.map((r) => r.offset), [10])
      checkRecord(after[0]!, topic, 0, 10)
    }), latest.layer)
    assert.deepEqual(
      latest.lines.filter((line) => line.includes("out of range")).map((line) => JSON.parse(line).message),
      [`Offset 1000 of ${topic}/0 is out of range; the partition restarts at its latest offset, 10`],
    )
  })
})

kafkaTest("FetchLoop resumes after a cut connection without losing or repeating a record", async (brokers) => {
  await withTopic(brokers, 1, async (topic, kafka) => {
    await produce(kafka, topic, Array.from({ length: 30 }, (_, i) => ({ partition: 0, from: i * 10, count: 10 })))
    const broker = await proxy(brokers[0]!)
    try {
      await run(Effect.gen(function*() {
        const routing = yield* recordingRouting(broker.address)
        // Small fetches, so that many are needed and the cut falls between them.
        const loop = yield* FetchLoop.make(routing, { partitionMaxBytes: 600, maxBatchSize: 10, retryBackoff: "20 millis" })
        const [claim] = yield* loop.assign([{ topic, partition: 0, offset: 0 }])
        const pulled = yield* puller(claim!, 10)
        yield* pulled.upTo(100)
        broker.cut()
        yield* pulled.upTo(300)
        assert.equal(pulled.records.length, 300)
        pulled.records.forEach((record, i) => checkRecord(record, topic, 0, i))
        assert.ok(broker.accepted() >= 2, "the loop connected again")
      }))
      await broker.until(() => broker.open() === 0)
    } finally {
      await broker.close()
    }
  })
})

kafkaTest("FetchLoop over brokers.ts: records flow, and a revoked partition's stream ends while the others go on", async (brokers) => {
  await withTopic(brokers, 2, async (topic, kafka) => {
    await produce(kafka, topic, [0, 1].map((partition) => ({ partition, from: 0, count: 5 })))
    await run(Effect.gen(function*() {
      const pool = yield* Brokers.make({ bootstrap: brokers })
      const loop = yield* FetchLoop.make(FetchLoop.fromBrokers(pool), { maxWait: "20 millis" })
      const [zero, one] = yield* loop.assign([0, 1].map((partition) => ({ topic, partition, offset: 0 })))
      const p0 = yield* puller(zero!)
      const p1 = yield* puller(one!)
      yield* p0.upTo(5)
      yield* p1.upTo(5)
      p0.records.forEach((record, i) => checkRecord(record, topic, 0, i))
      // A pull waiting for more when the partition is revoked ends: the stream is over.
      const waiting = yield* Effect.forkChild(Effect.exit(p0.next))
      yield* loop.revoke([zero!])
      const ended = yield* Fiber.join(waiting)
      assert.ok(Exit.isFailure(ended) && Cause.isDone(Cause.squash(ended.cause)), "the revoked stream ended")
      assert.equal(loop.position(zero!), undefined)
      assert.deepEqual(yield* Stream.runCollect(zero!.records), [])
      yield* Effect.promise(() => produce(kafka, topic, [0, 1].map((partition) => ({ partition, from: 5, count: 5 }))))
      yield* p1.upTo(10)
      p1.records.forEach((record, i) => checkRecord(record, topic, 1, i))
      assert.equal(p0.records.length, 5)
    }))
  })
})

// --- against a scripted broker --------------------------------------------------------------

const utf8 = (s: string) => new TextEncoder().encode(s)

/** A scripted broker that knows ApiVersions and Fetch v4-12, answering Fetches with `answer`. */
const scripted = (
  answer: (nth: number, version: number) => { errorCode: number; records: Uint8Array | null; topError?: number; sessionId?: number },
) => {
  let fetches = 0
  return fakeBroker((request) => {
    if (request.apiKey === ApiVersions.key) {
      return responseFrame(ApiVersions, request.version, request.correlationId, {
        errorCode: 0,
        apiKeys: [{ apiKey: ApiVersions.key, minVersion: 0, maxVersion: 4 }, { apiKey: Fetch.key, minVersion: 4, maxVersion: 12 }],
        throttleTimeMs: 0,
      } as never)
    }
    if (request.apiKey === Fetch.key) {
      const { errorCode, records, topError = 0, sessionId = 0 } = answer(fetches++, request.version)
      return responseFrame(Fetch, request.version, request.correlationId, {
        throttleTimeMs: 0,
        errorCode: topError,
        sessionId,
        responses: [{
          topic: "scripted",
          partitions: [{ partitionIndex: 0, errorCode, highWatermark: 10, lastStableOffset: 10, logStartOffset: 0, abortedTransactions: null, records }],
        }],
      })
    }
    return undefined
  })
}

/** Routing to the scripted broker, counting lookups and invalidations. */
const scriptedRouting = (address: string) =>
  Effect.gen(function*() {
    const connection = yield* Connection.make({ broker: address })
    const counts = { leaderFor: 0, invalidate: 0 }
    const routing: FetchLoop.Routing = {
      leaderFor: () => Effect.sync(() => ({ nodeId: 0, leaderEpoch: 3 + counts.leaderFor++ })),
      connection: () => Effect.succeed(connection),
      topicId: () => Effect.succeed(zeroUuid),
      invalidate: () => Effect.sync(() => void counts.invalidate++),
    }
    return { routing, counts }
  })

const batchAt = (baseOffset: number, values: ReadonlyArray<string>) =>
  encodeRecordBatch(values.map((value) => ({ key: null, value: utf8(value), timestamp: 1_700_000_000_000 })), { baseOffset })

test("FetchLoop hands out the records before a corrupt batch, then fails the claim with a non-retriable error naming topic-partition@offset", async () => {
  const bad = batchAt(3, ["d", "e"])
  bad[bad.length - 1]! ^= 0xff
  const good = batchAt(0, ["a", "b", "c"])
  const records = new Uint8Array(good.length + bad.length)
  records.set(good)
  records.set(bad, good.length)
  const fake = await scripted(() => ({ errorCode: 0, records }))
  try {
    await run(Effect.gen(function*() {
      const { routing } = yield* scriptedRouting(fake.address)
      const loop = yield* FetchLoop.make(routing, { maxWait: "10 millis" })
      const [claim] = yield* loop.assign([{ topic: "scripted", partition: 0, offset: 0 }])
      const exit = yield* Effect.exit(Stream.runCollect(claim!.records))
      assert.ok(Exit.isFailure(exit))
      const error = Cause.squash(exit.cause)
      assert.ok(error instanceof TransportError)
      assert.equal(error.code, "CORRUPT_MESSAGE")
      assert.equal(error.retriable, false)
      assert.match(error.message, /scripted\/0@3/)
      // The consumer that reads on gets the good batch first.
      const pulled = yield* puller((yield* loop.assign([{ topic: "scripted", partition: 0, offset: 0 }]))[0]!)
      yield* pulled.next
      assert.deepEqual(pulled.records.map((r) => [r.offset, text(r.value)]), [[0, "a"], [1, "b"], [2, "c"]])
      assert.ok(Exit.isFailure(yield* Effect.exit(pulled.next)))
    }))
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

test("FetchLoop re-routes a partition whose leader moved: metadata is invalidated, the leader looked up again, the fetch retried", async () => {
  const fake = await scripted((nth) =>
    nth === 0 ? { errorCode: 6, records: null } : nth === 1 ? { errorCode: 74, records: null } : { errorCode: 0, records: batchAt(0, ["x", "y"]) }
  )
  try {
    await run(Effect.gen(function*() {
      const { routing, counts } = yield* scriptedRouting(fake.address)
      const loop = yield* FetchLoop.make(routing, { maxWait: "10 millis", retryBackoff: "1 millis" })
      const [claim] = yield* loop.assign([{ topic: "scripted", partition: 0, offset: 0 }])
      const pulled = yield* puller(claim!)
      yield* pulled.upTo(2)
      assert.deepEqual(pulled.records.map((r) => text(r.value)), ["x", "y"])
      assert.equal(counts.invalidate, 2, "NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH each invalidate metadata")
      assert.equal(counts.leaderFor, 3, "and each leads to a new leader lookup")
    }))
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

test("FetchLoop starts a new fetch session when the broker forgot its session, without losing a record", async () => {
  const fake = await scripted((nth) =>
    nth === 0
      ? { errorCode: 0, records: batchAt(0, ["x"]), sessionId: 7 }
      : nth === 1
      ? { errorCode: 0, records: null, topError: 70, sessionId: 0 }
      : { errorCode: 0, records: nth === 2 ? batchAt(1, ["y"]) : null, sessionId: 8 }
  )
  try {
    await run(Effect.gen(function*() {
      const { routing, counts } = yield* scriptedRouting(fake.address)
      const loop = yield* FetchLoop.make(routing, { maxWait: "10 millis" })
      const [claim] = yield* loop.assign([{ topic: "scripted", partition: 0, offset: 0 }])
      const pulled = yield* puller(claim!)
      yield* pulled.upTo(2)
      assert.deepEqual(pulled.records.map((r) => [r.offset, text(r.value)]), [[0, "x"], [1, "y"]])
      assert.equal(counts.invalidate, 0, "a lost session is not a metadata problem")
    }))
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})
