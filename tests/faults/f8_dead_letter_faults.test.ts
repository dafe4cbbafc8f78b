/**
 * F8: dead letters that cannot be written as they are. The dead-letter topic missing (the app
 * must say so at start, naming it, and exit non-zero); unwritable for a while (deleted after the
 * start, then created again: the poison's partition waits, nothing is committed past the record,
 * no tight retry loop, under 10% of a core, and once it is writable again everything flows with
 * one letter); and a letter too large
 * for it (a fallback letter with a truncated or absent value and the original's size and SHA-256,
 * never a partition stuck for good). Nothing is lost.
 */
import assert from "node:assert/strict"
import { createHash } from "node:crypto"
import { uniqueName } from "../fixtures/services.ts"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled, sleep } from "./runner.ts"
import { checkHistory, committedToEnd, type Context, faultTest, report, until } from "./scenario.ts"

const total = scaled(2000, 20_000)
const poisonEnv = { POISON: "k3:1", RETRIES: "1", RETRY_MILLIS: "50", STATS_MILLIS: "500" }

/** The CPU share of one core the member used between two times, from its stats lines. */
const cpuShare = (context: Context, member: string, from: number, to: number): number | undefined => {
  const stats = context.scenario.lines.filter((l) => l["e"] === "stats" && l["m"] === member && l["t"] >= from && l["t"] <= to)
  if (stats.length < 2) return undefined
  const first = stats[0]!
  const last = stats[stats.length - 1]!
  return (last["cpu"] - first["cpu"]) / (last["t"] - first["t"])
}

faultTest("F8 a missing dead-letter topic is reported at start, by name, and the app exits non-zero", async (context) => {
  const { scenario, broker } = context
  const dlq = uniqueName("faults-f8-missing")
  await broker.produceMany(scenario, context.topic, total)
  const app = scenario.start("c", { ...poisonEnv, DLQ: dlq })
  const code = await Promise.race([app.process.exited, sleep(20_000).then(() => "still running after 20 s")])
  const output = app.process.stdout() + app.process.stderr()
  const poison = scenario.history().produced.find((p) => p.key === "k3" && p.seq === 1)!
  const committed = await broker.committed(context.group, context.topic)
  report(context, "F8-missing", undefined, { exit: String(code), names_topic: String(output.includes(dlq)) })
  assert.ok((committed.get(poison.partition) ?? 0) <= poison.offset, "nothing committed past the poison record")
  assert.ok(typeof code === "number" && code !== 0, `the app exits non-zero (got: ${code})`)
  assert.ok(output.includes(dlq), `the error names the missing topic ${dlq}: ${output.slice(-500)}`)
}, { timeoutMs: scaled(90_000, 300_000) })

