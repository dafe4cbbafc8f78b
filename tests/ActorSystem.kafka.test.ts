/**
 * The actor system on the real broker: the integration paths of tests/ActorSystem.test.ts, and
 * what only a real, persistent broker can show: an app process sent SIGTERM or SIGKILL.
 */
import assert from "node:assert/strict"
import { createHash } from "node:crypto"
import { Data, type Duration, Effect, Fiber, type Layer, Schedule, Schema } from "effect"
import { Kafka, logLevel } from "kafkajs"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { RecordContext } from "../lib/RecordContext.ts"
import { Transport } from "../lib/Transport.ts"
import { createUniqueTopics, eventually, headerText, readAll, sendJson } from "./fixtures/actors.ts"
import { type Child, startChild } from "./fixtures/child.ts"
import { run, text } from "./fixtures/effect.ts"
import { reportOpenHandles } from "./fixtures/openHandles.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

// Under Node this file's process once outlived its tests by about 10 minutes in a full run: say what holds it.
reportOpenHandles("tests/ActorSystem.kafka.test.ts")

const Event = Schema.Struct({ id: Schema.Number })
type Event = typeof Event.Type
class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}

type KafkaLayer = (brokers: ReadonlyArray<string>) => Layer.Layer<Transport, unknown>

/** The default for real clusters; the child app (tests/fixtures/actor_app.ts) runs on it too. */
const kafka: KafkaLayer = (brokers) => KafkaTransport.layer({ brokers: [...brokers], clientId: "actor-tests" })

const transports: ReadonlyArray<readonly [name: string, layer: KafkaLayer]> = [
  ["KafkaTransport", kafka],
  ["KafkaJsTransport", (brokers) => KafkaJsTransport.layer({ brokers: [...brokers], clientId: "actor-tests" })],
]

/** A test of the system in this process, run on both Kafka transports. */
const onBoth = (
  name: string,
  body: (brokers: ReadonlyArray<string>, kafka: KafkaLayer) => Promise<unknown>,
  options?: { readonly timeoutMs?: number },
) => {
  for (const [transport, layer] of transports) kafkaTest(`${name} (${transport})`, (brokers) => body(brokers, layer).then(() => undefined), options)
}
const consumer = { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" } as const

const createTopics = createUniqueTopics

onBoth("ActorSystem on Kafka handles every record in partition order and commits to the end", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createTopics(["actors-order", 3])
      const seen: Array<{ partition: number; offset: number }> = []
      const actor = Actor.make({
        name: "order",
        group: uniqueName("order"),
        topics: [topic!],
        value: Event,
        handle: () => Effect.map(RecordContext, (record) => void seen.push({ partition: record.partition, offset: record.offset })),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "100 millis" },
        consumer,
      })
      yield* sendJson(topic!, Array.from({ length: 300 }, (_, id) => ({ key: `k${id % 11}`, value: { id } })))
      const system = yield* ActorSystem.start([actor])
      yield* eventually(60, "300 records handled", () => seen.length >= 300)
      for (let partition = 0; partition < 3; partition++) {
        const offsets = seen.filter((s) => s.partition === partition).map((s) => s.offset)
        assert.deepEqual(offsets, offsets.map((_, i) => i), `partition ${partition} in order, each once`)
      }
      let lags: Array<number | undefined> = []
      while (!(lags.length === 3 && lags.every((lag) => lag === 0))) {
        yield* Effect.sleep("100 millis")
        lags = (yield* system.health).partitions.map((p) => p.lag)
      }
    }),
    kafka(brokers),
  ))

