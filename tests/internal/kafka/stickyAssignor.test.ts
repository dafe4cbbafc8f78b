import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import { decodeVersionPrefixed, encodeVersionPrefixed } from "../../../lib/internal/kafka/protocol/api.ts"
import { ConsumerProtocolAssignment, ConsumerProtocolSubscription } from "../../../lib/internal/kafka/protocol/index.ts"
import { Reader, Writer } from "../../../lib/internal/kafka/protocol/wire.ts"
import {
  assignCooperativeSticky,
  assignRange,
  cooperativeStickyName,
  cooperativeStickyUserData,
  generationOf,
  type GroupAssignment,
  type Member,
  rangeName,
  type TopicPartitions,
} from "../../../lib/internal/kafka/stickyAssignor.ts"
import { defaultJar } from "../../../scripts/generate-protocol.ts"
import { type Random, seeded } from "./protocolValues.ts"

// Sizes: PARTITA_ASSIGNOR_GROUPS random groups (default 40) in the property tests, and
// PARTITA_ASSIGNOR_JAVA_GROUPS (default 24) in the cross-check with Kafka's Java assignor.
const groups = Number(process.env.PARTITA_ASSIGNOR_GROUPS ?? 40)
const javaGroups = Number(process.env.PARTITA_ASSIGNOR_JAVA_GROUPS ?? 24)
const here = import.meta.dirname ?? new URL(".", import.meta.url).pathname

type Partitions = ReadonlyMap<string, number>
type Assigned = ReadonlyMap<string, ReadonlyArray<TopicPartitions>>

const key = (topic: string, partition: number) => `${topic}:${partition}`
const flat = (list: ReadonlyArray<TopicPartitions>): string[] =>
  list.flatMap(({ topic, partitions }) => partitions.map((p) => key(topic, p))).sort()
const group = (keys: Iterable<string>): TopicPartitions[] => {
  const byTopic = new Map<string, number[]>()
  for (const k of keys) {
    const at = k.lastIndexOf(":")
    const topic = k.slice(0, at)
    if (!byTopic.has(topic)) byTopic.set(topic, [])
    byTopic.get(topic)!.push(Number(k.slice(at + 1)))
  }
  return [...byTopic].sort(([a], [b]) => (a < b ? -1 : 1)).map(([topic, ps]) => ({ topic, partitions: ps.sort((a, b) => a - b) }))
}

/** A random group: 1–20 members, 1–10 topics of 1–256 partitions, equal or unequal subscriptions. */
const randomGroup = (random: Random): { members: Member[]; partitions: Map<string, number> } => {
  const topics = Array.from({ length: random.int(1, 10) }, (_, i) => `topic-${i}`)
  const partitions = new Map(topics.map((t) => [t, random.int(1, random.next() < 0.5 ? 16 : 256)]))
  const equal = random.next() < 0.35
  const shared = topics.filter(() => random.next() < 0.6)
  const members = Array.from({ length: random.int(1, 20) }, (_, i): Member => {
    let subscribed = equal ? (shared.length > 0 ? shared : topics) : topics.filter(() => random.next() < 0.4)
    if (subscribed.length === 0) subscribed = [topics[random.int(0, topics.length - 1)]!]
    // Now and then a topic that does not exist (yet): it must not matter.
    if (random.next() < 0.1) subscribed = [...subscribed, "missing-topic"]
    return { memberId: `member-${String(i).padStart(2, "0")}-${random.int(0, 999)}`, topics: subscribed, ownedPartitions: [], generation: -1 }
  })
  return { members, partitions }
}

/**
 * Checks one round's result against the members it was computed for (what every round promises).
 * Cooperative: a partition some member holds goes to the holder of the highest generation, or to
 * nobody this round. Kafka's Java assignor (`java`) is looser with stale claims: it gives a
 * partition to any member claiming it, even one of an older generation while a newer member still
 * holds it (CooperativeStickyAssignor.computePartitionsTransferringOwnership compares with each
 * member's own claims), so there only that much is checked.
 */
