/**
 * KafkaTransport (Partita's own client) on the secured listener: SASL/SCRAM-SHA-512 over TLS,
 * the listener scripts/kafka runs beside the plain one (its throw-away CA signs a certificate for
 * 127.0.0.1 and localhost). What tests/KafkaJsTransport.security.test.ts proves of the kafkajs
 * transport, on this one (the suite both run is tests/fixtures/securedTransport.ts): the right
 * credentials carry records both ways (an actor, and a plain subscription); a wrong password, a
 * CA the client does not trust and a certificate for another name each fail the layer at once,
 * after one connection, with a typed error that is not retriable; no password reaches a log
 * line, a span or an error's rendering; `layerFromEnv` reaches the listener from
 * KAFKA_SSL_CA_FILE and KAFKA_SASL_*.
 */
import assert from "node:assert/strict"
import { Cause, Effect, Exit } from "effect"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, text } from "./fixtures/effect.ts"
import { assertNoSecret, captureLogs, securedOptions, securedTransportSuite } from "./fixtures/securedTransport.ts"
import { kafkaSecuredTest, uniqueName } from "./fixtures/services.ts"

securedTransportSuite({
  prefix: "KafkaTransport security",
  layer: KafkaTransport.layer,
  layerFromEnv: KafkaTransport.layerFromEnv,
  assertLogsCaptured: (lines) => assert.ok(lines.length > 0, "log lines were captured"),
  wrongPassword: {
    messages: ({ address, username }) => [
      new RegExp(`Cannot authenticate to Kafka at ${address} as user "${username}" with SCRAM-SHA-512`),
      /check the user name, the password and the mechanism/,
    ],
    connections: 1,
    connectionsWhy: "one attempt to authenticate, no retries",
  },
})

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
        Effect.provide(KafkaTransport.layer(securedOptions(secured))),
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
