/**
 * The Kafka transport: the contract suite on the real broker, then what only Kafka shows (the
 * broker's own errors, heartbeats while a batch waits, revocation held until acknowledged).
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import {
  Cause,
  Clock,
  ConfigProvider,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  Option,
  Queue,
  Redacted,
  References,
  Schedule,
  type Scope,
  Stream,
} from "effect"
import { Kafka, logLevel } from "kafkajs"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import {
  type GroupEvent,
  type PartitionClaim,
  type SubscribeOptions,
  type Subscription,
  type TopicDescription,
  Transport,
} from "../lib/Transport.ts"
import { bytes, run, text } from "./fixtures/effect.ts"
import {
  COORDINATOR_LOAD_IN_PROGRESS,
  CORRUPT_MESSAGE,
  FETCH,
  groupFaults,
  HEARTBEAT,
  JOIN_GROUP,
  LEAVE_GROUP,
  UNKNOWN_MEMBER_ID,
} from "./fixtures/groupFaults.ts"
import { lossySockets } from "./fixtures/lossySockets.ts"
import { recordedSockets } from "./fixtures/recordedSockets.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"
import { transportContract } from "./transport_contract.ts"

const layer = (options?: KafkaJsTransport.Options) => KafkaJsTransport.layerFromEnv(options)

transportContract({
  name: "kafka",
  features: { transactions: true, faultInjection: false, clockDriven: false },
  layer: () => layer(),
  test: (name, body) => kafkaTest(name, () => body(), { timeoutMs: 60_000 }),
})

const it = (
  name: string,
  body: Effect.Effect<void, unknown, Transport | Scope.Scope>,
  options?: KafkaJsTransport.Options,
) => kafkaTest(`kafka transport: ${name}`, () => run(body, layer(options)), { timeoutMs: 60_000 })

const within = <A, E, R>(seconds: number, what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutOrElse(effect, {
    duration: Duration.seconds(seconds),
    orElse: () => Effect.die(new Error(`Timed out after ${seconds}s waiting for ${what}`)),
  })

const newTopic = (partitions: number) =>
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = uniqueName("kafka")
    yield* transport.createTopic({ topic, partitions })
    return topic
  })

/** Collects a subscription's events in the background; `next(tag)` waits for the next of a kind. */
const watch = (subscription: Subscription) =>
  Effect.gen(function* () {
    const seen: Array<GroupEvent> = []
    const queue = yield* Queue.unbounded<GroupEvent>()
    yield* subscription.events.pipe(
      Stream.runForEach((event) =>
        Effect.andThen(Effect.sync(() => seen.push(event)), Queue.offer(queue, event))
      ),
      Effect.forkScoped,
    )
    const next = <Tag extends GroupEvent["_tag"]>(
      tag: Tag,
    ): Effect.Effect<Extract<GroupEvent, { _tag: Tag }>> =>
      Effect.flatMap(Queue.take(queue), (event) =>
        event._tag === tag ? Effect.succeed(event as Extract<GroupEvent, { _tag: Tag }>) : next(tag))
    return { seen, next }
  })

/** Pulls a claim's batches into a queue, as a member would. */
const pullInto = (claim: PartitionClaim) =>
  Effect.gen(function* () {
    const batches = yield* Queue.unbounded<ReadonlyArray<number>>()
    yield* claim.records.pipe(
      Stream.runForEach((batch) => Queue.offer(batches, batch.map((record) => record.offset))),
      Effect.forkScoped,
    )
    return batches
  })

const quickGroup = {
  sessionTimeout: "10 seconds",
  heartbeatInterval: "1 second",
  rebalanceTimeout: "20 seconds",
} as const