const checkRound = (members: ReadonlyArray<Member>, partitions: Partitions, assignment: Assigned, who: string, java = false): void => {
  const seen = new Map<string, string>()
  const claims = new Map<string, Array<{ member: string; generation: number; subscribed: boolean }>>()
  for (const member of members) {
    for (const k of flat(member.ownedPartitions)) {
      if (!claims.has(k)) claims.set(k, [])
      claims.get(k)!.push({ member: member.memberId, generation: member.generation, subscribed: member.topics.includes(k.slice(0, k.lastIndexOf(":"))) })
    }
  }
  assert.deepEqual([...assignment.keys()].sort(), members.map((m) => m.memberId).sort(), `${who}: every member gets an assignment`)
  for (const member of members) {
    for (const k of flat(assignment.get(member.memberId)!)) {
      const [topic, p] = [k.slice(0, k.lastIndexOf(":")), Number(k.slice(k.lastIndexOf(":") + 1))]
      assert.ok(seen.get(k) === undefined, `${who}: ${k} assigned to both ${seen.get(k)} and ${member.memberId}`)
      seen.set(k, member.memberId)
      assert.ok(member.topics.includes(topic), `${who}: ${member.memberId} got ${k} without subscribing to ${topic}`)
      assert.ok(p < (partitions.get(topic) ?? 0), `${who}: ${k} does not exist`)
      // Cooperative: a partition someone holds goes only to the holder the assignor trusts.
      const claimants = claims.get(k) ?? []
      if (java) {
        assert.ok(claimants.length === 0 || claimants.some((c) => c.member === member.memberId), `${who}: ${k} went to ${member.memberId} while ${claimants.map((c) => c.member).join(", ")} still hold it`)
      } else if (claimants.length > 0) {
        const valid = claimants.filter((c) => c.subscribed)
        const top = Math.max(...valid.map((c) => c.generation))
        const winners = valid.filter((c) => c.generation === top)
        assert.ok(
          winners.length === 1 && winners[0]!.member === member.memberId,
          `${who}: ${k} went to ${member.memberId} while ${claimants.map((c) => `${c.member}@${c.generation}`).join(", ")} still hold it`,
        )
      }
    }
  }
}

const loads = (members: ReadonlyArray<Member>, assignment: Assigned): Map<string, number> =>
  new Map(members.map((m) => [m.memberId, flat(assignment.get(m.memberId)!).length]))
const spread = (members: ReadonlyArray<Member>, assignment: Assigned): number => {
  const counts = [...loads(members, assignment).values()]
  return Math.max(...counts) - Math.min(...counts)
}

/**
 * Checks a stable (final) assignment: complete, and balanced as Kafka's assignor defines it (no
 * partition can move to a member that subscribes to it and holds two fewer; members with the same
 * subscriptions differ by at most one). With `optimal`, also no chain of such moves.
 */
const checkStable = (members: ReadonlyArray<Member>, partitions: Partitions, assignment: Assigned, who: string, optimal: boolean): void => {
  const subscribed = new Set(members.flatMap((m) => m.topics))
  const assigned = new Set([...assignment.values()].flatMap(flat))
  for (const [topic, count] of partitions) {
    if (!subscribed.has(topic)) continue
    for (let p = 0; p < count; p++) assert.ok(assigned.has(key(topic, p)), `${who}: ${key(topic, p)} is left unassigned`)
  }
  const load = loads(members, assignment)
  const bySubscription = new Map<string, number[]>()
  for (const m of members) {
    const s = [...new Set(m.topics)].filter((t) => partitions.has(t)).sort().join(",")
    if (!bySubscription.has(s)) bySubscription.set(s, [])
    bySubscription.get(s)!.push(load.get(m.memberId)!)
  }
  for (const [s, counts] of bySubscription) {
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `${who}: members subscribed to [${s}] hold ${counts.join(", ")}`)
  }
  // From each member, who could take one of its partitions.
  const canTake = (a: Member) => members.filter((b) => b !== a && flat(assignment.get(a.memberId)!).some((k) => b.topics.includes(k.slice(0, k.lastIndexOf(":")))))
  for (const a of members) {
    for (const b of canTake(a)) {
      assert.ok(load.get(a.memberId)! <= load.get(b.memberId)! + 1, `${who}: ${a.memberId} holds ${load.get(a.memberId)} and could pass one to ${b.memberId}, holding ${load.get(b.memberId)}`)
    }
    if (!optimal) continue
    const reached = new Set([a])
    const queue = [a]
    while (queue.length > 0) {
      for (const b of canTake(queue.shift()!)) {
        if (reached.has(b)) continue
        reached.add(b)
        queue.push(b)
        assert.ok(load.get(a.memberId)! <= load.get(b.memberId)! + 1, `${who}: ${a.memberId} (${load.get(a.memberId)}) reaches ${b.memberId} (${load.get(b.memberId)}) along a chain`)
      }
    }
  }
}

