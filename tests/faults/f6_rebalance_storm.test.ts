/**
 * F6: a rebalance storm. Member a stays throughout; b and c join and leave ten times between them
 * (by SIGTERM, and twice by SIGKILL) under steady load. Nothing is lost and no two members ever
 * hold one partition at once. The duplicates are measured, and those made by members that were
 * never killed reported apart. A member that stays redoes nothing: it commits what it finished
 * before it lets its partitions go, and the next owner starts there (on kafkajs, its JoinGroup
 * waits for that: `lib/internal/joinGate.ts`).
 */
import assert from "node:assert/strict"
import { describeReport, outOfWindow } from "./history.ts"
import { type Member, scaled } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, partitions, report, until } from "./scenario.ts"

const changes = scaled(10, 40)

faultTest("F6 a rebalance storm of 3 members joining and leaving loses nothing and never has two owners of a partition", async (context) => {
  const { scenario, broker } = context
  const env = { HANDLE_MILLIS: "1" }
  await broker.produceMany(scenario, context.topic, 500)
  const load = broker.steady(scenario, context.topic, { batch: 20, everyMs: 100 })
  try {
    /** Each partition's holders now, from the members' claim and release lines (an exited member holds nothing). */
    const holders = (live: ReadonlyArray<Member>) => {
      scenario.poll()
      const alive = new Set(live.map((member) => member.id))
      const held = new Map<number, Set<string>>()
      for (const line of scenario.lines) {
        if (line["e"] !== "claim" && line["e"] !== "release") continue
        const set = held.get(line["p"] as number) ?? new Set<string>()
        if (line["e"] === "claim") set.add(line["m"] as string)
        else set.delete(line["m"] as string)
        held.set(line["p"] as number, set)
      }
      return Array.from({ length: partitions }, (_, partition) => [...(held.get(partition) ?? [])].filter((id) => alive.has(id)))
    }
    const a = scenario.start("a", env)
    await a.process.waitForLine(/^claimed /, 60_000)
    const running = new Map<string, Member>()
    const rebalances: Array<number> = []
    // Which of b and c joins or leaves at each step, and how a leaver goes.
    const plan: Array<readonly [label: "b" | "c", how: "join" | "SIGTERM" | "SIGKILL"]> = [
      ["b", "join"], ["c", "join"], ["b", "SIGTERM"], ["b", "join"], ["c", "SIGKILL"],
      ["c", "join"], ["b", "SIGTERM"], ["b", "join"], ["c", "SIGTERM"], ["b", "SIGKILL"],
    ]
    for (let step = 0; step < changes; step++) {
      const [label, how] = plan[step % plan.length]!
      const started = Date.now()
      let joined: Member | undefined
      if (how === "join") {
        const member = scenario.start(label, env)
        running.set(label, member)
        joined = member
        await member.process.waitForLine(/^claimed /, 60_000)
      } else {
        const member = running.get(label)!
        running.delete(label)
        scenario.signal(member, how)
        await member.process.exited
      }
      // The rebalance is over once every partition has one holder among the members running and
      // a joiner holds some: whether the others were given new partitions (an eager rebalance)
      // or only gave some up (an incremental one, as on KIP-848) depends on the protocol.
      const live = [a, ...running.values()]
      await until(`one holder per partition after step ${step + 1}`, () => {
        const now = holders(live)
        return now.every((ids) => ids.length === 1) && (joined === undefined || now.some((ids) => ids.includes(joined!.id)))
      }, 60_000)
      rebalances.push(Date.now() - started)
      await scenario.handled(scenario.handledSoFar.size + 20, 60_000)
    }
    await load.stop()
    await committedToEnd(context, 60_000)
    const leaving = [a, ...running.values()]
    for (const member of leaving) scenario.signal(member, "SIGTERM")
    const codes = await Promise.all(leaving.map((member) => member.process.exited))

    const result = await checkHistory(context)
    const killed = new Set(scenario.all().filter((m) => m.signals.some((s) => s.signal === "SIGKILL")).map((m) => m.id))
    const byUnkilled = result.duplicates.filter((d) => !killed.has(d.first))
    const redoneBySurvivor = byUnkilled.filter((d) => d.first === d.again)
    report(context, "F6", result, {
      rebalances: rebalances.length,
      rebalance_ms_max: Math.max(...rebalances),
      dup_by_unkilled: byUnkilled.length,
      dup_redone_by_survivor: redoneBySurvivor.length,
      })
    const detail = describeReport(result)
    assert.deepEqual(result.lost, [], detail)
    assert.deepEqual(result.overlappingOwners, [], detail)
    assert.deepEqual(redoneBySurvivor, [], `records a member redid without having been killed\n${detail}`)
    assert.deepEqual(outOfWindow(result), [], detail)
    assert.deepEqual(result.backwardsOffsets, [], detail)
    assert.deepEqual(result.orderViolations, [], detail)
    assert.deepEqual(codes, leaving.map(() => 0), "the members left at the end shut down cleanly")
  } finally {
    await load.stop()
  }
}, { timeoutMs: scaled(180_000, 1_200_000) })