onBoth("ActorSystem on Kafka dead-letters a poison record with its headers while other partitions flow", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const [topic, dlq] = yield* createTopics(["actors-poison", 2], ["actors-poison-dlq", 1])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "poison",
        group: uniqueName("poison"),
        topics: [topic!],
        value: Event,
        handle: (event: Event) =>
          event.id === 7 ? Effect.fail(new StoreError({ reason: "no" })) : Effect.sync(() => handled.push(event.id)),
        onError: {
          StoreError: ErrorPolicy.retry(Schedule.spaced("20 millis"), { times: 2, then: "dead-letter" }),
          DecodeError: ErrorPolicy.deadLetter,
          HandlerTimeout: ErrorPolicy.halt,
        },
        deadLetter: { topic: dlq! },
        consumer,
      })
      yield* sendJson(topic!, [
        ...Array.from({ length: 10 }, (_, id) => ({ value: { id }, partition: 0 })),
        ...Array.from({ length: 10 }, (_, i) => ({ value: { id: 100 + i }, partition: 1 })),
      ])
      yield* ActorSystem.start([actor])
      yield* eventually(60, "19 good records", () => handled.length === 19)
      const [letter] = yield* readAll(dlq!, 1)
      assert.deepEqual(JSON.parse(text(letter!.value)!), { id: 7 })
      assert.equal(headerText(letter!.headers, "partita.dlq.source.topic"), topic)
      assert.equal(headerText(letter!.headers, "partita.dlq.source.offset"), "7")
      assert.equal(headerText(letter!.headers, "partita.dlq.attempts"), "3")
      assert.equal(headerText(letter!.headers, "partita.dlq.error.tag"), "StoreError")
    }),
    kafka(brokers),
  ))

/** An actor whose record with id 0 fails with `StoreError` and is dead-lettered; the rest are handled. */
const poisonedAt0 = (topic: string, handled: Array<number>, deadLetter: Actor.DeadLetterOptions, stallAfter: Duration.Input = "1 minute") =>
  Actor.make({
    name: "poisoned-at-0",
    group: uniqueName("poisoned"),
    topics: [topic],
    value: Event,
    handle: (event: Event) =>
      event.id === 0 ? Effect.fail(new StoreError({ reason: "poison" })) : Effect.sync(() => handled.push(event.id)),
    onError: { StoreError: ErrorPolicy.deadLetter, DecodeError: ErrorPolicy.deadLetter, HandlerTimeout: ErrorPolicy.halt },
    deadLetter,
    commit: { interval: "100 millis" },
    stallAfter,
    consumer,
  })
/** A record just under a 4096-byte `max.message.bytes`, which its letter's headers take over. */
const nearLimit = { id: 0, pad: "x".repeat(3900) }
const sha256Hex = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")
const committedTo = (system: ActorSystem.System, offset: number) =>
  Effect.gen(function*() {
    let committed = -1
    for (let i = 0; i < 300 && committed < offset; i++) {
      yield* Effect.sleep("100 millis")
      committed = (yield* system.health).partitions[0]?.committed ?? -1
    }
    assert.equal(committed, offset, `committed to ${offset}`)
  })

onBoth("On Kafka, a letter over the dead-letter topic's max.message.bytes is written truncated, with the original's size and SHA-256, and the partition commits past it", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const [topic] = yield* createTopics(["actors-large", 1])
      const dlq = uniqueName("actors-large-dlq")
      yield* transport.createTopic({ topic: dlq, partitions: 1, config: { "max.message.bytes": "4096" } })
      const handled: Array<number> = []
      yield* sendJson(topic!, [nearLimit, { id: 1 }, { id: 2 }].map((value) => ({ value })))
      const poison = new TextEncoder().encode(JSON.stringify(nearLimit))
      const system = yield* ActorSystem.start([poisonedAt0(topic!, handled, { topic: dlq })])
      yield* eventually(60, "the records after the poison one", () => handled.length === 2)
      yield* committedTo(system, 3)
      const [letter] = yield* readAll(dlq, 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.value"), "truncated")
      assert.equal(headerText(letter!.headers, "partita.dlq.original.size"), String(poison.length))
      assert.equal(headerText(letter!.headers, "partita.dlq.original.sha256"), sha256Hex(poison))
      assert.equal(headerText(letter!.headers, "partita.dlq.source.offset"), "0")
      const value = letter!.value!
      assert.ok(value.length > 3000 && value.length < poison.length, `most of the value kept: ${value.length} bytes`)
      assert.deepEqual(value, poison.subarray(0, value.length))
      assert.ok((yield* system.health).healthy)
    }),
    kafka(brokers),
  ))