test("KafkaJsTransport.config reads KAFKA_ variables, the SASL password as Redacted", async () => {
  const provider = ConfigProvider.fromEnv({
    env: {
      KAFKA_BROKERS: "kafka-1:9092, kafka-2:9092,",
      KAFKA_CLIENT_ID: "billing",
      KAFKA_SSL: "true",
      KAFKA_SASL_MECHANISM: "scram-sha-512",
      KAFKA_SASL_USERNAME: "partita",
      KAFKA_SASL_PASSWORD: "s3cret",
    },
  })
  const options = await Effect.runPromise(KafkaJsTransport.config.parse(provider))
  assert.deepEqual(options.brokers, ["kafka-1:9092", "kafka-2:9092"])
  assert.equal(options.clientId, "billing")
  assert.equal(options.ssl, true)
  const sasl = options.sasl as KafkaJsTransport.SaslCredentials
  assert.equal(sasl.mechanism, "scram-sha-512")
  assert.equal(sasl.username, "partita")
  assert.ok(Redacted.isRedacted(sasl.password))
  assert.equal(Redacted.value(sasl.password), "s3cret")
  assert.ok(!String(sasl.password).includes("s3cret"), "the password does not print")

  const withoutPassword = ConfigProvider.fromEnv({
    env: { KAFKA_BROKERS: "kafka-1:9092", KAFKA_SASL_MECHANISM: "plain", KAFKA_SASL_USERNAME: "partita" },
  })
  const exit = await Effect.runPromiseExit(KafkaJsTransport.config.parse(withoutPassword))
  assert.equal(exit._tag, "Failure", "a SASL mechanism needs a password")
  const minimal = await Effect.runPromise(
    KafkaJsTransport.config.parse(ConfigProvider.fromEnv({ env: { KAFKA_BROKERS: "127.0.0.1:9092" } })),
  )
  assert.deepEqual(minimal, { brokers: ["127.0.0.1:9092"] })
})

it(
  "creating an existing topic fails with the broker's TOPIC_ALREADY_EXISTS, not retriable",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    const error = yield* Effect.flip(transport.createTopic({ topic, partitions: 1 }))
    assert.equal(error.code, "TOPIC_ALREADY_EXISTS")
    assert.equal(error.retriable, false)
    assert.equal(error.operation, "createTopic")
    const invalid = yield* Effect.flip(transport.createTopic({ topic: "not a valid name!", partitions: 1 }))
    assert.equal(invalid.code, "INVALID_TOPIC_EXCEPTION")
    assert.equal(invalid.retriable, false)
  }),
)

kafkaTest(
  "kafka transport: a join the broker refuses fails subscribe with its error, and kafkajs' logs follow Effect's logger",
  () => {
    const lines: Array<string> = []
    const capture = Logger.make(({ logLevel, message }) => {
      lines.push(`${logLevel}: ${String(Array.isArray(message) ? message[0] : message)}`)
    })
    const captured = Layer.mergeAll(
      Logger.layer([capture]),
      Layer.succeed(References.MinimumLogLevel, "Warn"),
    )
    return run(
      Effect.gen(function* () {
        const transport = yield* Transport
        const topic = yield* newTopic(1)
        // The broker's group.min.session.timeout.ms is 6 seconds: kafkajs crashes, without restarting.
        const refused = yield* Effect.flip(transport.subscribe({
          group: uniqueName("g"),
          topics: [topic],
          sessionTimeout: "3 seconds",
          heartbeatInterval: "1 second",
        }))
        assert.equal(refused.code, "INVALID_SESSION_TIMEOUT")
        assert.equal(refused.retriable, false)
        const missing = yield* Effect.flip(
          transport.subscribe({ group: uniqueName("g"), topics: [uniqueName("missing")] }),
        )
        assert.equal(missing.code, "UNKNOWN_TOPIC_OR_PARTITION")
        assert.ok(lines.some((line) => line.startsWith("Error: kafkajs Consumer: Crash")), lines.join("\n"))
        assert.ok(
          !lines.some((line) => line.includes("kafkajs Connection: Response")),
          "echoes stay below Warn",
        )
      }),
      layer().pipe(Layer.provide(captured)),
    )
  },
  { timeoutMs: 60_000 },
)

it(
  "sending to a missing topic fails with UNKNOWN_TOPIC_OR_PARTITION once kafkajs' retries are spent",
  Effect.gen(function* () {
    const transport = yield* Transport
    const missing = uniqueName("missing")
    const started = yield* Clock.currentTimeMillis
    const error = yield* Effect.flip(transport.send([{ topic: missing, key: null, value: bytes("lost") }]))
    const elapsed = (yield* Clock.currentTimeMillis) - started
    assert.equal(error._tag, "TransportError")
    assert.equal(error.code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.equal(error.retriable, true, "Kafka calls it retriable: the topic may yet be created")
    assert.equal(error.operation, "send")
    assert.match(error.message, new RegExp(`"${missing}"`))
    assert.ok(elapsed < 5_000, `the short retry schedule applies (took ${elapsed} ms)`)
    const described = yield* Effect.flip(transport.describeTopic(missing))
    assert.equal(described.code, "UNKNOWN_TOPIC_OR_PARTITION")
  }),
  { retry: { retries: 2, initialRetryTime: 50, maxRetryTime: 200 } },
)

it(
  "a partition the topic does not have fails the send, and a null header value is refused before sending",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(2)
    const outOfRange = yield* Effect.flip(
      transport.send([{ topic, key: null, value: bytes("x"), partition: 5 }]),
    )
    assert.equal(outOfRange.code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.match(outOfRange.message, /Partition 5 .* does not exist \(it has 2\)/)
    const nullHeader = yield* Effect.flip(
      transport.send([{ topic, key: null, value: bytes("x"), headers: [{ key: "trace", value: null }] }]),
    )
    assert.equal(nullHeader.code, "INVALID_RECORD")
    assert.equal(nullHeader.retriable, false)
    const description = yield* transport.describeTopic(topic)
    assert.deepEqual(description.partitions.map((p) => p.highWatermark), [0, 0], "nothing was written")
  }),
)

