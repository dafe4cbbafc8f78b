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
import * as Ordering from "../../lib/Ordering.ts"
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

/**
 * 60 records on one partition, keys k0..k4 in turn, except `stuck` at offset 3 and at `laterStuck`.
 * The first try of offset 3 fails and is retried after 10 seconds; everything else succeeds.
 */
const stuckKeyRun = (ordering: Ordering.Ordering, laterStuck: ReadonlyArray<number>) =>
  Effect.gen(function*() {
    yield* createTopics(["events", 1])
    const handled: Array<number> = []
    const actor = Actor.make({
      name: `lanes-${ordering._tag}`,
      topics: ["events"],
      value: Event,
      handle: (event: Event) =>
        Effect.gen(function*() {
          const record = yield* RecordContext
          if (event.id === 3 && record.attempt === 1) return yield* Effect.fail(new StoreError({ reason: "busy" }))
          handled.push(event.id)
        }),
      onError: { StoreError: ErrorPolicy.retry(Schedule.spaced("10 seconds"), { then: "halt" }), default: ErrorPolicy.halt },
      ordering,
      // Chunks of 10 records: the stuck record's chunk is the first of six.
      mailbox: { capacity: 10 },
      commit: { interval: "100 millis" },
      ...still,
    })
    const stuck = new Set([3, ...laterStuck])
    yield* sendJson(
      "events",
      Array.from({ length: 60 }, (_, id) => {
        const user = stuck.has(id) ? "stuck" : `k${id % 5}`
        return { key: user, value: { id, user } }
      }),
    )
    const system = yield* ActorSystem.start([actor])
    let maxHeld = 0
    const watch = Effect.map(system.health, (health) => {
      maxHeld = Math.max(maxHeld, health.partitions[0]?.mailbox ?? 0)
    })
    for (let i = 0; i < 200; i++) {
      yield* watch
      yield* Effect.yieldNow
      yield* TestClock.adjust("10 millis")
    }
    const during = { handled: [...handled], partition: yield* partitionOf(system), maxHeld }
    for (let i = 0; i < 200 && handled.length < 60; i++) {
      yield* watch
      yield* Effect.yieldNow
      yield* TestClock.adjust("100 millis")
    }
    yield* advance("200 millis")
    return { during, after: { handled: [...handled], partition: yield* partitionOf(system), maxHeld } }
  })

const others = (from: number, to: number, stuck: ReadonlyArray<number>) =>
  Array.from({ length: to - from }, (_, i) => from + i).filter((id) => id !== 3 && !stuck.includes(id))

test("Ordering.byKey: a key in a retry backoff holds only its own lane; other keys' later chunks complete and commit up to it", () =>
  run(
    Effect.gen(function*() {
      const { during, after } = yield* stuckKeyRun(Ordering.byKey({ concurrency: 4 }), [40])
      assert.deepEqual(
        [...during.handled].sort((a, b) => a - b),
        others(0, 60, [40]),
        "every other key's records, across all six chunks, during the stuck record's backoff",
      )
      assert.ok(!during.handled.includes(40), "the stuck key's later record waits behind it")
      assert.equal(during.partition.committed, 3, "committed up to the stuck record, not past it")
      assert.ok(during.maxHeld <= 10, `the mailbox bound holds, saw ${during.maxHeld}`)
      assert.equal(after.handled.length, 60)
      assert.ok(after.handled.indexOf(3) < after.handled.indexOf(40), "the stuck key in order")
      assert.equal(after.partition.committed, 60)
    }),
    onTestClock(),
  ))

test("Ordering.unordered: a record in a retry backoff does not hold back later chunks; commits stop at it", () =>
  run(
    Effect.gen(function*() {
      const { during, after } = yield* stuckKeyRun(Ordering.unordered({ concurrency: 4 }), [])
      assert.deepEqual([...during.handled].sort((a, b) => a - b), others(0, 60, []))
      assert.equal(during.partition.committed, 3, "committed up to the stuck record, not past it")
      assert.ok(during.maxHeld <= 10, `the mailbox bound holds, saw ${during.maxHeld}`)
      assert.equal(after.handled.length, 60)
      assert.equal(after.partition.committed, 60)
    }),
    onTestClock(),
  ))