onBoth("On Kafka, a missing dead-letter topic fails the start naming it; deadLetter.create creates it, and its letters fit at once", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const [topic] = yield* createTopics(["actors-create", 1])
      const dlq = uniqueName("actors-create-dlq")
      const missing = yield* Effect.flip(ActorSystem.start([poisonedAt0(topic!, [], { topic: dlq })]))
      assert.ok(missing instanceof ActorSystem.DeadLetterTopicMissing)
      assert.match(missing.message, new RegExp(`Dead-letter topic "${dlq}" of actor "poisoned-at-0" does not exist: create it, or set deadLetter.create`))
      const handled: Array<number> = []
      yield* sendJson(topic!, [nearLimit, { id: 1 }].map((value) => ({ value })))
      const system = yield* ActorSystem.start([
        poisonedAt0(topic!, handled, { topic: dlq, create: { partitions: 2, config: { "max.message.bytes": "4096" } } }),
      ])
      assert.equal((yield* transport.describeTopic(dlq)).partitions.length, 2)
      yield* eventually(60, "the record after the poison one", () => handled.length === 1)
      yield* committedTo(system, 2)
      const [letter] = yield* readAll(dlq, 1)
      assert.equal(headerText(letter!.headers, "partita.dlq.value"), "truncated", "cut to the limit it was created with")
    }),
    kafka(brokers),
  ))

onBoth("On Kafka, a letter the broker refuses for good blocks the partition: unhealthy with the reason, nothing committed past it, and a shutdown still finishes", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const [topic] = yield* createTopics(["actors-blocked", 1])
      const dlq = uniqueName("actors-blocked-dlq")
      yield* transport.createTopic({ topic: dlq, partitions: 1, config: { "max.message.bytes": "4096" } })
      const handled: Array<number> = []
      yield* sendJson(topic!, [nearLimit, { id: 1 }].map((value) => ({ value })))
      const actor = poisonedAt0(topic!, handled, { topic: dlq, tooLarge: "block" })
      const started = Date.now()
      yield* Effect.scoped(Effect.gen(function*() {
        const system = yield* ActorSystem.start([actor])
        let partition: ActorSystem.PartitionHealth | undefined
        for (let i = 0; i < 300 && partition?.state !== "blocked"; i++) {
          yield* Effect.sleep("100 millis")
          partition = (yield* system.health).partitions[0]
        }
        assert.equal(partition?.state, "blocked")
        assert.equal(partition?.healthy, false)
        assert.ok(partition?.paused)
        assert.match(partition?.lastError ?? "", /failed with MESSAGE_TOO_LARGE/)
        yield* Effect.sleep("1 second")
        const later = (yield* system.health).partitions[0]!
        assert.equal(later.committed, 0, "nothing committed past the record")
        assert.equal(later.state, "blocked")
        assert.deepEqual(handled, [])
      }))
      assert.ok(Date.now() - started < 20_000, "the shutdown did not wait out the 30 s blocked retry")
      const committed = yield* Effect.promise(() => committedOffsets(brokers, actor.group, topic!))
      assert.ok((committed.get(0) ?? -1) <= 0, `nothing committed past the record: ${committed.get(0)}`)
    }),
    kafka(brokers),
  ))

onBoth("On Kafka, a dead-letter topic deleted after the start pauses the partition, reports it unhealthy with the reason, and commits nothing past the record", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const [topic, dlq] = yield* createTopics(["actors-deleted", 1], ["actors-deleted-dlq", 1])
      const handled: Array<number> = []
      const system = yield* ActorSystem.start([poisonedAt0(topic!, handled, { topic: dlq! }, "2 seconds")])
      yield* Effect.promise(async () => {
        const admin = new Kafka({ clientId: "topic-deleter", brokers: [...brokers], logLevel: logLevel.NOTHING }).admin()
        await admin.connect()
        try {
          await admin.deleteTopics({ topics: [dlq!] })
        } finally {
          await admin.disconnect()
        }
      })
      yield* sendJson(topic!, [{ value: { id: 0 } }, { value: { id: 1 } }])
      let partition: ActorSystem.PartitionHealth | undefined
      for (let i = 0; i < 600 && !/UNKNOWN_TOPIC_OR_PARTITION/.test(partition?.lastError ?? ""); i++) {
        yield* Effect.sleep("100 millis")
        partition = (yield* system.health).partitions[0]
      }
      assert.match(partition?.lastError ?? "", new RegExp(`Dead-letter write of ${topic}/0@0 to "${dlq}" failed with UNKNOWN_TOPIC_OR_PARTITION`))
      assert.ok(partition?.paused)
      // Unhealthy once the stall watchdog's 2 s without progress have passed.
      for (let i = 0; i < 50 && partition?.healthy !== false; i++) {
        yield* Effect.sleep("100 millis")
        partition = (yield* system.health).partitions[0]
      }
      assert.equal(partition?.healthy, false, "unhealthy: no progress while records wait")
      assert.equal(partition?.committed, 0, "nothing committed past the record")
      assert.match(partition?.lastError ?? "", /UNKNOWN_TOPIC_OR_PARTITION/)
      assert.deepEqual(handled, [])
    }),
    kafka(brokers),
  ))

