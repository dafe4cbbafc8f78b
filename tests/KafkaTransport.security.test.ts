/**
 * KafkaTransport (Partita's own client) on the secured listener: SASL/SCRAM-SHA-512 over TLS,
 * the listener scripts/kafka runs beside the plain one (its throw-away CA signs a certificate for
 * 127.0.0.1 and localhost). What tests/KafkaJsTransport.security.test.ts proves of the kafkajs
 * transport, on this one: the right credentials carry records both ways (an actor, and a plain
 * subscription); a wrong password, a CA the client does not trust and a certificate for another
 * name each fail the layer at once, after one connection, with a typed error that is not
 * retriable; no password reaches a log line, a span or an error's rendering; `layerFromEnv`
 * reaches the listener from KAFKA_SSL_CA_FILE and KAFKA_SASL_*.
 *
 * Connections are counted by a TCP proxy in front of the listener: what the client fails on
 * before it learns the broker's advertised address (authentication, the certificate) goes
 * through the bootstrap address, so the proxy sees every attempt.
 */
import assert from "node:assert/strict"
import * as net from "node:net"
import { inspect } from "node:util"
import { Cause, ConfigProvider, Effect, Exit, Layer, Logger, Redacted, References, Schema } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import * as Producer from "../lib/Producer.ts"
import * as Tracing from "../lib/Tracing.ts"
import { Transport } from "../lib/Transport.ts"
import { TransportError } from "../lib/TransportError.ts"
import { eventually } from "./fixtures/actors.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, text } from "./fixtures/effect.ts"
import { kafkaSecuredTest, type SecuredKafka, uniqueName } from "./fixtures/services.ts"
import { makeRecorder, type RecordedSpan } from "./fixtures/spans.ts"

const Event = Schema.Struct({ id: Schema.String })

/** Every log line, as JSON with its annotations and cause, at every level. */
const captureLogs = () => {
  const lines: Array<string> = []
  const logger = Logger.map(Logger.formatJson, (line) => {
    lines.push(line)
  })
  const layer = Layer.mergeAll(
    // tracerLogger too: log lines become span events, which the span scan then covers.
    Logger.layer([logger, Logger.tracerLogger]),
    Layer.succeed(References.MinimumLogLevel, "All"),
  )
  return { lines, layer }
}

const renderSpan = (span: RecordedSpan): string =>
  inspect({ name: span.name, attributes: span.attributes, events: span.events, links: span.links }, { depth: 8 })

/** Fails naming where and which entry, never showing the text: it would hold the password. */
const assertNoSecret = (secrets: ReadonlyArray<string>, where: string, texts: ReadonlyArray<string>) => {
  texts.forEach((text, index) => {
    for (const [which, secret] of secrets.entries()) {
      assert.ok(!text.includes(secret), `${where} #${index} contains password #${which}`)
    }
  })
}

const credentials = (secured: SecuredKafka, password = secured.password): KafkaTransport.SaslCredentials => ({
  mechanism: "scram-sha-512",
  username: secured.username,
  password: Redacted.make(password),
})

interface Proxy {
  readonly address: string
  readonly connections: () => number
  readonly close: () => Promise<void>
}

/** A TCP proxy to `target` that counts the connections made through it. */
const countingProxy = (target: string): Promise<Proxy> =>
  new Promise((resolve, reject) => {
    const colon = target.lastIndexOf(":")
    const host = target.slice(0, colon)
    const port = Number(target.slice(colon + 1))
    let connections = 0
    const sockets = new Set<net.Socket>()
    const server = net.createServer((client) => {
      connections++
      const upstream = net.connect(port, host)
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on("error", () => {
          client.destroy()
          upstream.destroy()
        })
        socket.on("close", () => {
          sockets.delete(socket)
          client.destroy()
          upstream.destroy()
        })
      }
      client.pipe(upstream)
      upstream.pipe(client)
    })
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port: listening } = server.address() as net.AddressInfo
      resolve({
        address: `127.0.0.1:${listening}`,
        connections: () => connections,
        close: () =>
          new Promise((closed) => {
            for (const socket of sockets) socket.destroy()
            server.close(() => closed())
          }),
      })
    })
  })

/**
 * Builds the transport layer (connecting it) and closes it again, with logs and spans captured;
 * the exit and how long building took.
 */
const connect = async (
  options: KafkaTransport.Options,
  logs: ReturnType<typeof captureLogs>,
  recorder: ReturnType<typeof makeRecorder>,
) => {
  const started = performance.now()
  const exit = await Effect.runPromiseExit(
    Effect.scoped(Effect.asVoid(Effect.gen(function* () {
      return yield* Transport
    }))).pipe(
      Effect.provide(KafkaTransport.layer({ clientId: "security-tests", ...options })),
      Effect.provide(Layer.merge(logs.layer, recorder.layer)),
    ),
  )
  return { exit, elapsedMs: performance.now() - started }
}

