/**
 * The transport contract suite: what every `Transport` promises, run against each of them
 * (`MemoryTransport.test.ts`, `KafkaJsTransport.test.ts`). Watermill's universal Pub/Sub tests are
 * the model. Where a transport legitimately differs, its `features` decide what runs.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, Context, Duration, Effect, Exit, type Layer, Option, type Scope } from "effect"
import { partitionForKey } from "../lib/internal/partitioner.ts"
import { type ConsumerRecord, type Features, Transport } from "../lib/Transport.ts"
import type { TransportError } from "../lib/TransportError.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, run, text } from "./fixtures/effect.ts"
import { uniqueName } from "./fixtures/services.ts"

export interface TransportUnderTest {
  readonly name: string
  readonly features: Features
  /** A fresh layer for one test. */
  readonly layer: () => Layer.Layer<Transport, unknown>
  /** Declares a test that needs this transport (a Kafka test skips or fails without a broker). */
  readonly test: (name: string, body: () => Promise<void>) => void
  /** Extra effects only some transports have (fault injection). */
  readonly faults?: {
    readonly layer: () => Layer.Layer<Transport | FaultControl, unknown>
  } | undefined
}

/** The part of a fault-injecting broker the suite uses, as a service. */
export class FaultControl extends Context.Service<FaultControl, {
  readonly failNext: (operation: "send" | "commit", code: TransportError["code"]) => Effect.Effect<void>
  readonly calls: (operation: "send" | "commit") => Effect.Effect<number>
}>()("partita/test/FaultControl") {}

const groupOptions = { sessionTimeout: "10 seconds", heartbeatInterval: "1 second", rebalanceTimeout: "20 seconds" } as const

/** Waits at most `seconds` for an effect, with a message saying what did not happen. */
const within = <A, E, R>(seconds: number, what: string, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.timeoutOrElse({
      duration: Duration.seconds(seconds),
      orElse: () => Effect.die(new Error(`Timed out after ${seconds}s waiting for ${what}`)),
    }),
  )

/** Polls `condition` until it holds, for at most `seconds`. */
const eventually = (seconds: number, what: string, condition: () => boolean) =>
  within(
    seconds,
    what,
    Effect.suspend(function loop(): Effect.Effect<void> {
      return condition() ? Effect.void : Effect.andThen(Effect.sleep("20 millis"), Effect.suspend(loop))
    }),
  )

const values = (records: ReadonlyArray<ConsumerRecord>) => records.map((record) => text(record.value))