onBoth("On Kafka, a second system joining moves partitions with no record lost and none handled by both at once", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createTopics(["actors-move", 4])
      const group = uniqueName("move")
      const handledBy = new Map<number, Array<string>>()
      const busy = new Map<number, string>()
      const overlaps: Array<string> = []
      const actorFor = (system: string) =>
        Actor.make({
          name: `mover-${system}`,
          group,
          topics: [topic!],
          value: Event,
          handle: (event: Event) =>
            Effect.gen(function*() {
              const record = yield* RecordContext
              const other = busy.get(record.partition)
              if (other !== undefined && other !== system) overlaps.push(`${record.partition}: ${other} and ${system}`)
              busy.set(record.partition, system)
              yield* Effect.sleep("2 millis")
              busy.delete(record.partition)
              handledBy.set(event.id, [...(handledBy.get(event.id) ?? []), system])
            }),
          onError: { default: ErrorPolicy.halt },
          commit: { interval: "100 millis" },
          consumer,
        })
      let sent = 0
      const produce = (count: number) =>
        Effect.suspend(() => {
          const from = sent
          sent += count
          return sendJson(topic!, Array.from({ length: count }, (_, i) => ({ key: `k${from + i}`, value: { id: from + i } })))
        })
      yield* produce(200)
      yield* ActorSystem.start([actorFor("a")])
      yield* eventually(60, "a to start", () => handledBy.size > 20)
      const b = yield* Effect.scoped(Effect.gen(function*() {
        const b = yield* ActorSystem.start([actorFor("b")])
        for (let i = 0; i < 10; i++) {
          yield* produce(20)
          yield* Effect.sleep("100 millis")
        }
        // Records keep coming until b handles some: a handover takes up to a heartbeat
        // interval of each member (the broker's 5 s on the KIP-848 protocol).
        const bHandled = () => [...handledBy.values()].some((s) => s.includes("b"))
        const feeding = yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.uninterruptible(produce(5)), Effect.sleep("200 millis"))))
        yield* eventually(60, "b to hold partitions", bHandled)
        yield* Fiber.interrupt(feeding)
        yield* eventually(60, "every record handled", () => handledBy.size === sent)
        return yield* b.health
      }))
      yield* produce(50)
      yield* eventually(60, "the records after b left", () => handledBy.size === sent)
      assert.deepEqual(overlaps, [], "no partition handled by both systems at once")
      assert.ok(b.partitions.length > 0, "b was given partitions")
      assert.deepEqual([...handledBy.keys()].sort((x, y) => x - y), Array.from({ length: sent }, (_, i) => i), "no record lost")
      const twice = [...handledBy].filter(([, systems]) => systems.length > 1)
      assert.deepEqual(twice, [], "a graceful rebalance commits before handing over: nothing handled twice")
    }),
    kafka(brokers),
  ), { timeoutMs: 180_000 })

/** The group's committed offset per partition, read with a plain admin client (no group join). */
const committedOffsets = async (brokers: ReadonlyArray<string>, group: string, topic: string) => {
  const admin = new Kafka({ clientId: "offsets-reader", brokers: [...brokers], logLevel: logLevel.NOTHING }).admin()
  await admin.connect()
  try {
    const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
    return new Map(offsets!.partitions.map((p) => [p.partition, Number(p.offset)]))
  } finally {
    await admin.disconnect()
  }
}

