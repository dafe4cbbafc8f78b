/**
 * The broker pool: metadata, leader and coordinator routing, bootstrap, and the cache's rules,
 * against the real broker at KAFKA_BROKERS and, for what a real broker does not do on demand
 * (an answer with an older leader epoch, counting FindCoordinator requests), a scripted fake
 * broker. Every test closes its pool and checks that its connections closed with it.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Exit, Fiber, Redacted, Schedule } from "effect"
import { TestClock } from "effect/testing"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import type { Connection } from "../../../lib/internal/kafka/connection.ts"
import { ApiVersions } from "../../../lib/internal/kafka/protocol/ApiVersions.ts"
import { CreatePartitions } from "../../../lib/internal/kafka/protocol/CreatePartitions.ts"
import { CreateTopics } from "../../../lib/internal/kafka/protocol/CreateTopics.ts"
import { DeleteTopics } from "../../../lib/internal/kafka/protocol/DeleteTopics.ts"
import { FindCoordinator } from "../../../lib/internal/kafka/protocol/FindCoordinator.ts"
import { Metadata, type MetadataResponse } from "../../../lib/internal/kafka/protocol/Metadata.ts"
import { zeroUuid } from "../../../lib/internal/kafka/protocol/wire.ts"
import { fakeBroker, responseFrame } from "../../fixtures/brokerProxy.ts"
import { flip, run, succeeded } from "../../fixtures/kafkaEffects.ts"
import { kafkaSecuredTest, kafkaTest, uniqueName } from "../../fixtures/services.ts"

/** Creates a topic through the pool (the admin module has its own tests) and deletes it with the scope. */
const createTopic = (brokers: Brokers.Brokers, name: string, partitions: number) =>
  Effect.gen(function* () {
    const connection = yield* brokers.any
    const answer = yield* connection.request(CreateTopics, {
      topics: [{ name, numPartitions: partitions, replicationFactor: 1, assignments: [], configs: [] }],
      timeoutMs: 10_000,
      validateOnly: false,
    })
    assert.equal(answer.topics[0]!.errorCode, 0, `created ${name}: ${answer.topics[0]!.errorMessage}`)
    yield* Effect.addFinalizer(() =>
      Effect.ignore(Effect.flatMap(brokers.any, (c) => c.request(DeleteTopics, { topics: [{ name, topicId: zeroUuid }], topicNames: [name], timeoutMs: 10_000 })))
    )
  })

/** Metadata of a topic just created may lag on the broker: ask until every partition has a leader. */
const untilLed = (brokers: Brokers.Brokers, topic: string, partitions: number) =>
  Effect.gen(function* () {
    for (;;) {
      const exit = yield* Effect.exit(brokers.topics([topic]))
      if (Exit.isSuccess(exit)) {
        const meta = exit.value.get(topic)!
        if (meta.partitions.length === partitions && meta.partitions.every((p) => p.leaderId >= 0)) return meta
      }
      yield* brokers.invalidate(topic)
      yield* Effect.sleep("100 millis")
    }
  }).pipe(Effect.timeout("20 seconds"))

kafkaTest("Brokers: the metadata of a new topic lists every partition with a leader among the cluster's brokers, and leaderFor routes to it", async (bootstrap) => {
  const opened: Array<Connection> = []
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    const topic = uniqueName("brokers-meta")
    yield* createTopic(brokers, topic, 3)
    const meta = yield* untilLed(brokers, topic, 3)
    assert.equal(meta.name, topic)
    assert.equal(meta.topicId.length, 22, "a topic id (Metadata v10+)")
    assert.equal(meta.isInternal, false)
    assert.deepEqual(meta.partitions.map((p) => p.partition), [0, 1, 2])
    for (const p of meta.partitions) {
      assert.ok(brokers.nodes().has(p.leaderId), `the leader ${p.leaderId} is a known broker`)
      assert.ok(p.leaderEpoch >= 0, "a leader epoch (Metadata v7+)")
      assert.deepEqual(p.replicas, [p.leaderId])
      const leader = yield* brokers.leaderFor({ topic, partition: p.partition })
      assert.deepEqual(leader, { nodeId: p.leaderId, leaderEpoch: p.leaderEpoch })
      const connection = yield* brokers.connection(leader.nodeId)
      const node = brokers.nodes().get(leader.nodeId)!
      assert.equal(connection.broker, `${node.host}:${node.port}`)
      assert.equal(yield* brokers.connection(leader.nodeId), connection, "one connection per broker")
      opened.push(connection)
    }
    const missing = yield* flip(brokers.leaderFor({ topic, partition: 3 }))
    assert.equal(missing.code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.equal(missing.partition, 3)
    assert.match(missing.message, /has 3 partitions/)
  }))
  succeeded(exit)
  assert.ok(opened.length > 0 && opened.every((c) => !c.isOpen()), "the pool's connections closed with its scope")
})