export const transportContract = (subject: TransportUnderTest): void => {
  const it = (name: string, body: Effect.Effect<void, unknown, Transport | Scope.Scope>) =>
    subject.test(`${subject.name} transport: ${name}`, () => run(body, subject.layer()))

  const newTopic = (partitions: number) =>
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = uniqueName("contract")
      yield* transport.createTopic({ topic, partitions })
      return topic
    })

  it(
    "payload, key and headers arrive intact, including binary, empty and null keys and values",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(1)
      const binary = Uint8Array.from({ length: 256 }, (_, i) => i)
      const sent = [
        { topic, key: bytes("k1"), value: binary, headers: [{ key: "h", value: bytes("v") }, { key: "h", value: binary }] },
        { topic, key: null, value: new Uint8Array(0) },
        { topic, key: bytes("tombstone"), value: null },
        { topic, key: new Uint8Array(0), value: bytes("empty key") },
      ]
      const metadata = yield* transport.send(sent)
      assert.deepEqual(metadata.map((m) => m.offset), [0, 1, 2, 3])
      const consumer = yield* startConsumer(transport, { group: uniqueName("g"), topics: [topic], ...groupOptions })
      yield* within(30, "4 records", consumer.receivedAtLeast(4))
      const [first, second, third, fourth] = consumer.received
      assert.deepEqual(first?.key, bytes("k1"))
      assert.deepEqual(first?.value, binary)
      assert.deepEqual(first?.headers.map((h) => [h.key, h.value]), [["h", bytes("v")], ["h", binary]])
      assert.equal(second?.key, null)
      assert.deepEqual(second?.value, new Uint8Array(0))
      assert.deepEqual(third?.key, bytes("tombstone"))
      assert.equal(third?.value, null)
      assert.deepEqual(fourth?.key, new Uint8Array(0))
      assert.equal(text(fourth?.value ?? null), "empty key")
      assert.deepEqual(consumer.received.map((r) => r.offset), [0, 1, 2, 3])
    }),
  )

  it(
    "a key lands in the partition Kafka's default partitioner picks",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(7)
      const keys = Array.from({ length: 50 }, (_, i) => `user-${i}`)
      const metadata = yield* transport.send(keys.map((key) => ({ topic, key: bytes(key), value: bytes(key) })))
      assert.deepEqual(metadata.map((m) => m.partition), keys.map((key) => partitionForKey(bytes(key), 7)))
    }),
  )

  it(
    "order holds within a partition under concurrent producers",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(3)
      const producers = ["a", "b", "c", "d"]
      yield* Effect.forEach(producers, (producer) =>
        Effect.forEach(Array.from({ length: 25 }, (_, i) => i), (i) =>
          transport.send([{ topic, key: bytes(producer), value: bytes(`${producer}:${i}`) }]), { discard: true }), {
        concurrency: "unbounded",
        discard: true,
      })
      const consumer = yield* startConsumer(transport, { group: uniqueName("g"), topics: [topic], ...groupOptions })
      yield* within(30, "100 records", consumer.receivedAtLeast(100))
      for (const producer of producers) {
        const seen = values(consumer.received).filter((value) => value?.startsWith(`${producer}:`))
        assert.deepEqual(seen, Array.from({ length: 25 }, (_, i) => `${producer}:${i}`))
      }
      const byPartition = new Map<number, Array<number>>()
      for (const record of consumer.received) byPartition.set(record.partition, [...(byPartition.get(record.partition) ?? []), record.offset])
      for (const offsets of byPartition.values()) assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b))
    }),
  )

  it(
    "a too-large record refuses its partition's batch only; the other partitions are written once",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = uniqueName("contract")
      // The broker's limit is the topic's max.message.bytes, on every transport.
      yield* transport.createTopic({ topic, partitions: 3, config: { "max.message.bytes": "4096" } })
      const good = (partition: number, i: number) => ({ topic, key: null, value: bytes(`p${partition}-${i}`), partition })
      const large = { topic, key: null, value: new Uint8Array(20_000), partition: 1 }
      const sent = [good(0, 0), good(1, 0), good(2, 0), large, good(0, 1), good(1, 1), good(2, 1)]
      const outcomes = yield* transport.sendEach(sent)
      assert.equal(outcomes.length, sent.length)
      outcomes.forEach((outcome, index) => {
        const record = sent[index]!
        if (record.partition !== 1) {
          assert.ok(Exit.isSuccess(outcome), `record ${index} to partition ${record.partition} was written`)
          if (Exit.isSuccess(outcome)) assert.equal(outcome.value.partition, record.partition)
          return
        }
        // Kafka validates a partition's records of one call as one batch, and refuses it whole.
        assert.ok(Exit.isFailure(outcome), `record ${index} to partition 1 was refused with its batch`)
        const error = Exit.isFailure(outcome) ? Cause.findErrorOption(outcome.cause) : Option.none()
        assert.ok(Option.isSome(error))
        if (Option.isNone(error)) return
        assert.equal(error.value._tag, "TransportError")
        assert.equal(error.value.code, "MESSAGE_TOO_LARGE")
        assert.equal(error.value.retriable, false)
        assert.equal(error.value.topic, topic)
        assert.equal(error.value.partition, 1)
        assert.ok(error.value.message.includes(topic), `the message names the topic: ${error.value.message}`)
      })
      // A refused batch wrote nothing: its good records go through alone, and `send` fails with the refusal.
      const again = yield* transport.send([good(1, 0), good(1, 1)])
      assert.deepEqual(again.map((m) => [m.partition, m.offset]), [[1, 0], [1, 1]])
      const refused = yield* Effect.flip(transport.send([large]))
      assert.equal(refused.code, "MESSAGE_TOO_LARGE")
      // A written partition takes the next batch, of the same size as its first, as new records
      // (on Kafka: kafkajs' sequence numbers for it agree with the broker's again).
      const more = yield* transport.send([good(0, 2), good(0, 3)])
      assert.deepEqual(more.map((m) => [m.partition, m.offset]), [[0, 2], [0, 3]])
      const description = yield* transport.describeTopic(topic)
      assert.deepEqual(description.partitions.map((p) => p.highWatermark), [4, 2, 2])
      const consumer = yield* startConsumer(transport, { group: uniqueName("g"), topics: [topic], ...groupOptions })
      yield* within(30, "8 records", consumer.receivedAtLeast(8))
      yield* Effect.sleep("500 millis")
      assert.deepEqual(
        values(consumer.received).sort(),
        ["p0-0", "p0-1", "p0-2", "p0-3", "p1-0", "p1-1", "p2-0", "p2-1"],
        "every good record exactly once",
      )
    }),
  )

  it(
    "listTopics names every topic, sorted, without Kafka's internal ones",
    Effect.gen(function*() {
      const transport = yield* Transport
      const [a, b] = [yield* newTopic(1), yield* newTopic(2)]
      const listed = yield* transport.listTopics
      assert.ok(listed.includes(a) && listed.includes(b), `both new topics are listed: ${a}, ${b}`)
      assert.deepEqual([...listed].sort(), listed, "sorted")
      assert.ok(!listed.some((name) => name.startsWith("__")), `no internal topic: ${listed.filter((n) => n.startsWith("__"))}`)
    }),
  )

  it(
    "listOffsets finds the earliest, the latest and the first offset at or after a timestamp",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(2)
      const base = 1_700_000_000_000
      // Timestamps 0, 10, ..., 90 ms after `base` on partition 0; partition 1 stays empty.
      yield* transport.send(Array.from({ length: 10 }, (_, i) => ({ topic, partition: 0, key: null, value: bytes(`${i}`), timestamp: base + 10 * i })))
      const listed = yield* transport.listOffsets([
        { topic, partition: 0, at: "earliest" },
        { topic, partition: 0, at: "latest" },
        { topic, partition: 0, at: { timestamp: base + 35 } },
        { topic, partition: 0, at: { timestamp: base } },
        { topic, partition: 0, at: { timestamp: base + 1000 } },
        { topic, partition: 1, at: "latest" },
        { topic, partition: 1, at: { timestamp: base } },
      ])
      assert.deepEqual(listed.map((l) => [l.partition, l.offset]), [[0, 0], [0, 10], [0, 4], [0, 0], [0, undefined], [1, 0], [1, undefined]])
      for (const found of [listed[2]!, listed[3]!]) {
        // A transport that reads the found record's timestamp reports the right one.
        if (found.timestamp !== undefined) assert.equal(found.timestamp, base + 10 * found.offset!)
      }
      const missing = yield* Effect.flip(transport.listOffsets([{ topic, partition: 5, at: "latest" }]))
      assert.equal(missing.code, "UNKNOWN_TOPIC_OR_PARTITION")
    }),
  )

  it(
    "committedOffsets reads any group's committed offsets, from outside the group",
    Effect.gen(function*() {
      const transport = yield* Transport
      const [topic, other] = [yield* newTopic(3), yield* newTopic(1)]
      const group = uniqueName("g")
      yield* transport.send([0, 1, 2].map((partition) => ({ topic, partition, key: null, value: bytes(`${partition}`) })))
      yield* transport.send([{ topic: other, key: null, value: bytes("o") }])
      yield* Effect.scoped(Effect.gen(function*() {
        const consumer = yield* startConsumer(transport, { group, topics: [topic, other], ...groupOptions })
        yield* within(30, "4 records", consumer.receivedAtLeast(4))
        yield* consumer.subscription.commit([
          { topic, partition: 0, offset: 1 },
          { topic, partition: 2, offset: 1, metadata: "m" },
          { topic: other, partition: 0, offset: 1 },
        ])
      }))
      const all = yield* transport.committedOffsets(group)
      assert.deepEqual(all.map((c) => [c.topic, c.partition, c.offset]).filter(([t]) => t === topic || t === other), [
        ...[[topic, 0, 1], [topic, 2, 1]],
        [other, 0, 1],
      ].sort((x, y) => x[0]! < y[0]! ? -1 : x[0]! > y[0]! ? 1 : 0))
      const one = yield* transport.committedOffsets(group, [topic])
      assert.deepEqual(one.map((c) => [c.topic, c.partition, c.offset, c.metadata]), [[topic, 0, 1, ""], [topic, 2, 1, "m"]])
      assert.deepEqual(yield* transport.committedOffsets(uniqueName("never-joined"), [topic]), [])
    }),
  )

  it(
    "a send is a description: running it again sends again",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(1)
      const send = transport.send([{ topic, key: null, value: bytes("again") }])
      const sendEach = transport.sendEach([{ topic, key: null, value: bytes("again") }])
      const offsets = [
        (yield* send)[0]?.offset,
        (yield* send)[0]?.offset,
        Exit.isSuccess((yield* sendEach)[0]!) ? 2 : -1,
        Exit.isSuccess((yield* sendEach)[0]!) ? 3 : -1,
      ]
      assert.deepEqual(offsets, [0, 1, 2, 3])
      const description = yield* transport.describeTopic(topic)
      assert.equal(description.partitions[0]?.highWatermark, 4)
    }),
  )

  it(
    "two consumer groups each receive everything",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(2)
      yield* transport.send(Array.from({ length: 20 }, (_, i) => ({ topic, key: bytes(`k${i}`), value: bytes(`${i}`) })))
      const one = yield* startConsumer(transport, { group: uniqueName("g1"), topics: [topic], ...groupOptions })
      const two = yield* startConsumer(transport, { group: uniqueName("g2"), topics: [topic], ...groupOptions })
      yield* within(30, "20 records in each group", Effect.all([one.receivedAtLeast(20), two.receivedAtLeast(20)]))
      const expected = Array.from({ length: 20 }, (_, i) => `${i}`).sort()
      assert.deepEqual(values(one.received).sort(), expected)
      assert.deepEqual(values(two.received).sort(), expected)
    }),
  )

  it(
    "a second member splits the partitions and no record is lost or handled by both",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(4)
      const group = uniqueName("g")
      const batch = (from: number) =>
        Array.from({ length: 40 }, (_, i) => ({ topic, key: bytes(`k${from + i}`), value: bytes(`${from + i}`) }))
      yield* transport.send(batch(0))
      const first = yield* startConsumer(transport, { group, topics: [topic], ...groupOptions })
      yield* within(30, "the first member's 40 records", first.receivedAtLeast(40))
      yield* first.commitReceived
      const second = yield* startConsumer(transport, { group, topics: [topic], ...groupOptions })
      yield* within(30, "the second member's assignment", second.firstAssignment)
      // Wait until the rebalance settled: all four partitions held, by both members.
      yield* eventually(30, "a settled assignment", () =>
        first.assigned.size + second.assigned.size === 4 && first.assigned.size > 0 && second.assigned.size > 0)
      yield* transport.send(batch(40))
      yield* eventually(30, "the 40 new records", () => first.received.length + second.received.length >= 80)
      assert.ok(first.assigned.size > 0 && second.assigned.size > 0, "both members hold partitions")
      for (const key of first.assigned) assert.ok(!second.assigned.has(key), `${key} is held by both members`)
      const all = [...values(first.received), ...values(second.received)]
      assert.deepEqual(all.sort(), Array.from({ length: 80 }, (_, i) => `${i}`).sort(), "every record once")
    }),
  )

  it(
    "commit, close and restart: consumption resumes right after the committed offset",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(1)
      const group = uniqueName("g")
      yield* transport.send(Array.from({ length: 10 }, (_, i) => ({ topic, key: null, value: bytes(`${i}`) })))
      yield* Effect.scoped(Effect.gen(function*() {
        const consumer = yield* startConsumer(transport, { group, topics: [topic], ...groupOptions })
        yield* within(30, "10 records", consumer.receivedAtLeast(10))
        yield* consumer.subscription.commit([{ topic, partition: 0, offset: 6, metadata: "checkpoint" }])
        const [committed] = yield* consumer.subscription.committed([{ topic, partition: 0 }])
        assert.deepEqual(committed, { topic, partition: 0, offset: 6, metadata: "checkpoint" })
      }))
      const restarted = yield* startConsumer(transport, { group, topics: [topic], ...groupOptions })
      yield* within(30, "the 4 uncommitted records", restarted.receivedAtLeast(4))
      assert.deepEqual(restarted.received.map((record) => record.offset), [6, 7, 8, 9])
    }),
  )

  it(
    "pause holds delivery on that partition only, and resume releases it",
    Effect.gen(function*() {
      const transport = yield* Transport
      const topic = yield* newTopic(2)
      const consumer = yield* startConsumer(transport, { group: uniqueName("g"), topics: [topic], ...groupOptions })
      yield* within(30, "an assignment", consumer.firstAssignment)
      yield* eventually(30, "both partitions assigned", () => consumer.assigned.size === 2)
      yield* consumer.subscription.pause([{ topic, partition: 0 }])
      yield* transport.send([
        { topic, key: null, value: bytes("held"), partition: 0 },
        { topic, key: null, value: bytes("flows"), partition: 1 },
      ])
      yield* within(30, "the record on the running partition", consumer.receivedAtLeast(1))
      // Give the paused partition every chance to (wrongly) deliver.
      yield* Effect.sleep("1 second")
      assert.deepEqual(values(consumer.received), ["flows"])
      yield* consumer.subscription.resume([{ topic, partition: 0 }])
      yield* within(30, "the held record after resume", consumer.receivedAtLeast(2))
      assert.deepEqual(values(consumer.received), ["flows", "held"])
    }),
  )

  if (subject.features.transactions) {
    it(
      "transactions: aborted records never reach a read-committed consumer, committed ones arrive once",
      Effect.gen(function*() {
        const transport = yield* Transport
        const topic = yield* newTopic(1)
        const producer = yield* transport.transactional(uniqueName("tx"))
        const aborted = yield* producer.begin
        yield* aborted.send([{ topic, key: null, value: bytes("aborted-1") }, { topic, key: null, value: bytes("aborted-2") }])
        yield* aborted.abort
        const committed = yield* producer.begin
        yield* committed.send([{ topic, key: null, value: bytes("committed-1") }, { topic, key: null, value: bytes("committed-2") }])
        yield* committed.commit
        yield* transport.send([{ topic, key: null, value: bytes("after") }])
        const readCommitted = yield* startConsumer(transport, {
          group: uniqueName("g"),
          topics: [topic],
          isolation: "read-committed",
          ...groupOptions,
        })
        const readUncommitted = yield* startConsumer(transport, {
          group: uniqueName("g"),
          topics: [topic],
          isolation: "read-uncommitted",
          ...groupOptions,
        })
        yield* within(30, "the committed records", readCommitted.receivedAtLeast(3))
        yield* within(30, "every record, aborted ones too", readUncommitted.receivedAtLeast(5))
        yield* Effect.sleep("500 millis")
        assert.deepEqual(values(readCommitted.received), ["committed-1", "committed-2", "after"])
        assert.deepEqual(values(readUncommitted.received), ["aborted-1", "aborted-2", "committed-1", "committed-2", "after"])
      }),
    )

    it(
      "transactions: an open transaction holds back a read-committed consumer until it commits",
      Effect.gen(function*() {
        const transport = yield* Transport
        const topic = yield* newTopic(1)
        const producer = yield* transport.transactional(uniqueName("tx"))
        const consumer = yield* startConsumer(transport, { group: uniqueName("g"), topics: [topic], ...groupOptions })
        yield* within(30, "an assignment", consumer.firstAssignment)
        const transaction = yield* producer.begin
        yield* transaction.send([{ topic, key: null, value: bytes("pending") }])
        yield* Effect.sleep("1 second")
        assert.deepEqual(values(consumer.received), [], "nothing visible before commit")
        yield* transaction.commit
        yield* within(30, "the committed record", consumer.receivedAtLeast(1))
        assert.deepEqual(values(consumer.received), ["pending"])
      }),
    )

    it(
      "transactions: consumed offsets commit atomically with the records",
      Effect.gen(function*() {
        const transport = yield* Transport
        const input = yield* newTopic(1)
        const output = yield* newTopic(1)
        const group = uniqueName("g")
        yield* transport.send([{ topic: input, key: null, value: bytes("in") }])
        const consumer = yield* startConsumer(transport, { group, topics: [input], ...groupOptions })
        yield* within(30, "the input record", consumer.receivedAtLeast(1))
        const producer = yield* transport.transactional(uniqueName("tx"))
        const abortedRun = yield* producer.begin
        yield* abortedRun.send([{ topic: output, key: null, value: bytes("out") }])
        yield* abortedRun.sendOffsets(group, [{ topic: input, partition: 0, offset: 1 }])
        yield* abortedRun.abort
        assert.deepEqual(yield* consumer.subscription.committed([{ topic: input, partition: 0 }]), [])
        const committedRun = yield* producer.begin
        yield* committedRun.send([{ topic: output, key: null, value: bytes("out") }])
        yield* committedRun.sendOffsets(group, [{ topic: input, partition: 0, offset: 1 }])
        yield* committedRun.commit
        const [offset] = yield* consumer.subscription.committed([{ topic: input, partition: 0 }])
        assert.equal(offset?.offset, 1)
        const reader = yield* startConsumer(transport, { group: uniqueName("g"), topics: [output], ...groupOptions })
        yield* within(30, "the output record", reader.receivedAtLeast(1))
        yield* Effect.sleep("500 millis")
        assert.deepEqual(values(reader.received), ["out"])
      }),
    )
  }

  const faults = subject.faults
  if (faults !== undefined) {
    const withFaults = (name: string, body: Effect.Effect<void, unknown, Transport | FaultControl | Scope.Scope>) =>
      subject.test(`${subject.name} transport: ${name}`, () => run(body, faults.layer()))

    withFaults(
      "an injected retriable error is retried and the send succeeds",
      Effect.gen(function*() {
        const transport = yield* Transport
        const control = yield* FaultControl
        const topic = yield* newTopic(1)
        yield* control.failNext("send", "NOT_LEADER_OR_FOLLOWER")
        const [metadata] = yield* transport.send([{ topic, key: null, value: bytes("x") }])
        assert.equal(metadata?.offset, 0)
        assert.equal(yield* control.calls("send"), 2, "one failed attempt, one retry")
      }),
    )

    withFaults(
      "an injected non-retriable error surfaces as its typed error",
      Effect.gen(function*() {
        const transport = yield* Transport
        const control = yield* FaultControl
        const topic = yield* newTopic(1)
        yield* control.failNext("send", "TOPIC_AUTHORIZATION_FAILED")
        const error = yield* Effect.flip(transport.send([{ topic, key: null, value: bytes("x") }]))
        assert.equal(error._tag, "TransportError")
        assert.equal(error.code, "TOPIC_AUTHORIZATION_FAILED")
        assert.equal(error.retriable, false)
        assert.equal(yield* control.calls("send"), 1, "not retried")
        // The fault fired once: the next send goes through.
        yield* transport.send([{ topic, key: null, value: bytes("y") }])
      }),
    )
  }
}
