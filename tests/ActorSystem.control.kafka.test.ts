/**
 * Run-time control on the real broker, on both Kafka transports: the cases of
 * tests/fixtures/control.ts (pause and resume, across a rebalance; seek back; a halted partition
 * restarted), as the embedded broker runs them under `TestClock`.
 */
import assert from "node:assert/strict"
import { Effect, type Layer } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as Codec from "../lib/Codec.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import type { Transport } from "../lib/Transport.ts"
import { createUniqueTopics, eventually } from "./fixtures/actors.ts"
import { controlCases } from "./fixtures/control.ts"
import { run } from "./fixtures/effect.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

const transports: ReadonlyArray<readonly [name: string, layer: (brokers: ReadonlyArray<string>) => Layer.Layer<Transport, unknown>]> = [
  ["KafkaTransport", (brokers) => KafkaTransport.layer({ brokers: [...brokers], clientId: "control-tests" })],
  ["KafkaJsTransport", (brokers) => KafkaJsTransport.layer({ brokers: [...brokers], clientId: "control-tests" })],
]

/** Polls `condition` every 20 ms for at most 60 s. */
const waitUntil = (what: string, condition: Effect.Effect<boolean>) => {
  let holds = false
  return eventually(60, what, () => holds).pipe(
    Effect.raceFirst(Effect.forever(Effect.andThen(Effect.map(condition, (now) => void (holds = now)), Effect.sleep("20 millis")))),
  )
}

for (const [name, layer] of transports) {
  controlCases({
    test: (title, body) => kafkaTest(`${title} (${name})`, (brokers) => run(body, layer(brokers)), { timeoutMs: 120_000 }),
    consumer: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" },
    waitUntil,
    // A fetch on a real broker answers within its wait (500 ms by default): twice that lets any record through.
    quiet: Effect.sleep("1200 millis"),
  })
}

kafkaTest("ActorSystem.seek of an exactly-once actor with one transactional producer per member is refused: its transactions hold every partition's position (KafkaTransport)", (brokers) =>
  run(
    Effect.gen(function*() {
      const [topic] = yield* createUniqueTopics(["control-seek-member", 1])
      const actor = Actor.make({
        name: "control-member",
        group: uniqueName("control-member"),
        topics: [topic!],
        value: Codec.bytes,
        handle: () => Effect.void,
        onError: { default: ErrorPolicy.halt },
        delivery: "exactly-once",
        transaction: { producer: "per-member" },
        consumer: { sessionTimeout: "6 seconds", heartbeatInterval: "500 millis", rebalanceTimeout: "10 seconds" },
      })
      const system = yield* ActorSystem.start([actor])
      yield* waitUntil("the partition assigned", Effect.map(system.health, (health) => health.partitions.length === 1))
      const refused = yield* Effect.flip(system.seek(actor, { topic: topic!, partition: 0 }, { offset: 0 }))
      assert.equal(refused._tag, "InvalidSeek")
      assert.match(refused.message, /one transactional producer per member cannot seek/)
    }),
    KafkaTransport.layer({ brokers: [...brokers], clientId: "control-tests" }),
  ), { timeoutMs: 120_000 })
