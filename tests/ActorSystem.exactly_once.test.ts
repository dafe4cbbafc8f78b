/**
 * Exactly-once actors on the embedded broker: the cases every transport with transactions runs
 * (tests/fixtures/exactlyOnce.ts), and what only the embedded broker can drive: transaction
 * batching under `TestClock`, and a commit whose answer never comes (an indefinite outcome).
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Layer, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Ordering from "../lib/Ordering.ts"
import * as Producer from "../lib/Producer.ts"
import { Transport } from "../lib/Transport.ts"
import { eventually, sendJson } from "./fixtures/actors.ts"
import { run } from "./fixtures/effect.ts"
import { committedAll, Event, exactlyOnceCases, readOutput, topics } from "./fixtures/exactlyOnce.ts"

exactlyOnceCases({
  test: (name, body) => test(`${name} (MemoryTransport)`, () => run(body(undefined), MemoryTransport.layer())),
  consumer: { heartbeatInterval: "100 millis" },
  patience: 20,
})

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

test("exactly-once: a transaction commits once it holds `transaction.records` records, or once it has been open for `transaction.interval`", () =>
  run(
    Effect.gen(function*() {
      const [input, out] = yield* topics(["eos-batch-in", 1], ["eos-batch-out", 1])
      const outputs = Producer.forTopic({ topic: out!, value: Event })
      const actor = Actor.make({
        name: "eos-batch",
        topics: [input!],
        value: Event,
        handle: (event: Event) => outputs.send(event),
        onError: { default: ErrorPolicy.halt },
        delivery: "exactly-once",
        transaction: { records: 5, interval: "1 second" },
        consumer: { heartbeatInterval: "1 hour", sessionTimeout: "10 hours" },
      })
      const system = yield* ActorSystem.start([actor])
      const committed = Effect.map(system.health, (health) => health.partitions[0]?.committed)
      const settle = Effect.gen(function*() {
        for (let i = 0; i < 50; i++) yield* Effect.yieldNow
      })
      yield* sendJson(input!, range(12).map((id) => ({ value: { id } })))
      yield* settle
      // Two full transactions committed at once; the last two records wait for the interval.
      assert.equal(yield* committed, 10)
      yield* TestClock.adjust("900 millis")
      yield* settle
      assert.equal(yield* committed, 10)
      yield* TestClock.adjust("200 millis")
      yield* settle
      assert.equal(yield* committed, 12)
    }),
    Layer.provideMerge(MemoryTransport.layer(), TestClock.layer()),
  ))

test("exactly-once: a commit that gets no answer in time reopens the producer (fencing the late request) and the records are handled again, their output once", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const [input, out] = yield* topics(["eos-late-in", 1], ["eos-late-out", 1])
      const outputs = Producer.forTopic({ topic: out!, value: Event })
      let handled = 0
      const actor = Actor.make({
        name: "eos-late",
        topics: [input!],
        value: Event,
        handle: (event: Event) => Effect.andThen(outputs.send(event), Effect.sync(() => void handled++)),
        onError: { default: ErrorPolicy.halt },
        delivery: "exactly-once",
        transaction: { records: 10, interval: "1 minute", timeout: "200 millis" },
        consumer: { heartbeatInterval: "100 millis" },
      })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(input!, range(5).map((id) => ({ value: { id } })))
      yield* eventually(10, "5 records handled", () => handled >= 5)
      const opened = yield* broker.calls("transaction")
      // The transaction is open; its commit (the next transaction call) hangs past the timeout.
      yield* broker.delayNext("transaction", "5 seconds")
      yield* sendJson(input!, range(5).map((id) => ({ value: { id: 5 + id } })))
      yield* committedAll(system, 10, 20)
      assert.ok(handled >= 15, `the first 10 were handled again after the unknown outcome (${handled})`)
      assert.ok((yield* broker.calls("transaction")) > opened + 2, "the producer was opened again")
      assert.deepEqual(yield* readOutput(out!, 1, 20), range(10))
    }),
    MemoryTransport.layer(),
  ))

test("exactly-once: offsets the group refuses for a generation that moved on (a rebalance the partition stays through) abort that transaction and the partition handles its records again: not a fence", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const [input, out] = yield* topics(["eos-generation-in", 1], ["eos-generation-out", 1])
      const outputs = Producer.forTopic({ topic: out!, value: Event })
      let handled = 0
      const actor = Actor.make({
        name: "eos-generation",
        topics: [input!],
        value: Event,
        handle: (event: Event) => Effect.andThen(outputs.send(event), Effect.sync(() => void handled++)),
        onError: { default: ErrorPolicy.halt },
        delivery: "exactly-once",
        transaction: { records: 10, interval: "1 minute" },
        consumer: { heartbeatInterval: "100 millis" },
      })
      const system = yield* ActorSystem.start([actor])
      yield* sendJson(input!, range(5).map((id) => ({ value: { id } })))
      yield* eventually(10, "5 records handled", () => handled >= 5)
      // The transaction is open; its commit (the next transaction call) is refused as Kafka
      // refuses offsets carrying the member's previous generation.
      yield* broker.failNext("transaction", "ILLEGAL_GENERATION")
      yield* sendJson(input!, range(5).map((id) => ({ value: { id: 5 + id } })))
      yield* committedAll(system, 10, 20)
      const [partition] = (yield* system.health).partitions
      assert.equal(partition?.state, "running")
      assert.equal(partition?.restarts, 0)
      assert.ok(handled >= 20, `the 10 records were handled again after the refusal (${handled})`)
      assert.deepEqual(yield* readOutput(out!, 1, 20), range(10))
    }),
    MemoryTransport.layer(),
  ))

test("ActorSystem refuses an exactly-once actor with key ordering, one on a transport without transactions, and one producer per member where the group does not fence transactions", () =>
  run(
    Effect.gen(function*() {
      const base = {
        name: "eos-invalid",
        topics: ["t"],
        value: Schema.Unknown,
        handle: () => Effect.void,
        onError: { default: ErrorPolicy.halt },
        delivery: "exactly-once",
      } as const
      const byKey = yield* Effect.flip(ActorSystem.start([Actor.make({ ...base, ordering: Ordering.byKey({ concurrency: 4 }) })]))
      assert.equal(byKey._tag, "InvalidActor")
      assert.match(byKey.message, /exactly-once needs partition ordering/)
      const transport = yield* Transport
      const noTransactions = yield* Effect.flip(
        ActorSystem.start([Actor.make(base)]).pipe(
          Effect.provideService(Transport, { ...transport, features: { ...transport.features, transactions: false } }),
        ),
      )
      assert.equal(noTransactions._tag, "InvalidActor")
      assert.match(noTransactions.message, /has no transactions/)
      // One producer per member needs transactions the group fences (KIP-447): not the embedded broker's.
      const perMember = yield* Effect.flip(ActorSystem.start([Actor.make({ ...base, transaction: { producer: "per-member" } })]))
      assert.equal(perMember._tag, "InvalidActor")
      assert.match(perMember.message, /not fenced by the group \(KIP-447\)/)
    }),
    MemoryTransport.layer({ topics: [{ topic: "t", partitions: 1 }] }),
  ))