const handledOffsets = (lines: ReadonlyArray<string>) =>
  lines.filter((line) => line.startsWith("handled ")).map((line) => {
    const [, partition, offset] = line.split(" ")
    return `${partition}/${offset}`
  })

const appFile = new URL("./fixtures/actor_app.ts", import.meta.url).pathname

/** Resolves once `condition` holds; rejects if the child exits first. */
const until = (child: Child, condition: () => boolean) =>
  new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (condition()) {
        clearInterval(timer)
        resolve()
      }
    }, 50)
    void child.exited.then((code) => (clearInterval(timer), reject(new Error(`the app exited ${code}: ${child.stderr()}`))))
  })

kafkaTest("An actor app sent SIGTERM commits, exits 0 within its deadline, and on restart handles nothing twice", async (brokers) => {
  const topic = uniqueName("sigterm")
  const group = uniqueName("sigterm")
  await run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic, partitions: 2 })
      yield* sendJson(topic, Array.from({ length: 1000 }, (_, id) => ({ key: `k${id}`, value: { id } })))
    }),
    kafka(brokers),
  )
  // A small mailbox; the prefetched records are left to the restart.
  const env = { KAFKA_BROKERS: brokers.join(","), TOPIC: topic, GROUP: group, HANDLE_MILLIS: "10", MAILBOX: "50" }
  const first = startChild(appFile, env)
  try {
    await first.waitForLine(/^handled /)
    await new Promise((resolve) => setTimeout(resolve, 500))
    const signalled = Date.now()
    first.kill("SIGTERM")
    const code = await first.exited
    assert.equal(code, 0, `exit code; stderr:\n${first.stderr().slice(-2000)}`)
    assert.ok(Date.now() - signalled < 15_000, "exited within its shutdown deadline")
  } finally {
    await first.stop()
  }
  const handledFirst = handledOffsets(first.lines)
  assert.ok(handledFirst.length > 0 && handledFirst.length < 1000, `the first run stopped mid-way (${handledFirst.length})`)
  const committed = await committedOffsets(brokers, group, topic)
  for (const partition of [0, 1]) {
    const last = Math.max(-1, ...handledFirst.filter((h) => h.startsWith(`${partition}/`)).map((h) => Number(h.split("/")[1])))
    assert.equal(committed.get(partition), last + 1, `partition ${partition}: everything handled was committed`)
  }

  const second = startChild(appFile, env)
  try {
    await until(second, () => handledFirst.length + handledOffsets(second.lines).length >= 1000)
    second.kill("SIGTERM")
    assert.equal(await second.exited, 0)
  } finally {
    await second.stop()
  }
  const handledSecond = handledOffsets(second.lines)
  const twice = handledSecond.filter((h) => handledFirst.includes(h))
  assert.deepEqual(twice, [], "nothing handled twice across the restart")
  assert.equal(new Set([...handledFirst, ...handledSecond]).size, 1000, "nothing lost")
}, { timeoutMs: 180_000 })

kafkaTest("SIGKILL mid-stream loses nothing, and only uncommitted records are handled again", async (brokers) => {
  const topic = uniqueName("sigkill")
  const group = uniqueName("sigkill")
  await run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic, partitions: 2 })
      yield* sendJson(topic, Array.from({ length: 400 }, (_, id) => ({ key: `k${id}`, value: { id } })))
    }),
    kafka(brokers),
  )
  const env = { KAFKA_BROKERS: brokers.join(","), TOPIC: topic, GROUP: group, HANDLE_MILLIS: "10" }
  const first = startChild(appFile, env)
  try {
    await first.waitForLine(/^handled /)
    await new Promise((resolve) => setTimeout(resolve, 800))
    first.kill("SIGKILL")
    assert.equal(await first.exited, "SIGKILL")
  } finally {
    await first.stop()
  }
  const handledFirst = handledOffsets(first.lines)
  const committed = await committedOffsets(brokers, group, topic)

  const second = startChild(appFile, env)
  try {
    await until(second, () => new Set([...handledFirst, ...handledOffsets(second.lines)]).size >= 400)
    second.kill("SIGTERM")
    assert.equal(await second.exited, 0)
  } finally {
    await second.stop()
  }
  const handledSecond = handledOffsets(second.lines)
  assert.equal(new Set([...handledFirst, ...handledSecond]).size, 400, "nothing lost")
  for (const again of handledSecond.filter((h) => handledFirst.includes(h))) {
    const [partition, offset] = again.split("/").map(Number)
    const from = committed.get(partition!) ?? 0
    assert.ok(offset! >= from, `${again} was handled again though committed (partition ${partition} committed at ${from})`)
  }
  for (const partition of [0, 1]) {
    const firstAgain = handledSecond.find((h) => h.startsWith(`${partition}/`))
    if (firstAgain !== undefined) {
      assert.equal(Number(firstAgain.split("/")[1]), committed.get(partition) ?? 0, `partition ${partition} resumed at its committed offset`)
    }
  }
}, { timeoutMs: 180_000 })

