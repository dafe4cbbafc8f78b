/**
 * Transactions of the Kafka client against the real brokers: Kafka 4.4 (transactions v2,
 * KIP-890: no AddPartitionsToTxn or AddOffsetsToTxn, an epoch per transaction) and Kafka 3.9
 * (the classic path), the same promises on both: committed records are read by a
 * read-committed fetch loop and aborted ones never; offsets sent with a transaction reach the
 * group only when it commits; a second producer with the id fences the first; a TxnOffsetCommit
 * with a stale generation of a real group member (KIP-447) is refused, typed and non-retriable;
 * a transaction whose send failed aborts and the next one commits; sends from many fibers share
 * one transaction; closing the scope aborts what is open. A scripted broker adds what a real one
 * does not answer on demand: coordinator retries, a PRODUCER_FENCED EndTxn, the request versions
 * of each path, and v2's new epoch carried by the next batch.
 *
 * The 3.9 broker is the shared one `PARTITA_KAFKA_OLDER_*` name (as .ci/run exports them), or
 * one this file starts through scripts/kafka and stops.
 */
import assert from "node:assert/strict"
import { after, test } from "node:test"
import { Effect, Schedule, type Scope, Stream } from "effect"
import * as Admin from "../../../lib/internal/kafka/admin.ts"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import * as FetchLoop from "../../../lib/internal/kafka/fetchLoop.ts"
import { decodeRequestHeader } from "../../../lib/internal/kafka/protocol/api.ts"
import { AddPartitionsToTxn } from "../../../lib/internal/kafka/protocol/AddPartitionsToTxn.ts"
import { ApiVersions } from "../../../lib/internal/kafka/protocol/ApiVersions.ts"
import { EndTxn } from "../../../lib/internal/kafka/protocol/EndTxn.ts"
import { InitProducerId } from "../../../lib/internal/kafka/protocol/InitProducerId.ts"
import { OffsetFetch } from "../../../lib/internal/kafka/protocol/OffsetFetch.ts"
import { Produce } from "../../../lib/internal/kafka/protocol/Produce.ts"
import { Reader } from "../../../lib/internal/kafka/protocol/wire.ts"
import { decodeRecordBatches } from "../../../lib/internal/kafka/recordBatch.ts"
import * as Transactions from "../../../lib/internal/kafka/transactions.ts"
import type { ConsumerRecord, ProducerRecord } from "../../../lib/Transport.ts"
import type { TransportError } from "../../../lib/TransportError.ts"
import { flip, run, succeeded } from "../../fixtures/kafkaEffects.ts"
import { fakeBroker, responseFrame } from "../../fixtures/brokerProxy.ts"
import { createTopic, testCluster } from "../../fixtures/producerCluster.ts"
import { OlderBroker } from "../../fixtures/scriptedKafka.ts"
import { kafkaTest, scriptedKafkaTest, uniqueName } from "../../fixtures/services.ts"
import { member } from "./groupSuite.ts"

const bytes = (text: string) => new TextEncoder().encode(text)
const text = (value: Uint8Array | null) => (value === null ? null : new TextDecoder().decode(value))
const record = (topic: string, value: string): ProducerRecord => ({ topic, partition: 0, key: null, value: bytes(value) })

/** The values a read-committed fetch loop reads from a partition, once it has `count` of them. */
const readCommitted = (brokers: Brokers.Brokers, topic: string, count: number, partition = 0) =>
  Effect.scoped(Effect.gen(function*() {
    const loop = yield* FetchLoop.make(FetchLoop.fromBrokers(brokers), { isolation: "read-committed", maxWait: "100 millis" })
    const [claim] = yield* loop.assign([{ topic, partition, offset: 0 }])
    const pull = yield* Stream.toPull(claim!.records)
    const records: Array<ConsumerRecord> = []
    while (records.length < count) for (const batch of yield* pull) records.push(...batch)
    return records.map((r) => ({ offset: r.offset, value: text(r.value) }))
  })).pipe(
    Effect.timeoutOrElse({ duration: "20 seconds", orElse: () => Effect.die(new Error(`fewer than ${count} committed records in ${topic}/${partition} within 20 s`)) }),
  )

const readValues = (brokers: Brokers.Brokers, topic: string, count: number) =>
  Effect.map(readCommitted(brokers, topic, count), (records) => records.map((r) => r.value))

