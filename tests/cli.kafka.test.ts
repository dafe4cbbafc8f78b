/**
 * The `partita` command line's output against the real broker, run as a child process on the
 * runtime the test runs on, with Partita's own client and with kafkajs: `dlq list`, `dlq replay`,
 * `topics` and `groups describe`, each checked line by line of its table.
 */
import assert from "node:assert/strict"
import { Effect } from "effect"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { createUniqueTopics } from "./fixtures/actors.ts"
import { partita } from "./fixtures/cli.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { letter } from "./fixtures/deadLetterReplay.ts"
import { bytes, run } from "./fixtures/effect.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

/** The table's rows (header first) as arrays of cells: columns are two or more spaces apart. */
const rowsOf = (output: string): Array<Array<string>> =>
  output.split("\n").filter((line) => line.trim() !== "").map((line) => line.trim().split(/ {2,}/))

for (const client of ["own", "kafkajs"] as const) {
  kafkaTest(`partita dlq list and dlq replay print their tables, and replay exits 3 when letters stay (KAFKA_CLIENT=${client})`, (brokers) =>
    run(
      Effect.gen(function*() {
        const transport = yield* Transport
        const [source, dlq] = yield* createUniqueTopics(["cli-src", 2], ["cli-dlq", 1])
        const gone = uniqueName("cli-gone")
        const time = Date.parse("2026-11-30T08:00:00.000Z")
        yield* transport.send([
          letter(dlq!, { topic: source!, partition: 1, offset: 41 }, { value: "a", timestamp: time }),
          letter(dlq!, { topic: gone, partition: 0, offset: 7 }, { value: "b", error: "StoreError", actor: "billing", timestamp: time + 1000 }),
          { topic: dlq!, key: null, value: bytes("stray record"), headers: [], timestamp: time + 2000 },
        ])
        const env = { KAFKA_BROKERS: brokers.join(","), KAFKA_CLIENT: client }

        const listed = yield* Effect.promise(() => partita(["dlq", "list", "--from", dlq!], env))
        assert.equal(listed.code, 0, listed.stderr)
        assert.deepEqual(rowsOf(listed.stdout), [
          ["PARTITION", "OFFSET", "TIME", "SOURCE", "ACTOR", "ERROR", "MESSAGE"],
          ["0", "0", "2026-11-30T08:00:00.000Z", `${source}/1@41`, "worker", "DecodeError", "bad a"],
          ["0", "1", "2026-11-30T08:00:01.000Z", `${gone}/0@7`, "billing", "StoreError", "bad b"],
          ["0", "2", "2026-11-30T08:00:02.000Z", "-", "-", "-", "stray record"],
        ])
        const limited = yield* Effect.promise(() => partita(["dlq", "list", "--from", dlq!, "--limit", "1"], env))
        assert.equal(rowsOf(limited.stdout).length, 2)

        const replayed = yield* Effect.promise(() => partita(["dlq", "replay", "--from", dlq!, "--session-timeout", "6s"], env))
        assert.equal(replayed.code, 3, replayed.stderr)
        const lines = replayed.stdout.split("\n")
        assert.equal(lines[0], `Replayed "${dlq}" to their source topics (group partita-replay-${dlq}): 1 moved, 0 skipped by the filter, 2 not moved`)
        assert.deepEqual(rowsOf(lines.slice(1, 5).join("\n")), [
          ["ERROR", "MOVED", "SKIPPED", "NOT MOVED"],
          ["(none)", "0", "0", "1"],
          ["DecodeError", "1", "0", "0"],
          ["StoreError", "0", "0", "1"],
        ])
        assert.equal(lines[5], `Not moved (they stay in "${dlq}"):`)
        const notMoved = rowsOf(lines.slice(6).join("\n"))
        assert.deepEqual(notMoved.map((row) => row.slice(0, 2)), [["LETTER", "REASON"], [`${dlq}/0@1`, "SourceTopicMissing"], [`${dlq}/0@2`, "NotADeadLetter"]])
        assert.match(notMoved[1]![2]!, new RegExp(`its topic "${gone}" does not exist`))

        // Run again: nothing left to move, and nothing to report.
        const again = yield* Effect.promise(() => partita(["dlq", "replay", "--from", dlq!, "--session-timeout", "6s"], env))
        assert.equal(again.code, 0, again.stderr)
        assert.match(again.stdout, /: 0 moved, 0 skipped by the filter, 0 not moved$/)
      }),
      KafkaTransport.layer({ brokers: [...brokers], clientId: "cli-tests" }),
    ), { timeoutMs: 120_000 })

  kafkaTest(`partita topics and groups describe print partitions, messages, committed offsets and lag (KAFKA_CLIENT=${client})`, (brokers) =>
    run(
      Effect.gen(function*() {
        const transport = yield* Transport
        const [orders, empty] = yield* createUniqueTopics(["cli-orders", 3], ["cli-empty", 2])
        yield* transport.send(Array.from({ length: 10 }, (_, i) => ({ topic: orders!, partition: i % 3, key: null, value: bytes(`o${i}`) })))
        const group = uniqueName("cli-group")
        // A group that committed two of the partitions, one of them fully.
        const member = yield* startConsumer(transport, { group, topics: [orders!], sessionTimeout: "6 seconds", heartbeatInterval: "500 millis" })
        yield* member.firstAssignment
        yield* member.subscription.commit([{ topic: orders!, partition: 0, offset: 4 }, { topic: orders!, partition: 2, offset: 1 }])
        const env = { KAFKA_BROKERS: brokers.join(","), KAFKA_CLIENT: client }

        const listed = yield* Effect.promise(() => partita(["topics"], env))
        assert.equal(listed.code, 0, listed.stderr)
        const rows = rowsOf(listed.stdout)
        assert.deepEqual(rows[0], ["TOPIC", "PARTITIONS", "MESSAGES"])
        assert.deepEqual(rows.find((row) => row[0] === orders), [orders, "3", "10"])
        assert.deepEqual(rows.find((row) => row[0] === empty), [empty, "2", "0"])
        assert.ok(!rows.some((row) => row[0]!.startsWith("__")), "internal topics left out")

        const described = yield* Effect.promise(() => partita(["groups", "describe", group], env))
        assert.equal(described.code, 0, described.stderr)
        assert.deepEqual(rowsOf(described.stdout), [
          ["TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"],
          [orders, "0", "4", "4", "0"],
          [orders, "2", "1", "3", "2"],
        ])
        const unknown = yield* Effect.promise(() => partita(["groups", "describe", uniqueName("cli-nobody")], env))
        assert.equal(unknown.code, 0, unknown.stderr)
        assert.match(unknown.stdout, /has no committed offsets/)
      }),
      KafkaTransport.layer({ brokers: [...brokers], clientId: "cli-tests" }),
    ), { timeoutMs: 120_000 })
}