it(
  "with acks other than all too, a too-large record refuses only its partition's batch, and the rest is written once",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = uniqueName("kafka")
    yield* transport.createTopic({ topic, partitions: 3, config: { "max.message.bytes": "4096" } })
    // No sequence numbers here to tell a written batch from a refused one on a resend: each
    // partition must go in a request of its own.
    const sent = [0, 1, 2].flatMap((partition) => [
      { topic, key: null, value: bytes(`p${partition}-a`), partition },
      partition === 1
        ? { topic, key: null, value: new Uint8Array(20_000), partition }
        : { topic, key: null, value: bytes(`p${partition}-b`), partition },
    ])
    const outcomes = yield* transport.sendEach(sent, { acks: "leader" })
    assert.deepEqual(
      outcomes.map((outcome) =>
        Exit.isSuccess(outcome) ? outcome.value.offset : Option.getOrUndefined(Cause.findErrorOption(outcome.cause))?.code
      ),
      [0, 1, "MESSAGE_TOO_LARGE", "MESSAGE_TOO_LARGE", 0, 1],
    )
    const description = yield* transport.describeTopic(topic)
    assert.deepEqual(description.partitions.map((p) => p.highWatermark), [2, 0, 2], "nothing written twice")
  }),
)

const lossy = lossySockets()

it(
  "after a send whose answer was lost, the next send is written, not dropped as its duplicate",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    const record = (value: string) => ({ topic, key: null, value: bytes(value) })
    yield* transport.send([record("first")])
    // The broker writes "lost", its answer never arrives, nor the answer to kafkajs' one retry
    // (which the broker takes for the duplicate it is).
    lossy.loseNextAnswers(2)
    const lost = yield* Effect.flip(transport.send([record("lost")]))
    assert.equal(lost._tag, "TransportError")
    // kafkajs gave "lost"'s sequence number back: on the same producer id, a batch of the same
    // size would get it again and the broker would answer it with "lost"'s offset, unwritten.
    const [next] = yield* transport.send([record("next")])
    assert.equal(next?.offset, 2, "written after the record whose answer was lost")
    const description = yield* transport.describeTopic(topic)
    assert.equal(description.partitions[0]?.highWatermark, 3)
  }),
  { socketFactory: lossy.socketFactory, retry: { retries: 1, initialRetryTime: 50 } },
)

it(
  "send returns each record's offset and describeTopic the log bounds, for every acks setting",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(2)
    const all = yield* transport.send([
      { topic, key: null, value: bytes("a"), partition: 1 },
      { topic, key: null, value: bytes("b"), partition: 0 },
      { topic, key: null, value: bytes("c"), partition: 1 },
      { topic, key: null, value: bytes("d"), partition: 1, timestamp: 1_000 },
    ])
    assert.deepEqual(all.map((m) => [m.partition, m.offset]), [[1, 0], [0, 0], [1, 1], [1, 2]])
    assert.equal(all[3]?.timestamp, 1_000)
    const [leader] = yield* transport.send([{ topic, key: null, value: bytes("e"), partition: 0 }], {
      acks: "leader",
    })
    assert.deepEqual([leader?.partition, leader?.offset], [0, 1])
    const [none] = yield* transport.send([{ topic, key: null, value: bytes("f"), partition: 0 }], {
      acks: "none",
    })
    assert.deepEqual([none?.partition, none?.offset], [0, -1], "without acks the broker tells no offset")
    // acks=none returns before the broker wrote: wait for the record to land.
    const landed = (description: TopicDescription) => description.partitions[0]?.highWatermark === 3
    yield* within(
      10,
      "the unacknowledged record",
      Effect.repeat(transport.describeTopic(topic), {
        until: landed,
        schedule: Schedule.spaced("50 millis"),
      }),
    )
    const description = yield* transport.describeTopic(topic)
    assert.deepEqual(description.partitions, [
      { partition: 0, logStartOffset: 0, highWatermark: 3 },
      { partition: 1, logStartOffset: 0, highWatermark: 3 },
    ])
  }),
)

