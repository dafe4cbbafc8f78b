/**
 * Exactly-once actors on the real broker, on both Kafka transports: the cases of
 * tests/fixtures/exactlyOnce.ts, as the embedded broker runs them. On `KafkaTransport` the
 * transactions' offsets also carry the member's generation (KIP-447); on `KafkaJsTransport` the
 * partition's transactional id alone fences an old owner.
 */
import assert from "node:assert/strict"
import { Effect, type Layer } from "effect"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { eventually, sendJson } from "./fixtures/actors.ts"
import { type Child, startChild } from "./fixtures/child.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { run, text } from "./fixtures/effect.ts"
import { exactlyOnceCases } from "./fixtures/exactlyOnce.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

const transports: ReadonlyArray<readonly [name: string, layer: (brokers: ReadonlyArray<string>) => Layer.Layer<Transport, unknown>]> = [
  ["KafkaTransport", (brokers) => KafkaTransport.layer({ brokers: [...brokers], clientId: "eos-tests" })],
  ["KafkaJsTransport", (brokers) => KafkaJsTransport.layer({ brokers: [...brokers], clientId: "eos-tests" })],
]

const targets = [
  ...transports.map(([name, layer]) => [name, layer, undefined] as const),
  // One transactional producer per member (KIP-447), on the client whose transactions carry the generation.
  ["KafkaTransport, per-member producer", transports[0]![1], "per-member"] as const,
]

for (const [name, layer, producer] of targets) {
  exactlyOnceCases({
    producer,
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

const appFile = new URL("./fixtures/actor_app.ts", import.meta.url).pathname
const handledCount = (child: Child) => child.lines.filter((line) => line.startsWith("handled ")).length

for (const producer of ["per-partition", "per-member"] as const) {
kafkaTest(`exactly-once (${producer} producers): an app SIGKILLed twice mid-stream, then two instances sharing its group, write each output once`, (brokers) =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const input = uniqueName("eos-kill-in")
      const out = uniqueName("eos-kill-out")
      yield* transport.createTopic({ topic: input, partitions: 3 })
      yield* transport.createTopic({ topic: out, partitions: 3 })
      yield* sendJson(input, Array.from({ length: 1500 }, (_, id) => ({ key: `k${id}`, value: { id } })))
      // A read-committed reader from the start: a duplicate would arrive as a second copy.
      const reader = yield* startConsumer(transport, { group: uniqueName("eos-kill-reader"), topics: [out] })
      const env = { KAFKA_BROKERS: brokers.join(","), TOPIC: input, GROUP: uniqueName("eos-kill"), HANDLE_MILLIS: "2", OUTPUT: out, TXN_PRODUCER: producer }
      const children: Array<Child> = []
      yield* Effect.addFinalizer(() => Effect.promise(() => Promise.all(children.map((child) => child.stop()))))
      const start = () => {
        const child = startChild(appFile, env)
        children.push(child)
        return child
      }
      for (let kill = 0; kill < 2; kill++) {
        const child = start()
        yield* Effect.promise(() => child.waitForLine(/^handled /, 60_000))
        const before = handledCount(child)
        yield* eventually(60, "a few hundred more records handled", () => handledCount(child) >= before + 200)
        child.kill("SIGKILL")
        assert.equal(yield* Effect.promise(() => child.exited), "SIGKILL")
      }
      start()
      start()
      const ids = () => reader.received.map((record) => (JSON.parse(text(record.value)!) as { id: number }).id)
      yield* eventually(120, "every input's output", () => new Set(ids()).size >= 1500)
      // Anything still on its way (an aborted transaction's records never come) has had time.
      yield* Effect.sleep("2 seconds")
      const seen = ids()
      assert.equal(new Set(seen).size, 1500, "every output")
      assert.equal(seen.length, 1500, `each once (${seen.length - new Set(seen).size} duplicates)`)
      const handled = children.reduce((sum, child) => sum + handledCount(child), 0)
      assert.ok(handled >= 1500, `handled ${handled}`)
    }),
    KafkaTransport.layer({ brokers: [...brokers], clientId: "eos-kill-tests" }),
  ), { timeoutMs: 240_000 })
}

for (const producer of ["per-partition", "per-member"] as const) {
kafkaTest(`exactly-once (${producer} producers): an app frozen (SIGSTOP) mid-transaction while its partitions move, then thawed, never commits what the new owner redid: each output once`, (brokers) =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const input = uniqueName("eos-zombie-in")
      const out = uniqueName("eos-zombie-out")
      yield* transport.createTopic({ topic: input, partitions: 2 })
      yield* transport.createTopic({ topic: out, partitions: 2 })
      yield* sendJson(input, Array.from({ length: 1200 }, (_, id) => ({ key: `k${id}`, value: { id } })))
      const reader = yield* startConsumer(transport, { group: uniqueName("eos-zombie-reader"), topics: [out] })
      const env = { KAFKA_BROKERS: brokers.join(","), TOPIC: input, GROUP: uniqueName("eos-zombie"), HANDLE_MILLIS: "3", OUTPUT: out, TXN_PRODUCER: producer }
      const zombie = startChild(appFile, env)
      const owner = startChild(appFile, env)
      yield* Effect.addFinalizer(() => Effect.promise(() => Promise.all([zombie.stop(), owner.stop()])))
      yield* Effect.promise(() => zombie.waitForLine(/^handled /, 60_000))
      const frozenAt = handledCount(zombie)
      const zombiePartitions = new Set(zombie.lines.filter((line) => line.startsWith("handled ")).map((line) => line.split(" ")[1]))
      zombie.kill("SIGSTOP")
      // Its session runs out; the group moves its partitions to the other instance, which fences
      // the frozen one (by transactional id per partition, or by generation per member).
      const takenOver = () =>
        owner.lines.filter((line) => line.startsWith("handled ") && zombiePartitions.has(line.split(" ")[1]!)).length
      yield* eventually(90, "the other instance to handle 100 records of the frozen one's partitions", () => takenOver() >= 100)
      zombie.kill("SIGCONT")
      const ids = () => reader.received.map((record) => (JSON.parse(text(record.value)!) as { id: number }).id)
      yield* eventually(120, "every input's output", () => new Set(ids()).size >= 1200)
      yield* Effect.sleep("2 seconds")
      const seen = ids()
      assert.equal(new Set(seen).size, 1200, "every output")
      assert.equal(seen.length, 1200, `each once (${seen.length - new Set(seen).size} duplicates)`)
      assert.ok(handledCount(zombie) >= frozenAt, "the frozen instance ran on after the thaw")
    }),
    KafkaTransport.layer({ brokers: [...brokers], clientId: "eos-zombie-tests" }),
  ), { timeoutMs: 240_000 })
}
