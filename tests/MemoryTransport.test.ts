import { Context, Duration, Effect, Exit, Fiber, Layer, Schedule, Stream } from "effect"
import { test } from "node:test"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import { FaultControl, transportContract } from "./transport_contract.ts"
import assert from "node:assert/strict"
import { TestClock } from "effect/testing"
import { Transport } from "../lib/Transport.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, run, text } from "./fixtures/effect.ts"

const withFaultControl = () =>
  Layer.effect(
    FaultControl,
    Effect.map(MemoryTransport.MemoryBroker, (broker) =>
      FaultControl.of({
        failNext: (operation, code) => broker.failNext(operation, code),
        calls: (operation) => broker.calls(operation),
      })),
  ).pipe(Layer.provideMerge(MemoryTransport.layer()))

transportContract({
  name: "memory",
  features: { transactions: true, faultInjection: true, clockDriven: true },
  layer: () => MemoryTransport.layer(),
  test: (name, body) => test(name, body),
  faults: { layer: withFaultControl },
})

// ---- What only the embedded broker has: its clock, its control panel, its independence ----


const withClock = (options?: MemoryTransport.Options) => Layer.provideMerge(MemoryTransport.layer(options), TestClock.layer())

test("MemoryTransport expires a member whose heartbeats stop, on the Clock, and rebalances the rest", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      yield* transport.createTopic({ topic: "t", partitions: 2 })
      const options = { group: "g", topics: ["t"], sessionTimeout: "10 seconds", heartbeatInterval: "1 second" } as const
      const healthy = yield* startConsumer(transport, { ...options, clientId: "a" })
      const hung = yield* startConsumer(transport, { ...options, clientId: "b" })
      yield* TestClock.adjust("10 millis")
      assert.deepEqual(yield* broker.members("g"), ["a-1", "b-2"])
      for (let i = 0; i < 10 && healthy.assigned.size + hung.assigned.size < 2; i++) yield* TestClock.adjust("10 millis")
      assert.deepEqual([healthy.assigned.size, hung.assigned.size], [1, 1])
      // The hung member's heartbeats fail from now on; the healthy one's keep going.
      yield* broker.failNext("heartbeat", "NETWORK_EXCEPTION", { times: Number.POSITIVE_INFINITY, member: "b-2" })
      yield* TestClock.adjust("9 seconds")
      assert.equal((yield* broker.members("g")).length, 2, "not expired before the session timeout")
      yield* TestClock.adjust("2 seconds")
      assert.deepEqual(yield* broker.members("g"), ["a-1"])
      // The rest of the group got the hung member's partition.
      for (let i = 0; i < 10 && healthy.assigned.size < 2; i++) yield* TestClock.adjust("10 millis")
      assert.deepEqual([...healthy.assigned].sort(), ["t/0", "t/1"])
    }),
    withClock(),
  ))

test("MemoryTransport keeps a member whose heartbeats flow past many session timeouts", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      yield* transport.createTopic({ topic: "t", partitions: 1 })
      yield* startConsumer(transport, { group: "g", topics: ["t"], sessionTimeout: "10 seconds", heartbeatInterval: "1 second" })
      yield* TestClock.adjust("10 millis")
      for (let i = 0; i < 10; i++) yield* TestClock.adjust("10 seconds")
      assert.equal((yield* broker.members("g")).length, 1)
    }),
    withClock(),
  ))

test("MemoryTransport retains the newest records by count and resets a consumer that fell behind", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic: "t", partitions: 1 })
      yield* transport.send(Array.from({ length: 10 }, (_, i) => ({ topic: "t", key: null, value: bytes(`${i}`) })))
      const [partition] = (yield* transport.describeTopic("t")).partitions
      assert.deepEqual(partition, { partition: 0, logStartOffset: 6, highWatermark: 10 })
      const consumer = yield* startConsumer(transport, { group: "g", topics: ["t"] })
      yield* consumer.receivedAtLeast(4)
      assert.deepEqual(consumer.received.map((r) => [r.offset, text(r.value)]), [[6, "6"], [7, "7"], [8, "8"], [9, "9"]])
    }),
    MemoryTransport.layer({ retentionRecords: 4 }),
  ))

test("MemoryTransport delays a call on the Clock when told to", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      yield* transport.createTopic({ topic: "t", partitions: 1 })
      yield* broker.delayNext("send", "5 seconds")
      const sending = yield* Effect.forkChild(transport.send([{ topic: "t", key: null, value: null }]), { startImmediately: true })
      yield* TestClock.adjust("4 seconds")
      assert.equal(sending.pollUnsafe(), undefined, "still waiting after 4 s")
      yield* TestClock.adjust("1 second")
      const [metadata] = yield* Fiber.join(sending)
      assert.equal(metadata?.offset, 0)
      assert.equal(metadata?.timestamp, Duration.toMillis("5 seconds"), "written at the delayed time")
    }),
    withClock(),
  ))

test("MemoryTransport retries only the records a retriable error refused, so nothing is written twice", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic: "here", partitions: 1 })
      // "later" does not exist yet: its record is retried on the schedule, "here"'s is written once.
      const sending = yield* Effect.forkChild(
        transport.sendEach([
          { topic: "here", key: null, value: bytes("a") },
          { topic: "later", key: null, value: bytes("b") },
          { topic: "here", key: null, value: bytes("c") },
        ]),
        { startImmediately: true },
      )
      yield* TestClock.adjust("10 millis")
      assert.equal(sending.pollUnsafe(), undefined, "still retrying the record for the missing topic")
      yield* transport.createTopic({ topic: "later", partitions: 1 })
      yield* TestClock.adjust("1 second")
      const outcomes = yield* Fiber.join(sending)
      assert.deepEqual(
        outcomes.map((outcome) => Exit.isSuccess(outcome) ? [outcome.value.topic, outcome.value.offset] : "failed"),
        [["here", 0], ["later", 0], ["here", 1]],
      )
      const here = yield* transport.describeTopic("here")
      assert.equal(here.partitions[0]?.highWatermark, 2, "written once")
    }),
    withClock(),
  ))