it(
  "heartbeats keep flowing while a batch waits unpulled for longer than the session timeout",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    yield* transport.send([{ topic, key: null, value: bytes("waiting") }])
    const subscription = yield* transport.subscribe({
      group: uniqueName("g"),
      topics: [topic],
      sessionTimeout: "6 seconds",
      heartbeatInterval: "1 second",
      rebalanceTimeout: "10 seconds",
    })
    const memberId = subscription.memberId
    const events = yield* watch(subscription)
    const assigned = yield* within(30, "the assignment", events.next("Assigned"))
    const [claim] = assigned.claims
    assert.ok(claim !== undefined)
    // kafkajs fetches the batch at once and hands it to eachBatch, where it waits for a pull:
    // kafkajs' own fetch loop (and the heartbeats it sends) is blocked all that time.
    yield* Effect.sleep("10 seconds")
    assert.deepEqual(
      events.seen.map((event) => event._tag),
      ["Assigned"],
      "no rebalance while the batch waited",
    )
    assert.equal(subscription.memberId, memberId, "still the same member")
    const batches = yield* pullInto(claim)
    assert.deepEqual(yield* within(5, "the waiting batch", Queue.take(batches)), [0])
    // A member the coordinator had dropped would learn it at kafkajs' next heartbeat, and rejoin.
    yield* Effect.sleep("2 seconds")
    assert.deepEqual(events.seen.map((event) => event._tag), ["Assigned"], "no rejoin after the pull")
  }),
)

it(
  "a revoked member keeps its partitions from the next member until it acknowledges",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(2)
    const group = uniqueName("g")
    yield* transport.send(
      [0, 0, 1, 1].map((partition) => ({ topic, key: null, value: bytes("x"), partition })),
    )
    const first = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const firstEvents = yield* watch(first)
    const assigned = yield* within(30, "the first member's assignment", firstEvents.next("Assigned"))
    assert.equal(assigned.claims.length, 2)
    // Nothing is pulled: both batches wait in kafkajs' eachBatch when the second member joins.
    yield* Effect.sleep("1 second")
    const second = yield* Effect.forkScoped(Effect.gen(function* () {
      const subscription = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
      const events = yield* watch(subscription)
      const assignment = yield* events.next("Assigned")
      return { assignment, at: yield* Clock.currentTimeMillis }
    }))
    const revoked = yield* within(30, "the revocation", firstEvents.next("Revoked"))
    assert.deepEqual(revoked.partitions, [{ topic, partition: 0 }, { topic, partition: 1 }])
    // Finish, commit, and only then acknowledge, slowly.
    yield* first.commit([{ topic, partition: 0, offset: 1 }, { topic, partition: 1, offset: 1 }])
    yield* Effect.sleep("3 seconds")
    const acknowledgedAt = yield* Clock.currentTimeMillis
    yield* revoked.acknowledge
    const { assignment, at } = yield* within(30, "the second member's assignment", Fiber.join(second))
    assert.ok(
      at >= acknowledgedAt,
      `the second member got partitions ${acknowledgedAt - at} ms before the acknowledgement`,
    )
    assert.equal(assignment.claims.length, 1, "round-robin gives each member one partition")
    assert.deepEqual(
      assignment.claims.map((claim) => claim.startOffset),
      [1],
      "it starts at the commit made before acknowledging",
    )
    // Once acknowledged, the partitions are gone: committing them again is refused.
    const [moved] = assignment.claims
    const refused = yield* Effect.flip(first.commit([{ topic, partition: moved!.partition, offset: 2 }]))
    assert.equal(refused.retriable, false)
  }),
)

/** Joins `group` in the background; the fiber ends with its first assignment and when it came. */
const joinLater = (group: string, topic: string) =>
  Effect.gen(function* () {
    const transport = yield* Transport
    return yield* Effect.forkScoped(Effect.gen(function* () {
      const subscription = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
      const events = yield* watch(subscription)
      const assignment = yield* events.next("Assigned")
      return { subscription, events, assignment, at: yield* Clock.currentTimeMillis }
    }))
  })

/** Pulls every claim of an assignment until each handed over one batch. */
const pullAll = (claims: ReadonlyArray<PartitionClaim>) =>
  Effect.gen(function* () {
    const pulled = yield* Effect.forEach(claims, pullInto)
    yield* Effect.forEach(pulled, (batches) => within(30, "a batch", Queue.take(batches)), { discard: true })
  })

