/**
 * F9: 1% of handler calls on half the partitions die with a defect. Each defect restarts only
 * the partition actor it happened in (restarts per partition equal its defects; the clean
 * partitions never restart), nothing is lost, and the clean partitions' throughput is reported.
 * Supervision is set to allow the restarts (the limit's own behaviour is not what this tests).
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, partitions, report } from "./scenario.ts"

const total = scaled(4000, 100_000)
const defective = [0, 1, 2, 3]

faultTest("F9 handler defects restart only the partition actors they happen in, and lose nothing", async (context) => {
  const { scenario, broker } = context
  await broker.produceMany(scenario, context.topic, total)
  const app = scenario.start("c", {
    DEFECT_RATE: "0.01",
    DEFECT_PARTITIONS: defective.join(","),
    MAX_RESTARTS: "100000",
    RESTART_MILLIS: "20",
    HANDLE_MILLIS: "1",
    STATS_MILLIS: "200",
  })
  await committedToEnd(context, 90_000)
  // One more stats line after everything completed, with the final restart counts.
  const seen = scenario.lines.length
  await sleep(500)
  scenario.poll()
  scenario.signal(app, "SIGTERM")
  assert.equal(await app.process.exited, 0, app.process.stderr().slice(-1000))

  const result = await checkHistory(context)
  const stats = scenario.lines.filter((l) => l["e"] === "stats")
  const last = stats[stats.length - 1]!
  assert.ok(scenario.lines.indexOf(last) >= seen, "a stats line after the end")
  const restarts = new Map<number, number>((last["partitions"] as Array<{ p: number; restarts: number }>).map((p) => [p.p, p.restarts]))
  const defects = new Map<number, number>()
  for (const line of scenario.lines) if (line["e"] === "defect") defects.set(line["p"], (defects.get(line["p"]) ?? 0) + 1)
  const handled = scenario.history().handled
  const rate = (wanted: (partition: number) => boolean) => {
    const mine = handled.filter((h) => wanted(h.partition))
    const span = Math.max(...mine.map((h) => h.end)) - Math.min(...mine.map((h) => h.start))
    return (mine.length / Math.max(1, span)) * 1000
  }
  const cleanRate = rate((p) => !defective.includes(p))
  const defectiveRate = rate((p) => defective.includes(p))
  report(context, "F9", result, {
    defects: [...defects.values()].reduce((a, b) => a + b, 0),
    restarts: [...restarts.values()].reduce((a, b) => a + b, 0),
    clean_rate_per_s: cleanRate.toFixed(0),
    defective_rate_per_s: defectiveRate.toFixed(0),
  })

  const detail = describeReport(result)
  assert.deepEqual(result.lost, [], detail)
  assert.deepEqual(outOfWindow(result), [], detail)
  assert.deepEqual(result.backwardsOffsets, [], detail)
  for (let partition = 0; partition < partitions; partition++) {
    assert.equal(
      restarts.get(partition) ?? 0,
      defects.get(partition) ?? 0,
      `partition ${partition}: restarts equal its own defects (restarts ${JSON.stringify([...restarts])}, defects ${JSON.stringify([...defects])})`,
    )
  }
  assert.ok(defective.some((p) => (defects.get(p) ?? 0) > 0), "some defects were injected")
}, { timeoutMs: scaled(120_000, 600_000) })
