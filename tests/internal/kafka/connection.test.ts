/**
 * The Kafka client's broker connection, against the real broker (plain and secured listeners)
 * and, for what a real broker does not do on demand, a local proxy that holds or cuts the
 * broker's bytes and a scripted fake broker. Every test checks that its sockets are closed when
 * its scope is: the proxy or fake broker counts the client sockets still open.
 */
import assert from "node:assert/strict"
import process from "node:process"
import { test } from "node:test"
import { inspect } from "node:util"
import { Cause, Effect, Exit, Fiber, Layer, Logger, Redacted, References, Schedule, type Scope } from "effect"
import { TestClock } from "effect/testing"
import * as Connection from "../../../lib/internal/kafka/connection.ts"
import type { Api } from "../../../lib/internal/kafka/protocol/api.ts"
import { ApiVersions } from "../../../lib/internal/kafka/protocol/ApiVersions.ts"
import { CreateTopics } from "../../../lib/internal/kafka/protocol/CreateTopics.ts"
import { DeleteTopics } from "../../../lib/internal/kafka/protocol/DeleteTopics.ts"
import { DescribeCluster } from "../../../lib/internal/kafka/protocol/DescribeCluster.ts"
import { DescribeConfigs } from "../../../lib/internal/kafka/protocol/DescribeConfigs.ts"
import { FindCoordinator } from "../../../lib/internal/kafka/protocol/FindCoordinator.ts"
import { ListGroups } from "../../../lib/internal/kafka/protocol/ListGroups.ts"
import { ListOffsets } from "../../../lib/internal/kafka/protocol/ListOffsets.ts"
import { Metadata } from "../../../lib/internal/kafka/protocol/Metadata.ts"
import { SaslHandshake } from "../../../lib/internal/kafka/protocol/SaslHandshake.ts"
import { zeroUuid } from "../../../lib/internal/kafka/protocol/wire.ts"
import { TransportError } from "../../../lib/TransportError.ts"
import { fakeBroker, proxy, responseFrame, silentServer } from "../../fixtures/brokerProxy.ts"
import { kafkaSecuredTest, kafkaTest, type SecuredKafka, uniqueName } from "../../fixtures/services.ts"

/** Every log line, as JSON, at every level. */
const captureLogs = () => {
  const lines: Array<string> = []
  const layer = Layer.mergeAll(
    Logger.layer([Logger.map(Logger.formatJson, (line) => void lines.push(line))]),
    Layer.succeed(References.MinimumLogLevel, "All"),
  )
  return { lines, layer }
}

/** ApiVersions v3+ needs these, and brokers check their form. */
const software = { clientSoftwareName: "partita-test", clientSoftwareVersion: "1" }

const quiet = Layer.succeed(References.MinimumLogLevel, "None")

const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>, layer: Layer.Layer<never> = quiet): Promise<Exit.Exit<A, E>> =>
  Effect.runPromiseExit(Effect.scoped(effect).pipe(Effect.provide(layer)))

const succeeded = <A, E>(exit: Exit.Exit<A, E>): A => {
  assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
  return exit.value
}

const failure = <A, E>(exit: Exit.Exit<A, E>): TransportError => {
  assert.ok(Exit.isFailure(exit), "fails")
  const error = Cause.squash(exit.cause)
  assert.ok(error instanceof TransportError, `a TransportError, got ${inspect(error)}`)
  return error
}

const flip = <A>(effect: Effect.Effect<A, TransportError>): Effect.Effect<TransportError> =>
  Effect.flatMap(Effect.exit(effect), (exit) =>
    Exit.isFailure(exit) ? Effect.succeed(failure(exit)) : Effect.die(new Error("expected a failure")))

/** Lets other fibers run until `condition` holds: no clock involved, so TestClock stays still. */
const settled = (condition: () => boolean) =>
  Effect.yieldNow.pipe(
    Effect.repeat({ until: condition, times: 1000 }),
    Effect.flatMap(() => condition() ? Effect.void : Effect.die(new Error("the condition never held"))),
  )

/** An ApiVersions answer listing `ranges`, at `version`. */
const apiVersionsAnswer = (version: number, correlationId: number, errorCode: number, ranges: ReadonlyArray<readonly [number, number, number]>) =>
  responseFrame(ApiVersions, version, correlationId, {
    errorCode,
    apiKeys: ranges.map(([apiKey, minVersion, maxVersion]) => ({ apiKey, minVersion, maxVersion })),
    throttleTimeMs: 0,
  } as never)

