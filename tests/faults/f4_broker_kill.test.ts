/**
 * F4: the broker SIGKILLed mid-stream and restarted (a private broker, never the shared one).
 * No acknowledged record is lost; processing resumes within 30 s of the broker's return; the app
 * holds no more connections to the broker afterwards than before (no connection leak); its health
 * says not ready while the broker is down (it has not answered within the broker window) and
 * healthy and ready after. Liveness stays true throughout: a broker outage is no reason to restart
 * the member.
 *
 * Fibers are not counted: nothing outside the process can see them. Connections are, per
 * process, from /proc.
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { connectionsTo } from "./private_broker.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, diagnose, faultTest, report, until } from "./scenario.ts"

const downMs = scaled(5000, 30_000)

faultTest("F4 the broker SIGKILLed and restarted: nothing acknowledged lost, processing resumes within 30 s, health follows", async (context) => {
  const { scenario, broker } = context
  const kafka = context.privateBroker!
  await broker.produceMany(scenario, context.topic, 1000)
  const load = broker.steady(scenario, context.topic, { batch: 20, everyMs: 100 })
  const problems: Array<string> = []
  try {
    const app = scenario.start("c", {
      HANDLE_MILLIS: "1",
      STATS_MILLIS: "500",
      LAG_INTERVAL: "500 millis",
      BROKER_TIMEOUT: "1 second",
      BROKER_WINDOW: "2 seconds",
      // For `diagnose`: kafkajs' lines and the subscription's Debug line of what its consumer does.
      LOG_LEVEL: "Debug",
      KAFKAJS_LOG: "info",
    })
    await app.process.waitForLine(/^claimed /, 60_000)
    await scenario.handled(1200, 60_000)
    await sleep(1000)
    const connectionsBefore = connectionsTo(app.process.pid, kafka.port)

    const killedAt = Date.now()
    kafka.signal("SIGKILL")
    scenario.log({ e: "broker", what: "SIGKILL", t: killedAt })
    await sleep(downMs)
    await kafka.startAgain()
    const backAt = Date.now()
    scenario.log({ e: "broker", what: "back", t: backAt })

    const resumed = () => {
      scenario.poll()
      return scenario.lines.find((l) => l["e"] === "handled" && l["st"] >= backAt)
    }
    await until("a record handled after the broker's return", () => resumed() !== undefined, 35_000).catch((error) =>
      problems.push(String(error))
    )
    const resumeMs = resumed() === undefined ? Infinity : resumed()!["st"] - backAt
    if (resumeMs > 30_000) problems.push(`processing resumed ${resumeMs} ms after the broker's return, not within 30 s`)
    await sleep(3000)
    const connectionsAfter = connectionsTo(app.process.pid, kafka.port)
    if (connectionsAfter > connectionsBefore) {
      problems.push(`the app holds ${connectionsAfter} connections to the broker after its return, ${connectionsBefore} before`)
    }

    // Taken while a stall lasts, before the load stops and the app is asked to leave.
    let diagnosis = problems.length === 0 ? undefined : await diagnose(context)
    await load.stop()
    if (problems.length === 0) {
      await committedToEnd(context, 90_000).catch((error: Error) => problems.push(error.message))
      if (problems.length > 0) diagnosis = await diagnose(context)
    }
    if (diagnosis !== undefined) console.log(`[faults] F4 did not recover. ${diagnosis}`)
    const signalled = Date.now()
    scenario.signal(app, "SIGTERM")
    const code = await app.process.exited

    scenario.poll()
    const stats = scenario.lines.filter((l) => l["e"] === "stats")
    // While down: from a couple of seconds after the kill (a probe in flight may still answer) to the return.
    const whileDown = stats.filter((l) => l["t"] > killedAt + 2000 && l["t"] < backAt)
    // After: up to the shutdown, whose draining partitions are not healthy by design.
    const after = stats.filter((l) => l["t"] > backAt && l["t"] < signalled)
    // Health as fix 6 defines it: readiness says the broker has not answered; liveness stays in
    // process (an outage of the broker is no reason to restart the member).
    if (whileDown.length === 0) problems.push("no health report answered while the broker was down (the probe hung)")
    else if (!whileDown.some((l) => l["ready"] === false)) problems.push(`health said ready throughout the ${downMs} ms outage`)
    const last = after[after.length - 1]
    if (last === undefined || last["healthy"] !== true || last["ready"] !== true) problems.push("health not healthy and ready after the broker's return")

    const result = await checkHistory(context)
    report(context, "F4", result, {
      down_ms: downMs,
      resume_ms: resumeMs,
      connections_before: connectionsBefore,
      connections_after: connectionsAfter,
      health_reports_while_down: whileDown.length,
      unready_reports_while_down: whileDown.filter((l) => l["ready"] === false).length,
      send_failures: load.failures(),
      exit: String(code),
    })
    const detail = describeReport(result) + (diagnosis === undefined ? "" : "\n(the diagnosis is printed above)")
    // Records the broker lost count whatever happened; records never handled only when processing
    // resumed (otherwise `problems` says why first).
    assert.deepEqual(result.lost.filter((l) => l.why !== "never handled or dead-lettered" || problems.length === 0), [], detail)
    assert.deepEqual(outOfWindow(result), [], detail)
    assert.deepEqual(result.backwardsOffsets, [], detail)
    assert.deepEqual(problems, [], detail)
    assert.equal(code, 0, app.process.stderr().slice(-1000))
  } finally {
    await load.stop()
  }
}, { privateBroker: true, timeoutMs: scaled(240_000, 900_000) })
