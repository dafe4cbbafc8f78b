/**
 * F11 on Kafka: a member loses its group membership by being fenced. It is frozen (SIGSTOP) for
 * longer than its session timeout while a peer runs, so the broker removes it and the peer takes
 * its partitions; then it is thawed (SIGCONT). It must rejoin the group (get partitions again) and
 * lose nothing; its health reports over the gap are counted. Records it handled as a zombie (after
 * the peer took a partition over) show as overlapping owners and as committed records handled
 * again: reported, not asserted, as the issue's F11 promises rejoining and no loss. Any other
 * repeat of a committed record fails it. (The memory transport's forced removal is fix 1's
 * own test, in tests/ActorSystem*.test.ts.)
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, report, until } from "./scenario.ts"

const frozenMs = scaled(10_000, 30_000)

faultTest("F11 a member fenced out of its group (frozen past its session) rejoins and loses nothing", async (context) => {
  const { scenario, broker } = context
  const env = { HANDLE_MILLIS: "5", STATS_MILLIS: "500" }
  await broker.produceMany(scenario, context.topic, 500)
  const load = broker.steady(scenario, context.topic, { batch: 20, everyMs: 200 })
  try {
    const a = scenario.start("a", env)
    await a.process.waitForLine(/^claimed /, 60_000)
    const b = scenario.start("b", env)
    await b.process.waitForLine(/^claimed /, 60_000)
    await scenario.handled(scenario.handledSoFar.size + 100, 60_000)

    const frozenAt = Date.now()
    scenario.signal(a, "SIGSTOP")
    await sleep(frozenMs)
    scenario.signal(a, "SIGCONT")
    const thawedAt = Date.now()
    const claimsOf = (id: string) => (scenario.poll(), scenario.lines.filter((l) => l["e"] === "claim" && l["m"] === id))
    const fenced = claimsOf(b.id).some((l) => l["t"] > frozenAt && l["t"] < thawedAt)
    const problems: Array<string> = []
    if (!fenced) problems.push("the peer never took the frozen member's partitions: it was not fenced")
    await until("the thawed member's new assignment", () => claimsOf(a.id).some((l) => l["t"] > thawedAt && l["p"] !== undefined), 60_000)
      .catch(() => problems.push("the thawed member never got partitions again within 60 s"))
    const rejoinMs = Math.min(...claimsOf(a.id).filter((l) => l["t"] > thawedAt).map((l) => l["t"] as number)) - thawedAt

    await load.stop()
    await committedToEnd(context, 60_000).catch((error) => problems.push(String(error).slice(0, 300)))
    scenario.signal(a, "SIGTERM")
    scenario.signal(b, "SIGTERM")
    const codes = await Promise.all([a.process.exited, b.process.exited])

    const result = await checkHistory(context)
    // Zombie work: what the thawed member handled before it learned it had lost its partitions.
    const learned = Math.min(...scenario.lines.filter((l) => l["e"] === "release" && l["m"] === a.id && l["t"] > thawedAt).map((l) => l["t"] as number))
    const zombie = scenario.history().handled.filter((h) => h.member === a.id && h.start >= thawedAt && h.start < learned)
    const gap = scenario.lines.filter((l) => l["e"] === "stats" && l["m"] === a.id && l["t"] > thawedAt && l["t"] < thawedAt + rejoinMs)
    report(context, "F11", result, {
      frozen_ms: frozenMs,
      rejoin_ms: rejoinMs,
      health_reports_in_gap: gap.length,
      unhealthy_in_gap: gap.filter((l) => l["healthy"] === false).length,
      zombie_overlaps: result.overlappingOwners.length,
      zombie_records: zombie.length,
      zombie_dup_out_of_window: outOfWindow(result).filter((d) => d.again === a.id && d.at >= frozenAt && d.at < learned).length,
      zombie_ms: learned - thawedAt,
      exits: codes.join("/"),
    })
    const detail = describeReport(result)
    assert.deepEqual(result.lost, [], detail)
    // A committed record handled again is allowed only as zombie work (reported above): the
    // thawed member cannot know it lost the partition before the broker tells it.
    const zombieRepeat = (d: { readonly again: string; readonly at: number }) => d.again === a.id && d.at >= frozenAt && d.at < learned
    assert.deepEqual(outOfWindow(result).filter((d) => !zombieRepeat(d)), [], detail)
    assert.deepEqual(problems, [], detail)
    assert.deepEqual(codes, [0, 0], "both shut down cleanly")
  } finally {
    await load.stop()
  }
}, { timeoutMs: scaled(180_000, 600_000) })