kafkaTest("Connection negotiates each API's version with ApiVersions: the highest both sides support", async ([broker]) => {
  const exit = await run(Effect.gen(function* () {
    const connection = yield* Connection.make({ broker: broker! })
    const theirs = connection.brokerVersions.get(ApiVersions.key)
    assert.ok(theirs !== undefined && theirs.max >= 3, "the broker lists ApiVersions")
    assert.equal(yield* connection.versionFor(ApiVersions), Math.min(theirs.max, ApiVersions.maxVersion))
    const answer = yield* connection.request(ApiVersions, { clientSoftwareName: "partita-test", clientSoftwareVersion: "1" })
    assert.equal(answer.errorCode, 0)
    assert.ok(answer.apiKeys.length > 20, "the broker lists its APIs")
    const lacking = { ...ApiVersions, name: "Imaginary", key: 32_000 }
    const error = yield* flip(connection.versionFor(lacking))
    assert.equal(error.code, "UNSUPPORTED_VERSION")
    assert.match(error.message, /does not support the Imaginary API \(key 32000\)/)
    const tooNew = { ...ApiVersions, minVersion: theirs.max + 1, maxVersion: theirs.max + 3 }
    assert.match((yield* flip(connection.versionFor(tooNew))).message, /no version is shared/)
  }))
  succeeded(exit)
})

