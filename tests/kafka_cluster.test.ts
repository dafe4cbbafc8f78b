/**
 * A three-broker cluster (`scripts/kafka cluster`, replication factor 3, min.insync.replicas 2),
 * started and stopped by this file: the leader of partition 0 is SIGKILLed mid-stream, the
 * kafkajs transport's idempotent producer (acks=all) keeps sending, the node comes back, and
 * everything is read back. Promised: no acknowledged record is lost, and partition 0 moves to
 * another node. Duplicates are reported, not asserted: kafkajs may write a record again when a
 * send fails after the broker wrote it and the test sends it again (the client of issue 12 must
 * not; its own test will assert 0).
 *
 * One line of figures per run: `[cluster] bun records=... lost=0 duplicates=... ...`.
 */
import assert from "node:assert/strict"
import process from "node:process"
import { Duration, Effect } from "effect"
import { Kafka, logLevel } from "kafkajs"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import { type ProducerRecord, Transport } from "../lib/Transport.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, run, text } from "./fixtures/effect.ts"
import { KafkaCluster } from "./fixtures/scriptedKafka.ts"
import { Locks, scriptedKafkaTest, uniqueName } from "./fixtures/services.ts"

const runtimeName = (): string =>
  process.versions["bun"] !== undefined ? "bun" : "Deno" in globalThis ? "deno" : "node"

const partitions = 3
const batchSize = 10
/** Batches before the kill, while the leader is down or new, and after the node is back. */
const phases = { before: 20, during: 40, after: 20 } as const

const within = <A, E, R>(seconds: number, what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutOrElse(effect, {
    duration: Duration.seconds(seconds),
    orElse: () => Effect.die(new Error(`Timed out after ${seconds}s waiting for ${what}`)),
  })

/** Replicas and in-sync replicas of each partition, through plain kafkajs' admin client. */
const replication = async (brokers: ReadonlyArray<string>, topic: string) => {
  const admin = new Kafka({ brokers: [...brokers], clientId: "cluster-test", logLevel: logLevel.NOTHING }).admin()
  await admin.connect()
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    return topics[0]!.partitions.map((p) => ({ partition: p.partitionId, replicas: p.replicas.length, isr: p.isr.length }))
  } finally {
    await admin.disconnect()
  }
}

const scenario = (cluster: KafkaCluster, brokers: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const topic = uniqueName("cluster")
    // No replication factor given: the cluster's default (3) applies.
    yield* transport.createTopic({ topic, partitions })
    const replicas = yield* Effect.promise(() => replication(brokers, topic))
    assert.deepEqual(replicas, Array.from({ length: partitions }, (_, partition) => ({ partition, replicas: 3, isr: 3 })))

    const acknowledged = new Set<string>()
    const failures: Array<string> = []
    let firstAckAfterKill: number | undefined

    /** Sends batch `index` (records spread over every partition) until the cluster acknowledges it. */
    const sendBatch = (index: number): Effect.Effect<void> => {
      const records: Array<ProducerRecord> = Array.from({ length: batchSize }, (_, i) => {
        const n = index * batchSize + i
        return { topic, key: bytes(`k${n}`), value: bytes(`${n}`), partition: n % partitions }
      })
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
    const sendBatches = (from: number, count: number) =>
      Effect.forEach(Array.from({ length: count }, (_, i) => from + i), sendBatch, { discard: true })

    let killedAt: number | undefined
    yield* within(30, "the batches before the kill", sendBatches(0, phases.before))
    const leader = yield* Effect.promise(() => cluster.leader(topic, 0))
    yield* Effect.promise(() => cluster.kill(leader))
    killedAt = Date.now()
    yield* within(60, "the batches while the leader is down", sendBatches(phases.before, phases.during))
    const newLeader = yield* Effect.promise(() => cluster.leader(topic, 0))
    assert.notEqual(newLeader, leader, `partition 0 moved off the killed node ${leader}`)
    yield* Effect.promise(() => cluster.startNode(leader))
    yield* within(30, "the batches after the node's return", sendBatches(phases.before + phases.during, phases.after))

    const total = (phases.before + phases.during + phases.after) * batchSize
    assert.equal(acknowledged.size, total, "every batch was acknowledged in the end")
    const consumer = yield* startConsumer(transport, {
      group: uniqueName("g"),
      topics: [topic],
      sessionTimeout: "10 seconds",
      heartbeatInterval: "1 second",
      rebalanceTimeout: "20 seconds",
    })
    yield* within(60, `the ${total} acknowledged records`, consumer.receivedAtLeast(total))
    // Anything written twice comes in after the last new record at most a fetch later.
    yield* Effect.sleep("1 second")
    const received = consumer.received.map((record) => text(record.value)!)
    const distinct = new Set(received)
    const lost = [...acknowledged].filter((value) => !distinct.has(value))
    const duplicates = received.length - distinct.size
    console.log(
      `[cluster] ${runtimeName()} records=${total} lost=${lost.length} duplicates=${duplicates} ` +
        `send_failures=${failures.length}${failures.length > 0 ? ` (${[...new Set(failures)].join(",")})` : ""} ` +
        `killed_node=${leader} new_leader=${newLeader} resumed_after_ms=${(firstAckAfterKill ?? Number.NaN) - killedAt}`,
    )
    assert.deepEqual(lost, [], "no acknowledged record is lost")
    assert.equal(distinct.size, total, "nothing arrived that was never sent")
  })

scriptedKafkaTest(
  "a three-broker cluster: the leader of partition 0 SIGKILLed mid-stream and restarted, the idempotent producer goes on and no acknowledged record is lost",
  async () => {
    const cluster = await KafkaCluster.start()
    try {
      const brokers = await cluster.brokers()
      assert.equal(brokers.length, 3)
      await run(scenario(cluster, brokers), KafkaJsTransport.layer({ brokers }))
    } finally {
      await cluster.stop()
    }
  },
  // It kills a node of the cluster every runtime shares under CI: no other cluster test overlaps it.
  { timeoutMs: 120_000, exclusive: Locks.kafkaCluster },
)