/** The group's committed offset of partition 0, polled until `until` holds (offsets land a moment after a commit). */
const committedOf = (admin: Admin.Admin, group: string, topic: string, until: (offset: number | undefined) => boolean) =>
  admin.committedOffsets(group, [{ topic, partition: 0 }]).pipe(
    Effect.map((offsets) => offsets[0]?.offset),
    Effect.repeat({ until, schedule: Schedule.spaced("50 millis") }),
    Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.die(new Error(`group ${group}: the committed offset never became what was expected`)) }),
  )

/** Partition 0's committed offset as OffsetFetch v7 answers without `requireStable`: pending transactional offsets not counted. */
const committedUnstable = (brokers: Brokers.Brokers, group: string, topic: string) =>
  Effect.gen(function*() {
    const coordinator = yield* brokers.coordinatorFor({ type: "group", id: group })
    const answer = yield* coordinator.request(OffsetFetch, { groupId: group, topics: [{ name: topic, partitionIndexes: [0] }], requireStable: false }, { version: 7 })
    const partition = answer.topics?.[0]?.partitions[0]
    assert.equal(partition?.errorCode, 0)
    return partition!.committedOffset
  })

const nonRetriable = (error: TransportError, codes: ReadonlySet<string>, what: string) => {
  assert.equal(error.retriable, false, `${what}: ${error.code} is not retriable`)
  assert.ok(codes.has(error.code), `${what}: ${error.code} (${error.message})`)
}

