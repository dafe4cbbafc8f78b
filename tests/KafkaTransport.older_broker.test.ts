/**
 * The transport contract suite on KafkaTransport (Partita's own client) against an older broker:
 * Kafka 3.9, the last line before 4.0, which has no KIP-848 consumer protocol, so every
 * subscription here runs the classic protocol (JoinGroup/SyncGroup, cooperative-sticky) and every
 * request is negotiated down to 3.9's API versions. The kafkajs transport's run of the same suite
 * is tests/kafka_older_broker.test.ts; the broker is started (or, under CI, reused) the same way.
 */
import assert from "node:assert/strict"
import { Effect } from "effect"
import { Kafka, logLevel } from "kafkajs"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, run } from "./fixtures/effect.ts"
import { olderBrokerTests } from "./fixtures/olderBroker.ts"
import { uniqueName } from "./fixtures/services.ts"
import { transportContract } from "./transport_contract.ts"

const older = olderBrokerTests("3.9")

const describeGroup = async (address: string, group: string) => {
  const admin = new Kafka({ brokers: [address], clientId: "older-broker-test", logLevel: logLevel.NOTHING }).admin()
  await admin.connect()
  try {
    const { groups } = await admin.describeGroups([group])
    const g = groups[0]!
    return { state: g.state, protocolType: g.protocolType, protocol: g.protocol, members: g.members.length }
  } finally {
    await admin.disconnect()
  }
}

older.test(`the older broker runs Kafka ${older.version}, and a KafkaTransport subscription on it joins with the classic protocol`, async () => {
  older.assertRunningVersion()
  // 3.9 has no ConsumerGroupHeartbeat: the default protocol must fall back to classic, with the
  // cooperative-sticky assignor, as the broker itself reports the group (through kafkajs' admin).
  const topic = uniqueName("older-classic")
  const group = uniqueName("older-classic")
  const described = await run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic, partitions: 2 })
      const consumer = yield* startConsumer(transport, { group, topics: [topic] })
      yield* transport.send([{ topic, key: bytes("k"), value: bytes("on 3.9") }])
      yield* consumer.receivedAtLeast(1).pipe(
        Effect.timeoutOrElse({ duration: "30 seconds", orElse: () => Effect.die(new Error("No record arrived in 30 s")) }),
      )
      return yield* Effect.promise(() => describeGroup(older.broker().address, group))
    }),
    KafkaTransport.layer({ brokers: [older.broker().address] }),
  )
  assert.deepEqual(described, { state: "Stable", protocolType: "consumer", protocol: "cooperative-sticky", members: 1 })
})

transportContract({
  name: `kafka (own client) on Kafka ${older.version}`,
  features: { transactions: false, faultInjection: false, clockDriven: false },
  layer: () => KafkaTransport.layer({ brokers: [older.broker().address] }),
  test: older.test,
})