onBoth("A handler running longer than the session timeout keeps the group membership", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createTopics(["actors-long", 1])
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "long",
        group: uniqueName("long"),
        topics: [topic!],
        value: Event,
        // Well past the 6 s session timeout: only heartbeats that do not wait on handlers keep it.
        handle: (event: Event) => Effect.andThen(Effect.sleep(event.id === 0 ? "9 seconds" : "1 millis"), Effect.sync(() => handled.push(event.id))),
        onError: { default: ErrorPolicy.halt },
        consumer,
      })
      yield* sendJson(topic!, [0, 1, 2].map((id) => ({ value: { id } })))
      const system = yield* ActorSystem.start([actor])
      yield* eventually(60, "all three records", () => handled.length === 3)
      assert.deepEqual(handled, [0, 1, 2], "each once: no rebalance handed the slow record to a new member")
      const [partition] = (yield* system.health).partitions
      assert.equal(partition?.processed, 3, "the same partition actor kept the partition throughout")
    }),
    kafka(brokers),
  ), { timeoutMs: 120_000 })

kafkaTest("A shutdown past its deadline interrupts, commits what completed and exits non-zero", async (brokers) => {
  const topic = uniqueName("deadline")
  const group = uniqueName("deadline")
  await run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic, partitions: 1 })
      yield* sendJson(topic, Array.from({ length: 20 }, (_, id) => ({ value: { id } })))
    }),
    kafka(brokers),
  )
  const env = {
    KAFKA_BROKERS: brokers.join(","),
    TOPIC: topic,
    GROUP: group,
    HANDLE_MILLIS: "2000",
    SHUTDOWN_DEADLINE: "500 millis",
  }
  const app = startChild(appFile, env)
  try {
    await app.waitForLine(/^handled 0 0$/)
    const signalled = Date.now()
    app.kill("SIGTERM")
    const code = await app.exited
    assert.equal(code, 1, `exit code; stderr:\n${app.stderr().slice(-2000)}`)
    assert.ok(Date.now() - signalled < 5_000, "the deadline cut the drain short")
    assert.match(app.stderr(), /ShutdownDeadlineExceeded|did not finish within/)
    assert.match(app.stderr(), new RegExp(`child-app: ${topic}/0 was still handling records and was interrupted`), "it says what was left")
  } finally {
    await app.stop()
  }
  const handled = handledOffsets(app.lines)
  const committed = await committedOffsets(brokers, group, topic)
  assert.equal(committed.get(0), handled.length, "what completed was committed, nothing more")
}, { timeoutMs: 120_000 })

