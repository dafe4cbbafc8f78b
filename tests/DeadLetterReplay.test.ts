/**
 * Dead-letter replay on the embedded broker: the cases every transport runs
 * (tests/fixtures/deadLetterReplay.ts), and a dead-letter topic written in transactions, whose
 * last offsets are markers no read returns.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect } from "effect"
import * as DeadLetterReplay from "../lib/DeadLetterReplay.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import { Transport } from "../lib/Transport.ts"
import { createUniqueTopics } from "./fixtures/actors.ts"
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
