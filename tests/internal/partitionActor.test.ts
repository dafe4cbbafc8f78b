/**
 * A partition actor as a whole, on the memory transport under the test clock: commits under
 * broker failures, at-most-once commits ahead of handling, key lanes, the mailbox's byte bound.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Clock, Data, Duration, Effect, Layer, Metric, Schedule, Schema } from "effect"
import { TestClock } from "effect/testing"
import * as Actor from "../../lib/Actor.ts"
import * as ActorSystem from "../../lib/ActorSystem.ts"
import * as ErrorPolicy from "../../lib/ErrorPolicy.ts"
import * as MemoryTransport from "../../lib/MemoryTransport.ts"
import { RecordContext } from "../../lib/RecordContext.ts"
import { createTopics, sendJson } from "../fixtures/actors.ts"
import { run } from "../fixtures/effect.ts"

const Event = Schema.Struct({ id: Schema.Number, user: Schema.String })
type Event = typeof Event.Type

class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}

const onTestClock = () => Layer.provideMerge(MemoryTransport.layer(), TestClock.layer())
/** Nothing on the test clock moves unless the test moves it: no heartbeats or sessions to expire. */
const still = { consumer: { heartbeatInterval: "1 hour", sessionTimeout: "10 hours" } } as const

/** Moves the test clock by `total` in steps of `step`, letting every fiber run between steps. */
const advance = (total: Duration.Input, step: Duration.Input = "10 millis") =>
  Effect.gen(function*() {
    const steps = Math.ceil(Duration.toMillis(Duration.fromInputUnsafe(total)) / Duration.toMillis(Duration.fromInputUnsafe(step)))
    for (let i = 0; i < steps; i++) {
      yield* Effect.yieldNow
      yield* TestClock.adjust(step)
    }
    yield* Effect.yieldNow
  })

const partitionOf = (system: ActorSystem.System) => Effect.map(system.health, (health) => health.partitions[0]!)

test("After a failed commit the committer backs off on its schedule: commit calls are bounded by the backoff, not by records", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      let handled = 0
      const actor = Actor.make({
        name: "commit-backoff",
        topics: ["events"],
        value: Event,
        // 100 ms a record: 40 records complete over 4 s, each one past the 5th asking for a commit.
        handle: () => Effect.andThen(Effect.sleep("100 millis"), Effect.sync(() => handled++)),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "1 hour", records: 5, retry: Schedule.spaced("1 second") },
        ...still,
      })
      yield* sendJson("events", Array.from({ length: 40 }, (_, id) => ({ value: { id, user: "a" } })))
      yield* broker.failNext("commit", "GROUP_AUTHORIZATION_FAILED", { times: 4 })
      const system = yield* ActorSystem.start([actor])
      yield* advance("2.6 seconds")
      // The first request (after record 5, at 0.5 s) failed, then one try a second: 1.5 s, 2.5 s.
      assert.ok(handled >= 20, `records kept completing meanwhile (${handled})`)
      assert.equal(yield* broker.calls("commit"), 3, "one try per step of the backoff")
      let partition = yield* partitionOf(system)
      assert.equal(partition.committed, 0, "nothing committed yet")
      assert.equal(partition.commitFailures, 3, "each failed try counted in the health report")
      assert.match(partition.lastError ?? "", /^Commit of events\/0@\d+ failed: /)
      yield* advance("2 seconds")
      // 3.5 s failed (the 4th), 4.5 s landed, with everything handled by then.
      partition = yield* partitionOf(system)
      assert.equal(handled, 40)
      assert.equal(yield* broker.calls("commit"), 5)
      assert.equal(partition.commitFailures, 4)
      assert.equal(partition.committed, 40, "the retry commits what completed meanwhile")
      const failures = (yield* Metric.snapshot).find((s) =>
        s.id === "partita.commit.failures" && s.attributes?.["messaging.consumer.group.name"] === "commit-backoff"
      )
      assert.equal((failures?.state as { count: number } | undefined)?.count, 4, "and as a metric")
    }),
    onTestClock(),
  ))