onBoth("On Kafka, a member that did not acknowledge a revocation in time joins again, health shows the gap, and nothing is lost", (brokers, kafka) =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createTopics(["actors-rejoin", 2])
      const group = uniqueName("rejoin")
      const handledBy = new Map<number, Array<string>>()
      const busy = new Map<number, string>()
      const overlaps: Array<string> = []
      const slow = new Set<number>()
      const actorFor = (system: string) =>
        Actor.make({
          name: `rejoin-${system}`,
          group,
          topics: [topic!],
          value: Event,
          handle: (event: Event) =>
            Effect.flatMap(RecordContext, (record) =>
              Effect.gen(function*() {
                const other = busy.get(record.partition)
                if (other !== undefined && other !== system) overlaps.push(`${record.partition}: ${other} and ${system}`)
                busy.set(record.partition, system)
                // a's first record of each partition outlasts the 3 s the rebalance waits for
                // its acknowledgement, whichever partitions the rebalance moves (all of them
                // when it is eager, some when it is incremental), and the up to 5 s a KIP-848
                // member takes to hear of the revocation (the broker's heartbeat interval).
                if (system === "a" && event.id <= 1 && !slow.has(event.id)) {
                  slow.add(event.id)
                  yield* Effect.sleep("15 seconds")
                }
                handledBy.set(event.id, [...(handledBy.get(event.id) ?? []), system])
              }).pipe(Effect.ensuring(Effect.sync(() => {
                if (busy.get(record.partition) === system) busy.delete(record.partition)
              })))),
          onError: { default: ErrorPolicy.halt },
          commit: { interval: "100 millis" },
          // Longer than the rebalance allows: the revocation is not acknowledged in time.
          drainDeadline: "30 seconds",
          consumer: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "3 seconds" },
        })
      yield* sendJson(topic!, [
        { value: { id: 0 }, partition: 0 },
        { value: { id: 1 }, partition: 1 },
        ...Array.from({ length: 18 }, (_, i) => ({ value: { id: 2 + i }, partition: (i % 2) as 0 | 1 })),
      ])
      const a = yield* ActorSystem.start([actorFor("a")])
      const samples: Array<ActorSystem.HealthReport> = []
      yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.map(a.health, (h) => void samples.push(h)), Effect.sleep("50 millis"))))
      yield* eventually(60, "a to hold the slow records", () => slow.size === 2)
      yield* ActorSystem.start([actorFor("b")])
      yield* eventually(60, "a to lose its membership", () => samples.some((h) => !h.members[0]!.member))
      const gap = samples.find((h) => !h.members[0]!.member)!
      assert.match(gap.members[0]!.lastError ?? "", /did not acknowledge a revocation/)
      assert.equal(gap.ready, false, "not ready while out of the group")
      assert.equal(gap.partitions.length, 0, "its partition actors are gone")
      yield* eventually(60, "a to join again and hold a partition", () => {
        const last = samples[samples.length - 1]!
        return last.members[0]!.member && last.partitions.length > 0
      })
      yield* sendJson(topic!, Array.from({ length: 20 }, (_, i) => ({ value: { id: 20 + i }, partition: (i % 2) as 0 | 1 })))
      yield* eventually(60, "every record handled", () => handledBy.size === 40)
      assert.deepEqual([...handledBy.keys()].sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => i), "no record lost")
      assert.deepEqual(overlaps, [], "no partition handled by both members at once")
      assert.ok(handledBy.get(0)?.length === 1 && handledBy.get(1)?.length === 1, "the slow records were handled once, by whoever held them after the loss")
      const health = yield* a.health
      assert.ok(health.healthy && health.ready, JSON.stringify(health.members))
    }),
    kafka(brokers),
  ), { timeoutMs: 180_000 })

