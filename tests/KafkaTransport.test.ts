/**
 * The Kafka transport on Partita's own client: the contract suite on the real broker, on the
 * protocol the broker offers (KIP-848 on Kafka 4), then what only this transport promises.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { ConfigProvider, Effect, Redacted } from "effect"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { kafkaTest } from "./fixtures/services.ts"
import { transportContract } from "./transport_contract.ts"

transportContract({
  name: "kafka (own client)",
  features: { transactions: true, faultInjection: false, clockDriven: false },
  layer: () => KafkaTransport.layerFromEnv(),
  test: (name, body) => kafkaTest(name, () => body(), { timeoutMs: 60_000 }),
})

test("KafkaTransport.config reads the same KAFKA_ variables as KafkaJsTransport, the SASL password as Redacted", async () => {
  const provider = ConfigProvider.fromEnv({
    env: {
      KAFKA_BROKERS: "kafka-1:9092, kafka-2:9092,",
      KAFKA_CLIENT_ID: "billing",
      KAFKA_SSL: "true",
      KAFKA_SASL_MECHANISM: "scram-sha-256",
      KAFKA_SASL_USERNAME: "partita",
      KAFKA_SASL_PASSWORD: "s3cret",
    },
  })
  const options = await Effect.runPromise(KafkaTransport.config.parse(provider))
  assert.deepEqual(options.brokers, ["kafka-1:9092", "kafka-2:9092"])
  assert.equal(options.clientId, "billing")
  assert.equal(options.ssl, true)
  assert.equal(options.sasl?.mechanism, "scram-sha-256")
  assert.ok(options.sasl !== undefined && Redacted.isRedacted(options.sasl.password))
})
