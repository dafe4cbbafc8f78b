/**
 * The transport contract suite on the kafkajs transport against an older broker: Kafka 3.9, the
 * last line before 4.0 (classic group protocol only, no KIP-848), started for this file
 * (tests/fixtures/olderBroker.ts) through `KAFKA_VERSION=3.9 scripts/kafka start` on free ports
 * and stopped when the file ends. A client that negotiates API versions must work on it as on 4.4.
 */
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import { olderBrokerTests } from "./fixtures/olderBroker.ts"
import { transportContract } from "./transport_contract.ts"

const older = olderBrokerTests("3.9")

older.test(`the older broker runs Kafka ${older.version}`, async () => {
  older.assertRunningVersion()
})

transportContract({
  name: `kafka on Kafka ${older.version}`,
  features: { transactions: true, faultInjection: false, clockDriven: false },
  layer: () => KafkaJsTransport.layer({ brokers: [older.broker().address] }),
  test: older.test,
})