kafkaTest("On Kafka, a consumer that crashed without restart joins again once it can, with the gap and the failed rejoins in health", (brokers) =>
  run(
    Effect.gen(function*() {
      const topic = uniqueName("actors-crash")
      const admin = new Kafka({ clientId: "crash-admin", brokers: [...brokers], logLevel: logLevel.NOTHING }).admin()
      yield* Effect.acquireRelease(Effect.promise(() => admin.connect()), () => Effect.promise(() => admin.disconnect()))
      const transport = yield* Transport
      yield* transport.createTopic({ topic, partitions: 1 })
      const handled: Array<number> = []
      const actor = Actor.make({
        name: "crasher",
        group: uniqueName("crash"),
        topics: [topic],
        value: Event,
        handle: (event: Event) => Effect.sync(() => handled.push(event.id)),
        onError: { default: ErrorPolicy.halt },
        commit: { interval: "100 millis" },
        consumer,
      })
      const system = yield* ActorSystem.start([actor], { rejoinSchedule: Schedule.spaced("1 second"), maxRejoins: 60 })
      const samples: Array<ActorSystem.HealthReport> = []
      yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.map(system.health, (h) => void samples.push(h)), Effect.sleep("50 millis"))))
      yield* eventually(60, "the first assignment", () => samples.some((h) => h.ready))

      // Deleting the topic makes kafkajs' fetches fail until its retries run out; the transport
      // was told not to restart (restartOnFailure), so the consumer crashes for good.
      yield* Effect.promise(() => admin.deleteTopics({ topics: [topic] }))
      yield* eventually(60, "the crash to end the membership", () => samples.some((h) => !h.members[0]!.member))
      assert.match(samples.find((h) => !h.members[0]!.member)!.members[0]!.lastError ?? "", /stopped/)
      yield* eventually(60, "a rejoin refused while the topic is missing", () => samples.some((h) => h.members[0]!.rejoins > 0))

      // Once the topic is back, the next rejoin holds; the records sent to it are handled.
      yield* Effect.promise(async () => {
        for (let tries = 0; ; tries++) {
          const created = await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }).catch(() => false)
          if (created) return
          if (tries > 100) throw new Error(`could not create ${topic} again`)
          await new Promise((resolve) => setTimeout(resolve, 200))
        }
      })
      yield* sendJson(topic, Array.from({ length: 10 }, (_, id) => ({ value: { id } })))
      yield* eventually(90, "the records on the recreated topic", () => handled.length >= 10)
      assert.deepEqual(handled, Array.from({ length: 10 }, (_, i) => i))
      const last = yield* system.health
      assert.ok(last.members[0]!.member && last.members[0]!.rejoins === 0, JSON.stringify(last.members))
    }),
    KafkaJsTransport.layer({
      brokers: [...brokers],
      clientId: "actor-tests",
      retry: { retries: 1, initialRetryTime: 100, restartOnFailure: () => Promise.resolve(false) },
    }),
  ), { timeoutMs: 180_000 })

kafkaTest("An actor app sent SIGTERM with the default mailbox finishes only what it started and exits 0 at once", async (brokers) => {
  const topic = uniqueName("sigterm-prefetch")
  const group = uniqueName("sigterm-prefetch")
  await run(
    Effect.gen(function*() {
      const transport = yield* Transport
      yield* transport.createTopic({ topic, partitions: 2 })
      yield* sendJson(topic, Array.from({ length: 1000 }, (_, id) => ({ key: `k${id}`, value: { id } })))
    }),
    kafka(brokers),
  )
  // 40 ms a record and up to 1000 prefetched per partition: draining them would take 20 s.
  const env = { KAFKA_BROKERS: brokers.join(","), TOPIC: topic, GROUP: group, HANDLE_MILLIS: "40", SHUTDOWN_DEADLINE: "10 seconds" }
  const first = startChild(appFile, env)
  let took = 0
  try {
    await first.waitForLine(/^handled /)
    await new Promise((resolve) => setTimeout(resolve, 500))
    const signalled = Date.now()
    first.kill("SIGTERM")
    const code = await first.exited
    took = Date.now() - signalled
    assert.equal(code, 0, `exit code; stderr:\n${first.stderr().slice(-2000)}`)
  } finally {
    await first.stop()
  }
  assert.ok(took < 3_000, `exited ${took} ms after SIGTERM: the prefetched records were left`)
  const handledFirst = handledOffsets(first.lines)
  assert.ok(handledFirst.length < 200, `${handledFirst.length} handled before the exit`)
  const committed = await committedOffsets(brokers, group, topic)
  for (const partition of [0, 1]) {
    const last = Math.max(-1, ...handledFirst.filter((h) => h.startsWith(`${partition}/`)).map((h) => Number(h.split("/")[1])))
    assert.equal(committed.get(partition) ?? 0, last + 1, `partition ${partition}: everything handled was committed`)
  }
  const second = startChild(appFile, { ...env, HANDLE_MILLIS: "1" })
  try {
    await until(second, () => handledFirst.length + handledOffsets(second.lines).length >= 1000)
    second.kill("SIGTERM")
    assert.equal(await second.exited, 0)
  } finally {
    await second.stop()
  }
  const handledSecond = handledOffsets(second.lines)
  assert.deepEqual(handledSecond.filter((h) => handledFirst.includes(h)), [], "nothing handled twice across the restart")
  assert.equal(new Set([...handledFirst, ...handledSecond]).size, 1000, "nothing lost")
}, { timeoutMs: 180_000 })