it(
  "a leading member with nothing in flight commits after the revocation and keeps its partitions until it acknowledges",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(2)
    const group = uniqueName("g")
    yield* transport.send([0, 1].map((partition) => ({ topic, key: null, value: bytes("x"), partition })))
    // The first member leads the group (it joined first) and pulls everything: no batch waits in
    // kafkajs' eachBatch when the second member joins, so kafkajs' own heartbeat finds the
    // rebalance and rejoins at once; its JoinGroup must still wait for the acknowledgement.
    const first = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const firstEvents = yield* watch(first)
    const assigned = yield* within(30, "the first member's assignment", firstEvents.next("Assigned"))
    yield* pullAll(assigned.claims)
    const second = yield* joinLater(group, topic)
    const revoked = yield* within(30, "the revocation", firstEvents.next("Revoked"))
    // Long enough for the join to have completed, had this member rejoined at once.
    yield* Effect.sleep("2 seconds")
    yield* first.commit([{ topic, partition: 0, offset: 1 }, { topic, partition: 1, offset: 1 }])
    const acknowledgedAt = yield* Clock.currentTimeMillis
    yield* revoked.acknowledge
    const { assignment, at } = yield* within(30, "the second member's assignment", Fiber.join(second))
    assert.ok(
      at >= acknowledgedAt,
      `the second member got partitions ${acknowledgedAt - at} ms before the acknowledgement`,
    )
    assert.deepEqual(
      assignment.claims.map((claim) => claim.startOffset),
      [1],
      "it starts at the commit made before acknowledging: nothing is redone",
    )
  }),
)

it(
  "a held rejoin keeps the membership past the session timeout: the commit made then still lands",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(2)
    const group = uniqueName("g")
    yield* transport.send([0, 1].map((partition) => ({ topic, key: null, value: bytes("x"), partition })))
    const first = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const firstEvents = yield* watch(first)
    const assigned = yield* within(30, "the first member's assignment", firstEvents.next("Assigned"))
    yield* pullAll(assigned.claims)
    const memberId = first.memberId
    const second = yield* joinLater(group, topic)
    const revoked = yield* within(30, "the revocation", firstEvents.next("Revoked"))
    // Longer than the session timeout (10 s), shorter than the rebalance timeout (20 s).
    yield* Effect.sleep("12 seconds")
    yield* first.commit([{ topic, partition: 0, offset: 1 }, { topic, partition: 1, offset: 1 }])
    yield* revoked.acknowledge
    const { assignment } = yield* within(30, "the second member's assignment", Fiber.join(second))
    yield* within(30, "the first member's new assignment", firstEvents.next("Assigned"))
    assert.equal(first.memberId, memberId, "the coordinator kept the member")
    assert.deepEqual(assignment.claims.map((claim) => claim.startOffset), [1])
  }),
)

it(
  "a following member with nothing in flight commits after the revocation and keeps its partitions until it acknowledges",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(4)
    const group = uniqueName("g")
    const everyPartition = [0, 1, 2, 3]
    yield* transport.send(everyPartition.map((partition) => ({ topic, key: null, value: bytes("x"), partition })))
    const leader = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const leaderEvents = yield* watch(leader)
    yield* within(30, "the leader's first assignment", leaderEvents.next("Assigned"))
    const followerJoin = yield* joinLater(group, topic)
    yield* within(30, "the leader's revocation", leaderEvents.next("Revoked")).pipe(
      Effect.flatMap((revoked) => revoked.acknowledge),
    )
    const leaderAssigned = yield* within(30, "the leader's second assignment", leaderEvents.next("Assigned"))
    const follower = yield* within(30, "the follower's assignment", Fiber.join(followerJoin))
    assert.equal(follower.assignment.claims.length, 2)
    yield* pullAll(leaderAssigned.claims)
    yield* pullAll(follower.assignment.claims)
    const commitAll = (subscription: Subscription, claims: ReadonlyArray<PartitionClaim>) =>
      subscription.commit(claims.map(({ partition }) => ({ topic, partition, offset: 1 })))

    // A third member joins: both members are idle, so kafkajs' own heartbeats find the rebalance.
    const third = yield* joinLater(group, topic)
    const leaderRevoked = yield* within(30, "the leader's revocation", leaderEvents.next("Revoked"))
    yield* commitAll(leader, leaderAssigned.claims)
    yield* leaderRevoked.acknowledge
    const followerRevoked = yield* within(30, "the follower's revocation", follower.events.next("Revoked"))
    // The leader has acknowledged: without a hold, the follower's partitions would move now.
    yield* Effect.sleep("2 seconds")
    yield* commitAll(follower.subscription, follower.assignment.claims)
    const acknowledgedAt = yield* Clock.currentTimeMillis
    yield* followerRevoked.acknowledge
    const { assignment, at } = yield* within(30, "the third member's assignment", Fiber.join(third))
    assert.ok(
      at >= acknowledgedAt,
      `the third member got partitions ${acknowledgedAt - at} ms before the follower acknowledged`,
    )
    assert.ok(assignment.claims.length > 0, "round-robin gives the third member a partition")
    assert.deepEqual(
      assignment.claims.map((claim) => claim.startOffset),
      assignment.claims.map(() => 1),
      "it starts at the commits made before acknowledging: nothing is redone",
    )
  }),
)

