/**
 * Smoke tests of the real broker through kafkajs itself, on every runtime the suite runs on.
 * They prove the ground the KafkaJsTransport stands on: topic admin, a keyed record with headers,
 * a consumer group that commits, and a new member that resumes after the committed offset.
 */
import assert from "node:assert/strict"
import { Kafka, logLevel, type Consumer, type KafkaMessage } from "kafkajs"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

const client = (brokers: ReadonlyArray<string>) =>
  new Kafka({ clientId: "partita-smoke", brokers: [...brokers], logLevel: logLevel.ERROR })

/** Runs `consumer` until `count` messages arrived, committing each one explicitly. */
const consumeAndCommit = async (
  consumer: Consumer,
  topic: string,
  count: number,
): Promise<Array<KafkaMessage>> => {
  const received: Array<KafkaMessage> = []
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Timed out waiting for ${count} records on ${topic}`)), 60_000)
    consumer
      .run({
        autoCommit: false,
        eachMessage: async ({ topic, partition, message }) => {
          received.push(message)
          await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }])
          if (received.length === count) {
            clearTimeout(timer)
            resolve()
          }
        },
      })
      .catch(reject)
  })
  return received
}

kafkaTest("kafkajs creates a topic, produces a keyed record with headers and consumes it in a group", async (brokers) => {
  const kafka = client(brokers)
  const topic = uniqueName("smoke")
  const group = uniqueName("smoke-group")
  const admin = kafka.admin()
  const producer = kafka.producer({ idempotent: true })
  const first = kafka.consumer({ groupId: group })
  const second = kafka.consumer({ groupId: group })
  try {
    await admin.connect()
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }), true)
    assert.ok((await admin.listTopics()).includes(topic))

    await producer.connect()
    const [sent] = await producer.send({
      topic,
      messages: [{ key: "user-1", value: "hello", headers: { "trace-id": "abc", binary: Buffer.from([0, 255]) } }],
    })
    assert.equal(sent?.errorCode, 0)

    await first.connect()
    const [message] = await consumeAndCommit(first, topic, 1)
    assert.equal(message?.key?.toString(), "user-1")
    assert.equal(message?.value?.toString(), "hello")
    assert.equal(message?.headers?.["trace-id"]?.toString(), "abc")
    assert.deepEqual([...(message?.headers?.["binary"] as Buffer)], [0, 255])
    await first.disconnect()

    const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] })
    assert.equal(committed[0]?.partitions[0]?.offset, "1")

    // A new member of the same group starts after the committed offset: it sees only the second record.
    await producer.send({ topic, messages: [{ key: "user-1", value: "again" }] })
    await second.connect()
    const resumed = await consumeAndCommit(second, topic, 1)
    assert.deepEqual(resumed.map((m) => [m.offset, m.value?.toString()]), [["1", "again"]])
  } finally {
    await Promise.allSettled([first.disconnect(), second.disconnect(), producer.disconnect()])
    await admin.deleteTopics({ topics: [topic] }).catch(() => {})
    await admin.disconnect()
  }
})