test("Connection retries ApiVersions at the broker's highest version when the broker does not know ours", async () => {
  // As Kafka brokers do: an ApiVersions version they do not know is answered at v0 with
  // UNSUPPORTED_VERSION and the versions they do know.
  const fake = await fakeBroker((request) =>
    request.version > 2
      ? apiVersionsAnswer(0, request.correlationId, 35, [[18, 0, 2]])
      : apiVersionsAnswer(request.version, request.correlationId, 0, [[18, 0, 2], [17, 0, 1]])
  )
  try {
    const exit = await run(Effect.gen(function* () {
      const connection = yield* Connection.make({ broker: fake.address })
      assert.equal(yield* connection.versionFor(ApiVersions), 2)
      assert.deepEqual(connection.brokerVersions.get(17), { min: 0, max: 1 })
    }))
    succeeded(exit)
    assert.deepEqual(fake.received.map((request) => request.version), [ApiVersions.maxVersion, 2])
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

test("Connection holds requests beyond maxInFlight until answers come, without failing them", async () => {
  const maxInFlight = 4
  const total = 23
  const held: Array<() => void> = []
  let most = 0
  const fake = await fakeBroker((request, reply) => {
    const answer = apiVersionsAnswer(request.version, request.correlationId, 0, [[18, 0, 3]])
    if (request.correlationId === 0) return answer // the connection's own ApiVersions
    held.push(() => reply(answer))
    most = Math.max(most, held.length)
    // Answer in batches: all held once the bound is reached, or the stragglers at the end.
    if (held.length === maxInFlight || request.correlationId === total) for (const release of held.splice(0)) release()
    return undefined
  })
  try {
    const exit = await run(Effect.gen(function* () {
      const connection = yield* Connection.make({ broker: fake.address, maxInFlight })
      const answers = yield* Effect.forEach(
        Array.from({ length: total }, (_, i) => i),
        () => connection.request(ApiVersions, software),
        { concurrency: "unbounded" },
      )
      assert.equal(answers.length, total)
    }))
    succeeded(exit)
    assert.equal(most, maxInFlight, `never more than ${maxInFlight} unanswered at the broker`)
    assert.equal(fake.received.length, total + 1)
  } finally {
    await fake.close()
  }
})

test("Connection: a request timed out while waiting for a slot, or abandoned by its caller, leaves the connection usable", async () => {
  const held: Array<() => void> = []
  const fake = await fakeBroker((request, reply) => {
    const answer = apiVersionsAnswer(request.version, request.correlationId, 0, [[18, 0, 3]])
    if (request.correlationId === 0) return answer
    held.push(() => reply(answer))
    return undefined
  })
  try {
    const exit = await run(
      Effect.gen(function* () {
        const connection = yield* Connection.make({ broker: fake.address, maxInFlight: 1 })
        const first = yield* Effect.forkChild(connection.request(ApiVersions, software))
        yield* Effect.promise(() => fake.until(() => held.length === 1))
        const waiting = yield* Effect.forkChild(connection.request(ApiVersions, software, { timeout: "5 seconds" }))
        yield* settled(() => connection.inFlight() === 2)
        yield* TestClock.adjust("5 seconds")
        const timedOut = failure(yield* Fiber.await(waiting))
        assert.equal(timedOut.code, "REQUEST_TIMED_OUT")
        assert.match(timedOut.message, /waited for a slot/)
        assert.equal(connection.isOpen(), true, "nothing was sent out of order")
        // The caller of the sent request goes away: its answer, when it comes, is dropped.
        yield* Fiber.interrupt(first)
        held.shift()!()
        const next = yield* Effect.forkChild(connection.request(ApiVersions, software))
        yield* Effect.promise(() => fake.until(() => held.length === 1))
        held.shift()!()
        assert.equal(succeeded(yield* Fiber.await(next)).errorCode, 0)
        assert.deepEqual(fake.received.map((request) => request.correlationId), [0, 1, 3], "the timed-out request never went out")
      }),
      Layer.merge(quiet, TestClock.layer()),
    )
    succeeded(exit)
  } finally {
    await fake.close()
  }
})

test("Connection.send writes a request that has no answer in order, and the answers after it still match", async () => {
  const fake = await fakeBroker((request) =>
    request.apiKey === ApiVersions.key ? apiVersionsAnswer(request.version, request.correlationId, 0, [[18, 0, 3], [17, 0, 1]]) : undefined
  )
  try {
    const exit = await run(Effect.gen(function* () {
      const connection = yield* Connection.make({ broker: fake.address })
      yield* connection.send(SaslHandshake, { mechanism: "PLAIN" })
      const answer = yield* connection.request(ApiVersions, software)
      assert.equal(answer.errorCode, 0)
      assert.equal(connection.inFlight(), 0)
    }))
    succeeded(exit)
    assert.deepEqual(fake.received.map((request) => request.apiKey), [18, 17, 18])
  } finally {
    await fake.close()
  }
})

test("Connection fails everything in flight with PROTOCOL_ERROR on an answer out of order, and closes", async () => {
  const fake = await fakeBroker((request) =>
    apiVersionsAnswer(request.version, request.correlationId === 0 ? 0 : request.correlationId + 7, 0, [[18, 0, 3]])
  )
  try {
    const exit = await run(Effect.gen(function* () {
      const connection = yield* Connection.make({ broker: fake.address })
      const error = yield* flip(connection.request(ApiVersions, software))
      assert.equal(error.code, "PROTOCOL_ERROR")
      assert.equal(error.retriable, false)
      assert.match(error.message, /answered correlation id 8 where 1 was next/)
      assert.equal(connection.isOpen(), false)
      assert.equal((yield* flip(connection.request(ApiVersions, software))).code, "PROTOCOL_ERROR", "later requests fail at once")
    }))
    succeeded(exit)
    await fake.until(() => fake.open() === 0)
  } finally {
    await fake.close()
  }
})

test("Connection refuses a response larger than maxResponseBytes as a PROTOCOL_ERROR, before allocating it", async () => {
  const fake = await fakeBroker((request) => {
    if (request.correlationId === 0) return apiVersionsAnswer(request.version, 0, 0, [[18, 0, 3]])
    return Uint8Array.of(0x7f, 0xff, 0xff, 0xff, 0, 0, 0, request.correlationId)
  })
  try {
    const exit = await run(Effect.gen(function* () {
      const connection = yield* Connection.make({ broker: fake.address, maxResponseBytes: 1024 })
      const error = yield* flip(connection.request(ApiVersions, software))
      assert.equal(error.code, "PROTOCOL_ERROR")
      assert.match(error.message, /a response of 2147483647 bytes, above the limit of 1024/)
    }))
    succeeded(exit)
  } finally {
    await fake.close()
  }
})

kafkaTest("Connection times out a request not answered in time, as REQUEST_TIMED_OUT, and closes the connection", async ([broker]) => {
  const through = await proxy(broker!)
  try {
    const exit = await run(
      Effect.gen(function* () {
        const connection = yield* Connection.make({ broker: through.address, requestTimeout: "30 seconds" })
        through.hold()
        const sentBefore = through.framesFromClients()
        const first = yield* Effect.forkChild(connection.request(ApiVersions, software))
        const second = yield* Effect.forkChild(connection.request(ApiVersions, software, { timeout: "90 seconds" }))
        yield* Effect.promise(() => through.until(() => through.framesFromClients() === sentBefore + 2))
        assert.equal(connection.inFlight(), 2)
        yield* TestClock.adjust("29 seconds")
        assert.equal(connection.isOpen(), true, "not yet")
        yield* TestClock.adjust("1 second")
        const timedOut = failure(yield* Fiber.await(first))
        assert.equal(timedOut.code, "REQUEST_TIMED_OUT")
        assert.equal(timedOut.retriable, true)
        assert.match(timedOut.message, /ApiVersions v\d+ to Kafka at .* was not answered within 30s/)
        const closed = failure(yield* Fiber.await(second))
        assert.equal(closed.code, "NETWORK_EXCEPTION")
        assert.equal(closed.retriable, true)
        assert.match(closed.message, /closed because an earlier request timed out/)
        assert.equal(connection.isOpen(), false)
        yield* Effect.promise(() => through.until(() => through.open() === 0))
      }),
      Layer.merge(quiet, TestClock.layer()),
    )
    succeeded(exit)
  } finally {
    await through.close()
  }
})

kafkaTest("Connection fails the request in flight with a retriable NETWORK_EXCEPTION when the broker's socket is cut", async ([broker]) => {
  const through = await proxy(broker!)
  const logs = captureLogs()
  try {
    const exit = await run(
      Effect.gen(function* () {
        const connection = yield* Connection.make({ broker: through.address })
        through.hold()
        const sentBefore = through.framesFromClients()
        const inFlight = yield* Effect.forkChild(connection.request(ApiVersions, software))
        yield* Effect.promise(() => through.until(() => through.framesFromClients() === sentBefore + 1))
        through.cut()
        const error = failure(yield* Fiber.await(inFlight))
        assert.equal(error.code, "NETWORK_EXCEPTION")
        assert.equal(error.retriable, true)
        assert.match(error.message, new RegExp(`Kafka at ${through.address}`))
        assert.equal(connection.isOpen(), false)
        assert.equal((yield* connection.closed).code, "NETWORK_EXCEPTION")
        assert.equal((yield* flip(connection.request(ApiVersions, software))).code, "NETWORK_EXCEPTION", "later requests fail at once")
      }),
      logs.layer,
    )
    succeeded(exit)
    const lost = logs.lines.filter((line) => JSON.parse(line).level === "WARN")
    assert.equal(lost.length, 1, "one log line for the lost connection")
    assert.match(JSON.parse(lost[0]!).message, /The connection to Kafka at .* was closed by the broker|Lost the connection to Kafka at /)
    assert.ok(!lost[0]!.includes("    at "), "no stack trace")
  } finally {
    await through.close()
  }
})

kafkaTest("Closing the connection's scope closes its socket and fails the request in flight with a typed error", async ([broker]) => {
  const through = await proxy(broker!)
  try {
    let pending: Fiber.Fiber<unknown, TransportError> | undefined
    const exit = await run(Effect.gen(function* () {
      const outer = yield* Effect.scope
      yield* Effect.scoped(Effect.gen(function* () {
        const connection = yield* Connection.make({ broker: through.address })
        through.hold()
        const sentBefore = through.framesFromClients()
        pending = yield* Effect.forkIn(connection.request(ApiVersions, software), outer)
        yield* Effect.promise(() => through.until(() => through.framesFromClients() === sentBefore + 1))
      }))
      const error = failure(yield* Fiber.await(pending!))
      assert.equal(error.code, "NETWORK_EXCEPTION")
      assert.match(error.message, /was closed while the request was in flight/)
    }))
    succeeded(exit)
    await through.until(() => through.open() === 0)
    assert.equal(through.accepted(), 1)
  } finally {
    await through.close()
  }
})

test("Connection fails fast with a retriable NETWORK_EXCEPTION when nothing listens", async () => {
  const fake = await fakeBroker(() => undefined)
  const address = fake.address
  await fake.close()
  const error = failure(await run(Connection.make({ broker: address })))
  assert.equal(error.code, "NETWORK_EXCEPTION")
  assert.equal(error.retriable, true)
  assert.match(error.message, new RegExp(`Cannot connect to Kafka at ${address}: .*check that the broker runs`))
})

test("Connection gives up a connection not established within connectTimeout, and closes its socket", async () => {
  const silent = await silentServer()
  try {
    const exit = await run(
      Effect.gen(function* () {
        const opening = yield* Effect.forkChild(Connection.make({ broker: silent.address, tls: true, connectTimeout: "5 seconds" }))
        yield* Effect.promise(() => silent.until(() => silent.accepted() === 1))
        yield* TestClock.adjust("4 seconds")
        assert.equal(silent.open(), 1, "still waiting for the handshake")
        yield* TestClock.adjust("1 second")
        const error = failure(yield* Fiber.await(opening))
        assert.equal(error.code, "NETWORK_EXCEPTION")
        assert.equal(error.retriable, true)
        assert.match(error.message, new RegExp(`Cannot connect to Kafka at ${silent.address} within 5s`))
      }),
      Layer.merge(quiet, TestClock.layer()),
    )
    succeeded(exit)
    await silent.until(() => silent.open() === 0)
  } finally {
    await silent.close()
  }
})

// The secured listener: SCRAM-SHA-512 over TLS with the throw-away CA.

const scram512 = (secured: SecuredKafka, password = secured.password): Connection.Options["sasl"] => ({
  mechanism: "scram-sha-512",
  username: secured.username,
  password: Redacted.make(password),
})

const assertNoSecret = (secrets: ReadonlyArray<string>, where: string, texts: ReadonlyArray<string>) =>
  texts.forEach((text, index) => {
    for (const [which, secret] of secrets.entries()) assert.ok(!text.includes(secret), `${where} #${index} contains password #${which}`)
  })

kafkaSecuredTest("Connection authenticates with SCRAM-SHA-512 over TLS with a custom CA, and logs no password", async (secured) => {
  const logs = captureLogs()
  const exit = await run(
    Effect.gen(function* () {
      const connection = yield* Connection.make({
        broker: secured.brokers[0]!,
        tls: { ca: secured.ca },
        sasl: scram512(secured),
      })
      const answer = yield* connection.request(ApiVersions, software)
      assert.equal(answer.errorCode, 0)
    }),
    logs.layer,
  )
  succeeded(exit)
  assert.ok(logs.lines.some((line) => line.includes(`Authenticated to Kafka at ${secured.brokers[0]} as user \\"${secured.username}\\" with SCRAM-SHA-512`)))
  assert.ok(logs.lines.some((line) => line.includes("Closed the connection")))
  assertNoSecret([secured.password], "log line", logs.lines)
})

kafkaSecuredTest("Connection fails a wrong password with SASL_AUTHENTICATION_FAILED naming mechanism and user, never the password", async (secured) => {
  const through = await proxy(secured.brokers[0]!)
  const wrong = `wrong-${crypto.randomUUID()}`
  const logs = captureLogs()
  try {
    const exit = await run(
      Connection.make({ broker: through.address, tls: { ca: secured.ca }, sasl: scram512(secured, wrong) }),
      logs.layer,
    )
    const error = failure(exit)
    assert.equal(error.code, "SASL_AUTHENTICATION_FAILED")
    assert.equal(error.retriable, false)
    assert.match(error.message, new RegExp(`as user "${secured.username}" with SCRAM-SHA-512`))
    const secrets = [wrong, secured.password]
    assertNoSecret(secrets, "rendering of the error", [error.message, String(error), inspect(error, { depth: 8 }), Cause.pretty(Exit.isFailure(exit) ? exit.cause : Cause.empty)])
    assertNoSecret(secrets, "log line", logs.lines)
    await through.until(() => through.open() === 0)
    assert.equal(through.accepted(), 1, "one attempt")
  } finally {
    await through.close()
  }
})

kafkaSecuredTest("Connection refuses a broker certificate no trusted CA signed with SSL_AUTHENTICATION_FAILED", async (secured) => {
  const through = await proxy(secured.brokers[0]!)
  try {
    const error = failure(await run(Connection.make({ broker: through.address, tls: true, sasl: scram512(secured) })))
    assert.equal(error.code, "SSL_AUTHENTICATION_FAILED")
    assert.equal(error.retriable, false)
    assert.match(error.message, /not trusted: give the CA that signed it/)
    await through.until(() => through.open() === 0)
  } finally {
    await through.close()
  }
})

// Every message that needs no other client state, on every version generated that the broker
// supports, against the real broker: the protocol round-trip test.

/** The versions of `api` both this client and the broker speak, lowest first. */
const sharedVersions = (connection: Connection.Connection, api: Api<any, any>): ReadonlyArray<number> => {
  const theirs = connection.brokerVersions.get(api.key)
  assert.ok(theirs !== undefined, `the broker supports ${api.name}`)
  const versions: Array<number> = []
  for (let v = Math.max(theirs.min, api.minVersion); v <= Math.min(theirs.max, api.maxVersion); v++) versions.push(v)
  assert.ok(versions.length > 0, `a version of ${api.name} is shared`)
  return versions
}

kafkaTest("Connection pipelines 1000 requests and matches every answer to its own request", async ([broker]) => {
  const count = Number(process.env["PARTITA_PIPELINE_REQUESTS"] ?? 1000)
  const prefix = uniqueName("pipelined")
  const exit = await run(Effect.gen(function* () {
    const connection = yield* Connection.make({ broker: broker! })
    const names = Array.from({ length: count }, (_, i) => `${prefix}-${i}`)
    const answers = yield* Effect.forEach(
      names,
      (name) => connection.request(Metadata, { topics: [{ name }], allowAutoTopicCreation: false }),
      { concurrency: "unbounded" },
    )
    answers.forEach((answer, i) => {
      assert.equal(answer.topics.length, 1)
      assert.equal(answer.topics[0]!.name, names[i], `answer ${i} is for request ${i}`)
      assert.equal(answer.topics[0]!.errorCode, 3, "UNKNOWN_TOPIC_OR_PARTITION")
    })
    assert.equal(connection.inFlight(), 0)
  }))
  succeeded(exit)
}, { timeoutMs: 60_000 })

kafkaTest("Connection round-trips ApiVersions, Metadata, CreateTopics, DeleteTopics, DescribeConfigs, ListOffsets, FindCoordinator, ListGroups and DescribeCluster on every shared version", async ([broker]) => {
  const prefix = uniqueName("roundtrip")
  const exit = await run(Effect.gen(function* () {
    const connection = yield* Connection.make({ broker: broker! })
    const covered: Array<string> = []
    const each = <Req, Res>(api: Api<Req, Res>, body: (version: number) => Req, check: (answer: Res, version: number) => void) =>
      Effect.forEach(sharedVersions(connection, api), (version) =>
        Effect.map(connection.request(api, body(version), { version }), (answer) => {
          check(answer, version)
          covered.push(`${api.name} v${version}`)
        }), { discard: true })

    yield* each(ApiVersions, (v) => (v >= 3 ? software : {}), (answer) => assert.equal(answer.errorCode, 0))

    // One topic per CreateTopics version, enough for one per DeleteTopics version too.
    const creates = sharedVersions(connection, CreateTopics)
    const deletes = sharedVersions(connection, DeleteTopics)
    const topics = Array.from({ length: Math.max(creates.length, deletes.length) }, (_, i) => `${prefix}-${i}`)
    const createAt = (version: number, names: ReadonlyArray<string>) =>
      Effect.map(
        connection.request(CreateTopics, {
          topics: names.map((name) => ({
            name,
            numPartitions: 2,
            replicationFactor: 1,
            assignments: [],
            configs: [{ name: "retention.ms", value: "3600000" }],
          })),
          timeoutMs: 30_000,
          validateOnly: false,
        }, { version }),
        (answer) => {
          assert.deepEqual(answer.topics.map((topic) => [topic.name, topic.errorCode, topic.errorMessage ?? null]), names.map((name) => [name, 0, null]))
          covered.push(`CreateTopics v${version}`)
        },
      )
    yield* Effect.forEach(creates, (version, i) => createAt(version, [topics[i]!]), { discard: true })
    if (topics.length > creates.length) yield* createAt(creates[creates.length - 1]!, topics.slice(creates.length))

    // A new topic's leaders reach the broker's metadata cache a moment after CreateTopics answers.
    const metadataOf = (version: number) =>
      connection.request(Metadata, {
        topics: topics.map((name) => ({ name })),
        ...(version >= 4 ? { allowAutoTopicCreation: false } : {}),
      }, { version })
    yield* metadataOf(Metadata.maxVersion > 12 ? 12 : Metadata.maxVersion).pipe(
      Effect.repeat({
        until: (answer) => answer.topics.every((topic) => topic.errorCode === 0 && topic.partitions.every((p) => p.leaderId >= 0)),
        schedule: Schedule.spaced("50 millis"),
        times: 100,
      }),
    )
    let clusterId: string | null | undefined
    yield* each(Metadata, (v) => ({ topics: topics.map((name) => ({ name })), ...(v >= 4 ? { allowAutoTopicCreation: false } : {}) }), (answer, v) => {
      // The broker lists topics in no particular order.
      const listed = answer.topics.map((topic) => [topic.name, topic.errorCode, topic.partitions.length] as const)
      assert.deepEqual([...listed].sort(), topics.map((name) => [name, 0, 2]).sort(), `Metadata v${v}`)
      assert.ok(answer.brokers.length >= 1)
      if (v >= 2) clusterId = answer.clusterId
    })

    yield* each(DescribeConfigs, () => ({
      resources: [{ resourceType: 2, resourceName: topics[0]!, configurationKeys: ["retention.ms"] }],
      includeSynonyms: false,
    }), (answer) => {
      assert.equal(answer.results[0]!.errorCode, 0)
      assert.deepEqual(answer.results[0]!.configs.map((config) => [config.name, config.value]), [["retention.ms", "3600000"]])
    })

    yield* each(ListOffsets, (v) => ({
      replicaId: -1,
      ...(v >= 2 ? { isolationLevel: 0 } : {}),
      topics: [{ name: topics[0]!, partitions: [{ partitionIndex: 1, timestamp: -1 }] }],
    }), (answer) => {
      const partition = answer.topics[0]!.partitions[0]!
      assert.deepEqual([partition.partitionIndex, partition.errorCode, partition.offset], [1, 0, 0], "the latest offset of an empty partition")
    })

    const group = uniqueName("roundtrip-group")
    yield* each(FindCoordinator, (v) => (v >= 4 ? { keyType: 0, coordinatorKeys: [group] } : { key: group, ...(v >= 1 ? { keyType: 0 } : {}) }), (answer, v) => {
      const coordinator = v >= 4 ? answer.coordinators![0]! : { errorCode: answer.errorCode!, nodeId: answer.nodeId!, port: answer.port! }
      assert.equal(coordinator.errorCode, 0)
      assert.ok(coordinator.nodeId >= 0 && coordinator.port > 0)
    })

    yield* each(ListGroups, (v) => ({ ...(v >= 4 ? { statesFilter: [] } : {}), ...(v >= 5 ? { typesFilter: [] } : {}) }), (answer) => {
      assert.equal(answer.errorCode, 0)
      assert.ok(Array.isArray(answer.groups))
    })

    yield* each(DescribeCluster, (v) => ({ includeClusterAuthorizedOperations: false, ...(v >= 1 ? { endpointType: 1 } : {}) }), (answer) => {
      assert.equal(answer.errorCode, 0)
      assert.ok(answer.brokers.length >= 1)
      assert.equal(answer.clusterId, clusterId, "the cluster Metadata names")
    })

    yield* Effect.forEach(deletes, (version, i) =>
      Effect.map(
        connection.request(DeleteTopics, version >= 6
          ? { topics: [{ name: topics[i]!, topicId: zeroUuid }], timeoutMs: 30_000 }
          : { topicNames: [topics[i]!], timeoutMs: 30_000 }, { version }),
        (answer) => {
          assert.deepEqual(answer.responses.map((topic) => [topic.name, topic.errorCode]), [[topics[i]!, 0]])
          covered.push(`DeleteTopics v${version}`)
        },
      ), { discard: true })
    if (topics.length > deletes.length) {
      yield* connection.request(DeleteTopics, { topics: topics.slice(deletes.length).map((name) => ({ name, topicId: zeroUuid })), timeoutMs: 30_000 })
    }
    const expected = [ApiVersions, Metadata, CreateTopics, DeleteTopics, DescribeConfigs, ListOffsets, FindCoordinator, ListGroups, DescribeCluster]
      .flatMap((api) => sharedVersions(connection, api).map((version) => `${api.name} v${version}`))
    return { covered, expected }
  }))
  const { covered, expected } = succeeded(exit)
  assert.deepEqual([...new Set(covered)].sort(), [...expected].sort(), "every shared version of every API made a round trip")
}, { timeoutMs: 60_000 })
