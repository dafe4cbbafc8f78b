/**
 * Dead-letter replay on the embedded broker: the cases every transport runs
 * (tests/fixtures/deadLetterReplay.ts), and a dead-letter topic written in transactions, whose
 * last offsets are markers no read returns; and the replay example (actors/replay/main.ts), as
 * the README shows it.
 */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { test } from "node:test"
import { Effect } from "effect"
import * as DeadLetterReplay from "../lib/DeadLetterReplay.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { createUniqueTopics } from "./fixtures/actors.ts"
import { startChild } from "./fixtures/child.ts"
import { dlqCases, letter, readTopic } from "./fixtures/deadLetterReplay.ts"
import { run, text } from "./fixtures/effect.ts"

dlqCases({
  test: (name, body) => test(`${name} (MemoryTransport)`, () => run(body, MemoryTransport.layer())),
  patience: 20,
})

test("dead-letter replay: a dead-letter topic ending in a transaction marker is done once idle for idleTimeout (MemoryTransport)", () =>
  run(
    Effect.gen(function*() {
      const transport = yield* Transport
      const [source, dlq] = yield* createUniqueTopics(["replay-source", 1], ["replay-dlq", 1])
      const producer = yield* transport.transactional("letters")
      const transaction = yield* producer.begin
      yield* transaction.send([0, 1, 2].map((i) => letter(dlq!, { topic: source!, partition: 0, offset: i }, { value: `v${i}` })))
      yield* transaction.commit
      assert.equal((yield* transport.describeTopic(dlq!)).partitions[0]!.highWatermark, 4, "three letters and a marker")
      const report = yield* DeadLetterReplay.replay({ from: dlq!, idleTimeout: "100 millis" })
      assert.equal(report.moved, 3)
      assert.deepEqual((yield* readTopic(source!, 1, 20)).map((record) => text(record.value)), ["v0", "v1", "v2"])
      assert.equal((yield* DeadLetterReplay.replay({ from: dlq!, idleTimeout: "100 millis" })).moved, 0)
    }),
    MemoryTransport.layer(),
  ))

const example = new URL("../actors/replay/main.ts", import.meta.url).pathname

test("The replay example dead-letters payments while their store is down, replays them once it is up, and they are recorded", async () => {
  const child = startChild(example, { NO_COLOR: "1" })
  try {
    assert.equal(await child.exited, 0, child.stderr())
  } finally {
    await child.stop()
  }
  const output = child.lines.join("\n")
  for (const id of ["p1", "p2", "p3"]) assert.equal(output.split(`recorded ${id}`).length, 2, `${id} recorded once`)
  assert.match(output, /replay moved 3, skipped 0, 0 not moved/)
})

test("The README shows the replay example exactly as CI runs it", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
  assert.ok(readme.includes("```ts\n" + readFileSync(example, "utf8").trim() + "\n```"), "README.md shows actors/replay/main.ts verbatim")
})
