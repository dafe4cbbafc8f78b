/**
 * Consumer group membership on Kafka 4.4's KIP-848 protocol (ConsumerGroupHeartbeat), against
 * the real broker: the shared suite (groupSuite.ts). The broker's heartbeat interval (5 s) paces
 * these tests. Not here yet: fencing. A member that stops heartbeating is fenced only after the
 * broker's minimum session timeout (45 s), too long for this file; a member that does not
 * acknowledge a revocation was not fenced within 40 s with a 3 s rebalance timeout on 4.4
 * (groupSuite.ts' unacknowledgedIsFenced, not run until that is understood).
 */
import { kafkaTest } from "../../fixtures/services.ts"
import { groupSuite } from "./groupSuite.ts"

let broker = ""
const suite = {
  protocol: "consumer" as const,
  broker: () => broker,
  declare: (name: string, body: () => Promise<void>) =>
    kafkaTest(name, ([first]) => {
      broker = first!
      return body()
    }, { timeoutMs: 60_000 }),
}

groupSuite(suite)
