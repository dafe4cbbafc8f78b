/**
 * The Kafka transport on a secured listener: SASL/SCRAM-SHA-512 over TLS, the listener
 * scripts/kafka runs beside the plain one (its throw-away CA signs a certificate for 127.0.0.1
 * and localhost). The right credentials carry records both ways; a wrong password, a CA the
 * client does not trust and a certificate for another name each fail the layer within seconds,
 * once, with a typed error that is not retriable; no password reaches a log line, a span or an
 * error's rendering. The suite of those is tests/fixtures/securedTransport.ts, which
 * tests/KafkaTransport.security.test.ts runs too; here it runs with kafkajs' debug logging on,
 * so that the secret scan covers kafkajs' own lines.
 */
import assert from "node:assert/strict"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import { Cause, ConfigProvider, Effect, Exit } from "effect"
import { fromKafkaJS } from "../lib/internal/kafkajs.ts"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import { securedTransportSuite } from "./fixtures/securedTransport.ts"

securedTransportSuite({
  prefix: "kafka security",
  layer: (options) => KafkaJsTransport.layer({ ...options, logLevel: "debug" }),
  layerFromEnv: KafkaJsTransport.layerFromEnv,
  assertLogsCaptured: (lines) =>
    assert.ok(lines.some((line) => line.includes("SASL SCRAM SHA512 authentication successful")), "kafkajs' debug lines were captured"),
  wrongPassword: {
    messages: () => [/authentication failed.*: check the SASL mechanism, username and password/i],
    // The layer's certificate check, then kafkajs' one authentication: no retries.
    connections: 2,
    connectionsWhy: "one handshake to check the certificate, one attempt to authenticate",
  },
})

test("KafkaJsTransport.config reads KAFKA_SSL_CA_FILE into ssl.ca, and says which file it cannot read", async () => {
  const dir = mkdtempSync(join(tmpdir(), "partita-ca-"))
  try {
    const caFile = join(dir, "ca.pem")
    const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    writeFileSync(caFile, pem)
    const parse = (env: Record<string, string>) =>
      Effect.runPromiseExit(KafkaJsTransport.config.parse(ConfigProvider.fromEnv({ env: { KAFKA_BROKERS: "kafka-1:9093", ...env } })))

    const read = await parse({ KAFKA_SSL_CA_FILE: caFile })
    assert.ok(Exit.isSuccess(read), Exit.isFailure(read) ? Cause.pretty(read.cause) : "")
    assert.deepEqual(read.value.ssl, { ca: pem }, "the CA file turns TLS on with that CA")
    const withSsl = await parse({ KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: caFile })
    assert.ok(Exit.isSuccess(withSsl))
    assert.deepEqual(withSsl.value.ssl, { ca: pem })

    const missing = join(dir, "missing.pem")
    const unreadable = await parse({ KAFKA_SSL_CA_FILE: missing })
    assert.ok(Exit.isFailure(unreadable), "a CA file that cannot be read fails the config")
    assert.match(Cause.pretty(unreadable.cause), new RegExp(`Cannot read the CA certificates in KAFKA_SSL_CA_FILE "${missing}"`))

    const contradiction = await parse({ KAFKA_SSL: "false", KAFKA_SSL_CA_FILE: caFile })
    assert.ok(Exit.isFailure(contradiction), "KAFKA_SSL=false with a CA file fails the config")
    assert.match(Cause.pretty(contradiction.cause), /KAFKA_SSL_CA_FILE is set but KAFKA_SSL=false/)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test("A certificate kafkajs refused becomes SSL_AUTHENTICATION_FAILED, not a retriable network error", () => {
  // kafkajs' own shapes, as it rejects after its retries when a broker's certificate changes later.
  const refused = new Error("Connection error: self-signed certificate in certificate chain")
  Object.assign(refused, { name: "KafkaJSConnectionError", code: "SELF_SIGNED_CERT_IN_CHAIN", broker: "kafka-1:9093" })
  const gaveUp = Object.assign(new Error(refused.message), { name: "KafkaJSNumberOfRetriesExceeded", retryCount: 5, cause: refused })
  const error = fromKafkaJS("connect", "Cannot connect the admin client to kafka-1:9093")(gaveUp)
  assert.equal(error.code, "SSL_AUTHENTICATION_FAILED")
  assert.equal(error.retriable, false)
  assert.match(error.message, /not trusted: give the CA that signed it as `ssl\.ca`/)

  const down = Object.assign(new Error("Connection error: connect ECONNREFUSED 127.0.0.1:9093"), {
    name: "KafkaJSConnectionError",
    code: "ECONNREFUSED",
  })
  const network = fromKafkaJS("connect", "Cannot connect the admin client to kafka-1:9093")(down)
  assert.equal(network.code, "NETWORK_EXCEPTION")
  assert.equal(network.retriable, true)
})