it(
  "a member that never acknowledges a revocation is removed from the group",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(2)
    const group = uniqueName("g")
    const options: SubscribeOptions = {
      group,
      topics: [topic],
      sessionTimeout: "10 seconds",
      heartbeatInterval: "1 second",
      rebalanceTimeout: "4 seconds",
    }
    const first = yield* transport.subscribe(options)
    const firstTags: Array<string> = []
    const firstEnd = yield* Effect.forkScoped(
      Effect.flip(Stream.runForEach(first.events, (event) =>
        Effect.sync(() => {
          firstTags.push(event._tag)
        }))),
    )
    yield* within(
      30,
      "the first assignment",
      Effect.repeat(Effect.sync(() => firstTags.length), {
        until: (count) => count > 0,
        schedule: Schedule.spaced("20 millis"),
      }),
    )
    // The second member acknowledges what it is asked to; the first never does.
    const holdsBoth = yield* Effect.forkScoped(Effect.gen(function* () {
      const second = yield* transport.subscribe(options)
      const queue = yield* Queue.unbounded<GroupEvent>()
      yield* Effect.forkScoped(Stream.runForEach(second.events, (event) => Queue.offer(queue, event)))
      while (true) {
        const event = yield* Queue.take(queue)
        if (event._tag === "Revoked") yield* event.acknowledge
        else if (event.claims.length === 2) return event
      }
    }))
    const error = yield* within(30, "the first member's removal", Fiber.join(firstEnd))
    assert.equal(error.code, "UNKNOWN_MEMBER_ID")
    assert.equal(error.retriable, false)
    assert.deepEqual(firstTags, ["Assigned", "Revoked"])
    const assigned = yield* within(30, "the second member holding both partitions", Fiber.join(holdsBoth))
    assert.deepEqual(assigned.claims.map((claim) => claim.partition).sort(), [0, 1])
  }),
)

it(
  "seek makes the claim's next batch start at the offset, and commit is refused for partitions not held",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    yield* transport.send(Array.from({ length: 5 }, (_, i) => ({ topic, key: null, value: bytes(`${i}`) })))
    const subscription = yield* transport.subscribe({
      group: uniqueName("g"),
      topics: [topic],
      ...quickGroup,
    })
    const events = yield* watch(subscription)
    const { claims: [claim] } = yield* within(30, "the assignment", events.next("Assigned"))
    assert.equal(claim?.startOffset, 0)
    const batches = yield* pullInto(claim!)
    assert.deepEqual(yield* within(30, "the first batch", Queue.take(batches)), [0, 1, 2, 3, 4])
    yield* subscription.seek({ topic, partition: 0 }, 2)
    assert.deepEqual(yield* within(30, "the batch after the seek", Queue.take(batches)), [2, 3, 4])
    const refused = yield* Effect.flip(
      subscription.commit([{ topic: uniqueName("other"), partition: 0, offset: 1 }]),
    )
    assert.equal(refused.code, "ILLEGAL_GENERATION")
    assert.equal(refused.retriable, false)
  }),
)

it(
  "a fetched batch is handed over in chunks of maxBatchSize, held back while paused, each record once",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    yield* transport.send(Array.from({ length: 5 }, (_, i) => ({ topic, key: null, value: bytes(`${i}`) })))
    const subscription = yield* transport.subscribe({
      group: uniqueName("g"),
      topics: [topic],
      maxBatchSize: 2,
      ...quickGroup,
    })
    const events = yield* watch(subscription)
    const { claims: [claim] } = yield* within(30, "the assignment", events.next("Assigned"))
    // The batch waits in the claim, unpulled; while paused none of it is delivered.
    yield* Effect.sleep("1 second")
    yield* subscription.pause([{ topic, partition: 0 }])
    const batches = yield* pullInto(claim!)
    yield* Effect.sleep("1 second")
    assert.equal(yield* Queue.size(batches), 0, "nothing arrives while paused")
    yield* subscription.resume([{ topic, partition: 0 }])
    const received: Array<ReadonlyArray<number>> = []
    for (let i = 0; i < 3; i++) received.push(yield* within(30, "a chunk", Queue.take(batches)))
    assert.deepEqual(received, [[0, 1], [2, 3], [4]])
    yield* transport.send([{ topic, key: null, value: bytes("5") }])
    assert.deepEqual(yield* within(30, "the next record", Queue.take(batches)), [5], "each record once")
  }),
)

