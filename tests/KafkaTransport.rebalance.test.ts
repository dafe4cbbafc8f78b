/**
 * Rebalancing on KafkaTransport (Partita's own client) on the KIP-848 consumer protocol, Kafka
 * 4.4: the shared suite (fixtures/rebalanceSuite.ts: members joining, leaving cleanly and dying
 * while records flow; static membership), then fencing, which only KIP-848 has in this form.
 */
import assert from "node:assert/strict"
import { Cause, Effect, Exit, Fiber } from "effect"
import * as Admin from "../lib/internal/kafka/admin.ts"
import * as Brokers from "../lib/internal/kafka/brokers.ts"
import * as KafkaSubscription from "../lib/internal/kafka/subscription.ts"
import { TransportError } from "../lib/TransportError.ts"
import { proxy } from "./fixtures/brokerProxy.ts"
import { check, makeWorld, onOwnTransport, run, startMember, until } from "./fixtures/rebalance.ts"
import { describe, drain, flow, rebalanceSuite, settle, subscribeOptions, transportOf } from "./fixtures/rebalanceSuite.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

const onKafka4 = (name: string, body: (broker: string) => Promise<void>) =>
  kafkaTest(name, ([broker]) => body(broker!), { timeoutMs: 90_000 })

rebalanceSuite({ label: "KIP-848 on Kafka 4.4", protocol: "consumer", declare: onKafka4 })

/**
 * A member stalls in the middle of a rebalance (its handlers stop and its coordinator's answers
 * are held by a proxy, as a process in a long pause) while another member joins: the broker
 * fences it once its rebalance timeout passes and gives the other member everything. Its commit
 * made meanwhile reaches the broker and is refused, non-retriable, and the group's offsets do not
 * move; once it hears again it is told it lost its partitions (a `Revoked`; committing them is
 * refused too), acknowledges and rejoins.
 *
 * The member is a subscription over brokers.ts whose coordinator is reached through the proxy
 * (KafkaTransport dials the addresses the cluster advertises, so there is no place to put one).
 */
onKafka4("KIP-848 fencing: a member that stalls mid-rebalance past its rebalance timeout (3 s) is removed: its subscription ends with UNKNOWN_MEMBER_ID saying why, its commits are refused typed, non-retriable, and never move the offsets, and it joins again with a new subscription", (broker) =>
  run(Effect.gen(function* () {
    const world = makeWorld()
    const count = 4
    const records = yield* flow(broker, count)
    const group = uniqueName("g-fenced")
    const held = yield* Effect.acquireRelease(Effect.promise(() => proxy(broker)), (p) => Effect.promise(() => p.close()))
    const pool = yield* Brokers.make({ bootstrap: [broker], clientId: "fenced" })
    const viaProxy: Brokers.Brokers = {
      ...pool,
      coordinatorFor: (key) => Effect.map(pool.coordinatorFor(key), (connection) => ({ ...connection, broker: held.address })),
    }
    const options = { ...subscribeOptions(group, records.topic), rebalanceTimeout: "3 seconds" as const }

    let stalled = false
    const a = yield* startMember(world, "A", records.topic, KafkaSubscription.subscribe(viaProxy, Admin.make(pool), {
      ...options,
      connection: { clientId: "fenced-a" },
      protocol: "consumer",
      fetch: { maxWait: "100 millis" },
    }), {
      expectRemoval: true,
      onRevoked: (_lost, _acknowledge, { freeze }) =>
        Effect.gen(function* () {
          // The stall: nothing handled, nothing acknowledged, the coordinator's answers held
          // (once the handlers stopped: a commit of theirs waiting for its answer would hold
          // the freeze for a request timeout).
          stalled = true
          yield* freeze
          held.hold()
        }),
    })
    yield* settle(world, "A alone", [a], count)
    const b = yield* startMember(world, "B", records.topic, onOwnTransport(transportOf(broker, "consumer", "B"), options))
    yield* until(world, "A stalls on its revocation", () => stalled, describe([a, b]))
    // At the rebalance timeout the member gives up on its own: the coordinator has removed it.
    yield* until(world, "A's subscription ends, removed", () => a.removal() !== undefined, describe([a, b]), "30 seconds")
    assert.match(a.removal()!.message, /did not acknowledge a revocation within the rebalance timeout/)
    yield* until(world, "the broker fences A and B gets every partition", () => b.owns().length === count, describe([a, b]), "60 seconds")

    // A still thinks it holds its partitions; a commit of its goes out with its old epoch.
    const target = { topic: records.topic, partition: a.owns()[0]! }
    const sent = held.framesFromClients()
    const stale = yield* Effect.forkScoped(Effect.flip(a.subscription.commit([{ ...target, offset: 1_000_000 }])))
    yield* Effect.promise(() => held.until(() => held.framesFromClients() > sent))
    held.release()
    held.cut()
    const staleRefusal = yield* Fiber.join(stale)
    assert.ok(staleRefusal instanceof TransportError)
    assert.equal(staleRefusal.retriable, false, `${staleRefusal.code}: ${staleRefusal.message}`)
    assert.ok(["UNKNOWN_MEMBER_ID", "FENCED_MEMBER_EPOCH", "STALE_MEMBER_EPOCH", "ILLEGAL_GENERATION"].includes(staleRefusal.code), staleRefusal.code)
    yield* a.die

    // Joining again is a new subscription (as ActorSystem does on its rejoin schedule).
    const again = yield* startMember(world, "A2", records.topic, onOwnTransport(transportOf(broker, "consumer", "A2"), options))
    yield* settle(world, "A rejoined", [again, b], count)

    yield* drain(world, records, [again, b])
    const committed = yield* b.subscription.committed(Array.from({ length: count }, (_, partition) => ({ topic: records.topic, partition })))
    for (const c of committed) assert.ok(c.offset <= records.produced.get(c.partition)!, `${c.topic}/${c.partition} committed at ${c.offset}: the fenced member's commit moved it`)
    yield* again.leave
    yield* b.leave
    const figures = check(world, records.produced)
    console.log(`fencing KIP-848 on Kafka 4.4: removed after the rebalance timeout, stale commit refused with ${staleRefusal.code}, ${figures.handovers} handovers, ${figures.duplicates} duplicates`)
  })))