/** The members after a round: each owns what it was given, at the next generation. */
const nextMembers = (members: ReadonlyArray<Member>, assignment: Assigned, generation: number): Member[] =>
  members.map((m) => ({ ...m, ownedPartitions: assignment.get(m.memberId)!, generation }))

/** Rebalances until a round moves nothing, checking each round; returns every round's result. */
const settle = (start: ReadonlyArray<Member>, partitions: Partitions, who: string): { rounds: GroupAssignment[]; members: Member[] } => {
  let members = [...start]
  let generation = Math.max(-1, ...members.map((m) => m.generation))
  const rounds: GroupAssignment[] = []
  for (let round = 0; round < 6; round++) {
    const result = assignCooperativeSticky(members, partitions)
    checkRound(members, partitions, result.assignment, `${who} round ${round + 1}`)
    rounds.push(result)
    const unchanged = members.every((m) => flat(m.ownedPartitions).join() === flat(result.assignment.get(m.memberId)!).join())
    members = nextMembers(members, result.assignment, ++generation)
    if (unchanged) return { rounds, members }
    assert.ok(round < 2, `${who}: still moving partitions after ${round + 1} rounds`)
  }
  return assert.fail(`${who}: never settles`)
}

/** A stable group perturbed: some members leave, some join with nothing, some change topics. */
const perturb = (random: Random, members: ReadonlyArray<Member>, topics: ReadonlyArray<string>): Member[] => {
  const kept = members.filter(() => random.next() < 0.7)
  const joined = Array.from({ length: random.int(0, 4) }, (_, i): Member => ({
    memberId: `joined-${i}-${random.int(0, 999)}`,
    topics: random.next() < 0.5 ? (members[0]?.topics ?? topics) : topics.filter(() => random.next() < 0.5).concat(topics[0]!),
    ownedPartitions: [],
    generation: -1,
  }))
  const out = [...kept, ...joined]
  return out.length > 0 ? out : [...members]
}

test("cooperative-sticky settles random groups into complete, balanced assignments, never giving a partition to two members", () => {
  const random = seeded(2026)
  for (let g = 0; g < groups; g++) {
    const { members, partitions } = randomGroup(random)
    const who = `group ${g} (${members.length} members, ${partitions.size} topics)`
    const first = settle(members, partitions, who)
    const stable = first.rounds.at(-1)!.assignment
    checkStable(first.members, partitions, stable, who, true)
    assert.equal(first.rounds.at(-1)!.transfers.length, 0, `${who}: a stable round transfers nothing`)

    // Members leave and join: the survivors keep what balance allows.
    const after = perturb(random, first.members, [...partitions.keys()])
    const second = settle(after, partitions, `${who} after members left and joined`)
    const final = second.rounds.at(-1)!.assignment
    checkStable(second.members, partitions, final, `${who} after members left and joined`, true)
    const equal = new Set(after.map((m) => [...new Set(m.topics)].sort().join())).size === 1
    if (equal) {
      for (const m of after) {
        const before = new Set(flat(m.ownedPartitions))
        const now = flat(final.get(m.memberId)!)
        const kept = now.filter((k) => before.has(k)).length
        assert.ok(kept >= Math.min(before.size, now.length), `${who}: ${m.memberId} kept ${kept} of its ${before.size} and holds ${now.length}`)
      }
    }
  }
})

