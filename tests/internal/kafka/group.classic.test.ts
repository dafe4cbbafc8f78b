/**
 * Consumer group membership on the classic protocol (JoinGroup/SyncGroup/Heartbeat, the
 * cooperative-sticky assignor run by the leader) on Kafka 3.9, which has no KIP-848: the
 * broker is started by this file through scripts/kafka on free ports and stopped when it ends.
 * Members use short sessions (6 s, the broker's minimum) and 500 ms heartbeats.
 */
import { after } from "node:test"
import { OlderBroker } from "../../fixtures/scriptedKafka.ts"
import { scriptedKafkaTest } from "../../fixtures/services.ts"
import { groupSuite, silentIsFenced } from "./groupSuite.ts"

let started: Promise<OlderBroker> | undefined
let broker: OlderBroker | undefined
after(async () => {
  await started?.catch(() => undefined)
  await broker?.stop()
})

const suite = {
  protocol: "classic" as const,
  broker: () => broker!.address,
  declare: (name: string, body: () => Promise<void>) =>
    scriptedKafkaTest(name, async () => {
      started ??= OlderBroker.start("3.9").then((b) => (broker = b))
      await started
      await body()
    }, { timeoutMs: 120_000 }),
  memberOptions: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" } as const,
}

groupSuite(suite)
silentIsFenced(suite)
