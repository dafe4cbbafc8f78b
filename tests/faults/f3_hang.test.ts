/**
 * F3: a handler that never returns, then SIGTERM: the process is forced out within its shutdown
 * deadline plus one second, exits non-zero, and every offset that completed is committed.
 */
import assert from "node:assert/strict"
import { describeReport } from "./history.ts"
import { scaled } from "./runner.ts"
import { checkHistory, faultTest, report, until } from "./scenario.ts"

const deadlineMs = 3000
const total = scaled(800, 20_000)

faultTest("F3 a handler that never returns: SIGTERM forces an exit within deadline + 1 s, non-zero, with completed offsets committed", async (context) => {
  const { scenario, broker } = context
  await broker.produceMany(scenario, context.topic, total)
  // Key k5's first record never finishes; its partition is stuck behind it, the others flow.
  const app = scenario.start("c", { HANG: "k5", HANDLE_MILLIS: "2", SHUTDOWN_DEADLINE: `${deadlineMs} millis`, DRAIN_DEADLINE: `${deadlineMs} millis` })
  await until("the hung handler", () => (scenario.poll(), scenario.lines.some((line) => line["e"] === "hang")), 60_000)
  const hung = scenario.lines.find((line) => line["e"] === "hang")!
  const stuck = hung["p"] as number
  const high = await broker.highWatermarks(context.topic)
  // Every other partition handled to its end (its records are all in hand), then the signal.
  const handledIn = (partition: number) => scenario.lines.filter((l) => l["e"] === "handled" && l["p"] === partition).length
  await until("the other partitions to finish", () => (scenario.poll(), [...high].every(([p, h]) => p === stuck || handledIn(p) >= h)), 60_000)

  const signalled = Date.now()
  scenario.signal(app, "SIGTERM")
  const code = await app.process.exited
  const exitMs = Date.now() - signalled
  const committed = await broker.committed(context.group, context.topic)
  const result = await checkHistory(context)
  report(context, "F3", undefined, { exit_ms: exitMs, exit: String(code), deadline_ms: deadlineMs, stuck_partition: stuck })

  const problems: Array<string> = []
  if (exitMs > deadlineMs + 1000) problems.push(`the process exited ${exitMs} ms after SIGTERM, past deadline + 1 s (${deadlineMs + 1000} ms)`)
  if (code === 0 || typeof code !== "number") problems.push(`exit ${code}: a forced shutdown must exit non-zero by itself`)
  if (!/did not finish|deadline/i.test(app.process.stderr())) problems.push(`stderr does not say what was left: ${app.process.stderr().slice(-500)}`)
  // Completed offsets committed: each partition up to the first record not handled.
  for (const [partition, end] of high) {
    const done = new Set(scenario.history().handled.filter((h) => h.partition === partition).map((h) => h.offset))
    let contiguous = 0
    while (done.has(contiguous)) contiguous++
    const expected = partition === stuck ? hung["o"] as number : end
    if (contiguous !== expected) problems.push(`partition ${partition}: handled up to ${contiguous}, expected ${expected}`)
    if ((committed.get(partition) ?? 0) !== contiguous) {
      problems.push(`partition ${partition}: committed ${committed.get(partition)}, but ${contiguous} completed`)
    }
  }
  const detail = describeReport(result)
  assert.deepEqual(result.duplicates, [], detail)
  assert.deepEqual(result.backwardsOffsets, [], detail)
  assert.deepEqual(problems, [], detail)
}, { timeoutMs: scaled(120_000, 600_000) })
