/**
 * The admin requests, in round trips against the real broker at KAFKA_BROKERS: what is created
 * is described back, offsets listed match records produced with a Produce request built here
 * (encodeRecordBatch), group offsets committed with an OffsetCommit request are read back, and
 * Kafka's refusals arrive as typed errors naming what they were about.
 */
import assert from "node:assert/strict"
import { inspect } from "node:util"
import { Effect } from "effect"
import * as Admin from "../../../lib/internal/kafka/admin.ts"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import { OffsetCommit } from "../../../lib/internal/kafka/protocol/OffsetCommit.ts"
import { Produce } from "../../../lib/internal/kafka/protocol/Produce.ts"
import { encodeRecordBatch } from "../../../lib/internal/kafka/recordBatch.ts"
import { TransportError } from "../../../lib/TransportError.ts"
import { flip, run, succeeded } from "../../fixtures/kafkaEffects.ts"
import { kafkaTest, uniqueName } from "../../fixtures/services.ts"

const setup = (bootstrap: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    return { brokers, admin: Admin.make(brokers) }
  })

/** Creates a topic (RF 1) deleted when the scope closes. */
const topicFor = (admin: Admin.Admin, prefix: string, partitions: number, config?: Record<string, string>) =>
  Effect.gen(function* () {
    const topic = uniqueName(prefix)
    yield* admin.createTopics([{ topic, partitions, replicationFactor: 1, config }])
    yield* Effect.addFinalizer(() => Effect.ignore(admin.deleteTopics([topic])))
    return topic
  })

const bytes = (text: string) => new TextEncoder().encode(text)

/** Writes records with these timestamps to one partition with a Produce request (acks=all) to its leader. */
const produce = (brokers: Brokers.Brokers, topic: string, partition: number, timestamps: ReadonlyArray<number>) =>
  Effect.gen(function* () {
    const leader = yield* brokers.leaderFor({ topic, partition })
    const connection = yield* brokers.connection(leader.nodeId)
    const topicId = (yield* brokers.topics([topic])).get(topic)!.topicId
    const batch = encodeRecordBatch(timestamps.map((timestamp, i) => ({ key: null, value: bytes(`v${i}`), timestamp })))
    const answer = yield* connection.request(Produce, {
      transactionalId: null,
      acks: -1,
      timeoutMs: 10_000,
      topicData: [{ name: topic, topicId, partitionData: [{ index: partition, records: batch }] }],
    })
    const result = answer.responses[0]!.partitionResponses[0]!
    assert.equal(result.errorCode, 0, `produced to ${topic}/${partition}`)
  })

kafkaTest("Admin creates a topic with configs, describeConfigs shows them (topic and broker), and creating it again is a typed TOPIC_ALREADY_EXISTS", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const { brokers, admin } = yield* setup(bootstrap)
    const topic = yield* topicFor(admin, "admin-configs", 2, { "retention.ms": "3600000", "cleanup.policy": "compact" })
    // createTopics waited for leaders: the metadata has them now.
    const meta = (yield* brokers.topics([topic])).get(topic)!
    assert.equal(meta.partitions.length, 2)
    assert.ok(meta.partitions.every((p) => p.leaderId >= 0))

    const configs = yield* admin.describeConfigs({ type: "topic", name: topic })
    assert.deepEqual(
      { value: configs.get("retention.ms")?.value, source: configs.get("retention.ms")?.source },
      { value: "3600000", source: "topic" },
    )
    assert.equal(configs.get("cleanup.policy")?.value, "compact")
    assert.equal(configs.get("segment.bytes")?.source, "default", "configs not set come from the defaults")
    const narrowed = yield* admin.describeConfigs({ type: "topic", name: topic }, ["retention.ms"])
    assert.deepEqual([...narrowed.keys()], ["retention.ms"])

    const nodeId = [...brokers.nodes().keys()][0]!
    const broker = yield* admin.describeConfigs({ type: "broker", nodeId }, ["num.partitions", "log.dirs"])
    assert.ok(broker.has("num.partitions") && /^\d+$/.test(broker.get("num.partitions")!.value ?? ""))

    const again = yield* flip(admin.createTopics([{ topic, partitions: 2, replicationFactor: 1 }]))
    assert.equal(again.code, "TOPIC_ALREADY_EXISTS")
    assert.equal(again.retriable, false)
    assert.equal(again.topic, topic)
    assert.match(again.message, new RegExp(`Topic "${topic}" already exists`))

    const badConfig = yield* flip(admin.createTopics([{ topic: uniqueName("admin-bad"), partitions: 1, config: { "retention.ms": "soon" } }]))
    assert.equal(badConfig.code, "INVALID_CONFIG")
    assert.equal(badConfig.retriable, false)
    assert.equal((yield* flip(admin.createTopics([{ topic: uniqueName("admin-zero"), partitions: 0 }]))).code, "INVALID_PARTITIONS")
  }))
  succeeded(exit)
})

