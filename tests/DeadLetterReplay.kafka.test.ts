/**
 * Dead-letter replay on the real broker, on both Kafka transports: the cases of
 * tests/fixtures/deadLetterReplay.ts, as the embedded broker runs them, and a replay process
 * killed midway (the command line, as a child process) then run again.
 */
import assert from "node:assert/strict"
import { Effect, type Layer } from "effect"
import * as KafkaJsTransport from "../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { createUniqueTopics, eventually } from "./fixtures/actors.ts"
import type { Child } from "./fixtures/child.ts"
import { startPartita } from "./fixtures/cli.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { dlqCases, letter, readTopic } from "./fixtures/deadLetterReplay.ts"
import { run, text } from "./fixtures/effect.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

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

for (const client of ["own", "kafkajs"] as const) {
  kafkaTest(`dead-letter replay: a replay SIGKILLed midway and run again moves each letter exactly once (partita dlq replay, KAFKA_CLIENT=${client})`, (brokers) =>
    run(
      Effect.gen(function*() {
        const transport = yield* Transport
        const [source, dlq] = yield* createUniqueTopics(["replay-kill-src", 3], ["replay-kill-dlq", 3])
        const total = 300
        yield* transport.send(Array.from({ length: total }, (_, i) => ({
          ...letter(dlq!, { topic: source!, partition: i % 3, offset: i }, { value: `v${i}` }),
          partition: i % 3,
        })))
        // Read-committed from the start: a letter moved twice would arrive twice.
        const reader = yield* startConsumer(transport, { group: uniqueName("replay-kill-reader"), topics: [source!] })
        const env = { KAFKA_BROKERS: brokers.join(","), KAFKA_CLIENT: client }
        const args = ["dlq", "replay", "--from", dlq!, "--batch-size", "5", "--session-timeout", "6s"]
        const children: Array<Child> = []
        yield* Effect.addFinalizer(() => Effect.promise(() => Promise.all(children.map((child) => child.stop()))))
        const first = startPartita(args, env)
        children.push(first)
        yield* eventually(60, "a few dozen letters moved", () => reader.received.length >= 30)
        first.kill("SIGKILL")
        assert.equal(yield* Effect.promise(() => first.exited), "SIGKILL")
        const movedBeforeKill = reader.received.length
        assert.ok(movedBeforeKill < total, `killed midway (${movedBeforeKill} of ${total} moved)`)

        const second = startPartita(args, env)
        children.push(second)
        assert.equal(yield* Effect.promise(() => second.exited), 0, second.stderr())
        const summary = second.lines.find((line) => line.startsWith("Replayed"))
        assert.ok(summary !== undefined, second.lines.join("\n"))
        const moved = Number(/: (\d+) moved/.exec(summary)![1])
        assert.ok(moved > 0 && moved <= total - movedBeforeKill + 5 * 3, `the second run moved the rest (${moved})`)

        yield* eventually(60, `all ${total} letters back`, () => reader.received.length >= total)
        assert.equal(reader.received.length, total)
        // Up to a sentinel on every partition: nothing of either run comes later.
        const all = yield* readTopic(source!, 3, 60)
        assert.equal(all.length, total, "each letter once")
        assert.equal(new Set(all.map((record) => text(record.value))).size, total)
        assert.equal(new Set(all.map((record) => text(record.headers.find((h) => h.key === "partita.replayed-from")!.value))).size, total)
      }),
      KafkaTransport.layer({ brokers: [...brokers], clientId: "replay-kill-tests" }),
    ), { timeoutMs: 120_000 })
}
