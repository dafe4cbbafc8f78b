import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Fiber, Layer, Schedule } from "effect"
import { TestClock } from "effect/testing"
import * as Committer from "../../lib/internal/committer.ts"
import * as MemoryTransport from "../../lib/MemoryTransport.ts"
import { Transport } from "../../lib/Transport.ts"
import { run } from "../fixtures/effect.ts"
import { startConsumer } from "../fixtures/consume.ts"

const onTestClock = () => Layer.provideMerge(MemoryTransport.layer(), TestClock.layer())

/** A committer for partition 0 of a fresh topic, committing through a real memory-broker group member. */
const setUp = (options: { readonly records?: number; readonly afterHandling?: boolean }) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const broker = yield* MemoryTransport.MemoryBroker
    yield* transport.createTopic({ topic: "t", partitions: 1 })
    const consumer = yield* startConsumer(transport, {
      group: "g",
      topics: ["t"],
      heartbeatInterval: "1 hour",
      sessionTimeout: "10 hours",
    })
    yield* consumer.firstAssignment
    let committable = 0
    const status: Committer.CommitStatus = { committed: -1, lastError: undefined }
    const committer = Committer.make({
      topic: "t",
      partition: 0,
      commit: (offset) => consumer.subscription.commit([{ topic: "t", partition: 0, offset }]),
      committable: () => committable,
      startOffset: 0,
      interval: "1 hour",
      records: options.records ?? 1000,
      retry: Schedule.spaced("1 second"),
      afterHandling: options.afterHandling ?? true,
      status,
      attributes: { "messaging.consumer.group.name": "g" },
    })
    const stored = Effect.map(
      consumer.subscription.committed([{ topic: "t", partition: 0 }]),
      (offsets) => offsets[0]?.offset,
    )
    return {
      broker,
      committer,
      status,
      stored,
      complete: (offset: number) => {
        committable = offset
        committer.completed()
      },
    }
  })

const settle = Effect.gen(function*() {
  for (let i = 0; i < 5; i++) yield* Effect.yieldNow
})

test("Committer asks for a commit once `records` completed, and commits the committable offset", () =>
  run(
    Effect.gen(function*() {
      const { broker, committer, status, stored, complete } = yield* setUp({ records: 3 })
      yield* Effect.forkScoped(committer.run)
      complete(1)
      complete(2)
      yield* settle
      assert.equal(yield* broker.calls("commit"), 0, "two records: not yet")
      complete(3)
      yield* settle
      assert.equal(yield* broker.calls("commit"), 1)
      assert.equal(yield* stored, 3)
      assert.equal(status.committed, 3)
      assert.equal(committer.committed, 3)
      assert.equal(status.commitFailures, 0)
    }),
    onTestClock(),
  ))

test("Committer backs off after a failure: requests meanwhile wait for the next try on the schedule", () =>
  run(
    Effect.gen(function*() {
      const { broker, committer, status, stored, complete } = yield* setUp({ records: 1 })
      yield* broker.failNext("commit", "GROUP_AUTHORIZATION_FAILED", { times: 2 })
      yield* Effect.forkScoped(committer.run)
      complete(1)
      yield* settle
      assert.equal(yield* broker.calls("commit"), 1, "the first try failed")
      for (let offset = 2; offset <= 20; offset++) complete(offset)
      yield* settle
      assert.equal(yield* broker.calls("commit"), 1, "19 more requests, no more tries before the delay")
      assert.equal(status.commitFailures, 1)
      assert.match(status.lastError ?? "", /^Commit of t\/0@1 failed: /)
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.equal(yield* broker.calls("commit"), 2, "one try a second")
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.equal(yield* broker.calls("commit"), 3)
      assert.equal(yield* stored, 20, "the try that landed committed what completed meanwhile")
      assert.equal(status.commitFailures, 2)
      complete(21)
      yield* settle
      assert.equal(yield* broker.calls("commit"), 4, "after a success, a request commits at once again")
    }),
    onTestClock(),
  ))

test("Committer.commitAhead tries again on the schedule until the commit lands", () =>
  run(
    Effect.gen(function*() {
      const { broker, committer, status, stored } = yield* setUp({ afterHandling: false })
      yield* broker.failNext("commit", "GROUP_AUTHORIZATION_FAILED", { times: 3 })
      const ahead = yield* Effect.forkChild(committer.commitAhead(10))
      yield* settle
      assert.equal(yield* broker.calls("commit"), 1)
      yield* TestClock.adjust("2 seconds")
      yield* settle
      assert.equal(yield* broker.calls("commit"), 3)
      assert.equal(ahead.pollUnsafe(), undefined, "still trying")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(ahead)
      assert.equal(yield* broker.calls("commit"), 4)
      assert.equal(yield* stored, 10)
      assert.equal(status.committed, 10)
      assert.equal(status.commitFailures, 3)
    }),
    onTestClock(),
  ))

test("Committer at most once commits only ahead: completed records commit nothing", () =>
  run(
    Effect.gen(function*() {
      const { broker, committer, complete } = yield* setUp({ records: 1, afterHandling: false })
      yield* Effect.forkScoped(committer.run)
      complete(5)
      yield* settle
      assert.equal(yield* committer.commitCompleted, true)
      assert.equal(yield* broker.calls("commit"), 0)
    }),
    onTestClock(),
  ))

test("Committer.moveTo commits a seek's offset back, and progress from there commits though it is below the old offset", () =>
  run(
    Effect.gen(function*() {
      const { committer, status, stored, complete } = yield* setUp({})
      complete(10)
      assert.equal(yield* committer.commitCompleted, true)
      assert.equal(yield* stored, 10)
      yield* committer.moveTo(4)
      assert.equal(yield* stored, 4, "the group's offset moved back")
      assert.equal(status.committed, 4)
      complete(7)
      assert.equal(yield* committer.commitCompleted, true)
      assert.equal(yield* stored, 7, "progress below the old offset is committed")
      assert.equal(committer.committed, 7)
    }),
    onTestClock(),
  ))

test("Committer.moveTo waits for a commit of progress still in flight, so that commit cannot land after the seek's", () =>
  run(
    Effect.gen(function*() {
      const { broker, committer, stored, complete } = yield* setUp({})
      complete(10)
      // The commit of 10 waits on a slow broker while the seek moves the position to 4.
      yield* broker.delayNext("commit", "1 second")
      const before = yield* Effect.forkChild(committer.commitCompleted)
      yield* settle
      complete(4)
      const seek = yield* Effect.forkChild(committer.moveTo(4))
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(before)
      yield* Fiber.join(seek)
      assert.equal(yield* stored, 4, "the seek's commit landed last")
      assert.equal(committer.committed, 4)
    }),
    onTestClock(),
  ))
