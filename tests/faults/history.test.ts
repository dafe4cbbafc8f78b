/**
 * The history checker on synthetic histories: a clean one reports nothing, and each kind of broken
 * promise (lost, duplicates in and out of the uncommitted window, per-key order, offsets going
 * backwards, overlapping owners) is reported when, and only when, it is there.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { check, type Handled, type History, outOfWindow, parseLog } from "./history.ts"

/**
 * Member a holds partitions 0 and 1 from t=100, handles keys "x" (partition 0) and "y"
 * (partition 1), three records each, commits everything, and releases both at t=1000.
 */
const clean = (): History => {
  const produced = [0, 1, 2].flatMap((seq) => [
    { key: "x", seq, partition: 0, offset: seq, t: 10 + seq },
    { key: "y", seq, partition: 1, offset: seq, t: 10 + seq },
  ])
  const handled: Array<Handled> = produced.map((record, index) => ({
    member: "a",
    generation: 1,
    partition: record.partition,
    offset: record.offset,
    key: record.key,
    seq: record.seq,
    start: 200 + index * 10,
    end: 205 + index * 10,
  }))
  return {
    produced,
    claims: [0, 1].map((partition) => ({ member: "a", generation: 1, partition, startOffset: 0, t: 100 })),
    releases: [0, 1].map((partition) => ({ member: "a", generation: 1, partition, t: 1000 })),
    handled,
    commits: [0, 1].map((partition) => ({ member: "a", generation: 1, partition, offset: 3, t: 500 })),
    deadLettered: [],
    exits: [{ member: "a", t: 1100, code: 0 }],
    topic: produced.map((record) => ({ partition: record.partition, offset: record.offset, key: record.key, seq: record.seq })),
    finalCommitted: new Map([[0, 3], [1, 3]]),
  }
}

const nothingFound = (history: History) => {
  const report = check(history)
  assert.deepEqual(report.lost, [])
  assert.deepEqual(report.duplicates, [])
  assert.deepEqual(report.duplicateDeadLetters, [])
  assert.equal(report.duplicateOutputs, 0)
  assert.deepEqual(report.orderViolations, [])
  assert.deepEqual(report.backwardsOffsets, [])
  assert.deepEqual(report.overlappingOwners, [])
  return report
}

test("A clean history reports nothing", () => {
  const report = nothingFound(clean())
  assert.equal(report.counts.produced, 6)
  assert.equal(report.counts.distinctHandled, 6)
})

test("A record acknowledged but never handled is reported lost", () => {
  const history = clean()
  const report = check({ ...history, handled: history.handled.filter((h) => !(h.partition === 1 && h.offset === 2)) })
  assert.deepEqual(report.lost, [{ partition: 1, offset: 2, key: "y", seq: 2, why: "never handled or dead-lettered" }])
})

test("A dead-lettered record is not lost, and one dead-lettered twice is reported", () => {
  const history = clean()
  const without = history.handled.filter((h) => !(h.partition === 0 && h.offset === 1))
  assert.equal(check({ ...history, handled: without }).lost.length, 1)
  const once = check({ ...history, handled: without, deadLetterTopic: [{ sourcePartition: 0, sourceOffset: 1 }] })
  assert.deepEqual(once.lost, [])
  assert.deepEqual(once.duplicateDeadLetters, [])
  const fromLog = check({ ...history, handled: without, deadLettered: [{ member: "a", partition: 0, offset: 1, t: 300 }] })
  assert.deepEqual(fromLog.lost, [], "the dead-letter log counts when the topic was not read back")
  const twice = check({
    ...history,
    handled: without,
    deadLetterTopic: [{ sourcePartition: 0, sourceOffset: 1 }, { sourcePartition: 0, sourceOffset: 1 }],
  })
  assert.deepEqual(twice.duplicateDeadLetters, [{ partition: 0, offset: 1, count: 2 }])
})

test("A record the topic no longer holds is reported lost, and so is a handled record without its output", () => {
  const history = clean()
  const gone = check({ ...history, topic: history.topic!.filter((r) => !(r.partition === 0 && r.offset === 0)) })
  assert.deepEqual(gone.lost.map((l) => [l.partition, l.offset, l.why]), [[0, 0, "missing from the topic"]])
  const outputs = history.produced.map((r) => ({ sourcePartition: r.partition, sourceOffset: r.offset }))
  assert.deepEqual(check({ ...history, outputTopic: outputs }).lost, [])
  const missing = check({ ...history, outputTopic: outputs.slice(1) })
  assert.deepEqual(missing.lost.map((l) => [l.partition, l.offset, l.why]), [[0, 0, "no output record"]])
  assert.equal(check({ ...history, outputTopic: [...outputs, outputs[0]!] }).duplicateOutputs, 1)
})