kafkaTest("Brokers: a topic that does not exist is a typed UNKNOWN_TOPIC_OR_PARTITION naming it, and is never auto-created", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    const topic = uniqueName("brokers-absent")
    const error = yield* flip(brokers.topics([topic]))
    assert.equal(error.code, "UNKNOWN_TOPIC_OR_PARTITION")
    assert.equal(error.topic, topic)
    assert.match(error.message, new RegExp(`Topic "${topic}" does not exist`))
    assert.equal((yield* flip(brokers.leaderFor({ topic, partition: 0 }))).code, "UNKNOWN_TOPIC_OR_PARTITION")
    // allowAutoTopicCreation false: asking did not create it.
    const connection = yield* brokers.any
    const answer = yield* connection.request(Metadata, { topics: [{ name: topic }], allowAutoTopicCreation: false })
    assert.equal(answer.topics[0]!.errorCode, 3)
  }))
  succeeded(exit)
})

kafkaTest("Brokers: cached metadata answers until invalidated; then it is fetched again (partitions added are seen)", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    const topic = uniqueName("brokers-invalidate")
    yield* createTopic(brokers, topic, 1)
    yield* untilLed(brokers, topic, 1)
    const connection = yield* brokers.any
    const added = yield* connection.request(CreatePartitions, {
      topics: [{ name: topic, count: 3, assignments: null }],
      timeoutMs: 10_000,
      validateOnly: false,
    })
    assert.equal(added.results[0]!.errorCode, 0)
    // The broker knows 3 now; the cache still says 1.
    assert.equal((yield* brokers.topics([topic])).get(topic)!.partitions.length, 1)
    yield* brokers.invalidate(topic)
    const meta = yield* untilLed(brokers, topic, 3)
    assert.equal(meta.partitions.length, 3)
  }))
  succeeded(exit)
})

kafkaTest("Brokers: a partition beyond the cached count makes leaderFor fetch again before it gives up", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    const topic = uniqueName("brokers-grow")
    yield* createTopic(brokers, topic, 1)
    yield* untilLed(brokers, topic, 1)
    const connection = yield* brokers.any
    yield* connection.request(CreatePartitions, {
      topics: [{ name: topic, count: 2, assignments: null }],
      timeoutMs: 10_000,
      validateOnly: false,
    })
    const leader = yield* brokers.leaderFor({ topic, partition: 1 })
    assert.ok(brokers.nodes().has(leader.nodeId))
  }))
  succeeded(exit)
})

kafkaTest("Brokers: a bootstrap address that is down is skipped; all of them down is a retriable error naming each", async ([broker]) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap: ["127.0.0.1:1", broker!] })
    const connection = yield* brokers.any
    assert.ok(connection.isOpen())
    yield* brokers.topics([])
    assert.ok(brokers.nodes().size >= 1, "the cluster's brokers are known")

    const down = yield* Brokers.make({ bootstrap: ["127.0.0.1:1", "127.0.0.1:2"], retry: Schedule.recurs(0) })
    const error = yield* flip(down.topics(["anything"]))
    assert.equal(error.code, "NETWORK_EXCEPTION")
    assert.equal(error.retriable, true)
    assert.match(error.message, /Cannot reach any Kafka broker \(tried 127\.0\.0\.1:1, 127\.0\.0\.1:2\)/)
    // Both refusals named, the advice once, at the end.
    assert.match(error.message, /127\.0\.0\.1:1: connect ECONNREFUSED .*127\.0\.0\.1:2: connect ECONNREFUSED/)
    assert.equal(error.message.match(/check that/g)?.length, 1, error.message)
    assert.match(error.message, /; check that the brokers run and the addresses are right$/)
  }))
  succeeded(exit)
})

