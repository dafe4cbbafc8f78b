/**
 * F2: SIGTERM under steady load with a slow handler (40 ms, the default mailbox of 1000) while a
 * peer runs: the member exits 0 within its shutdown deadline, the peer owns its partitions within
 * 3 s of their release, and after it is restarted no record has been handled twice.
 */
import assert from "node:assert/strict"
import { describeReport } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, partitions, report } from "./scenario.ts"

const deadlineMs = 5000
const backlog = scaled(1600, 20_000)

faultTest("F2 SIGTERM under load with a slow handler exits 0 within the deadline, hands over within 3 s, and nothing is handled twice", async (context) => {
  const { scenario, broker } = context
  const env = { HANDLE_MILLIS: "40", SHUTDOWN_DEADLINE: `${deadlineMs} millis`, DRAIN_DEADLINE: `${deadlineMs} millis` }
  await broker.produceMany(scenario, context.topic, backlog)
  const load = broker.steady(scenario, context.topic, { batch: 10, everyMs: 200 })
  const problems: Array<string> = []
  try {
    const a = scenario.start("a", env)
    await a.process.waitForLine(/^claimed /, 60_000)
    const b = scenario.start("b", env)
    await b.process.waitForLine(/^claimed /, 60_000)
    // Both hold partitions once the rebalance b's join caused is over.
    await scenario.handled(scenario.handledSoFar.size + 50, 60_000)
    await sleep(1000)

    const signalled = Date.now()
    scenario.signal(a, "SIGTERM")
    const code = await a.process.exited
    const shutdownMs = Date.now() - signalled
    if (code !== 0) problems.push(`a exited ${code}, not 0; stderr: ${a.process.stderr().slice(-600)}`)
    if (shutdownMs > deadlineMs) problems.push(`a took ${shutdownMs} ms to shut down, past its ${deadlineMs} ms deadline`)

    // The hand-over: from a's release of each partition to b's claim of it.
    scenario.poll()
    const history = scenario.history()
    const released = new Map(history.releases.filter((r) => r.member === a.id).map((r) => [r.partition, r.t]))
    await sleep(3500)
    const afterClaims = scenario.history().claims.filter((c) => c.member === b.id)
    const handOvers = [...released].map(([partition, t]) => {
      const claim = afterClaims.find((c) => c.partition === partition && c.t >= t)
      return claim === undefined ? Infinity : claim.t - t
    })
    const handOverMs = Math.max(...handOvers)
    if (released.size === 0) problems.push("a logged no release of its partitions")
    if (!(handOverMs <= 3000)) problems.push(`b owned a's partitions ${handOverMs} ms after their release, not within 3 s`)

    const a2 = scenario.start("a", env)
    await a2.process.waitForLine(/^claimed /, 60_000)
    await load.stop()
    // Two members at 40 ms a record on 8 partitions handle about 200 records a second.
    await committedToEnd(context, scaled(90_000, 360_000))
    scenario.signal(a2, "SIGTERM")
    scenario.signal(b, "SIGTERM")
    const codes = await Promise.all([a2.process.exited, b.process.exited])
    if (codes.some((c) => c !== 0)) problems.push(`the final shutdowns exited ${codes.join(", ")}`)

    const result = await checkHistory(context)
    // Repeats from before the signal would come from b's join (a survivor redoing its tail: see F6).
    const afterRestart = result.duplicates.filter((d) => d.at >= signalled)
    report(context, "F2", result, {
      shutdown_ms: shutdownMs,
      exit: String(code),
      handover_ms: handOverMs,
      dup_after_sigterm: afterRestart.length,
      partitions,
    })
    const detail = describeReport(result)
    assert.deepEqual(result.lost, [], detail)
    if (afterRestart.length > 0) {
      problems.push(`${afterRestart.length} records handled twice after the SIGTERM: ${JSON.stringify(afterRestart.slice(0, 3))}`)
    }
    assert.deepEqual(result.overlappingOwners, [], detail)
    assert.deepEqual(result.backwardsOffsets, [], detail)
    assert.deepEqual(problems, [], detail)
  } finally {
    await load.stop()
  }
}, { timeoutMs: scaled(150_000, 1_200_000) })