test("A record handled again before anything past it was committed is a duplicate within the window", () => {
  const history = clean()
  // b takes partition 0 over at t=1200 from the committed offset 2 (a committed only up to 2) and
  // handles offset 2 again.
  const report = check({
    ...history,
    commits: [{ member: "a", generation: 1, partition: 0, offset: 2, t: 500 }, history.commits[1]!],
    claims: [...history.claims, { member: "b", generation: 1, partition: 0, startOffset: 2, t: 1200 }],
    handled: [...history.handled, { member: "b", generation: 1, partition: 0, offset: 2, key: "x", seq: 2, start: 1300, end: 1301 }],
    finalCommitted: new Map([[0, 2], [1, 3]]),
  })
  assert.equal(report.duplicates.length, 1)
  assert.deepEqual(report.duplicates[0], { partition: 0, offset: 2, nth: 2, first: "a", again: "b", at: 1300, committedThen: 2, inWindow: true })
  assert.deepEqual(outOfWindow(report), [])
  assert.deepEqual(report.lost, [])
  assert.deepEqual(report.backwardsOffsets, [])
})

test("A committed record handled again is a duplicate outside the window", () => {
  const history = clean()
  // Everything on partition 0 was committed (offset 3) at t=500; b handles offset 1 again.
  const report = check({
    ...history,
    claims: [...history.claims, { member: "b", generation: 1, partition: 0, startOffset: 3, t: 1200 }],
    handled: [...history.handled, { member: "b", generation: 1, partition: 0, offset: 1, key: "x", seq: 1, start: 1300, end: 1301 }],
  })
  assert.equal(report.duplicates.length, 1)
  assert.equal(report.duplicates[0]!.inWindow, false)
  assert.equal(report.duplicates[0]!.committedThen, 3)
  assert.equal(outOfWindow(report).length, 1)
})

test("A key's records handled out of their produced order within one ownership is an order violation", () => {
  const history = clean()
  // Under key ordering, partition 0's records 1 and 2 of key "x" handled in the wrong order.
  const handled = history.handled.map((h): Handled =>
    h.partition !== 0 || h.offset === 0 ? h : { ...h, start: h.offset === 2 ? 220 : 240, end: h.offset === 2 ? 225 : 245 }
  )
  const report = check({ ...history, handled, ordering: "key" })
  assert.deepEqual(report.orderViolations.map((v) => [v.where, v.key, v.previousSeq, v.seq]), [["handled", "x", 2, 1]])
  assert.deepEqual(report.backwardsOffsets, [], "under key ordering, offsets may interleave")
  // A fresh ownership may start the key over (a rewind to the committed offset), which is no violation.
  const rewound = check({
    ...history,
    claims: [...history.claims, { member: "a", generation: 2, partition: 0, startOffset: 3, t: 1050 }],
    handled: [...history.handled, { member: "a", generation: 2, partition: 0, offset: 3, key: "x", seq: 0, start: 1060, end: 1061 }],
    exits: [],
  })
  assert.deepEqual(rewound.orderViolations, [])
})

test("Records of a key stored out of their produced order are an order violation in the topic", () => {
  const history = clean()
  const produced = history.produced.map((r) => r.key === "y" && r.seq > 0 ? { ...r, seq: 3 - r.seq } : r)
  const report = check({
    ...history,
    produced,
    topic: undefined,
    handled: [],
    deadLettered: produced.map((r) => ({ member: "a", partition: r.partition, offset: r.offset, t: 1 })),
  })
  assert.deepEqual(report.orderViolations.map((v) => [v.where, v.key, v.offset]), [["topic", "y", 2]])
})

