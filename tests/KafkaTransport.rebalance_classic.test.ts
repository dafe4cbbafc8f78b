/**
 * Rebalancing on KafkaTransport (Partita's own client) on the classic protocol with the
 * cooperative-sticky assignor: the shared suite (fixtures/rebalanceSuite.ts) on Kafka 4.4
 * (`groupProtocol: "classic"`) and on Kafka 3.9, which has no KIP-848 (the older broker of
 * fixtures/scriptedKafka.ts: the one CI started, named by PARTITA_KAFKA_OLDER_*, or one this
 * file starts and stops).
 */
import { after } from "node:test"
import { OlderBroker } from "./fixtures/scriptedKafka.ts"
import { rebalanceSuite } from "./fixtures/rebalanceSuite.ts"
import { kafkaTest, scriptedKafkaTest } from "./fixtures/services.ts"

let older: Promise<OlderBroker> | undefined
after(async () => {
  await (await older?.catch(() => undefined))?.stop()
})

rebalanceSuite({
  label: "classic cooperative-sticky on Kafka 4.4",
  protocol: "classic",
  declare: (name, body) => kafkaTest(name, ([broker]) => body(broker!), { timeoutMs: 90_000 }),
})

rebalanceSuite({
  label: "classic cooperative-sticky on Kafka 3.9",
  protocol: "classic",
  declare: (name, body) =>
    scriptedKafkaTest(name, async () => {
      older ??= OlderBroker.start("3.9")
      await body((await older).address)
    }, { timeoutMs: 120_000 }),
})