test("cooperative-sticky moves a partition in two rounds: its owner gives it up, then the new owner gets it", () => {
  const partitions = new Map([["t", 4]])
  const a: Member = { memberId: "a", topics: ["t"], ownedPartitions: [{ topic: "t", partitions: [0, 1, 2, 3] }], generation: 5 }
  const b: Member = { memberId: "b", topics: ["t"], ownedPartitions: [], generation: -1 }
  const round1 = assignCooperativeSticky([a, b], partitions)
  assert.deepEqual(round1.assignment.get("a"), [{ topic: "t", partitions: [0, 1] }], "a keeps half")
  assert.deepEqual(round1.assignment.get("b"), [], "b waits: a still holds the rest")
  assert.deepEqual(round1.transfers, [{ topic: "t", partition: 2, to: "b" }, { topic: "t", partition: 3, to: "b" }])
  const round2 = assignCooperativeSticky(nextMembers([a, b], round1.assignment, 6), partitions)
  assert.deepEqual(round2.assignment.get("a"), [{ topic: "t", partitions: [0, 1] }])
  assert.deepEqual(round2.assignment.get("b"), [{ topic: "t", partitions: [2, 3] }], "revoked, so b gets them now")
  assert.deepEqual(round2.transfers, [])
})

test("a partition claimed by two members goes to the higher generation; claimed in the same generation, to nobody this round", () => {
  const partitions = new Map([["t", 2]])
  const stale: Member = { memberId: "a", topics: ["t"], ownedPartitions: [{ topic: "t", partitions: [0, 1] }], generation: 3 }
  const current: Member = { memberId: "b", topics: ["t"], ownedPartitions: [{ topic: "t", partitions: [0] }], generation: 4 }
  const result = assignCooperativeSticky([stale, current], partitions)
  assert.deepEqual(result.assignment.get("b"), [{ topic: "t", partitions: [0] }])
  assert.deepEqual(result.assignment.get("a"), [{ topic: "t", partitions: [1] }])
  const tie = assignCooperativeSticky([{ ...stale, generation: 4 }, current], partitions)
  assert.deepEqual(tie.assignment.get("a"), [{ topic: "t", partitions: [1] }])
  assert.deepEqual(tie.assignment.get("b"), [], "t:0 waits until both have let it go")
  assert.equal(tie.transfers.length, 1)
  // Owned partitions of topics no longer subscribed, or gone, are dropped.
  const moved = assignCooperativeSticky(
    [{ memberId: "a", topics: ["u"], ownedPartitions: [{ topic: "t", partitions: [0, 1, 7] }], generation: 2 }, { memberId: "b", topics: ["t"], ownedPartitions: [], generation: -1 }],
    new Map([["t", 2], ["u", 1]]),
  )
  assert.deepEqual(moved.assignment.get("a"), [{ topic: "u", partitions: [0] }])
  assert.deepEqual(moved.assignment.get("b"), [], "a still holds t until it revokes")
})

test("the assignment depends on the group, not on the order members, topics and partitions are listed in", () => {
  const random = seeded(7)
  for (let g = 0; g < 10; g++) {
    const { members, partitions } = randomGroup(random)
    const owned = nextMembers(members, settle(members, partitions, `group ${g}`).rounds.at(-1)!.assignment, 3).filter(() => random.next() < 0.8)
    const shuffle = <A>(xs: ReadonlyArray<A>): A[] => xs.map((x) => [random.next(), x] as const).sort((a, b) => a[0] - b[0]).map(([, x]) => x)
    const shuffled = shuffle(owned).map((m) => ({
      ...m,
      topics: shuffle(m.topics),
      ownedPartitions: shuffle(m.ownedPartitions).map((tp) => ({ topic: tp.topic, partitions: shuffle(tp.partitions) })),
    }))
    const a = assignCooperativeSticky(owned, partitions)
    const b = assignCooperativeSticky(shuffled, new Map(shuffle([...partitions])))
    assert.deepEqual([...b.assignment].sort(), [...a.assignment].sort())
    assert.deepEqual(b.transfers, a.transfers)
  }
})

