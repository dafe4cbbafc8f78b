/**
 * The broker pool on a three-broker cluster (`scripts/kafka cluster`, started and stopped by
 * this file): the leader of a partition is SIGKILLed; after invalidating, `leaderFor` names the
 * newly elected leader, with a newer leader epoch, within the election time, and that leader
 * answers. The election time is printed: `[brokers-cluster] <runtime> killed=N new_leader=M
 * elected_after_ms=...`.
 */
import assert from "node:assert/strict"
import process from "node:process"
import { Cause, Effect, Exit, Layer, References, Schedule } from "effect"
import * as Admin from "../../../lib/internal/kafka/admin.ts"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import { KafkaCluster } from "../../fixtures/scriptedKafka.ts"
import { Locks, scriptedKafkaTest, uniqueName } from "../../fixtures/services.ts"

const runtimeName = (): string =>
  process.versions["bun"] !== undefined ? "bun" : "Deno" in globalThis ? "deno" : "node"

const quiet = Layer.succeed(References.MinimumLogLevel, "None")

scriptedKafkaTest(
  "Brokers on a three-broker cluster: after the leader of a partition is killed, leaderFor (invalidated) names the new leader with a newer epoch, and it answers",
  async () => {
    const cluster = await KafkaCluster.start()
    try {
      const bootstrap = await cluster.brokers()
      const exit = await Effect.runPromiseExit(Effect.scoped(Effect.gen(function* () {
        const brokers = yield* Brokers.make({ bootstrap })
        const admin = Admin.make(brokers)
        const topic = uniqueName("brokers-failover")
        // The cluster's default replication factor (3): every node holds a replica.
        yield* admin.createTopics([{ topic, partitions: 2 }])
        const meta = (yield* brokers.topics([topic])).get(topic)!
        assert.deepEqual(meta.partitions.map((p) => p.replicas.length), [3, 3])
        const before = yield* brokers.leaderFor({ topic, partition: 0 })
        assert.equal(before.nodeId, yield* Effect.promise(() => cluster.leader(topic, 0)), "the leader Kafka's own tool names")

        yield* Effect.promise(() => cluster.kill(before.nodeId))
        const killedAt = Date.now()
        // As a producer or fetcher does after NOT_LEADER_OR_FOLLOWER or a lost connection.
        const after = yield* Effect.andThen(brokers.invalidate(topic), brokers.leaderFor({ topic, partition: 0 })).pipe(
          Effect.retry({ while: (error) => error.retriable, schedule: Schedule.spaced("100 millis") }),
          Effect.repeat({ until: (leader) => leader.nodeId !== before.nodeId, schedule: Schedule.spaced("100 millis") }),
          Effect.timeout("30 seconds"),
        )
        const electedAfter = Date.now() - killedAt
        assert.ok(after.leaderEpoch > before.leaderEpoch, `epoch ${after.leaderEpoch} after ${before.leaderEpoch}`)
        assert.equal(after.nodeId, yield* Effect.promise(() => cluster.leader(topic, 0)))
        // The new leader answers for the partition.
        const described = yield* Effect.retry(admin.describeTopic(topic), { times: 20, schedule: Schedule.spaced("200 millis") })
        assert.deepEqual(described.partitions.map((p) => p.highWatermark), [0, 0])
        // The killed node: a retriable error, not a hang.
        const dead = yield* Effect.flip(brokers.connection(before.nodeId))
        assert.equal(dead.retriable, true)
        console.log(
          `[brokers-cluster] ${runtimeName()} killed=${before.nodeId} new_leader=${after.nodeId} ` +
            `epoch=${before.leaderEpoch}->${after.leaderEpoch} elected_after_ms=${electedAfter}`,
        )
      })).pipe(Effect.provide(quiet)))
      assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
    } finally {
      await cluster.stop()
    }
  },
  // It kills a node of the cluster every runtime shares under CI: no other cluster test overlaps it.
  { timeoutMs: 120_000, exclusive: Locks.kafkaCluster },
)
