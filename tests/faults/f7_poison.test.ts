/**
 * F7: one poison record among many. It is tried R + 1 times at the retry schedule's delays, then
 * dead-lettered exactly once, and the records behind it are handled; the other partitions keep
 * their throughput meanwhile (reported, and asserted loosely: at least half).
 */
import assert from "node:assert/strict"
import { uniqueName } from "../fixtures/services.ts"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, report } from "./scenario.ts"

const total = scaled(4000, 10_000)
const retries = 3
const retryMillis = 300

faultTest("F7 one poison record is dead-lettered exactly once after R retries while the other partitions flow", async (context) => {
  const { scenario, broker } = context
  const dlq = uniqueName("faults-f7-dlq")
  await broker.createTopic(dlq, 1)
  await broker.produceMany(scenario, context.topic, total)
  // The second record of key k3: early in its partition, so the others are busy while it retries.
  const app = scenario.start("c", {
    DLQ: dlq,
    POISON: "k3:1",
    RETRIES: String(retries),
    RETRY_MILLIS: String(retryMillis),
    HANDLE_MILLIS: "2",
  })
  await committedToEnd(context, 90_000)
  scenario.signal(app, "SIGTERM")
  assert.equal(await app.process.exited, 0, app.process.stderr().slice(-1000))

  const result = await checkHistory(context, { deadLetterTopic: dlq })
  const letters = (await broker.readBack(dlq)).derived
  const attempts = scenario.lines.filter((l) => l["e"] === "attempt")
  const poison = scenario.history().produced.find((p) => p.key === "k3" && p.seq === 1)!
  const delays = attempts.slice(1).map((attempt, index) => attempt["t"] - attempts[index]!["t"])
  // The others' throughput while the poison retried, against their throughput over the whole run.
  const window = { from: attempts[0]?.["t"] as number, to: scenario.lines.find((l) => l["e"] === "dead")?.["t"] as number }
  const others = scenario.history().handled.filter((h) => h.partition !== poison.partition)
  const runFrom = Math.min(...others.map((h) => h.start))
  const runTo = Math.max(...others.map((h) => h.end))
  const inWindow = others.filter((h) => h.end >= window.from && h.end <= window.to).length
  const windowRate = inWindow / Math.max(1, window.to - window.from)
  const overallRate = others.length / Math.max(1, runTo - runFrom)
  // Only partitions still busy through the window count: compare against those.
  const ratio = windowRate / overallRate
  report(context, "F7", result, {
    attempts: attempts.length,
    delays_ms: delays.join("/"),
    letters: letters.length,
    others_throughput_ratio: ratio.toFixed(2),
  })

  const detail = describeReport(result)
  assert.equal(attempts.length, retries + 1, `tried once and retried ${retries} times`)
  for (const delay of delays) assert.ok(delay >= retryMillis - 5, `retries wait the scheduled ${retryMillis} ms (waited ${delay} ms)`)
  assert.equal(letters.length, 1, "dead-lettered exactly once")
  assert.deepEqual([letters[0]!.sourcePartition, letters[0]!.sourceOffset], [poison.partition, poison.offset])
  assert.equal(letters[0]!.headers["partita.dlq.attempts"], String(retries + 1))
  assert.equal(letters[0]!.headers["partita.dlq.error.tag"], "Poison")
  assert.deepEqual(result.lost, [], detail)
  assert.deepEqual(outOfWindow(result), [], detail)
  assert.equal(result.counts.distinctHandled, total - 1, "every other record handled")
  assert.ok(ratio >= 0.5, `the other partitions kept at least half their throughput while the poison retried (${ratio.toFixed(2)})`)
}, { timeoutMs: scaled(120_000, 600_000) })