test("range splits each topic over its subscribers in member order, the first ones taking one more", () => {
  const members: Member[] = ["c", "a", "b"].map((id) => ({ memberId: id, topics: id === "c" ? ["t"] : ["t", "u"], ownedPartitions: [], generation: -1 }))
  const result = assignRange(members, new Map([["t", 7], ["u", 3]]))
  assert.deepEqual(result.assignment.get("a"), [{ topic: "t", partitions: [0, 1, 2] }, { topic: "u", partitions: [0, 1] }])
  assert.deepEqual(result.assignment.get("b"), [{ topic: "t", partitions: [3, 4] }, { topic: "u", partitions: [2] }])
  assert.deepEqual(result.assignment.get("c"), [{ topic: "t", partitions: [5, 6] }])
  assert.deepEqual([cooperativeStickyName, rangeName], ["cooperative-sticky", "range"])
})

test("a member's generation comes from the subscription's field (v2+), else from the assignor's user data", () => {
  assert.equal(generationOf({ generationId: 9, userData: cooperativeStickyUserData(4) }), 9)
  assert.equal(generationOf({ generationId: -1, userData: cooperativeStickyUserData(4) }), 4)
  assert.equal(generationOf({ userData: cooperativeStickyUserData(12) }), 12)
  assert.equal(generationOf({ userData: null }), -1)
  assert.equal(generationOf({ userData: new Uint8Array([1]) }), -1)
})

/** A member as subscription bytes (v3, the user data Kafka's assignor writes too). */
const subscriptionBytes = (m: Member): Uint8Array =>
  encodeVersionPrefixed(ConsumerProtocolSubscription, 3, {
    topics: [...new Set(m.topics)].sort(),
    userData: cooperativeStickyUserData(m.generation),
    ownedPartitions: group(flat(m.ownedPartitions)),
    generationId: m.generation,
    rackId: null,
  }).slice()

