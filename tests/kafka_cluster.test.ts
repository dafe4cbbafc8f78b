/**
 * A three-broker cluster (`scripts/kafka cluster`, replication factor 3, min.insync.replicas 2),
 * started and stopped by this file, with the scenario of tests/fixtures/clusterFailover.ts: the
 * leader of partition 0 is SIGKILLed mid-stream, the kafkajs transport's idempotent producer
 * (acks=all) keeps sending, the node comes back, and everything is read back. Promised: no
 * acknowledged record is lost, and partition 0 moves to another node. Duplicates are reported,
 * not asserted: kafkajs may write a record again when a send fails after the broker wrote it and
 * the test sends it again (KafkaTransport must not: tests/KafkaTransport.cluster.test.ts
 * asserts 0).
 *
 * One line of figures per run: `[cluster] bun records=... lost=0 duplicates=... ...`.
 */
import assert from "node:assert/strict"
import { Effect } from "effect"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import { Transport } from "../lib/Transport.ts"
import {
  assertFullyReplicated,
  batch,
  clusterTest,
  memberTimeouts,
  partitions,
  phases,
  readBack,
  sendBatches,
  total,
  within,
} from "./fixtures/clusterFailover.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { text } from "./fixtures/effect.ts"
import { type KafkaCluster, runtimeName } from "./fixtures/scriptedKafka.ts"
import { uniqueName } from "./fixtures/services.ts"

const scenario = (cluster: KafkaCluster, brokers: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const topic = uniqueName("cluster")
    // No replication factor given: the cluster's default (3) applies.
    yield* transport.createTopic({ topic, partitions })
    yield* assertFullyReplicated(brokers, topic)

    const acknowledged = new Set<string>()
    const failures: Array<string> = []
    let firstAckAfterKill: number | undefined

    /** Sends batch `index` (records spread over every partition) until the cluster acknowledges it. */
    const sendBatch = (index: number): Effect.Effect<void> => {
      const records = batch(topic, index)
      const attempt: Effect.Effect<void> = transport.send(records).pipe(
        Effect.andThen(() =>
          Effect.sync(() => {
            for (const record of records) acknowledged.add(text(record.value)!)
            if (killedAt !== undefined) firstAckAfterKill ??= Date.now()
          })
        ),
        // The idempotent producer gave up (its retries ran out during the failover): send the
        // batch again, as an application would. Only this can write a record twice.
        Effect.catch((error) =>
          Effect.sync(() => failures.push(error.code)).pipe(
            Effect.andThen(Effect.sleep("200 millis")),
            Effect.andThen(Effect.suspend(() => attempt)),
          )
        ),
      )
      return attempt
    }

    let killedAt: number | undefined
    yield* within(30, "the batches before the kill", sendBatches(sendBatch, 0, phases.before))
    const leader = yield* Effect.promise(() => cluster.leader(topic, 0))
    yield* Effect.promise(() => cluster.kill(leader))
    killedAt = Date.now()
    yield* within(60, "the batches while the leader is down", sendBatches(sendBatch, phases.before, phases.during))
    const newLeader = yield* Effect.promise(() => cluster.leader(topic, 0))
    assert.notEqual(newLeader, leader, `partition 0 moved off the killed node ${leader}`)
    yield* Effect.promise(() => cluster.startNode(leader))
    yield* within(30, "the batches after the node's return", sendBatches(sendBatch, phases.before + phases.during, phases.after))

    assert.equal(acknowledged.size, total, "every batch was acknowledged in the end")
    const consumer = yield* startConsumer(transport, {
      group: uniqueName("g"),
      topics: [topic],
      ...memberTimeouts,
    })
    yield* within(60, `the ${total} acknowledged records`, consumer.receivedAtLeast(total))
    // Anything written twice comes in after the last new record at most a fetch later.
    yield* Effect.sleep("1 second")
    const { distinct, lost, duplicates } = readBack(acknowledged, consumer.received)
    console.log(
      `[cluster] ${runtimeName()} records=${total} lost=${lost.length} duplicates=${duplicates} ` +
        `send_failures=${failures.length}${failures.length > 0 ? ` (${[...new Set(failures)].join(",")})` : ""} ` +
        `killed_node=${leader} new_leader=${newLeader} resumed_after_ms=${(firstAckAfterKill ?? Number.NaN) - killedAt}`,
    )
    assert.deepEqual(lost, [], "no acknowledged record is lost")
    assert.equal(distinct.size, total, "nothing arrived that was never sent")
  })

clusterTest(
  "a three-broker cluster: the leader of partition 0 SIGKILLed mid-stream and restarted, the idempotent producer goes on and no acknowledged record is lost",
  (brokers) => KafkaJsTransport.layer({ brokers }),
  scenario,
)