test("Offsets that go backwards are reported: a lower commit, a claim before the committed offset, handled offsets within an ownership", () => {
  const history = clean()
  const lowerCommit = check({ ...history, commits: [...history.commits, { member: "a", generation: 1, partition: 1, offset: 1, t: 600 }] })
  assert.deepEqual(lowerCommit.backwardsOffsets.map((b) => [b.kind, b.partition, b.before, b.after]), [["commit", 1, 3, 1]])

  const claim = check({ ...history, claims: [...history.claims, { member: "b", generation: 1, partition: 1, startOffset: 1, t: 1200 }] })
  assert.deepEqual(claim.backwardsOffsets.map((b) => [b.kind, b.partition, b.before, b.after]), [["claim", 1, 3, 1]])

  // Partition 1's offset 2 handled first, then 0 and 1, in one ownership under partition ordering.
  const reordered = history.handled.map((h): Handled => h.partition === 1 && h.offset === 2 ? { ...h, start: 201, end: 202 } : h)
  const offsets = check({ ...history, handled: reordered })
  assert.deepEqual(offsets.backwardsOffsets.map((b) => [b.kind, b.partition, b.before, b.after]), [["handled", 1, 2, 0], ["handled", 1, 2, 1]])
  assert.deepEqual(check({ ...history, handled: reordered, ordering: "key" }).backwardsOffsets, [])

  const final = check({ ...history, finalCommitted: new Map([[0, 2], [1, 3]]) })
  assert.deepEqual(final.backwardsOffsets.map((b) => [b.kind, b.partition, b.before, b.after]), [["final commit", 0, 3, 2]])
})

test("Two members holding one partition at overlapping times are reported; a hand-over at the release is not", () => {
  const history = clean()
  // b claims partition 1 at t=900, while a still holds it until t=1000.
  const overlapping = check({ ...history, claims: [...history.claims, { member: "b", generation: 1, partition: 1, startOffset: 3, t: 900 }] })
  assert.equal(overlapping.overlappingOwners.length, 1)
  assert.deepEqual(overlapping.overlappingOwners[0]!.a, { member: "a", generation: 1, from: 100, to: 1000 })
  assert.equal(overlapping.overlappingOwners[0]!.b.member, "b")
  assert.equal(overlapping.overlappingOwners[0]!.handledDuring, 0, "a handled nothing of partition 1 after t=900")
  const concurrent = check({
    ...history,
    claims: [...history.claims, { member: "b", generation: 1, partition: 1, startOffset: 3, t: 210 }],
  })
  assert.equal(concurrent.overlappingOwners[0]!.handledDuring, 3, "a was still handling offset 0 of partition 1 at b's claim, then 1 and 2")
  nothingFound({ ...history, claims: [...history.claims, { member: "b", generation: 1, partition: 1, startOffset: 3, t: 1000 }] })
  // Without a release, a claim ends when its process does: a killed owner's successor is fine...
  const killed = { ...history, releases: [], exits: [{ member: "a", t: 700, code: "SIGKILL" }] }
  nothingFound({ ...killed, claims: [...history.claims, { member: "b", generation: 1, partition: 1, startOffset: 3, t: 800 }] })
  // ...but an owner that never released nor exited still holds the partition.
  const stillHeld = check({ ...history, releases: [], exits: [], claims: [...history.claims, { member: "b", generation: 1, partition: 0, startOffset: 3, t: 5000 }] })
  assert.deepEqual(stillHeld.overlappingOwners.map((o) => [o.partition, o.a.member, o.a.to, o.b.member]), [[0, "a", Infinity, "b"]])
})

test("parseLog reads every event kind and skips a line cut short by a kill", () => {
  const lines = [
    { e: "produced", key: "x", seq: 0, p: 0, o: 0, t: 1 },
    { e: "claim", m: "a", g: 1, p: 0, o: 0, t: 2 },
    { e: "handled", m: "a", g: 1, p: 0, o: 0, key: "x", seq: 0, st: 3, en: 4 },
    { e: "commit", m: "a", g: 1, p: 0, o: 1, t: 5 },
    { e: "dead", m: "a", p: 0, o: 9, t: 6 },
    { e: "release", m: "a", g: 1, p: 0, t: 7 },
    { e: "exit", m: "a", t: 8, code: 0 },
    { e: "stats", heap: 1 },
  ].map((line) => JSON.stringify(line)).join("\n") + '\n{"e":"handled","m":"a"'
  const history = parseLog(lines)
  assert.deepEqual(history.produced, [{ key: "x", seq: 0, partition: 0, offset: 0, t: 1 }])
  assert.deepEqual(history.claims, [{ member: "a", generation: 1, partition: 0, startOffset: 0, t: 2 }])
  assert.deepEqual(history.handled, [{ member: "a", generation: 1, partition: 0, offset: 0, key: "x", seq: 0, start: 3, end: 4 }])
  assert.deepEqual(history.commits, [{ member: "a", generation: 1, partition: 0, offset: 1, t: 5 }])
  assert.deepEqual(history.deadLettered, [{ member: "a", partition: 0, offset: 9, t: 6 }])
  assert.deepEqual(history.releases, [{ member: "a", generation: 1, partition: 0, t: 7 }])
  assert.deepEqual(history.exits, [{ member: "a", t: 8, code: 0 }])
  nothingFound({ ...history, produced: [], deadLettered: [] })
})