faultTest("F8 an unwritable dead-letter topic holds the partition without a tight loop, and it flows once writable", async (context) => {
  const { scenario, broker } = context
  const dlq = uniqueName("faults-f8-unwritable")
  await broker.createTopic(dlq, 1)
  const app = scenario.start("c", { ...poisonEnv, DLQ: dlq })
  await app.process.waitForLine(/^claimed /, 60_000)
  // Deleted after the start (whose check it passed): every write fails with
  // UNKNOWN_TOPIC_OR_PARTITION until it is created again. (On a single broker, min.insync.replicas
  // above the replication factor does not refuse writes in Kafka 4, so that cannot serve.)
  await broker.deleteTopic(dlq)
  await broker.produceMany(scenario, context.topic, total)
  const poison = scenario.history().produced.find((p) => p.key === "k3" && p.seq === 1)!
  await until("the poison's tries", () => (scenario.poll(), scenario.lines.filter((l) => l["e"] === "attempt").length >= 2), 60_000)
  const stuckFrom = Date.now()
  await sleep(scaled(10_000, 60_000))
  scenario.poll()
  const stuckTo = Date.now()
  const share = cpuShare(context, app.id, stuckFrom, stuckTo)
  const committedWhileStuck = (await broker.committed(context.group, context.topic)).get(poison.partition) ?? 0
  const lettersWhileStuck = scenario.lines.filter((l) => l["e"] === "dead").length
  // Created again; right after a deletion the broker may still answer UNKNOWN_TOPIC_OR_PARTITION
  // (retriable), so try again for a while.
  for (let attempt = 1; ; attempt++) {
    try {
      await broker.createTopicPlain(dlq, 1)
      break
    } catch (error) {
      if (/TOPIC_ALREADY_EXISTS/.test(String(error))) break
      if (attempt >= 20) throw error
      await sleep(1000)
    }
  }
  const problems: Array<string> = []
  await committedToEnd(context, 60_000).catch((error) => problems.push(String(error).slice(0, 300)))
  scenario.signal(app, "SIGTERM")
  const code = await app.process.exited

  const result = await checkHistory(context, { deadLetterTopic: dlq })
  report(context, "F8-unwritable", result, { cpu_share_while_stuck: share === undefined ? "unknown" : share.toFixed(3), exit: String(code) })
  const detail = describeReport(result)
  if (lettersWhileStuck > 0) problems.push(`${lettersWhileStuck} letters acknowledged while the dead-letter topic did not exist`)
  if (committedWhileStuck > poison.offset) problems.push(`committed ${committedWhileStuck} past the poison record ${poison.partition}@${poison.offset}`)
  if (share === undefined) problems.push("no stats while stuck")
  else if (share >= 0.1) problems.push(`${(share * 100).toFixed(1)}% of a core while the dead-letter topic was unwritable`)
  assert.deepEqual(result.lost, [], detail)
  assert.deepEqual(outOfWindow(result), [], detail)
  assert.equal(result.counts.deadLettered, 1, "one letter once writable")
  assert.deepEqual(problems, [], detail)
  assert.equal(code, 0)
}, { timeoutMs: scaled(150_000, 600_000) })

faultTest("F8 a letter too large for the dead-letter topic falls back to one with the original's size and SHA-256", async (context) => {
  const { scenario, broker } = context
  const dlq = uniqueName("faults-f8-large")
  await broker.createTopic(dlq, 1, { "max.message.bytes": "2000" })
  await broker.produceMany(scenario, context.topic, total / 2)
  await broker.produce(scenario, context.topic, [{ key: "poison", seq: 0 }], 4000)
  await broker.produceMany(scenario, context.topic, total / 2)
  const app = scenario.start("c", { ...poisonEnv, POISON: "poison:0", DLQ: dlq })
  const problems: Array<string> = []
  await committedToEnd(context, 20_000).catch((error) => problems.push(String(error).slice(0, 300)))
  scenario.signal(app, "SIGTERM")
  const code = await app.process.exited

  const poison = scenario.history().produced.find((p) => p.key === "poison")!
  const original = (await broker.readBack(context.topic)).records.find((r) => r.partition === poison.partition && r.offset === poison.offset)!
  const letters = (await broker.readBack(dlq)).derived
  const result = await checkHistory(context, { deadLetterTopic: dlq })
  report(context, "F8-too-large", result, { letters: letters.length, exit: String(code) })
  const detail = describeReport(result)
  const mine = letters.filter((l) => l.sourcePartition === poison.partition && l.sourceOffset === poison.offset)
  if (mine.length !== 1) problems.push(`${mine.length} letters for the too-large record, not 1`)
  const letter = mine[0]
  if (letter !== undefined) {
    const size = String(original.value!.length)
    const digest = createHash("sha256").update(original.value!).digest()
    const values = Object.values(letter.headers)
    if ((letter.value?.length ?? 0) >= original.value!.length) problems.push("the fallback letter carries the whole value")
    if (!values.includes(size)) problems.push(`no header gives the original's size ${size}: ${JSON.stringify(Object.keys(letter.headers))}`)
    if (!values.includes(digest.toString("hex")) && !values.includes(digest.toString("base64"))) problems.push("no header gives the original's SHA-256")
  }
  assert.deepEqual(result.lost, [], detail)
  assert.deepEqual(problems, [], detail)
  assert.equal(code, 0)
}, { timeoutMs: scaled(120_000, 600_000) })