it(
  "a second transactional producer with the same id fences the first",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    const id = uniqueName("tx")
    const first = yield* transport.transactional(id)
    const open = yield* first.begin
    yield* open.send([{ topic, key: null, value: bytes("fenced") }])
    const second = yield* transport.transactional(id)
    const error = yield* Effect.flip(
      Effect.andThen(open.send([{ topic, key: null, value: bytes("late") }]), open.commit),
    )
    assert.equal(error.retriable, false)
    assert.ok(["PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH"].includes(error.code), `fenced with ${error.code}`)
    yield* open.abort
    const next = yield* second.begin
    yield* next.send([{ topic, key: null, value: bytes("kept") }])
    yield* next.commit
    const subscription = yield* transport.subscribe({
      group: uniqueName("g"),
      topics: [topic],
      ...quickGroup,
    })
    const events = yield* watch(subscription)
    const { claims: [claim] } = yield* within(30, "the assignment", events.next("Assigned"))
    const [batch] = yield* within(
      30,
      "the committed record",
      claim!.records.pipe(Stream.take(1), Stream.runCollect),
    )
    assert.deepEqual(
      batch?.map((record) => text(record.value)),
      ["kept"],
      "the fenced transaction was aborted",
    )
  }),
)

kafkaTest("kafka transport: no connection outlives its scope, not even one that a call interrupted there opens again", async (brokers) => {
  const sockets = recordedSockets()
  const deleter = new Kafka({ clientId: "topic-deleter", brokers: [...brokers], logLevel: logLevel.NOTHING }).admin()
  await deleter.connect()
  try {
    await run(
      Effect.gen(function* () {
        const transport = yield* Transport
        const topic = yield* newTopic(1)
        // The topic is deleted while describeTopic reads its offsets (ListOffsets, API key 2):
        // kafkajs answers UNKNOWN_TOPIC_OR_PARTITION by reading the metadata again and retrying,
        // by itself, interrupted or not; after its client disconnected, it connects again.
        const held = sockets.holdNext(2)
        const describing = yield* Effect.forkChild(transport.describeTopic(topic))
        const send = yield* Effect.promise(() => held)
        yield* Effect.promise(() => deleter.deleteTopics({ topics: [topic] }))
        yield* Fiber.interrupt(describing)
        send()
      }),
      layer({ socketFactory: sockets.socketFactory, retry: { retries: 2, initialRetryTime: 300 } }),
    )
  } finally {
    await deleter.disconnect()
  }
  // kafkajs is done with the call (its retries) by now, and the transport with what it reopened.
  await new Promise((resolve) => setTimeout(resolve, 3_000))
  assert.ok(sockets.count > 0)
  assert.deepEqual(sockets.open(), [], "every socket of the transport was closed with its scope")
})

const faults = groupFaults()

it(
  "a member whose rejoin failed on a coordinator still loading joins again: kafkajs alone would fetch its old partitions for ever, out of the group",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    const group = uniqueName("g")
    yield* transport.send([{ topic, key: null, value: bytes("before"), partition: 0 }])
    const subscription = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const events = yield* watch(subscription)
    const first = yield* within(30, "the assignment", events.next("Assigned"))
    const before = yield* pullInto(first.claims[0]!)
    assert.deepEqual(yield* within(30, "the first batch", Queue.take(before)), [0])
    // What a broker thawed after a freeze past the session answers (F5): the coordinator no longer
    // knows the member, and the JoinGroup that follows finds it still loading the group.
    faults.arm(JOIN_GROUP, COORDINATOR_LOAD_IN_PROGRESS)
    faults.arm(HEARTBEAT, UNKNOWN_MEMBER_ID)
    const revoked = yield* within(30, "the revocation", events.next("Revoked"))
    yield* revoked.acknowledge
    // kafkajs, its rejoin failed, goes back to fetching partition 0 with no member id.
    yield* transport.send([{ topic, key: null, value: bytes("after"), partition: 0 }])
    const again = yield* within(40, "an assignment after the failed rejoin", events.next("Assigned"))
    assert.equal(faults.rewritten(COORDINATOR_LOAD_IN_PROGRESS), 1, "the rejoin failed once")
    assert.deepEqual(again.claims.map((claim) => [claim.partition, claim.startOffset]), [[0, 0]], "nothing was committed")
    const after = yield* pullInto(again.claims[0]!)
    assert.deepEqual(yield* within(30, "the records, again", Queue.take(after)), [0, 1])
  }),
  { socketFactory: faults.socketFactory },
)

