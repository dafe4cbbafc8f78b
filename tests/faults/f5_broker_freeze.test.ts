/**
 * F5: the broker SIGSTOPped (30 s at full scale, 10 s at CI scale), then SIGCONT (a private
 * broker, never the shared one). Nothing acknowledged is lost, and throughput comes back to 90%
 * of what it was before: the time it takes is reported (the promise is 10 s) and asserted loosely
 * (within 30 s).
 *
 * It stalled once in about 17 full-scale runs (no commit in 130 s after the thaw): the app runs
 * with kafkajs' lines and the subscription's Debug line on, and a run that does not recover
 * prints, while the stall lasts, everything `diagnose` gathers.
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, diagnose, faultTest, report, until } from "./scenario.ts"

// PARTITA_FAULTS_F5_FROZEN_MS overrides it, to probe other outages (kafkajs' requests time out at 30 s).
const frozenMs = Number(process.env["PARTITA_FAULTS_F5_FROZEN_MS"] || scaled(10_000, 30_000))

faultTest("F5 the broker frozen by SIGSTOP, then SIGCONT: nothing lost, throughput back to 90%", async (context) => {
  const { scenario, broker } = context
  const kafka = context.privateBroker!
  const load = broker.steady(scenario, context.topic, { batch: 20, everyMs: 100 })
  try {
    const app = scenario.start("c", { HANDLE_MILLIS: "1", LOG_LEVEL: "Debug", KAFKAJS_LOG: "info" })
    await app.process.waitForLine(/^claimed /, 60_000)
    await scenario.handled(200, 60_000)
    await sleep(4000)
    const handledAt = () => (scenario.poll(), scenario.lines.filter((l) => l["e"] === "handled").map((l) => l["en"] as number))
    const stoppedAt = Date.now()
    const inLast3s = (times: ReadonlyArray<number>) => times.filter((t) => t > stoppedAt - 3000 && t <= stoppedAt).length / 3
    // What the app kept up with: a member still catching up on a backlog (a slow first join)
    // handles faster than the load comes, and no member can go on doing that after the thaw.
    const handledBefore = handledAt()
    const produced = scenario.lines.filter((l) => l["e"] === "produced").map((l) => l["t"] as number)
    const baseline = Math.min(inLast3s(handledBefore), inLast3s(produced))
    kafka.signal("SIGSTOP")
    scenario.log({ e: "broker", what: "SIGSTOP", t: stoppedAt })
    await sleep(frozenMs)
    kafka.signal("SIGCONT")
    const thawedAt = Date.now()
    scenario.log({ e: "broker", what: "SIGCONT", t: thawedAt })

    /** The end of the first second after the thaw in which throughput was back to 90%. */
    const recovered = (): number | undefined => {
      const times = handledAt().filter((t) => t >= thawedAt)
      const last = Math.max(thawedAt, ...times)
      for (let from = thawedAt; from + 1000 <= last; from += 100) {
        if (times.filter((t) => t >= from && t < from + 1000).length >= 0.9 * baseline) return from + 1000
      }
      return undefined
    }
    await until("throughput back to 90%", () => recovered() !== undefined, 40_000).catch(() => undefined)
    const recovery = recovered()
    // Taken while the stall lasts, before the load stops and the app is asked to leave.
    let diagnosis = recovery === undefined ? await diagnose(context) : undefined
    await load.stop()
    const drained = await committedToEnd(context, 90_000).then(() => undefined, (error: Error) => error.message)
    if (drained !== undefined) diagnosis ??= await diagnose(context)
    if (diagnosis !== undefined) console.log(`[faults] F5 did not recover. ${diagnosis}`)
    scenario.signal(app, "SIGTERM")
    const code = await app.process.exited

    const result = await checkHistory(context)
    report(context, "F5", result, {
      frozen_ms: frozenMs,
      baseline_per_s: baseline.toFixed(0),
      recovery_ms: recovery === undefined ? "never" : recovery - thawedAt,
      send_failures: load.failures(),
      exit: String(code),
    })
    const detail = describeReport(result) + (diagnosis === undefined ? "" : "\n(the diagnosis is printed above)")
    assert.deepEqual(result.lost, [], detail)
    assert.deepEqual(outOfWindow(result), [], detail)
    assert.deepEqual(result.backwardsOffsets, [], detail)
    assert.equal(drained, undefined, detail)
    assert.ok(recovery !== undefined && recovery - thawedAt <= 30_000, `throughput back to 90% of ${baseline}/s within 30 s of the thaw${diagnosis === undefined ? "" : " (the diagnosis is printed above)"}`)
    assert.equal(code, 0, app.process.stderr().slice(-1000))
  } finally {
    await load.stop()
  }
}, { privateBroker: true, timeoutMs: scaled(240_000, 900_000) })
