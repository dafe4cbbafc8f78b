/**
 * Consumer group membership on Kafka 4.4's KIP-848 protocol (ConsumerGroupHeartbeat), against
 * the real broker: the shared suite (groupSuite.ts) and membership over brokers.ts. The broker's
 * heartbeat interval (5 s) paces these tests. Fencing by an unacknowledged revocation is covered
 * (groupSuite.ts' unacknowledgedIsFenced: the rebalance timeout is the member's own); a member
 * that stops heartbeating is fenced only after the broker's minimum session timeout (45 s), too
 * long for this file (group.classic.test.ts covers it on the classic protocol).
 */
import assert from "node:assert/strict"
import { Effect } from "effect"
import * as Brokers from "../../../lib/internal/kafka/brokers.ts"
import * as Group from "../../../lib/internal/kafka/group.ts"
import { kafkaTest, uniqueName } from "../../fixtures/services.ts"
import { createTopic, groupSuite, member, run, unacknowledgedIsFenced } from "./groupSuite.ts"

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
unacknowledgedIsFenced(suite)

kafkaTest("Group over brokers.ts (fromBrokers): the protocol defaults to KIP-848 on Kafka 4.4; a member gets every partition and commits", ([broker]) =>
  run(Effect.gen(function* () {
    const topic = yield* createTopic(broker!, 2)
    const pool = yield* Brokers.make({ bootstrap: [broker!] })
    const brokers = Effect.flatMap(Effect.succeed(pool), (b) => Group.fromBrokers(b, {}))
    const a = yield* member(broker!, { group: uniqueName("g"), topics: [topic] }, { brokers })
    yield* a.until("A holds every partition", () => a.holds().length === 2)
    assert.equal(a.group.protocol, "consumer", "Kafka 4.4 speaks KIP-848, so it is the default")
    yield* a.group.commit([{ topic, partition: 1, offset: 9, metadata: "x" }])
    assert.deepEqual(yield* a.group.committed([{ topic, partition: 1 }]), [{ topic, partition: 1, offset: 9, metadata: "x" }])
    yield* a.close
  })), { timeoutMs: 60_000 })

kafkaTest("Group over brokers.ts (fromBrokers): callers that find the coordinator connection gone at once share one new connection", ([broker]) =>
  run(Effect.gen(function* () {
    const pool = yield* Brokers.make({ bootstrap: [broker!] })
    const brokers = yield* Group.fromBrokers(pool, {})
    const key = { type: "group", id: uniqueName("g") } as const
    const first = yield* brokers.coordinatorFor(key)
    yield* first.close
    // A heartbeat, a commit and an offset fetch at once, after the connection was lost.
    const again = yield* Effect.all(Array.from({ length: 5 }, () => brokers.coordinatorFor(key)), { concurrency: "unbounded" })
    assert.equal(new Set(again).size, 1, "one connection opened, not one per caller")
    assert.ok(again[0] !== first && again[0]!.isOpen())
  })))