kafkaTest("Brokers: a connection that closed is reopened on the next use", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    yield* brokers.topics([])
    const nodeId = [...brokers.nodes().keys()][0]!
    const first = yield* brokers.connection(nodeId)
    yield* first.close
    const second = yield* brokers.connection(nodeId)
    assert.notEqual(second, first)
    assert.ok(second.isOpen())
    yield* second.request(ApiVersions, { clientSoftwareName: "partita-test", clientSoftwareVersion: "1" })
  }))
  succeeded(exit)
})

kafkaTest("Brokers: the coordinator of a group and of a transactional id is a broker of the cluster, cached", async (bootstrap) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({ bootstrap })
    const group = yield* brokers.coordinatorFor({ type: "group", id: uniqueName("brokers-group") })
    const txn = yield* brokers.coordinatorFor({ type: "transaction", id: uniqueName("brokers-txn") })
    const addresses = [...brokers.nodes().values()].map((n) => `${n.host}:${n.port}`)
    assert.ok(addresses.includes(group.broker), `${group.broker} among ${addresses}`)
    assert.ok(addresses.includes(txn.broker), `${txn.broker} among ${addresses}`)
    assert.ok(group.isOpen() && txn.isOpen())
    // Concurrent lookups of many keys all land on a broker of the cluster.
    const many = yield* Effect.forEach(
      Array.from({ length: 5 }, (_, i) => uniqueName(`brokers-g${i}`)),
      (id) => brokers.coordinatorFor({ type: "group", id }),
      { concurrency: "unbounded" },
    )
    assert.ok(many.every((c) => addresses.includes(c.broker)))
  }))
  succeeded(exit)
})

// ---- A scripted broker, for what a real one does not do on demand.

const apiVersionsFrame = (version: number, correlationId: number) =>
  responseFrame(ApiVersions, version, correlationId, {
    errorCode: 0,
    apiKeys: [
      { apiKey: ApiVersions.key, minVersion: 0, maxVersion: 4 },
      { apiKey: Metadata.key, minVersion: 0, maxVersion: 12 },
      { apiKey: FindCoordinator.key, minVersion: 0, maxVersion: 6 },
    ],
    throttleTimeMs: 0,
  } as never)

const metadataAnswer = (port: number, topic: string, leaderEpoch: number, leaderId: number): MetadataResponse => ({
  throttleTimeMs: 0,
  brokers: [{ nodeId: 1, host: "127.0.0.1", port, rack: null }, { nodeId: 2, host: "127.0.0.1", port, rack: null }],
  clusterId: "fake",
  controllerId: 1,
  topics: [{
    errorCode: 0,
    name: topic,
    topicId: "AAAAAAAAAAAAAAAAAAAAAQ",
    isInternal: false,
    partitions: [{ errorCode: 0, partitionIndex: 0, leaderId, leaderEpoch, replicaNodes: [1, 2], isrNodes: [1, 2], offlineReplicas: [] }],
    topicAuthorizedOperations: -2147483648,
  }],
})

