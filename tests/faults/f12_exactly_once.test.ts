/**
 * F12, exactly-once, modelled on Kafka's own `transactions_test.py`: two copier processes in one
 * group copy N keyed records into an output topic in transactions, while the test SIGKILLs and
 * restarts one of them three times, stops one cleanly (SIGTERM) and restarts it three times, at
 * different points of progress, and finally freezes one (SIGSTOP) past its session timeout while
 * its partitions move to the other, then thaws it. A read-committed reader running throughout, and
 * a final one, must each see exactly the input set: every record's output once, none missing,
 * each key's outputs in order. At least one transaction aborted (the faults fired). The history
 * checker judges the run as for every scenario; what the thawed zombie handled again is reported,
 * not asserted: its transactions were fenced, and the outputs prove nothing of them commits.
 *
 * Runs with per-partition transactional producers on both Kafka transports, and with one producer
 * per member (KIP-447) on KafkaTransport.
 */
import assert from "node:assert/strict"
import { uniqueName } from "../fixtures/services.ts"
import { describeReport, outOfWindow } from "./history.ts"
import { type Member, scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, type Context, faultTest, partitions, report, until } from "./scenario.ts"

const total = scaled(20_000, 100_000)

const copier = (producer: "per-partition" | "per-member") => async (context: Context) => {
  const { scenario, broker } = context
  const output = uniqueName("faults-f12-out")
  await broker.createTopic(output, partitions)
  await broker.produceMany(scenario, context.topic, total, { batch: 1000 })
  const env = { DELIVERY: "exactly-once", TXN_PRODUCER: producer, OUTPUT: output, HANDLE_MILLIS: "0", STATS_MILLIS: "1000" }
  const concurrent = broker.startCommittedReader(output, partitions)
  try {
    const members: Record<"c" | "d", Member> = { c: scenario.start("c", env), d: scenario.start("d", env) }
    const steps: ReadonlyArray<readonly [at: number, signal: "SIGKILL" | "SIGTERM", who: "c" | "d"]> = [
      [0.1, "SIGKILL", "c"],
      [0.2, "SIGKILL", "d"],
      [0.3, "SIGKILL", "c"],
      [0.45, "SIGTERM", "d"],
      [0.6, "SIGTERM", "c"],
      [0.7, "SIGTERM", "d"],
    ]
    for (const [at, signal, who] of steps) {
      await scenario.handled(Math.ceil(total * at), 120_000)
      scenario.signal(members[who], signal)
      const code = await members[who].process.exited
      if (signal === "SIGTERM") assert.equal(code, 0, `${members[who].id} stops cleanly; stderr:\n${members[who].process.stderr().slice(-1500)}`)
      members[who] = scenario.start(who, env)
    }
    // The zombie: frozen past its session while the other takes its partitions, then thawed.
    await scenario.handled(Math.ceil(total * 0.8), 120_000)
    const zombie = members.c
    const frozenAt = Date.now()
    scenario.signal(zombie, "SIGSTOP")
    // Thawed only once its session ran out and the other member claimed its partitions.
    const claimedSinceFreeze = () =>
      (scenario.poll(), scenario.lines.some((line) => line["e"] === "claim" && line["m"] === members.d.id && line["t"] > frozenAt))
    await until("the other member to claim the frozen one's partitions", claimedSinceFreeze, 90_000)
    await sleep(1000)
    scenario.signal(zombie, "SIGCONT")
    const thawedAt = Date.now()
    await committedToEnd(context, 120_000)
    scenario.signal(members.c, "SIGTERM")
    scenario.signal(members.d, "SIGTERM")
    await Promise.all([members.c.process.exited, members.d.process.exited])

    await concurrent.finish(true)
    const final = broker.startCommittedReader(output, partitions)
    try {
      await final.finish(false)
      const result = await checkHistory(context, { output: final.derived() })
      scenario.poll()
      const aborts = scenario.lines.filter((line) => line["e"] === "abort").length
      const movedDuringFreeze = scenario.lines.some((line) => line["e"] === "claim" && line["m"] === members.d.id && line["t"] > frozenAt && line["t"] < thawedAt)
      // How the zombie learned: a transaction fenced (a partition in state "fenced"), or the group
      // removing it first (its partitions released). Either way nothing of it may commit.
      // A transaction of its refused: fenced by a newer producer with its id (per partition), or
      // its offsets refused by the group for a generation that lost the partition (per member).
      const zombieLog = zombie.process.stdout() + zombie.process.stderr()
      const zombieFenced = /The transaction of \S+ \(transactional id/.test(zombieLog) ||
        /the commit failed: .*(ILLEGAL_GENERATION|FENCED_MEMBER_EPOCH|UNKNOWN_MEMBER_ID|STALE_MEMBER_EPOCH)/.test(zombieLog) ||
        scenario.lines.some((line) =>
          line["e"] === "stats" && line["m"] === zombie.id && line["t"] > thawedAt &&
          (line["partitions"] as Array<{ state: string }>).some((p) => p.state === "fenced")
        )
      report(context, producer === "per-member" ? "F12m" : "F12", result, {
        aborts,
        zombie_fenced: String(zombieFenced),
        moved_during_freeze: String(movedDuringFreeze),
        zombie_overlaps: result.overlappingOwners.length,
        handled_again_out_of_window: outOfWindow(result).length,
      })
      const detail = describeReport(result)
      const ids = (records: ReadonlyArray<{ readonly sourcePartition: number; readonly sourceOffset: number }>) =>
        records.map((r) => `${r.sourcePartition}@${r.sourceOffset}`)
      const expected = scenario.history().produced.map((p) => `${p.partition}@${p.offset}`).sort()
      for (const [name, reader] of [["the final reader", final], ["the reader running throughout", concurrent]] as const) {
        const seen = ids(reader.derived())
        assert.equal(seen.length, new Set(seen).size, `${name}: ${seen.length - new Set(seen).size} duplicate outputs`)
        assert.deepEqual([...seen].sort(), expected, `${name} sees exactly the input set`)
        // Each key's outputs in the order of its sequence numbers (a key's outputs share a partition).
        const byKey = new Map<string, Array<{ partition: number; offset: number; seq: number }>>()
        for (const record of reader.derived()) {
          if (record.key === undefined || record.seq === undefined) continue
          byKey.set(record.key, [...(byKey.get(record.key) ?? []), { partition: record.partition, offset: record.offset, seq: record.seq }])
        }
        for (const [key, outputs] of byKey) {
          const seqs = outputs.sort((x, y) => x.partition - y.partition || x.offset - y.offset).map((o) => o.seq)
          assert.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]!), `${name}: key ${key}'s outputs out of order: ${seqs.slice(0, 20)}`)
        }
      }
      assert.deepEqual(result.lost, [], detail)
      assert.equal(result.duplicateOutputs, 0, detail)
      assert.ok(aborts > 0, "at least one transaction aborted: the faults fired")
      assert.ok(movedDuringFreeze, "the frozen member's partitions moved to the other while it was frozen")
    } finally {
      await final.stop()
    }
  } finally {
    await concurrent.stop()
  }
}

faultTest(
  "F12 exactly-once copiers SIGKILLed 3 times, stopped 3 times and one frozen past its session: every output exactly once, in key order",
  copier("per-partition"),
  { timeoutMs: scaled(300_000, 1_200_000) },
)

faultTest(
  "F12m exactly-once copiers with one transactional producer per member (KIP-447), through the same faults: every output exactly once, in key order",
  copier("per-member"),
  { timeoutMs: scaled(300_000, 1_200_000), transports: ["kafka"] },
)
