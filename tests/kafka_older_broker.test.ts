/**
 * The transport contract suite on the kafkajs transport against an older broker: Kafka 3.9, the
 * last line before 4.0 (classic group protocol only, no KIP-848), started by this file through
 * `KAFKA_VERSION=3.9 scripts/kafka start` on free ports and stopped when the file ends. A client
 * that negotiates API versions must work on it as on 4.4.
 */
import assert from "node:assert/strict"
import { after } from "node:test"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import { OlderBroker } from "./fixtures/scriptedKafka.ts"
import { scriptedKafkaTest } from "./fixtures/services.ts"
import { transportContract } from "./transport_contract.ts"

const version = "3.9"

// Started by the first test that needs it, so that a run without Java skips (or, under CI,
// fails) instead of failing in a hook; stopped once the file's tests are done.
let started: Promise<OlderBroker> | undefined
let broker: OlderBroker | undefined
const olderBroker = (): Promise<OlderBroker> => {
  started ??= OlderBroker.start(version).then((b) => (broker = b))
  return started
}
after(async () => {
  // A start still under way is waited for, so that its broker is stopped too.
  await started?.catch(() => undefined)
  await broker?.stop()
})

// The broker's start (about 15-30 s on a busy machine) falls in the first test's time.
const declare = (name: string, body: () => Promise<void>) =>
  scriptedKafkaTest(name, async () => {
    await olderBroker()
    await body()
  }, { timeoutMs: 120_000 })

declare(`the older broker runs Kafka ${version}`, async () => {
  const running = (await olderBroker()).runningVersion()
  assert.ok(running.startsWith(`${version}.`), `the broker logged Kafka version ${running}, not ${version}.x`)
})

transportContract({
  name: `kafka on Kafka ${version}`,
  features: { transactions: true, faultInjection: false, clockDriven: false },
  layer: () => {
    if (broker === undefined) throw new Error(`The Kafka ${version} broker has not started`)
    return KafkaJsTransport.layer({ brokers: [broker.address] })
  },
  test: declare,
})