test("Brokers keeps a partition's cached leader when an answer carries an older leader epoch, and takes a newer one (from a hint too)", async () => {
  let port = 0
  // Epoch 5 (leader 1), then a broker behind on the election: epoch 3 (leader 2), then epoch 7 (leader 2).
  const answers: Array<readonly [number, number]> = [[5, 1], [3, 2], [7, 2]]
  let metadataCalls = 0
  const fake = await fakeBroker((request) => {
    if (request.apiKey === ApiVersions.key) return apiVersionsFrame(request.version, request.correlationId)
    const [epoch, leader] = answers[Math.min(metadataCalls++, answers.length - 1)]!
    return responseFrame(Metadata, request.version, request.correlationId, metadataAnswer(port, "t", epoch, leader))
  })
  port = Number(fake.address.split(":")[1])
  try {
    const exit = await run(Effect.gen(function* () {
      const brokers = yield* Brokers.make({ bootstrap: [fake.address] })
      assert.deepEqual(yield* brokers.leaderFor({ topic: "t", partition: 0 }), { nodeId: 1, leaderEpoch: 5 })
      yield* brokers.invalidate("t")
      assert.deepEqual(yield* brokers.leaderFor({ topic: "t", partition: 0 }), { nodeId: 1, leaderEpoch: 5 }, "epoch 3 is ignored")
      yield* brokers.invalidate("t")
      assert.deepEqual(yield* brokers.leaderFor({ topic: "t", partition: 0 }), { nodeId: 2, leaderEpoch: 7 })
      assert.equal(metadataCalls, 3)
      // A KIP-951 hint newer than the cache moves the leader without a request; an older one is a plain invalidation.
      yield* brokers.invalidate("t", { partition: 0, leaderId: 1, leaderEpoch: 8 })
      assert.deepEqual(yield* brokers.leaderFor({ topic: "t", partition: 0 }), { nodeId: 1, leaderEpoch: 8 })
      assert.equal(metadataCalls, 3)
      // Without an invalidation the cache answers.
      yield* brokers.leaderFor({ topic: "t", partition: 0 })
      assert.equal(metadataCalls, 3)
    }))
    succeeded(exit)
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

test("Brokers looks up concurrent coordinators in one FindCoordinator v4+ request, and one key a request before v4", async () => {
  const ids = ["a", "b", "c"]
  const found = (request: { version: number; correlationId: number }, port: number) =>
    responseFrame(FindCoordinator, request.version, request.correlationId, request.version >= 4
      ? { throttleTimeMs: 0, coordinators: ids.map((key) => ({ key, nodeId: 1, host: "127.0.0.1", port, errorCode: 0, errorMessage: null })) }
      : { throttleTimeMs: 0, errorCode: 0, errorMessage: null, nodeId: 1, host: "127.0.0.1", port } as never)
  for (const maxVersion of [6, 3]) {
    let port = 0
    const fake = await fakeBroker((request) => {
      if (request.apiKey === ApiVersions.key) {
        return responseFrame(ApiVersions, request.version, request.correlationId, {
          errorCode: 0,
          apiKeys: [{ apiKey: ApiVersions.key, minVersion: 0, maxVersion: 4 }, { apiKey: FindCoordinator.key, minVersion: 0, maxVersion }],
          throttleTimeMs: 0,
        } as never)
      }
      return found(request, port)
    })
    port = Number(fake.address.split(":")[1])
    try {
      const exit = await run(Effect.gen(function* () {
        const brokers = yield* Brokers.make({ bootstrap: [fake.address] })
        const connections = yield* Effect.forEach(ids, (id) => brokers.coordinatorFor({ type: "group", id }), { concurrency: "unbounded" })
        assert.ok(connections.every((c) => c === connections[0]), "one connection to the coordinator")
        // Cached: no more requests.
        yield* brokers.coordinatorFor({ type: "group", id: "a" })
      }))
      succeeded(exit)
      const lookups = fake.received.filter((r) => r.apiKey === FindCoordinator.key)
      assert.equal(lookups.length, maxVersion >= 4 ? 1 : 3, `FindCoordinator requests with v${maxVersion}`)
      assert.ok(lookups.every((r) => r.version === maxVersion))
      await fake.until(() => fake.open() === 0)
    } finally {
      await fake.close()
    }
  }
})

test("Brokers retries an unreachable cluster on its schedule (driven by TestClock), then fails retriable", async () => {
  const fake = await fakeBroker(() => undefined)
  await fake.close() // a port nothing listens on any more
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({
      bootstrap: [fake.address],
      retry: Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 3 })) as never,
    })
    const fiber = yield* Effect.forkChild(brokers.topics(["t"]))
    for (let i = 0; i < 3; i++) {
      // Let the attempt fail (a refused connection, real I/O), then move the clock past the backoff.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
      assert.equal(fiber.pollUnsafe(), undefined, `still retrying after attempt ${i + 1}`)
      yield* TestClock.adjust("1 second")
    }
    const error = yield* flip(Fiber.join(fiber))
    assert.equal(error.code, "NETWORK_EXCEPTION")
    assert.equal(error.retriable, true)
  }).pipe(Effect.provide(TestClock.layer())))
  succeeded(exit)
})