it(
  "a member whose rejoin failed and that has nothing to fetch is out of the group after a session timeout: its events fail",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    const group = uniqueName("g")
    const subscription = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const seen = yield* Queue.unbounded<GroupEvent>()
    const ended = yield* subscription.events.pipe(
      Stream.runForEach((event) => Queue.offer(seen, event)),
      Effect.exit,
      Effect.forkScoped,
    )
    const next = <Tag extends GroupEvent["_tag"]>(tag: Tag): Effect.Effect<Extract<GroupEvent, { _tag: Tag }>> =>
      Effect.flatMap(Queue.take(seen), (event) =>
        event._tag === tag ? Effect.succeed(event as Extract<GroupEvent, { _tag: Tag }>) : next(tag))
    yield* within(30, "the assignment", next("Assigned"))
    faults.arm(JOIN_GROUP, COORDINATOR_LOAD_IN_PROGRESS)
    faults.arm(HEARTBEAT, UNKNOWN_MEMBER_ID)
    const revoked = yield* within(30, "the revocation", next("Revoked"))
    yield* revoked.acknowledge
    // No record comes: kafkajs' fetches for partition 0, without a member id, come back empty.
    const exit = yield* within(40, "the member to be out of the group", Fiber.join(ended))
    assert.ok(Exit.isFailure(exit), "the events fail")
    const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
    assert.equal(error?.code, "UNKNOWN_MEMBER_ID")
    assert.match(error?.message ?? "", /failed to join again/)
  }),
  { socketFactory: faults.socketFactory },
)

const stopping = groupFaults()

it(
  "a commit made while kafkajs stops its consumer after a crash is refused, not reported done unsent",
  Effect.gen(function* () {
    const transport = yield* Transport
    const topic = yield* newTopic(1)
    const group = uniqueName("g")
    yield* transport.send([0, 1, 2].map(() => ({ topic, key: null, value: bytes("x"), partition: 0 })))
    const subscription = yield* transport.subscribe({ group, topics: [topic], ...quickGroup })
    const events = yield* watch(subscription)
    const { claims: [claim] } = yield* within(30, "the assignment", events.next("Assigned"))
    const batches = yield* pullInto(claim!)
    assert.deepEqual(yield* within(30, "the records", Queue.take(batches)), [0, 1, 2])
    // kafkajs crashes on its next fetches (one retry here) and, stopping, leaves the group; the
    // broker's answer to that is held: its runner is stopped, its CRASH event not emitted yet.
    const leaves = stopping.requests(LEAVE_GROUP)
    stopping.hold(LEAVE_GROUP)
    stopping.arm(FETCH, CORRUPT_MESSAGE, CORRUPT_MESSAGE)
    yield* within(
      30,
      "kafkajs leaving the group",
      Effect.repeat(Effect.sync(() => stopping.requests(LEAVE_GROUP) > leaves), {
        until: (left) => left,
        schedule: Schedule.spaced("20 millis"),
      }),
    )
    const commit = yield* Effect.exit(subscription.commit([{ topic, partition: 0, offset: 3 }]))
    stopping.release()
    assert.ok(Exit.isFailure(commit), "the commit is refused")
    const error = Option.getOrUndefined(Cause.findErrorOption(commit.cause))
    assert.equal(error?.retriable, true, error?.message)
    assert.deepEqual(yield* subscription.committed([{ topic, partition: 0 }]), [], "nothing was committed")
    // kafkajs restarts the consumer: the member gives its partition up and gets it again. (Left
    // to the scope's close instead, that restart would start a consumer after its disconnect.)
    const revoked = yield* within(30, "the revocation after the crash", events.next("Revoked"))
    yield* revoked.acknowledge
    const again = yield* within(30, "the assignment after the restart", events.next("Assigned"))
    assert.deepEqual(again.claims.map((c) => c.startOffset), [0], "it starts again where the group committed")
  }),
  { socketFactory: stopping.socketFactory, retry: { retries: 1, initialRetryTime: 50 } },
)
