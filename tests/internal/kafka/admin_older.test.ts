/**
 * The broker pool and the admin against an older broker, Kafka 3.9 (started and stopped by this
 * file through `KAFKA_VERSION=3.9 scripts/kafka start`): the versions negotiated there are lower
 * (Metadata 12, OffsetFetch 9 naming topics, not ids; OffsetCommit 9), and one round trip of
 * everything the admin does must work there as on 4.4.
 */
import assert from "node:assert/strict"
import { inspect } from "node:util"
import { Cause, Effect, Exit, Layer, References } from "effect"
import * as Admin from "../../../lib/internal/kafka/admin.ts"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import { Metadata } from "../../../lib/internal/kafka/protocol/Metadata.ts"
import { OffsetCommit } from "../../../lib/internal/kafka/protocol/OffsetCommit.ts"
import { OffsetFetch } from "../../../lib/internal/kafka/protocol/OffsetFetch.ts"
import { Produce } from "../../../lib/internal/kafka/protocol/Produce.ts"
import { encodeRecordBatch } from "../../../lib/internal/kafka/recordBatch.ts"
import { OlderBroker } from "../../fixtures/scriptedKafka.ts"
import { scriptedKafkaTest, uniqueName } from "../../fixtures/services.ts"

const quiet = Layer.succeed(References.MinimumLogLevel, "None")

scriptedKafkaTest("Brokers and Admin on Kafka 3.9: topics, configs, offsets, a group's committed offsets and the group itself, round trip", async () => {
  const broker = await OlderBroker.start("3.9")
  try {
    const exit = await Effect.runPromiseExit(Effect.scoped(Effect.gen(function* () {
      const brokers = yield* Brokers.make({ bootstrap: [broker.address] })
      const admin = Admin.make(brokers)
      const any = yield* brokers.any
      assert.equal(yield* any.versionFor(Metadata), 12)
      assert.ok((yield* any.versionFor(OffsetFetch)) < 10, "OffsetFetch names topics here")

      const topic = uniqueName("older-admin")
      yield* admin.createTopics([{ topic, partitions: 2, replicationFactor: 1, config: { "retention.ms": "7200000" } }])
      assert.equal((yield* admin.describeConfigs({ type: "topic", name: topic }, ["retention.ms"])).get("retention.ms")?.value, "7200000")
      assert.equal((yield* Effect.flip(admin.createTopics([{ topic, partitions: 2, replicationFactor: 1 }]))).code, "TOPIC_ALREADY_EXISTS")

      const t0 = 1_700_000_000_000
      const leader = yield* brokers.leaderFor({ topic, partition: 1 })
      const connection = yield* brokers.connection(leader.nodeId)
      const produced = yield* connection.request(Produce, {
        transactionalId: null,
        acks: -1,
        timeoutMs: 10_000,
        topicData: [{
          name: topic,
          partitionData: [{
            index: 1,
            records: encodeRecordBatch([0, 1, 2, 3].map((i) => ({ key: null, value: new Uint8Array([i]), timestamp: t0 + i * 100 }))),
          }],
        }],
      })
      assert.equal(produced.responses[0]!.partitionResponses[0]!.errorCode, 0)
      const described = yield* admin.describeTopic(topic)
      assert.deepEqual(described.partitions.map((p) => p.highWatermark), [0, 4])
      const [byTime] = yield* admin.listOffsets([{ topic, partition: 1, spec: { timestamp: t0 + 250 } }])
      assert.equal(byTime!.offset, 3)

      const group = uniqueName("older-group")
      const coordinator = yield* brokers.coordinatorFor({ type: "group", id: group })
      const committed = yield* coordinator.request(OffsetCommit, {
        groupId: group,
        generationIdOrMemberEpoch: -1,
        memberId: "",
        topics: [{ name: topic, partitions: [{ partitionIndex: 1, committedOffset: 2, committedMetadata: "m" }] }],
      })
      assert.ok(committed.topics[0]!.partitions.every((p) => p.errorCode === 0), inspect(committed))
      assert.deepEqual(yield* admin.committedOffsets(group, [{ topic, partition: 0 }, { topic, partition: 1 }]), [
        { topic, partition: 1, offset: 2, metadata: "m" },
      ])
      assert.deepEqual(yield* admin.committedOffsets(group), [{ topic, partition: 1, offset: 2, metadata: "m" }])
      assert.ok((yield* admin.listGroups).some((g) => g.groupId === group))
      assert.equal((yield* admin.describeGroups([group]))[0]!.state, "Empty")
      yield* admin.deleteGroups([group])
      assert.deepEqual(yield* admin.committedOffsets(group), [])

      const txn = yield* brokers.coordinatorFor({ type: "transaction", id: uniqueName("older-txn") })
      assert.equal(txn.broker, broker.address)
      yield* admin.deleteTopics([topic])
    })).pipe(Effect.provide(quiet)))
    assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
  } finally {
    await broker.stop()
  }
}, { timeoutMs: 120_000 })