test("MemoryTransport forces a rebalance on demand: members give up and get partitions again", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      yield* transport.createTopic({ topic: "t", partitions: 2 })
      const subscription = yield* transport.subscribe({ group: "g", topics: ["t"] })
      const events: Array<string> = []
      yield* subscription.events.pipe(
        Stream.runForEach((event) =>
          Effect.gen(function*() {
            events.push(event._tag === "Assigned" ? `assigned ${event.claims.length}` : `revoked ${event.partitions.length}`)
            if (event._tag === "Revoked") yield* event.acknowledge
          })
        ),
        Effect.forkScoped,
      )
      yield* Effect.sleep("20 millis")
      yield* broker.rebalance("g")
      yield* Effect.sleep("20 millis")
      assert.deepEqual(events, ["assigned 2", "revoked 2", "assigned 2"])
    }),
    MemoryTransport.layer(),
  ))

test("MemoryTransport assigns by range or round-robin, as Kafka's assignors do", () =>
  run(
    Effect.gen(function*() {
      const assignments = (assignor: "range" | "round-robin") =>
        Effect.scoped(Effect.gen(function*() {
          const transport = yield* Transport
          yield* transport.createTopic({ topic: "a", partitions: 3 })
          yield* transport.createTopic({ topic: "b", partitions: 3 })
          const one = yield* startConsumer(transport, { group: "g", topics: ["a", "b"], clientId: "one" })
          const two = yield* startConsumer(transport, { group: "g", topics: ["a", "b"], clientId: "two" })
          yield* Effect.sleep("30 millis")
          return [[...one.assigned].sort(), [...two.assigned].sort()]
        })).pipe(Effect.provide(MemoryTransport.layer({ assignor })))
      assert.deepEqual(yield* assignments("range"), [["a/0", "a/1", "b/0", "b/1"], ["a/2", "b/2"]])
      assert.deepEqual(yield* assignments("round-robin"), [["a/0", "a/2", "b/1"], ["a/1", "b/0", "b/2"]])
    }),
    MemoryTransport.layer(),
  ))

test("Two embedded brokers in one process share nothing", () =>
  run(
    Effect.gen(function*() {
      const first = Context.get(yield* Layer.build(MemoryTransport.layer()), Transport)
      const second = Context.get(yield* Layer.build(MemoryTransport.layer()), Transport)
      yield* first.createTopic({ topic: "t", partitions: 1 })
      yield* second.createTopic({ topic: "t", partitions: 1 })
      yield* first.send([{ topic: "t", key: null, value: bytes("only in the first") }])
      assert.equal((yield* first.describeTopic("t")).partitions[0]?.highWatermark, 1)
      assert.equal((yield* second.describeTopic("t")).partitions[0]?.highWatermark, 0)
    }),
    MemoryTransport.layer(),
  ))

test("An injected fault fires once unless told to keep firing", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const broker = yield* MemoryTransport.MemoryBroker
      yield* transport.createTopic({ topic: "t", partitions: 1 })
      yield* broker.failNext("createTopic", "POLICY_VIOLATION")
      const error = yield* Effect.flip(transport.createTopic({ topic: "u", partitions: 1 }))
      assert.equal(error.code, "POLICY_VIOLATION")
      yield* transport.createTopic({ topic: "u", partitions: 1 })
      yield* broker.failNext("describeTopic", "CLUSTER_AUTHORIZATION_FAILED", { times: 2 })
      assert.equal((yield* Effect.flip(transport.describeTopic("t"))).code, "CLUSTER_AUTHORIZATION_FAILED")
      assert.equal((yield* Effect.flip(transport.describeTopic("t"))).code, "CLUSTER_AUTHORIZATION_FAILED")
      assert.equal((yield* transport.describeTopic("t")).topic, "t")
    }),
    MemoryTransport.layer(),
  ))

test("MemoryTransport refuses bad topics and records with typed errors", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const invalid = yield* Effect.flip(transport.createTopic({ topic: "no spaces", partitions: 1 }))
      assert.equal(invalid.code, "INVALID_TOPIC_EXCEPTION")
      const zero = yield* Effect.flip(transport.createTopic({ topic: "t", partitions: 0 }))
      assert.equal(zero.code, "INVALID_PARTITIONS")
      yield* transport.createTopic({ topic: "t", partitions: 1 })
      assert.equal((yield* Effect.flip(transport.createTopic({ topic: "t", partitions: 1 }))).code, "TOPIC_ALREADY_EXISTS")
      const tooBig = yield* Effect.flip(transport.send([{ topic: "t", key: null, value: new Uint8Array(2_000_000) }]))
      assert.equal(tooBig.code, "MESSAGE_TOO_LARGE")
      const noPartition = yield* Effect.flip(transport.send([{ topic: "t", key: null, value: null, partition: 3 }]))
      assert.equal(noPartition.code, "UNKNOWN_TOPIC_OR_PARTITION")
      assert.match(noPartition.message, /Partition 3 of "t" does not exist \(it has 1\)/)
    }),
    MemoryTransport.layer({ retry: Schedule.recurs(0) }),
  ))