const failureOf = (exit: Exit.Exit<void, unknown>): TransportError => {
  assert.ok(Exit.isFailure(exit), "building the layer fails")
  const error = Cause.squash(exit.cause)
  assert.ok(error instanceof TransportError, `a TransportError, got ${inspect(error)}`)
  return error
}

/** Everything a user could see of a failure: its message, its string, the cause as Effect prints it. */
const renderings = (exit: Exit.Exit<void, unknown>, error: TransportError): ReadonlyArray<string> => [
  error.message,
  String(error),
  inspect(error, { depth: 8 }),
  Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "",
]

kafkaSecuredTest(
  "KafkaTransport security: the right SCRAM-SHA-512 credentials over TLS carry a record through an actor, and the password reaches no log line or span",
  async (secured) => {
    const logs = captureLogs()
    const recorder = makeRecorder()
    const seen: Array<string> = []
    const transport = KafkaTransport.layer({
      brokers: [...secured.brokers],
      clientId: "security-tests",
      ssl: { ca: secured.ca },
      sasl: credentials(secured),
    })
    const app = Layer.mergeAll(Producer.layer(), Tracing.layer(), recorder.layer).pipe(Layer.provideMerge(transport))
    const exit = await Effect.runPromiseExit(
      Effect.scoped(Effect.gen(function* () {
        const topic = uniqueName("secured")
        yield* (yield* Transport).createTopic({ topic, partitions: 1 })
        yield* ActorSystem.start([
          Actor.make({
            name: "secured",
            group: uniqueName("secured"),
            topics: [topic],
            value: Event,
            handle: (event: typeof Event.Type) => Effect.sync(() => void seen.push(event.id)),
            onError: { default: ErrorPolicy.halt },
            consumer: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" },
          }),
        ])
        yield* Producer.forTopic({ topic, value: Event }).send({ id: "over-sasl-ssl" })
        yield* eventually(60, "the record handled", () => seen.length > 0)
      })).pipe(Effect.provide(app), Effect.provide(logs.layer)),
    )
    assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
    assert.deepEqual(seen, ["over-sasl-ssl"])
    assert.ok(logs.lines.length > 0, "log lines were captured")
    assert.ok(recorder.spans.length > 0, "spans were recorded")
    assertNoSecret([secured.password], "log line", logs.lines)
    assertNoSecret([secured.password], "span", recorder.spans.map(renderSpan))
  },
  { timeoutMs: 90_000 },
)

kafkaSecuredTest(
  "KafkaTransport security: records sent over SASL_SSL come back through a subscription on the same listener, keys, values and headers intact",
  async (secured) => {
    const logs = captureLogs()
    const topic = uniqueName("secured-sub")
    const sent = Array.from({ length: 20 }, (_, i) => ({
      topic,
      key: bytes(`k${i}`),
      value: bytes(`v${i}`),
      headers: [{ key: "h", value: bytes(`h${i}`) }],
    }))
    const exit = await Effect.runPromiseExit(
      Effect.scoped(Effect.gen(function* () {
        const transport = yield* Transport
        yield* transport.createTopic({ topic, partitions: 2 })
        const consumer = yield* startConsumer(transport, { group: uniqueName("secured-sub"), topics: [topic] })
        yield* transport.send(sent)
        yield* consumer.receivedAtLeast(sent.length).pipe(
          Effect.timeoutOrElse({
            duration: "30 seconds",
            orElse: () => Effect.die(new Error(`Only ${consumer.received.length} of ${sent.length} records arrived in 30 s`)),
          }),
        )
        return [...consumer.received]
      })).pipe(
        Effect.provide(KafkaTransport.layer({
          brokers: [...secured.brokers],
          clientId: "security-tests",
          ssl: { ca: secured.ca },
          sasl: credentials(secured),
        })),
        Effect.provide(logs.layer),
      ),
    )
    assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
    const received = exit.value.map((r) => `${text(r.key)}=${text(r.value)};${r.headers.map((h) => `${h.key}:${text(h.value)}`).join(",")}`)
    assert.deepEqual(
      received.sort(),
      sent.map((r) => `${text(r.key)}=${text(r.value)};h:${text(r.headers[0]!.value)}`).sort(),
    )
    assertNoSecret([secured.password], "log line", logs.lines)
  },
  { timeoutMs: 90_000 },
)

