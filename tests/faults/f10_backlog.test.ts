/**
 * F10: a slow handler (20 ms) working through a large backlog of 1 KB records for a while (20 s
 * at CI scale, 5 minutes at full scale). The heap stays bounded (its live size after a full
 * collection, and that size's growth after warm-up, are reported, and asserted loosely: under 64 MB, where an unbounded mailbox would hold the whole
 * backlog), and the group never rebalances: the one member keeps its one assignment throughout.
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, faultTest, report } from "./scenario.ts"

const backlog = scaled(20_000, 400_000)
const runMs = scaled(20_000, 300_000)
const mailbox = 100

faultTest("F10 a slow handler with a large backlog keeps the heap bounded and causes no rebalance", async (context) => {
  const { scenario, broker } = context
  await broker.produceMany(scenario, context.topic, backlog, { padding: 1000 })
  const app = scenario.start("c", { HANDLE_MILLIS: "20", MAILBOX: String(mailbox), STATS_MILLIS: "500", STATS_GC: "1" })
  await app.process.waitForLine(/^claimed /, 60_000)
  await sleep(runMs)
  scenario.poll()
  scenario.signal(app, "SIGTERM")
  const code = await app.process.exited

  const stats = scenario.lines.filter((l) => l["e"] === "stats")
  // Warm-up: the first few seconds fill the mailboxes and the code caches.
  const warm = stats.slice(Math.min(stats.length - 1, 6))
  const heaps = warm.map((l) => l["heap"] as number)
  const growth = Math.max(...heaps) - heaps[0]!
  const claims = scenario.lines.filter((l) => l["e"] === "claim")
  const generations = new Set(claims.map((l) => l["g"]))
  const result = await checkHistory(context)
  report(context, "F10", undefined, {
    handled: result.counts.handled,
    heap_mb_first: (heaps[0]! / 1e6).toFixed(1),
    heap_mb_max: (Math.max(...heaps) / 1e6).toFixed(1),
    heap_growth_mb: (growth / 1e6).toFixed(1),
    rss_mb_max: (Math.max(...warm.map((l) => l["rss"] as number)) / 1e6).toFixed(1),
    generations: generations.size,
    exit: String(code),
  })

  const detail = describeReport(result)
  assert.equal(code, 0, app.process.stderr().slice(-1000))
  assert.deepEqual([...generations], [1], "one assignment for the whole run: no rebalance")
  assert.equal(scenario.lines.filter((l) => l["e"] === "release").length, claims.length, "partitions released only at the shutdown")
  assert.ok(growth < 64e6, `heap growth after warm-up ${(growth / 1e6).toFixed(1)} MB stays bounded`)
  assert.deepEqual(result.duplicates, [], detail)
  assert.deepEqual(outOfWindow(result), [], detail)
  assert.deepEqual(result.backwardsOffsets, [], detail)
  assert.ok(result.counts.handled > 0 && result.counts.handled < backlog, "the backlog was still being worked through")
}, { timeoutMs: scaled(150_000, 900_000) })
