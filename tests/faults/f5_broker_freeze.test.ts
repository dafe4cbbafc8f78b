/**
 * F5: the broker SIGSTOPped (30 s at full scale, 10 s at CI scale), then SIGCONT (a private
 * broker, never the shared one). Nothing acknowledged is lost, and throughput comes back to 90%
 * of what it was before: the time it takes is reported (the promise is 10 s) and asserted loosely
 * (within 30 s).
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, report, until } from "./scenario.ts"

const frozenMs = scaled(10_000, 30_000)

faultTest("F5 the broker frozen by SIGSTOP, then SIGCONT: nothing lost, throughput back to 90%", async (context) => {
  const { scenario, broker } = context
  const kafka = context.privateBroker!
  const load = broker.steady(scenario, context.topic, { batch: 20, everyMs: 100 })
  try {
    const app = scenario.start("c", { HANDLE_MILLIS: "1" })
    await app.process.waitForLine(/^claimed /, 60_000)
    await scenario.handled(200, 60_000)
    await sleep(4000)
    const handledAt = () => (scenario.poll(), scenario.lines.filter((l) => l["e"] === "handled").map((l) => l["en"] as number))
    const stoppedAt = Date.now()
    const baseline = handledAt().filter((t) => t > stoppedAt - 3000 && t <= stoppedAt).length / 3
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
    await load.stop()
    await committedToEnd(context, 90_000)
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
    const detail = describeReport(result)
    assert.deepEqual(result.lost, [], detail)
    assert.deepEqual(outOfWindow(result), [], detail)
    assert.deepEqual(result.backwardsOffsets, [], detail)
    assert.ok(recovery !== undefined && recovery - thawedAt <= 30_000, `throughput back to 90% of ${baseline}/s within 30 s of the thaw`)
    assert.equal(code, 0, app.process.stderr().slice(-1000))
  } finally {
    await load.stop()
  }
}, { privateBroker: true, timeoutMs: scaled(240_000, 900_000) })
