/**
 * Exactly-once actors on the real broker, on both Kafka transports: the cases of
 * tests/fixtures/exactlyOnce.ts, as the embedded broker runs them. On `KafkaTransport` the
 * transactions' offsets also carry the member's generation (KIP-447); on `KafkaJsTransport` the
 * partition's transactional id alone fences an old owner.
 */
import type { Layer } from "effect"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import type { Transport } from "../lib/Transport.ts"
import { run } from "./fixtures/effect.ts"
import { exactlyOnceCases } from "./fixtures/exactlyOnce.ts"
import { kafkaTest } from "./fixtures/services.ts"

const transports: ReadonlyArray<readonly [name: string, layer: (brokers: ReadonlyArray<string>) => Layer.Layer<Transport, unknown>]> = [
  ["KafkaTransport", (brokers) => KafkaTransport.layer({ brokers: [...brokers], clientId: "eos-tests" })],
  ["KafkaJsTransport", (brokers) => KafkaJsTransport.layer({ brokers: [...brokers], clientId: "eos-tests" })],
]

for (const [name, layer] of transports) {
  exactlyOnceCases({
    // Read back with Partita's own client on both: kafkajs' read-committed consumer was seen
    // returning records of aborted transactions when several transactional producers wrote to a
    // partition (Kafka's console consumer and KafkaTransport, reading the same topic, did not).
    test: (title, body) =>
      kafkaTest(
        `${title} (${name})`,
        (brokers) => run(body(KafkaTransport.layer({ brokers: [...brokers], clientId: "eos-reader" })), layer(brokers)),
        { timeoutMs: 120_000 },
      ),
    consumer: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" },
    patience: 60,
  })
}