kafkaSecuredTest("Brokers routes over the secured listener: every connection does TLS with the custom CA and SCRAM-SHA-512", async (secured) => {
  const exit = await run(Effect.gen(function* () {
    const brokers = yield* Brokers.make({
      bootstrap: secured.brokers,
      tls: { ca: secured.ca },
      sasl: { mechanism: "scram-sha-512", username: secured.username, password: Redacted.make(secured.password) },
    })
    yield* brokers.topics([])
    const [nodeId, node] = [...brokers.nodes()][0]!
    const connection = yield* brokers.connection(nodeId)
    assert.equal(connection.broker, `${node.host}:${node.port}`)
    assert.ok(secured.brokers.includes(connection.broker), "the node's address is the secured listener's")
    const coordinator = yield* brokers.coordinatorFor({ type: "group", id: uniqueName("brokers-secured") })
    assert.ok(coordinator.isOpen())
  }))
  succeeded(exit)
})

test("Brokers forgets a coordinator on invalidateCoordinator and looks it up again", async () => {
  let port = 0
  let lookups = 0
  const fake = await fakeBroker((request) => {
    if (request.apiKey === ApiVersions.key) return apiVersionsFrame(request.version, request.correlationId)
    if (request.apiKey === Metadata.key) {
      return responseFrame(Metadata, request.version, request.correlationId, metadataAnswer(port, "t", 1, 1))
    }
    lookups++
    // First COORDINATOR_LOAD_IN_PROGRESS (retried on the schedule), then node 1, then node 2.
    const answer = lookups === 1
      ? { key: "g", nodeId: -1, host: "", port: -1, errorCode: 14, errorMessage: null }
      : { key: "g", nodeId: lookups === 2 ? 1 : 2, host: "127.0.0.1", port, errorCode: 0, errorMessage: null }
    return responseFrame(FindCoordinator, request.version, request.correlationId, { throttleTimeMs: 0, coordinators: [answer] })
  })
  port = Number(fake.address.split(":")[1])
  try {
    const exit = await run(Effect.gen(function* () {
      const brokers = yield* Brokers.make({ bootstrap: [fake.address], retry: Schedule.recurs(3) as never })
      const key = { type: "group", id: "g" } as const
      const first = yield* brokers.coordinatorFor(key)
      assert.equal(lookups, 2, "COORDINATOR_LOAD_IN_PROGRESS was retried")
      assert.equal(yield* brokers.coordinatorFor(key), first, "cached")
      yield* brokers.invalidateCoordinator(key)
      const second = yield* brokers.coordinatorFor(key)
      assert.equal(lookups, 3)
      assert.notEqual(second, first, "node 2's connection, not node 1's")
    }))
    succeeded(exit)
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

test("Brokers treats a lost connection as stale metadata: the next leaderFor asks another known broker, without an invalidate", async () => {
  const ports = { a: 0, b: 0 }
  const answer = (request: { apiKey: number; version: number; correlationId: number }, leader: number, epoch: number) => {
    if (request.apiKey === ApiVersions.key) return apiVersionsFrame(request.version, request.correlationId)
    return responseFrame(Metadata, request.version, request.correlationId, {
      ...metadataAnswer(0, "t", epoch, leader),
      brokers: [{ nodeId: 1, host: "127.0.0.1", port: ports.a, rack: null }, { nodeId: 2, host: "127.0.0.1", port: ports.b, rack: null }],
    })
  }
  // Broker 1 says it leads (epoch 1); broker 2, asked after broker 1 is gone, that it does (epoch 2).
  const a = await fakeBroker((request) => answer(request, 1, 1))
  const b = await fakeBroker((request) => answer(request, 2, 2))
  ports.a = Number(a.address.split(":")[1])
  ports.b = Number(b.address.split(":")[1])
  try {
    const exit = await run(Effect.gen(function* () {
      const brokers = yield* Brokers.make({ bootstrap: [a.address] })
      assert.deepEqual(yield* brokers.leaderFor({ topic: "t", partition: 0 }), { nodeId: 1, leaderEpoch: 1 })
      const one = yield* brokers.connection(1)
      yield* Effect.promise(() => a.close())
      yield* one.closed
      // Let the pool's watcher of the connection run.
      yield* Effect.repeat(Effect.yieldNow, { times: 10 })
      assert.deepEqual(yield* brokers.leaderFor({ topic: "t", partition: 0 }), { nodeId: 2, leaderEpoch: 2 })
    }))
    succeeded(exit)
    assert.ok(b.received.some((r) => r.apiKey === Metadata.key), "broker 2 was asked")
    await b.until(() => b.open() === 0)
  } finally {
    await a.close()
    await b.close()
  }
})