const memberOptions = { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" } as const

interface Target {
  readonly name: string
  readonly declare: (name: string, body: (address: string) => Promise<void>) => void
  readonly protocol: Transactions.Protocol
  /** The group protocols to join with there. */
  readonly groupProtocols: ReadonlyArray<"consumer" | "classic">
}

const withCluster = <A, E>(address: string, body: (brokers: Brokers.Brokers, admin: Admin.Admin) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function*() {
    const brokers = yield* Brokers.make({ bootstrap: [address] })
    return yield* body(brokers, Admin.make(brokers))
  })

const suite = (target: Target) => {
  target.declare(`Transactions on ${target.name} (${target.protocol}): a committed transaction's records and offsets are visible, an aborted one's never`, async (address) => {
    succeeded(await run(withCluster(address, (brokers, admin) =>
      Effect.gen(function*() {
        const topic = uniqueName("txn-out")
        const source = uniqueName("txn-in")
        const group = uniqueName("txn-group")
        yield* createTopic(yield* brokers.any, topic, 1)
        yield* createTopic(yield* brokers.any, source, 1)
        const producer = yield* Transactions.make(brokers, { transactionalId: uniqueName("txn-id") })
        assert.equal(producer.protocol, target.protocol)
        const start = producer.producerId()
        assert.ok(start.id >= 0 && start.epoch >= 0, "InitProducerId gave an id and epoch")

        const aborted = yield* producer.begin
        assert.equal((yield* flip(producer.begin)).code, "INVALID_TXN_STATE", "one transaction at a time")
        yield* aborted.send([record(topic, "aborted-0"), record(topic, "aborted-1")])
        yield* aborted.sendOffsets(group, [{ topic: source, partition: 0, offset: 5 }])
        yield* aborted.abort
        assert.equal((yield* flip(aborted.send([record(topic, "late")]))).code, "INVALID_TXN_STATE", "an ended transaction takes nothing more")

        const committed = yield* producer.begin
        const metadata = yield* committed.send([record(topic, "committed-0"), record(topic, "committed-1"), record(topic, "committed-2")])
        assert.deepEqual(metadata.map((m) => m.topic), [topic, topic, topic])
        const offsets = metadata.map((m) => m.offset)
        assert.ok(offsets[0]! >= 3 && offsets[1] === offsets[0]! + 1 && offsets[2] === offsets[0]! + 2, `in order after the aborted records and their marker: ${offsets}`)
        yield* committed.sendOffsets(group, [{ topic: source, partition: 0, offset: 7, metadata: "m" }])
        // Not committed yet: the group's offset is still none (read without `requireStable`,
        // which would answer UNSTABLE_OFFSET_COMMIT while the transaction is open).
        assert.equal(yield* committedUnstable(brokers, group, source), -1)
        yield* committed.commit

        assert.deepEqual(yield* readValues(brokers, topic, 3), ["committed-0", "committed-1", "committed-2"])
        assert.equal(yield* committedOf(admin, group, source, (offset) => offset !== undefined), 7)
        assert.deepEqual(yield* admin.committedOffsets(group, [{ topic: source, partition: 0 }]), [{ topic: source, partition: 0, offset: 7, metadata: "m" }])

        const metrics = producer.metrics()
        // Requests answered, retries included (CONCURRENT_TRANSACTIONS while the last one's markers are written).
        assert.ok(metrics.endTxn >= 2 && metrics.txnOffsetCommit >= 2, JSON.stringify(metrics))
        if (target.protocol === "v2") {
          assert.equal(metrics.addPartitionsToTxn, 0, "Produce v12 adds partitions (KIP-890)")
          assert.equal(metrics.addOffsetsToTxn, 0, "TxnOffsetCommit v5 adds the group (KIP-890)")
          assert.deepEqual(producer.producerId(), { id: start.id, epoch: start.epoch + 2 }, "each EndTxn bumped the epoch")
        } else {
          assert.ok(metrics.addPartitionsToTxn >= 2, "AddPartitionsToTxn in each transaction")
          assert.ok(metrics.addOffsetsToTxn >= 2, "AddOffsetsToTxn in each transaction")
          assert.deepEqual(producer.producerId(), start, "the epoch stays")
        }
      }))))
  })

  target.declare(`Transactions on ${target.name}: a second producer with the id fences the first, whose sends after that are never visible`, async (address) => {
    succeeded(await run(withCluster(address, (brokers) =>
      Effect.gen(function*() {
        const topic = uniqueName("txn-fence")
        yield* createTopic(yield* brokers.any, topic, 1)
        const transactionalId = uniqueName("txn-fenced")
        const first = yield* Transactions.make(brokers, { transactionalId })
        const open = yield* first.begin
        yield* open.send([record(topic, "before-fence")])

        const second = yield* Transactions.make(brokers, { transactionalId })
        const fenced = yield* flip(open.send([record(topic, "after-fence")]))
        nonRetriable(fenced, Transactions.fatalErrors, "the fenced producer's send")
        nonRetriable(yield* flip(open.commit), Transactions.fatalErrors, "its commit")
        nonRetriable(yield* flip(first.begin), Transactions.fatalErrors, "its next begin")
        yield* open.abort // the fencing aborted it already: not an error

        const next = yield* second.begin
        yield* next.send([record(topic, "from-second")])
        yield* next.commit
        assert.deepEqual(yield* readValues(brokers, topic, 1), ["from-second"])
      }))))
  })

  for (const groupProtocol of target.groupProtocols) {
    target.declare(`Transactions on ${target.name}: TxnOffsetCommit with a ${groupProtocol} member's stale generation is refused by the group, non-retriable (KIP-447)`, async (address) => {
      succeeded(await run(withCluster(address, (brokers, admin) =>
        Effect.gen(function*() {
          const topic = uniqueName("txn-447")
          const group = uniqueName("txn-447-group")
          yield* createTopic(yield* brokers.any, topic, 2)
          const first = yield* member(address, { group, topics: [topic], protocol: groupProtocol, ...memberOptions })
          yield* first.until("the first member holds both partitions", () => first.holds().length === 2)
          const stale = { memberId: first.group.memberId(), generationId: first.group.generation() }
          assert.ok(stale.generationId >= 1, `a generation: ${stale.generationId}`)
          // A second member joins and takes a partition over: the group moves on, and the first
          // member's generation (epoch) with it. Committing for the moved partition with the old
          // generation is what a zombie does.
          const other = yield* member(address, { group, topics: [topic], protocol: groupProtocol, ...memberOptions })
          yield* first.until("a partition moved", () => first.holds().length === 1 && other.holds().length === 1 && first.group.generation() > stale.generationId)
          const current = { memberId: first.group.memberId(), generationId: first.group.generation() }
          const kept = Number(first.holds()[0]!.split("/").pop())
          const moved = 1 - kept
          const producer = yield* Transactions.make(brokers, { transactionalId: uniqueName("txn-447-id") })

          const valid = yield* producer.begin
          yield* valid.sendOffsets(group, [{ topic, partition: kept, offset: 3 }], current)
          yield* valid.commit
          const committed = () => admin.committedOffsets(group, [{ topic, partition: 0 }, { topic, partition: 1 }])
          yield* committed().pipe(
            Effect.repeat({ until: (offsets) => offsets.length === 1, schedule: Schedule.spaced("50 millis") }),
            Effect.timeout("10 seconds"),
          )

          const zombie = yield* producer.begin
          const refused = yield* flip(zombie.sendOffsets(group, [{ topic, partition: moved, offset: 9 }], stale))
          nonRetriable(refused, new Set(["ILLEGAL_GENERATION", "FENCED_MEMBER_EPOCH", "STALE_MEMBER_EPOCH", "UNKNOWN_MEMBER_ID"]), "a stale generation")
          assert.equal((yield* flip(zombie.commit)).retriable, false, "the transaction cannot commit")
          yield* zombie.abort
          assert.deepEqual(yield* committed(), [{ topic, partition: kept, offset: 3, metadata: "" }])
          yield* other.close
          yield* first.close
        }))))
    })
  }

  target.declare(`Transactions on ${target.name}: closing the producer's scope aborts its open transaction, so readers are not held back`, async (address) => {
    succeeded(await run(withCluster(address, (brokers) =>
      Effect.gen(function*() {
        const topic = uniqueName("txn-closed")
        yield* createTopic(yield* brokers.any, topic, 1)
        yield* Effect.scoped(Effect.gen(function*() {
          const producer = yield* Transactions.make(brokers, { transactionalId: uniqueName("txn-closed-id") })
          const open = yield* producer.begin
          yield* open.send([record(topic, "open-at-close")])
        }))
        // Another id's committed record: read-committed readers see it only once the open
        // transaction before it ended (else they wait the 60 s transaction timeout).
        const other = yield* Transactions.make(brokers, { transactionalId: uniqueName("txn-closed-other") })
        const txn = yield* other.begin
        yield* txn.send([record(topic, "after")])
        yield* txn.commit
        assert.deepEqual(yield* readValues(brokers, topic, 1), ["after"])
      }))))
  })

  target.declare(`Transactions on ${target.name}: sends from many fibers share one transaction, each call's records in order where the reader finds them`, async (address) => {
    succeeded(await run(withCluster(address, (brokers) =>
      Effect.gen(function*() {
        const topic = uniqueName("txn-fibers")
        yield* createTopic(yield* brokers.any, topic, 3)
        const producer = yield* Transactions.make(brokers, { transactionalId: uniqueName("txn-fibers-id") })
        const txn = yield* producer.begin
        const calls = Array.from({ length: 20 }, (_, call) =>
          Array.from({ length: 5 }, (_, i): ProducerRecord => ({ topic, key: bytes(`key-${call}`), value: bytes(`call-${call}-${i}`) })))
        const answers = yield* Effect.forEach(calls, (records) => txn.send(records), { concurrency: "unbounded" })
        yield* txn.commit
        const written = new Map<number, Array<{ offset: number; value: string | null }>>()
        answers.forEach((metadata, call) => {
          // One key per call: one partition, offsets in the call's order.
          assert.ok(metadata.every((m) => m.partition === metadata[0]!.partition), `call ${call} on one partition`)
          metadata.forEach((m, i) => {
            if (i > 0) assert.ok(m.offset > metadata[i - 1]!.offset, `call ${call}: offsets in order`)
            written.set(m.partition, [...(written.get(m.partition) ?? []), { offset: m.offset, value: `call-${call}-${i}` }])
          })
        })
        for (const [partition, records] of written) {
          const read = yield* readCommitted(brokers, topic, records.length, partition)
          assert.deepEqual(read, [...records].sort((a, b) => a.offset - b.offset), `partition ${partition}`)
        }
      }))))
  })

  target.declare(`Transactions on ${target.name}: after a send the broker refused, the transaction cannot commit, aborts, and the next one commits`, async (address) => {
    succeeded(await run(withCluster(address, (brokers) =>
      Effect.gen(function*() {
        const topic = uniqueName("txn-refused")
        yield* createTopic(yield* brokers.any, topic, 1, [{ name: "max.message.bytes", value: "2000" }])
        const producer = yield* Transactions.make(brokers, { transactionalId: uniqueName("txn-refused-id") })
        const failing = yield* producer.begin
        yield* failing.send([record(topic, "written-then-aborted")])
        const tooLarge = yield* flip(failing.send([record(topic, "x".repeat(5000))]))
        assert.ok(["MESSAGE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"].includes(tooLarge.code), tooLarge.message)
        const commit = yield* flip(failing.commit)
        assert.equal(commit.code, tooLarge.code, "commit names the failure")
        assert.equal(commit.retriable, false)
        yield* failing.abort

        const next = yield* producer.begin
        yield* next.send([record(topic, "after-abort")])
        yield* next.commit
        assert.deepEqual(yield* readValues(brokers, topic, 1), ["after-abort"])
        if (target.protocol === "classic") assert.equal(producer.metrics().initProducerId, 2, "the abort after a failed send bumped the epoch (KIP-360)")
      }))))
  })
}

suite({
  name: "Kafka 4.4",
  protocol: "v2",
  groupProtocols: ["consumer", "classic"],
  declare: (name, body) => kafkaTest(name, ([broker]) => body(broker!), { timeoutMs: 60_000 }),
})

let started: Promise<OlderBroker> | undefined
let older: OlderBroker | undefined
after(async () => {
  await started?.catch(() => undefined)
  await older?.stop()
})

suite({
  name: "Kafka 3.9",
  protocol: "classic",
  groupProtocols: ["classic"],
  declare: (name, body) =>
    scriptedKafkaTest(name, async () => {
      started ??= OlderBroker.start("3.9").then((b) => (older = b))
      await body((await started).address)
    }, { timeoutMs: 90_000 }),
})

// --- scripted broker: the answers a real broker does not give on demand ------------------------

/** Error codes, as the broker sends them. */
const code = { none: 0, notCoordinator: 16, loadInProgress: 14, concurrent: 51, fenced: 90 } as const

interface Scripted {
  readonly transactionVersion: number
  /** Answer codes per API key, taken in order; 0 once a list runs out. */
  readonly answers: Partial<Record<number, Array<number>>>
}

/** A fake broker leading topic "t" (1 partition) and coordinating everything, answering as `script` says. */
const scripted = async (script: Scripted) => {
  let epoch = 0
  const batches: Array<{ producerId: number; producerEpoch: number; baseSequence: number; transactional: boolean; transactionalId: string | null }> = []
  const next = (key: number) => script.answers[key]?.shift() ?? code.none
  const fake = await fakeBroker((request) => {
    const reader = new Reader(request.frame)
    switch (request.apiKey) {
      case ApiVersions.key:
        return responseFrame(ApiVersions, request.version, request.correlationId, {
          errorCode: 0,
          apiKeys: [
            { apiKey: ApiVersions.key, minVersion: 0, maxVersion: 4 },
            { apiKey: Produce.key, minVersion: 3, maxVersion: 12 },
            { apiKey: InitProducerId.key, minVersion: 0, maxVersion: 5 },
            { apiKey: AddPartitionsToTxn.key, minVersion: 0, maxVersion: 5 },
            { apiKey: EndTxn.key, minVersion: 0, maxVersion: 5 },
          ],
          throttleTimeMs: 0,
          finalizedFeaturesEpoch: 1,
          finalizedFeatures: [{ name: "transaction.version", maxVersionLevel: script.transactionVersion, minVersionLevel: script.transactionVersion }],
        } as never)
      case InitProducerId.key: {
        const answer = next(InitProducerId.key)
        return responseFrame(InitProducerId, request.version, request.correlationId, { throttleTimeMs: 0, errorCode: answer, producerId: answer === 0 ? 7 : -1, producerEpoch: answer === 0 ? epoch : -1 })
      }
      case AddPartitionsToTxn.key:
        return responseFrame(AddPartitionsToTxn, request.version, request.correlationId, {
          throttleTimeMs: 0,
          resultsByTopicV3AndBelow: [{ name: "t", resultsByPartition: [{ partitionIndex: 0, partitionErrorCode: next(AddPartitionsToTxn.key) }] }],
        })
      case EndTxn.key: {
        const answer = next(EndTxn.key)
        if (answer === 0 && request.version >= 5) epoch++
        return responseFrame(EndTxn, request.version, request.correlationId, { throttleTimeMs: 0, errorCode: answer, producerId: 7, producerEpoch: epoch })
      }
      default: {
        decodeRequestHeader(reader, Produce.requestHeaderVersion(request.version))
        const body = Produce.decodeRequest(reader, request.version)
        const batch = decodeRecordBatches(body.topicData[0]!.partitionData[0]!.records!, { topic: "t", partition: 0 }).batches[0]!
        batches.push({ producerId: batch.producerId, producerEpoch: batch.producerEpoch, baseSequence: batch.baseSequence, transactional: batch.isTransactional, transactionalId: body.transactionalId })
        return responseFrame(Produce, request.version, request.correlationId, {
          responses: [{ name: "t", partitionResponses: [{ index: 0, errorCode: 0, baseOffset: batches.length - 1, logAppendTimeMs: -1, logStartOffset: 0, recordErrors: [], errorMessage: null }] }],
          throttleTimeMs: 0,
        })
      }
    }
  })
  const sent = (key: number) => fake.received.filter((r) => r.apiKey === key).map((r) => r.version)
  return { fake, batches, sent }
}

const scriptedCluster = (address: string) =>
  Effect.gen(function*() {
    const cluster = yield* testCluster(address, { t: 1 })
    let invalidated = 0
    return {
      cluster: { ...cluster, coordinatorFor: () => cluster.any, invalidateCoordinator: () => Effect.sync(() => void invalidated++) } satisfies Transactions.Cluster,
      invalidated: () => invalidated,
    }
  })

test("Transactions retry COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS and NOT_COORDINATOR (looking the coordinator up again), and a PRODUCER_FENCED EndTxn fences the producer for good", async () => {
  const { fake, batches, sent } = await scripted({
    transactionVersion: 1,
    answers: {
      [InitProducerId.key]: [code.loadInProgress, code.concurrent],
      [AddPartitionsToTxn.key]: [code.notCoordinator],
      [EndTxn.key]: [code.concurrent, code.none, code.fenced],
    },
  })
  try {
    succeeded(await run(Effect.gen(function*() {
      const { cluster, invalidated } = yield* scriptedCluster(fake.address)
      const producer = yield* Transactions.make(cluster, { transactionalId: "scripted" })
      assert.equal(producer.protocol, "classic", "transaction.version 1")
      const txn = yield* producer.begin
      assert.deepEqual((yield* txn.send([{ topic: "t", key: null, value: bytes("a") }])).map((m) => m.offset), [0])
      yield* txn.commit
      assert.deepEqual(sent(InitProducerId.key).length, 3)
      assert.deepEqual(sent(AddPartitionsToTxn.key), [3, 3], "AddPartitionsToTxn at v3, the clients' last")
      assert.deepEqual(sent(Produce.key), [11], "Produce at v11 in a classic transaction")
      assert.deepEqual(sent(EndTxn.key), [4, 4], "EndTxn below v5 on the classic path")
      assert.ok(invalidated() >= 1, "NOT_COORDINATOR forgets the coordinator")
      assert.equal(producer.metrics().retries, 4)
      assert.deepEqual(batches, [{ producerId: 7, producerEpoch: 0, baseSequence: 0, transactional: true, transactionalId: "scripted" }])

      const fenced = yield* producer.begin
      yield* fenced.send([{ topic: "t", key: null, value: bytes("b") }])
      const error = yield* flip(fenced.commit)
      assert.equal(error.code, "PRODUCER_FENCED")
      assert.equal(error.retriable, false)
      assert.equal((yield* flip(producer.begin)).code, "PRODUCER_FENCED", "fenced for good")
      assert.deepEqual(batches[1], { producerId: 7, producerEpoch: 0, baseSequence: 1, transactional: true, transactionalId: "scripted" }, "sequences go on in the epoch")
    })))
  } finally {
    await fake.close()
  }
})

test("Transactions v2 (transaction.version 2): no AddPartitionsToTxn, Produce v12, and the epoch EndTxn v5 answers with is the next transaction's, its sequences from 0", async () => {
  const { fake, batches, sent } = await scripted({ transactionVersion: 2, answers: {} })
  try {
    succeeded(await run(Effect.gen(function*() {
      const { cluster } = yield* scriptedCluster(fake.address)
      const producer = yield* Transactions.make(cluster, { transactionalId: "scripted-v2" })
      assert.equal(producer.protocol, "v2")
      for (const value of ["a", "b"]) {
        const txn = yield* producer.begin
        yield* txn.send([{ topic: "t", key: null, value: bytes(value) }, { topic: "t", key: null, value: bytes(value) }])
        yield* txn.commit
      }
      assert.deepEqual(sent(AddPartitionsToTxn.key), [])
      assert.deepEqual(sent(Produce.key), [12, 12])
      assert.deepEqual(sent(EndTxn.key), [5, 5])
      assert.deepEqual(batches.map((b) => [b.producerEpoch, b.baseSequence]), [[0, 0], [1, 0]])
      assert.deepEqual(producer.producerId(), { id: 7, epoch: 2 })
    })))
  } finally {
    await fake.close()
  }
})