test("Ordering.byKey: records waiting behind a stuck key count against the mailbox, which bounds how far the others get", () =>
  run(
    Effect.gen(function*() {
      // The stuck key's records 3 and 20..28 fill the 10 places while 3 waits: nothing past 29 enters.
      const later = Array.from({ length: 9 }, (_, i) => 20 + i)
      const { during, after } = yield* stuckKeyRun(Ordering.byKey({ concurrency: 4 }), later)
      assert.ok(during.maxHeld <= 10, `the mailbox bound holds, saw ${during.maxHeld}`)
      assert.equal(during.partition.mailbox, 10, "full of the stuck key's records")
      assert.deepEqual([...during.handled].sort((a, b) => a - b), others(0, 20, later), "the others up to the bound")
      assert.equal(during.partition.committed, 3)
      assert.equal(after.handled.length, 60)
      assert.deepEqual(after.handled.filter((id) => id === 3 || later.includes(id)), [3, ...later], "the stuck key in order")
      assert.equal(after.partition.committed, 60)
    }),
    onTestClock(),
  ))

test("Ordering.byKey: a defect in one lane restarts the actor, which finishes every record once, in key order", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["events", 1])
      const completed: Array<Event> = []
      let exploded = false
      const actor = Actor.make({
        name: "lanes-restart",
        topics: ["events"],
        value: Event,
        handle: (event: Event) =>
          Effect.gen(function*() {
            yield* Effect.sleep(`${1 + (event.id % 3)} millis`)
            if (event.id === 17 && !exploded) {
              exploded = true
              return yield* Effect.die(new Error("boom"))
            }
            completed.push(event)
          }),
        onError: { default: ErrorPolicy.halt },
        ordering: Ordering.byKey({ concurrency: 3 }),
        mailbox: { capacity: 10 },
        supervision: { schedule: Schedule.spaced("10 millis") },
        ...still,
      })
      yield* sendJson("events", Array.from({ length: 60 }, (_, id) => ({ key: `k${id % 4}`, value: { id, user: `k${id % 4}` } })))
      const system = yield* ActorSystem.start([actor])
      for (let i = 0; i < 300 && completed.length < 60; i++) {
        yield* Effect.yieldNow
        yield* TestClock.adjust("1 millis")
      }
      assert.deepEqual(completed.map((event) => event.id).sort((a, b) => a - b), Array.from({ length: 60 }, (_, id) => id), "each once")
      for (let key = 0; key < 4; key++) {
        const ids = completed.filter((event) => event.user === `k${key}`).map((event) => event.id)
        assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `k${key} in order`)
      }
      yield* advance("100 millis")
      const partition = yield* partitionOf(system)
      assert.equal(partition.restarts, 1)
      assert.equal(partition.committed, 60)
    }),
    onTestClock(),
  ))

/**
 * The test clock, counting the sleeps pending on it: a timer per idle partition (a commit
 * interval ticking for nothing, say) shows as a count that grows with the partitions.
 */
const countingSleeps = Effect.map(Clock.Clock, (inner) => {
  const counter = { pending: 0 }
  // The test clock's own methods stay (`TestClock.adjust` finds them on the clock it is given).
  const clock: Clock.Clock = {
    ...inner,
    sleep: (duration) =>
      Effect.suspend(() => {
        counter.pending++
        return Effect.ensuring(inner.sleep(duration), Effect.sync(() => void counter.pending--))
      }),
  }
  return { clock, counter }
})

test("An idle partition actor holds no timer: the sleeps pending do not grow with idle partitions, and a record still commits", () =>
  run(
    Effect.gen(function*() {
      const { clock, counter } = yield* countingSleeps
      /** Sleeps pending once `partitions` idle partition actors run, at-least-once with a commit interval. */
      const pendingWith = (partitions: number) =>
        Effect.scoped(Effect.gen(function*() {
          const topic = `idle-${partitions}`
          yield* createTopics([topic, partitions])
          const actor = Actor.make({
            name: topic,
            topics: [topic],
            value: Event,
            handle: () => Effect.void,
            onError: { default: ErrorPolicy.halt },
            commit: { interval: "1 second" },
            ...still,
          })
          const system = yield* ActorSystem.start([actor])
          yield* advance("100 millis")
          const health = yield* system.health
          assert.equal(health.partitions.length, partitions)
          assert.ok(health.partitions.every((partition) => partition.state === "running"))
          const pending = counter.pending
          // Idle is not stuck: a record is handled and committed, and the partition idles again.
          yield* sendJson(topic, [{ value: { id: 1, user: "a" }, partition: 0 }])
          yield* advance("2 seconds")
          const partition = (yield* system.health).partitions.find((p) => p.partition === 0)!
          assert.equal(partition.processed, 1)
          assert.equal(partition.committed, 1)
          assert.equal(counter.pending, pending, "back to idle, no timer left behind")
          return pending
        })).pipe(Effect.provideService(Clock.Clock, clock))
      const one = yield* pendingWith(1)
      const many = yield* pendingWith(16)
      assert.equal(many, one, `sleeps pending with 16 idle partitions (${many}) as with 1 (${one})`)
    }),
    onTestClock(),
  ))
