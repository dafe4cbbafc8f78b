/**
 * Dead-letter replay on the real broker, on both Kafka transports: the cases of
 * tests/fixtures/deadLetterReplay.ts, as the embedded broker runs them.
 */
import type { Layer } from "effect"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import type { Transport } from "../lib/Transport.ts"
import { dlqCases } from "./fixtures/deadLetterReplay.ts"
import { run } from "./fixtures/effect.ts"
import { kafkaTest } from "./fixtures/services.ts"

const transports: ReadonlyArray<readonly [name: string, layer: (brokers: ReadonlyArray<string>) => Layer.Layer<Transport, unknown>]> = [
  ["KafkaTransport", (brokers) => KafkaTransport.layer({ brokers: [...brokers], clientId: "replay-tests" })],
  ["KafkaJsTransport", (brokers) => KafkaJsTransport.layer({ brokers: [...brokers], clientId: "replay-tests", logLevel: "nothing" })],
]

for (const [name, layer] of transports) {
  dlqCases({
    test: (title, body) => kafkaTest(`${title} (${name})`, (brokers) => run(body, layer(brokers)), { timeoutMs: 120_000 }),
    patience: 60,
    replay: { sessionTimeout: "6 seconds" },
  })
}
