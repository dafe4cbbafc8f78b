/**
 * Batch handlers on the real broker, on both Kafka transports: the cases of
 * tests/fixtures/batch.ts, as the embedded broker runs them.
 */
import { type Layer } from "effect"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import type { Transport } from "../lib/Transport.ts"
import { batchCases } from "./fixtures/batch.ts"
import { run } from "./fixtures/effect.ts"
import { kafkaTest } from "./fixtures/services.ts"

const transports: ReadonlyArray<readonly [name: string, layer: (brokers: ReadonlyArray<string>) => Layer.Layer<Transport, unknown>]> = [
  ["KafkaTransport", (brokers) => KafkaTransport.layer({ brokers: [...brokers], clientId: "batch-tests" })],
  ["KafkaJsTransport", (brokers) => KafkaJsTransport.layer({ brokers: [...brokers], clientId: "batch-tests" })],
]

for (const [name, layer] of transports) {
  batchCases({
    // Read back with Partita's own client on both (see tests/ActorSystem.exactly_once.kafka.test.ts).
    test: (title, body) =>
      kafkaTest(
        `${title} (${name})`,
        (brokers) => run(body(KafkaTransport.layer({ brokers: [...brokers], clientId: "batch-reader" })), layer(brokers)),
        { timeoutMs: 120_000 },
      ),
    consumer: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" },
    patience: 60,
  })
}