kafkaSecuredTest(
  "KafkaTransport security: a wrong password fails within 5 s with SASL_AUTHENTICATION_FAILED, not retriable, after one attempt, and no password shows",
  async (secured) => {
    const proxy = await countingProxy(secured.brokers[0]!)
    const wrong = `wrong-${crypto.randomUUID()}`
    const logs = captureLogs()
    const recorder = makeRecorder()
    const { exit, elapsedMs } = await connect(
      { brokers: [proxy.address], ssl: { ca: secured.ca }, sasl: credentials(secured, wrong) },
      logs,
      recorder,
    ).finally(proxy.close)
    const error = failureOf(exit)
    assert.equal(error.code, "SASL_AUTHENTICATION_FAILED")
    assert.equal(error.retriable, false)
    assert.equal(error.operation, "connect")
    assert.match(error.message, new RegExp(`Cannot authenticate to Kafka at ${proxy.address} as user "${secured.username}" with SCRAM-SHA-512`))
    assert.match(error.message, /check the user name, the password and the mechanism/)
    assert.ok(elapsedMs < 5_000, `failed after ${Math.round(elapsedMs)} ms`)
    assert.equal(proxy.connections(), 1, "one attempt to authenticate, no retries")
    const secrets = [wrong, secured.password]
    assertNoSecret(secrets, "rendering of the error", renderings(exit, error))
    assertNoSecret(secrets, "log line", logs.lines)
    assertNoSecret(secrets, "span", recorder.spans.map(renderSpan))
  },
)

kafkaSecuredTest(
  "KafkaTransport security: TLS trusting only the runtime's CAs refuses the broker's certificate at once with SSL_AUTHENTICATION_FAILED",
  async (secured) => {
    const proxy = await countingProxy(secured.brokers[0]!)
    const { exit, elapsedMs } = await connect(
      { brokers: [proxy.address], ssl: true, sasl: credentials(secured) },
      captureLogs(),
      makeRecorder(),
    ).finally(proxy.close)
    const error = failureOf(exit)
    assert.equal(error.code, "SSL_AUTHENTICATION_FAILED")
    assert.equal(error.retriable, false)
    assert.match(error.message, new RegExp(`Cannot connect to Kafka at ${proxy.address} over TLS: .*certificate`))
    assert.match(error.message, /not trusted: give the CA that signed it as `ssl\.ca` \(or KAFKA_SSL_CA_FILE\)/)
    assert.ok(elapsedMs < 5_000, `failed after ${Math.round(elapsedMs)} ms`)
    assert.equal(proxy.connections(), 1, "one handshake, no retries")
    assertNoSecret([secured.password], "rendering of the error", renderings(exit, error))
  },
)

kafkaSecuredTest(
  "KafkaTransport security: a broker reached by a name its certificate does not list is refused at once with SSL_AUTHENTICATION_FAILED",
  async (secured) => {
    const proxy = await countingProxy(secured.brokers[0]!)
    // The name a TLS client checks is `servername` when given (as SNI), else the host; the
    // certificate lists only IP 127.0.0.1 and DNS localhost.
    const { exit, elapsedMs } = await connect(
      { brokers: [proxy.address], ssl: { ca: secured.ca, servername: "kafka.example.invalid" }, sasl: credentials(secured) },
      captureLogs(),
      makeRecorder(),
    ).finally(proxy.close)
    const error = failureOf(exit)
    assert.equal(error.code, "SSL_AUTHENTICATION_FAILED")
    assert.equal(error.retriable, false)
    assert.match(error.message, /kafka\.example\.invalid/)
    assert.match(error.message, /not for the name connected to/)
    assert.ok(elapsedMs < 5_000, `failed after ${Math.round(elapsedMs)} ms`)
    assert.equal(proxy.connections(), 1, "one handshake, no retries")
  },
)

kafkaSecuredTest(
  "KafkaTransport security: layerFromEnv connects to the secured listener from KAFKA_SSL_CA_FILE and KAFKA_SASL_*",
  async (secured) => {
    const env = ConfigProvider.fromEnv({
      env: {
        KAFKA_BROKERS: secured.brokers.join(","),
        KAFKA_SSL_CA_FILE: secured.caFile,
        KAFKA_SASL_MECHANISM: "scram-sha-512",
        KAFKA_SASL_USERNAME: secured.username,
        KAFKA_SASL_PASSWORD: secured.password,
      },
    })
    const topic = uniqueName("secured-env")
    const exit = await Effect.runPromiseExit(
      Effect.scoped(Effect.gen(function* () {
        const transport = yield* Transport
        yield* transport.createTopic({ topic, partitions: 2 })
        return yield* transport.describeTopic(topic)
      })).pipe(
        Effect.provide(KafkaTransport.layerFromEnv({ clientId: "security-tests" })),
        Effect.provide(ConfigProvider.layer(env)),
        Effect.provideService(References.MinimumLogLevel, "None"),
      ),
    )
    assert.ok(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
    assert.equal(exit.value.partitions.length, 2)
  },
)