kafkaTest("Admin describeTopic gives each partition's log start offset and high watermark; listOffsets finds offsets by timestamp", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const { brokers, admin } = yield* setup(bootstrap)
    const topic = yield* topicFor(admin, "admin-offsets", 3)
    const empty = yield* admin.describeTopic(topic)
    assert.deepEqual(empty, {
      topic,
      partitions: [0, 1, 2].map((partition) => ({ partition, logStartOffset: 0, highWatermark: 0 })),
    })
    const t0 = 1_700_000_000_000
    yield* produce(brokers, topic, 0, [t0, t0 + 1000, t0 + 2000])
    yield* produce(brokers, topic, 1, [t0, t0 + 5])
    const described = yield* admin.describeTopic(topic)
    assert.deepEqual(described.partitions.map((p) => [p.partition, p.logStartOffset, p.highWatermark]), [[0, 0, 3], [1, 0, 2], [2, 0, 0]])

    const listed = yield* admin.listOffsets([
      { topic, partition: 0, spec: { timestamp: t0 + 1000 } },
      { topic, partition: 0, spec: { timestamp: t0 + 1500 } },
      { topic, partition: 0, spec: { timestamp: t0 + 10_000 } },
      { topic, partition: 1, spec: "latest" },
      { topic, partition: 2, spec: "earliest" },
    ])
    assert.deepEqual(listed.map((o) => [o.partition, o.offset, o.timestamp]), [
      [0, 1, t0 + 1000],
      [0, 2, t0 + 2000],
      [0, null, -1],
      [1, 2, -1],
      [2, 0, -1],
    ])
    // A record found by timestamp carries the leader epoch it was written in.
    assert.ok(listed.slice(0, 2).every((o) => o.leaderEpoch >= 0), inspect(listed))

    const missing = yield* flip(admin.describeTopic(uniqueName("admin-missing")))
    assert.equal(missing.code, "UNKNOWN_TOPIC_OR_PARTITION")
  }))
  succeeded(exit)
})

kafkaTest("Admin createPartitions raises the count; deleteTopics deletes, and deleting a missing topic is a typed UNKNOWN_TOPIC_OR_PARTITION", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const { brokers, admin } = yield* setup(bootstrap)
    const topic = uniqueName("admin-delete")
    yield* admin.createTopics([{ topic, partitions: 1, replicationFactor: 1 }])
    yield* admin.createPartitions(topic, 3)
    const led = yield* Effect.retry(
      Effect.flatMap(brokers.leaderFor({ topic, partition: 2 }), () => admin.describeTopic(topic)),
      { times: 50, while: (error) => error.retriable },
    )
    assert.equal(led.partitions.length, 3)
    const lower = yield* flip(admin.createPartitions(topic, 2))
    assert.equal(lower.code, "INVALID_PARTITIONS")
    assert.equal(lower.topic, topic)

    yield* admin.deleteTopics([topic])
    // The metadata of every broker learns of the deletion within a moment.
    const gone = yield* flip(Effect.retry(
      Effect.andThen(brokers.invalidate(topic), brokers.topics([topic])),
      { times: 100, while: () => true },
    ).pipe(Effect.timeout("20 seconds")) as Effect.Effect<unknown, TransportError>)
    assert.equal(gone.code, "UNKNOWN_TOPIC_OR_PARTITION")
    const again = yield* flip(admin.deleteTopics([topic]))
    assert.equal(again.code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.equal(again.topic, topic)
  }))
  succeeded(exit)
})

kafkaTest("Admin lists, describes and deletes a group, and reads its committed offsets from the coordinator", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const { brokers, admin } = yield* setup(bootstrap)
    const topic = yield* topicFor(admin, "admin-group-topic", 2)
    const group = uniqueName("admin-group")
    // A standalone commit (no member, generation -1), as Java's admin alterConsumerGroupOffsets does.
    const coordinator = yield* brokers.coordinatorFor({ type: "group", id: group })
    const version = yield* coordinator.versionFor(OffsetCommit)
    const topicId = (yield* brokers.topics([topic])).get(topic)!.topicId
    const answer = yield* coordinator.request(OffsetCommit, {
      groupId: group,
      generationIdOrMemberEpoch: -1,
      memberId: "",
      topics: [{
        ...(version >= 10 ? { topicId } : { name: topic }),
        partitions: [{ partitionIndex: 0, committedOffset: 7, committedMetadata: "seven" }, { partitionIndex: 1, committedOffset: 3, committedMetadata: null }],
      }],
    }, { version })
    assert.ok(answer.topics[0]!.partitions.every((p) => p.errorCode === 0), inspect(answer))

    const some = yield* admin.committedOffsets(group, [{ topic, partition: 0 }])
    assert.deepEqual(some, [{ topic, partition: 0, offset: 7, metadata: "seven" }])
    const all = yield* admin.committedOffsets(group)
    assert.deepEqual(
      [...all].sort((a, b) => a.partition - b.partition),
      [{ topic, partition: 0, offset: 7, metadata: "seven" }, { topic, partition: 1, offset: 3, metadata: "" }],
    )
    assert.deepEqual(yield* admin.committedOffsets(uniqueName("admin-nogroup"), [{ topic, partition: 0 }]), [], "never committed: absent")

    const listed = yield* admin.listGroups
    const found = listed.find((g) => g.groupId === group)
    assert.ok(found !== undefined, `${group} is listed`)
    assert.equal(found.state, "Empty")
    const [described] = yield* admin.describeGroups([group])
    assert.equal(described!.groupId, group)
    assert.equal(described!.state, "Empty")
    assert.deepEqual(described!.members, [])

    yield* admin.deleteGroups([group])
    assert.deepEqual(yield* admin.committedOffsets(group, [{ topic, partition: 0 }]), [])
    const missing = yield* flip(admin.deleteGroups([group]))
    assert.equal(missing.code, "GROUP_ID_NOT_FOUND")
  }))
  succeeded(exit)
})
