/**
 * F1: a consumer SIGKILLed five times, after each further 20% of progress, and restarted each
 * time. It copies every record to an output topic before completing it (consume, transform,
 * produce). Nothing acknowledged is lost, every record has its output, and every record handled
 * twice was still uncommitted when it was handled again.
 */
import assert from "node:assert/strict"
import { uniqueName } from "../fixtures/services.ts"
import { checkHistory, committedToEnd, faultTest, report } from "./scenario.ts"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled } from "./runner.ts"

const total = scaled(4000, 100_000)

faultTest("F1 a consumer SIGKILLed 5 times mid-stream loses nothing; every duplicate lies in the uncommitted window", async (context) => {
  const { scenario, broker } = context
  const output = uniqueName("faults-f1-out")
  await broker.createTopic(output, 8)
  await broker.produceMany(scenario, context.topic, total)
  const env = { HANDLE_MILLIS: "1", COMMIT_MILLIS: "200", COMMIT_RECORDS: "100", OUTPUT: output }
  const kills: Array<number> = []
  for (let kill = 1; kill <= 5; kill++) {
    const member = scenario.start("c", env)
    await scenario.handled(Math.ceil((total * kill) / 5), 60_000)
    scenario.signal(member, "SIGKILL")
    kills.push(Date.now())
    assert.equal(await member.process.exited, "SIGKILL")
  }
  const last = scenario.start("c", env)
  await last.process.waitForLine(/^claimed /, 60_000)
  await committedToEnd(context, 60_000)
  scenario.signal(last, "SIGTERM")
  assert.equal(await last.process.exited, 0, `the last incarnation shuts down cleanly; stderr:\n${last.process.stderr().slice(-2000)}`)

  const result = await checkHistory(context, { outputTopic: output })
  // Recovery: from each kill to the first record the next incarnation handled (after the last
  // kill, at 100%, there may be nothing left to handle).
  const history = scenario.history()
  const recoveries = kills.map((t, index) =>
    Math.min(...history.handled.filter((h) => h.member === `c.${index + 2}`).map((h) => h.start)) - t
  ).filter(Number.isFinite)
  report(context, "F1", result, {
    recovery_ms_max: Math.max(...recoveries),
    recovery_ms: recoveries.join("/"),
  })
  const outputs = scenario.lines.filter((l) => l["e"] === "output").length
  const detail = describeReport(result)
  assert.deepEqual(result.lost, [], detail)
  assert.deepEqual(outOfWindow(result), [], detail)
  assert.deepEqual(result.orderViolations, [], detail)
  assert.deepEqual(result.backwardsOffsets, [], detail)
  assert.deepEqual(result.overlappingOwners, [], detail)
  assert.equal(result.counts.distinctHandled, total, detail)
  assert.ok(outputs >= total, `every handled record's output acknowledged (${outputs})`)
}, { timeoutMs: scaled(180_000, 900_000) })