test("At-most-once: no record of a chunk is handled before its commit succeeded, even when the commit fails first", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const broker = yield* MemoryTransport.MemoryBroker
      const seen: Array<{ offset: number; at: number; commits: number }> = []
      const actor = Actor.make({
        name: "commit-ahead",
        topics: ["events"],
        value: Event,
        handle: () =>
          Effect.gen(function*() {
            const record = yield* RecordContext
            seen.push({ offset: record.offset, at: yield* Clock.currentTimeMillis, commits: yield* broker.calls("commit") })
          }),
        onError: { default: ErrorPolicy.halt },
        delivery: "at-most-once",
        commit: { retry: Schedule.spaced("1 second") },
        supervision: { schedule: Schedule.spaced("10 millis") },
        ...still,
      })
      yield* sendJson("events", Array.from({ length: 5 }, (_, id) => ({ value: { id, user: "a" } })))
      yield* broker.failNext("commit", "GROUP_AUTHORIZATION_FAILED", { times: 3 })
      const started = yield* Clock.currentTimeMillis
      const system = yield* ActorSystem.start([actor])
      for (let i = 0; i < 500 && seen.length < 5; i++) {
        yield* Effect.yieldNow
        yield* TestClock.adjust("10 millis")
      }
      assert.equal(seen.length, 5, "every record handled once")
      assert.ok(seen.every((s) => s.commits === 4), `the fourth commit landed before any record ran: ${JSON.stringify(seen)}`)
      assert.ok(seen[0]!.at - started >= 3000, "after three failures a second apart")
      const partition = yield* partitionOf(system)
      assert.equal(partition.committed, 5)
      assert.equal(partition.restarts, 0, "a failed commit ahead is retried, not a defect")
      assert.equal(partition.commitFailures, 3)
    }),
    onTestClock(),
  ))

test("mailbox.maxBytes bounds what a partition holds by the records' bytes, and fetching pauses at the bound", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      let handled = 0
      const actor = Actor.make({
        name: "bytes-bound",
        topics: ["events"],
        value: Event,
        handle: () => Effect.andThen(Effect.sleep("100 millis"), Effect.sync(() => handled++)),
        onError: { default: ErrorPolicy.halt },
        // Room for 1000 records by count, but for only 10 of these by bytes.
        mailbox: { capacity: 1000, maxBytes: 1000 },
        consumer: { ...still.consumer, maxBatchSize: 5 },
      })
      const values = Array.from({ length: 200 }, (_, id) => ({ value: { id, user: "x".repeat(90) } }))
      const smallest = Math.min(...values.map((record) => JSON.stringify(record.value).length))
      assert.ok(smallest >= 100)
      yield* sendJson("events", values)
      const system = yield* ActorSystem.start([actor])
      let maxHeld = 0
      let maxPinned = 0
      let sawPaused = false
      for (let i = 0; i < 1000 && handled < 200; i++) {
        const partition = (yield* system.health).partitions[0]
        if (partition !== undefined) {
          maxHeld = Math.max(maxHeld, partition.mailbox)
          maxPinned = Math.max(maxPinned, partition.position - partition.processed)
          sawPaused ||= partition.paused
        }
        yield* Effect.yieldNow
        yield* TestClock.adjust("50 millis")
      }
      assert.equal(handled, 200, "everything handled")
      const bound = Math.floor(1000 / smallest)
      assert.ok(maxHeld <= bound, `at most 1000 bytes of records held, saw ${maxHeld} records`)
      // In partition order the processor's chunk (taken from the mailbox) and the batch the
      // fetcher is offering come on top of what the mailbox holds.
      assert.ok(maxPinned <= 2 * bound + 5, `fetched and not handled: ${maxPinned} records`)
      assert.ok(sawPaused, "fetching paused while the mailbox was full")
    }),
    onTestClock(),
  ))
