/**
 * One transactional producer per member (`memberTransactions.ts`), on the embedded broker's
 * transactions: the partitions' views share one transaction, which commits with every
 * partition's offset once each is at a record boundary, and aborts for all when one aborts.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, type Duration, Effect, Exit, Fiber, Schedule } from "effect"
import * as MemoryTransport from "../../lib/MemoryTransport.ts"
import { Transport } from "../../lib/Transport.ts"
import * as MemberTransactions from "../../lib/internal/memberTransactions.ts"
import { abortedBy } from "../../lib/internal/partitionTransactions.ts"
import { startConsumer } from "../fixtures/consume.ts"
import { bytes, run, text } from "../fixtures/effect.ts"

/** A member's transactions on the embedded broker, and two partitions' views of them. */
const setUp = (timeout: Duration.Input = "5 seconds") => Effect.gen(function*() {
  const transport = yield* Transport
  const member = yield* MemberTransactions.make({
    transactionalId: "member-1",
    group: "g",
    open: transport.transactional,
    timeout,
    retry: Schedule.recurs(0),
  })
  const status0 = { committed: 0 }
  const status1 = { committed: 0 }
  const p0 = yield* member.partition({ topic: "in", partition: 0 }, status0)
  const p1 = yield* member.partition({ topic: "in", partition: 1 }, status1)
  return { transport, p0, p1, status0, status1 }
})

const layer = () => MemoryTransport.layer({ topics: [{ topic: "in", partitions: 2 }, { topic: "out", partitions: 1 }] })
const record = (value: string) => ({ topic: "out", key: null, value: bytes(value) })

/** The group's committed offsets of `in`, as a member reads them. */
const committedOf = (transport: Transport["Service"]) =>
  Effect.scoped(Effect.gen(function*() {
    const subscription = yield* transport.subscribe({ group: "g", topics: [] })
    const committed = yield* subscription.committed([{ topic: "in", partition: 0 }, { topic: "in", partition: 1 }])
    return committed.map((c) => `${c.partition}:${c.offset}`).sort()
  }))

test("Partitions of one member share a transaction: it commits once each is at a boundary, with every offset", () =>
  run(
    Effect.gen(function*() {
      const { transport, p0, p1, status0, status1 } = yield* setUp()
      yield* p0.begin
      yield* p1.begin
      assert.equal(p0.openedAt, p1.openedAt, "one transaction")
      yield* p0.producer.send(record("a"))
      yield* p1.producer.send(record("b"))
      const first = yield* Effect.forkChild(p0.commit(5))
      yield* Effect.yieldNow
      assert.equal(first.pollUnsafe(), undefined, "the first at a boundary waits for the other")
      assert.deepEqual(yield* committedOf(transport), [])
      yield* p1.commit(7)
      yield* Fiber.join(first)
      assert.deepEqual(yield* committedOf(transport), ["0:5", "1:7"])
      assert.deepEqual([status0.committed, status1.committed], [5, 7])
      const reader = yield* startConsumer(transport, { group: "reader", topics: ["out"] })
      yield* reader.receivedAtLeast(2)
      assert.deepEqual(reader.received.map((r) => text(r.value)).sort(), ["a", "b"])
      assert.equal(p0.openedAt, undefined, "the next transaction is not open yet")
    }),
    layer(),
  ))

test("An abort by one partition aborts the member's transaction for all: the other rewinds, and nothing of it is visible", () =>
  run(
    Effect.gen(function*() {
      const { transport, p0, p1 } = yield* setUp()
      yield* p0.begin
      yield* p1.begin
      yield* p1.producer.send(record("lost"))
      assert.equal(p1.produced(3), false, "nothing of offset 3 sent yet")
      yield* p0.abort
      assert.equal(p1.produced(3), true, "its transaction is gone: any failed try must rewind")
      const commit = yield* Effect.exit(p1.commit(3))
      assert.ok(Exit.isFailure(commit) && abortedBy(commit.cause) !== undefined, "the other partition's commit asks for a rewind")
      assert.deepEqual(yield* committedOf(transport), [])
      // The next transaction works, and only its record shows.
      yield* p1.begin
      yield* p1.producer.send(record("kept"))
      yield* p1.commit(4)
      const reader = yield* startConsumer(transport, { group: "reader", topics: ["out"] })
      yield* reader.receivedAtLeast(1)
      yield* Effect.sleep("50 millis")
      assert.deepEqual(reader.received.map((r) => text(r.value)), ["kept"])
      assert.deepEqual(yield* committedOf(transport), ["1:4"])
    }),
    layer(),
  ))

test("A partition that begins while the member's transaction commits joins the next one", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const { p0, p1 } = yield* setUp()
      yield* p0.begin
      const opened = p0.openedAt
      // The commit (a transaction call) takes a while: p1 arrives meanwhile.
      yield* broker.delayNext("transaction", "100 millis")
      const committing = yield* Effect.forkChild(p0.commit(1))
      yield* Effect.sleep("10 millis")
      yield* p1.begin
      yield* Fiber.join(committing)
      assert.notEqual(p1.openedAt, undefined)
      assert.ok(p1.openedAt! >= opened!, "a new transaction")
      const exit = yield* Effect.exit(p1.commit(2))
      assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
    }),
    layer(),
  ))

test("A member's commit that gets no answer in time reopens its producer, and every partition in the transaction rewinds", () =>
  run(
    Effect.gen(function*() {
      const broker = yield* MemoryTransport.MemoryBroker
      const { transport, p0, p1 } = yield* setUp("100 millis")
      yield* p0.begin
      yield* p1.begin
      yield* p0.producer.send(record("maybe"))
      const opened = yield* broker.calls("transaction")
      yield* broker.delayNext("transaction", "2 seconds")
      const first = yield* Effect.forkChild(Effect.exit(p0.commit(1)))
      const second = yield* Effect.exit(p1.commit(1))
      const firstExit = yield* Fiber.join(first)
      assert.ok(Exit.isFailure(second) && abortedBy(second.cause) !== undefined, "the partition that completed the set rewinds")
      assert.ok(Exit.isFailure(firstExit) && abortedBy(firstExit.cause) !== undefined, "so does the one that waited")
      assert.ok((yield* broker.calls("transaction")) > opened + 1, "the producer was opened again")
      assert.deepEqual(yield* committedOf(transport), [])
      // The reopened producer works.
      yield* p0.begin
      yield* p0.commit(1)
      assert.deepEqual(yield* committedOf(transport), ["0:1"])
    }),
    layer(),
  ))