test("Kafka's Java CooperativeStickyAssignor, on the same groups through ConsumerProtocol bytes both ways, settles to the same balance where subscriptions are equal, and never a worse one", () => {
  const jar = defaultJar()
  assert.ok(existsSync(jar), `${jar} is missing: run \`scripts/kafka fetch\` (it fetches the Kafka jars with Maven)`)
  const random = seeded(4242)
  const cases: Array<{ members: Member[]; partitions: Map<string, number>; ours: ReturnType<typeof settle> }> = []
  const input = new Writer(1 << 16)
  input.int32(javaGroups)
  for (let g = 0; g < javaGroups; g++) {
    let { members, partitions } = randomGroup(random)
    // Every other group starts from a stable assignment that members then leave and join; some
    // of those with a stale member still claiming partitions.
    if (g % 2 === 1) {
      const stable = settle(members, partitions, `java group ${g} (setup)`).members
      members = perturb(random, stable, [...partitions.keys()])
      if (g % 4 === 3 && members.length > 1) {
        const [first, second] = [members[0]!, members[1]!]
        members[1] = { ...second, ownedPartitions: [...second.ownedPartitions, ...first.ownedPartitions.filter((tp) => second.topics.includes(tp.topic))], generation: first.generation - 1 }
      }
    }
    const ours = settle(members, partitions, `java group ${g} (ours)`)
    cases.push({ members, partitions, ours })
    input.int32(partitions.size)
    for (const [topic, count] of partitions) {
      input.string(topic)
      input.int32(count)
    }
    input.int32(members.length)
    for (const [i, m] of members.entries()) {
      input.string(m.memberId)
      input.bytes(subscriptionBytes(m))
      input.bytes(encodeVersionPrefixed(ConsumerProtocolAssignment, i % 4, { assignedPartitions: ours.rounds[0]!.assignment.get(m.memberId)!, userData: null }).slice())
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "partita-assignor-java-"))
  try {
    writeFileSync(join(dir, "in.bin"), input.finish())
    const java = process.env.JAVA_HOME ? join(process.env.JAVA_HOME, "bin/java") : "java"
    try {
      execFileSync(java, ["-cp", join(jar, "..", "*"), join(here, "StickyAssignorCheck.java"), join(dir, "in.bin"), join(dir, "out.bin")], {
        stdio: ["ignore", "pipe", "pipe"],
      })
    } catch (error) {
      const failure = error as { code?: string; message: string; stdout?: Buffer; stderr?: Buffer }
      if (failure.code === "ENOENT") assert.fail("java is not on PATH (nor JAVA_HOME set): it is needed here as for scripts/kafka")
      throw new Error(`StickyAssignorCheck.java failed: ${failure.message}\n${failure.stdout ?? ""}${failure.stderr ?? ""}`)
    }
    const out = new Reader(new Uint8Array(readFileSync(join(dir, "out.bin"))))
    let better = 0
    for (const [g, { members, partitions, ours }] of cases.entries()) {
      const who = `java group ${g} (${members.length} members, ${partitions.size} topics)`
      // Java read our subscription and assignment bytes as we meant them.
      for (const m of members) {
        const owned = flat(m.ownedPartitions).join()
        assert.equal(out.string(), `${[...new Set(m.topics)].sort().join()}|${owned}|${m.generation}|`, `${who}: Java decodes ${m.memberId}'s subscription`)
        assert.equal(out.string(), flat(ours.rounds[0]!.assignment.get(m.memberId)!).join(), `${who}: Java decodes ${m.memberId}'s assignment`)
      }
      // Java's rounds, decoded from Java's bytes, checked as ours are.
      const rounds = out.int32()
      let current = members
      let javaFinal: Map<string, TopicPartitions[]> = new Map()
      for (let r = 0; r < rounds; r++) {
        const assignment = new Map<string, TopicPartitions[]>()
        const next: Member[] = []
        for (const m of current) {
          const a = decodeVersionPrefixed(ConsumerProtocolAssignment, out.bytes()).value
          const s = decodeVersionPrefixed(ConsumerProtocolSubscription, out.bytes())
          assert.equal(s.version, 3)
          assignment.set(m.memberId, [...a.assignedPartitions])
          assert.deepEqual(flat(s.value.ownedPartitions ?? []), flat(a.assignedPartitions), `${who}: Java's next subscription lists what it assigned`)
          next.push({ ...m, ownedPartitions: s.value.ownedPartitions ?? [], generation: generationOf(s.value) })
        }
        checkRound(current, partitions, assignment, `${who}: Java round ${r + 1}`, true)
        current = next
        javaFinal = assignment
      }
      checkStable(current, partitions, javaFinal, `${who}: Java's final assignment`, false)
      const theirs = spread(current, javaFinal)
      const mine = spread(ours.members, ours.rounds.at(-1)!.assignment)
      const equal = new Set(members.map((m) => [...new Set(m.topics)].filter((t) => partitions.has(t)).sort().join())).size === 1
      if (equal) assert.equal(mine, theirs, `${who}: the same spread as Java's`)
      else assert.ok(mine <= theirs, `${who}: spread ${mine}, Java's ${theirs}`)
      if (mine < theirs) better++
    }
    assert.equal(out.remaining, 0)
    // How often the optimal balance beats Java's heuristic on unequal subscriptions (for the record).
    if (better > 0) console.log(`stickyAssignor: ${better} of ${cases.length} groups end more balanced than with Java's assignor`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
