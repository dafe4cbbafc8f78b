/**
 * The history checker of the fault suite, in the spirit of Jepsen's Kafka workload: it reads what
 * every process logged (records produced and acknowledged; partitions claimed and released;
 * records handled, committed, dead-lettered and written to an output topic; process exits) and
 * what the topics hold afterwards, and reports every way the history breaks Partita's promise:
 *
 * - lost: an acknowledged record that was neither handled nor dead-lettered (or that the topic no
 *   longer holds, or whose output never reached the output topic);
 * - duplicates: a record handled more than once, each extra handling classed as within the
 *   uncommitted window (no commit past it had been acknowledged when it started again: allowed for
 *   at-least-once) or outside it (a committed record handled again: never allowed);
 * - per-key order violations: within one ownership of a partition, a key's records handled out of
 *   the order they were produced in (and, read back, stored out of that order);
 * - offsets that go backwards: a group commit lower than one acknowledged before it, a claim that
 *   starts before the committed offset, an ownership whose handled offsets go back;
 * - overlapping owners: two members holding one partition at the same time (from the
 *   per-partition, per-generation claim log, a claim ending at its release or its process's exit).
 *
 * Times are epoch milliseconds from the processes' own clocks (one machine, one clock). The checker
 * is pure: `check` takes a `History` and returns a `Report`; `parseLog` turns JSON lines into a
 * `History`. Every check is proven to fire by tests/faults/history.test.ts.
 */

/** A record the producer had acknowledged: its key, its sequence number for the key, where it landed. */
export interface Produced {
  readonly key: string
  readonly seq: number
  readonly partition: number
  readonly offset: number
  readonly t: number
}

/** A member (one process incarnation) was assigned a partition in its generation `generation`. */
export interface Claim {
  readonly member: string
  readonly generation: number
  readonly partition: number
  /** The offset the claim starts at (the committed offset, or the reset position). */
  readonly startOffset: number
  readonly t: number
}

/** The member gave the partition up (acknowledged its revocation, or closed its subscription). */
export interface Release {
  readonly member: string
  readonly generation: number
  readonly partition: number
  readonly t: number
}

/** A handler call that completed, from `start` to `end`. */
export interface Handled {
  readonly member: string
  readonly generation: number
  readonly partition: number
  readonly offset: number
  readonly key: string
  readonly seq: number
  readonly start: number
  readonly end: number
}

/** A commit the broker acknowledged: `offset` is the next offset to consume. */
export interface Commit {
  readonly member: string
  readonly generation: number
  readonly partition: number
  readonly offset: number
  readonly t: number
}

/** A dead letter the broker acknowledged, for source record `partition`@`offset`. */
export interface DeadLettered {
  readonly member: string
  readonly partition: number
  readonly offset: number
  readonly t: number
}

/** A process ended (killed or exited) at `t`: its open claims end there. */
export interface Exited {
  readonly member: string
  readonly t: number
  readonly code: number | string
}

/** A record read back from the input topic. */
export interface TopicRecord {
  readonly partition: number
  readonly offset: number
  readonly key: string | null
  readonly seq: number | undefined
}

/** A record read back from the dead-letter or output topic, naming its source record. */
export interface DerivedRecord {
  readonly sourcePartition: number
  readonly sourceOffset: number
}

export interface History {
  readonly produced: ReadonlyArray<Produced>
  readonly claims: ReadonlyArray<Claim>
  readonly releases: ReadonlyArray<Release>
  readonly handled: ReadonlyArray<Handled>
  readonly commits: ReadonlyArray<Commit>
  readonly deadLettered: ReadonlyArray<DeadLettered>
  readonly exits: ReadonlyArray<Exited>
  /** The input topic read back afterwards, when the check should cover the broker too. */
  readonly topic?: ReadonlyArray<TopicRecord> | undefined
  /** The dead-letter topic read back (replaces the dead-letter log for the lost check). */
  readonly deadLetterTopic?: ReadonlyArray<DerivedRecord> | undefined
  /** The output topic read back: every handled record must have an output there. */
  readonly outputTopic?: ReadonlyArray<DerivedRecord> | undefined
  /** The group's committed offsets read back afterwards, by partition. */
  readonly finalCommitted?: ReadonlyMap<number, number> | undefined
  /** `partition` (the default): one ownership handles a partition's offsets in increasing order. */
  readonly ordering?: "partition" | "key" | undefined
}

export interface Lost {
  readonly partition: number
  readonly offset: number
  readonly key: string
  readonly seq: number
  readonly why: "never handled or dead-lettered" | "missing from the topic" | "no output record"
}

export interface Duplicate {
  readonly partition: number
  readonly offset: number
  /** Which handling this is: 2 for the first repeat. */
  readonly nth: number
  /** The member that handled it first, and the one that handled it again. */
  readonly first: string
  readonly again: string
  /** When the repeat started. */
  readonly at: number
  /** The committed offset of the partition when the repeat started. */
  readonly committedThen: number
  /** True when nothing past the record had been committed: the at-least-once window. */
  readonly inWindow: boolean
}

export interface OrderViolation {
  readonly key: string
  readonly partition: number
  readonly member: string | undefined
  readonly generation: number | undefined
  /** `handled`: within one ownership; `topic`: the broker stored them out of the produced order. */
  readonly where: "handled" | "topic"
  readonly previousSeq: number
  readonly seq: number
  readonly offset: number
}

export interface BackwardsOffset {
  readonly partition: number
  readonly kind: "commit" | "claim" | "handled" | "final commit"
  readonly member: string | undefined
  /** The highest offset known before, and the lower one that came after it. */
  readonly before: number
  readonly after: number
  readonly t: number | undefined
}

export interface Ownership {
  readonly member: string
  readonly generation: number
  readonly from: number
  /** The release, the process's exit, or Infinity when neither was logged. */
  readonly to: number
}

export interface Overlap {
  readonly partition: number
  /** The earlier ownership, and the one that began before it ended. */
  readonly a: Ownership
  readonly b: Ownership
  /** Records of the partition handled by `a` after `b` began, or by `b` before `a` ended. */
  readonly handledDuring: number
}

export interface Report {
  readonly lost: ReadonlyArray<Lost>
  readonly duplicates: ReadonlyArray<Duplicate>
  /** Source records with more than one dead letter, and how many each has. */
  readonly duplicateDeadLetters: ReadonlyArray<{ readonly partition: number; readonly offset: number; readonly count: number }>
  /** Output records beyond one per source record. */
  readonly duplicateOutputs: number
  readonly orderViolations: ReadonlyArray<OrderViolation>
  readonly backwardsOffsets: ReadonlyArray<BackwardsOffset>
  readonly overlappingOwners: ReadonlyArray<Overlap>
  readonly counts: {
    readonly produced: number
    readonly handled: number
    readonly distinctHandled: number
    readonly deadLettered: number
    readonly commits: number
    readonly claims: number
  }
}

const at = (partition: number, offset: number): string => `${partition}@${offset}`

/**
 * Per partition, the acknowledged commits in time order with a running maximum, to answer "what
 * was committed before time t" by binary search.
 */
class CommitTimeline {
  private readonly byPartition = new Map<number, { readonly times: Array<number>; readonly maxima: Array<number> }>()

  constructor(commits: ReadonlyArray<Commit>) {
    const sorted = [...commits].sort((x, y) => x.t - y.t)
    for (const commit of sorted) {
      let line = this.byPartition.get(commit.partition)
      if (line === undefined) {
        line = { times: [], maxima: [] }
        this.byPartition.set(commit.partition, line)
      }
      const previous = line.maxima.length === 0 ? -1 : line.maxima[line.maxima.length - 1]!
      line.times.push(commit.t)
      line.maxima.push(Math.max(previous, commit.offset))
    }
  }

  /** The highest offset of `partition` committed strictly before `t`, or -1. */
  before(partition: number, t: number): number {
    const line = this.byPartition.get(partition)
    if (line === undefined) return -1
    let low = 0
    let high = line.times.length
    while (low < high) {
      const middle = (low + high) >> 1
      if (line.times[middle]! < t) low = middle + 1
      else high = middle
    }
    return low === 0 ? -1 : line.maxima[low - 1]!
  }

  highest(partition: number): number {
    const line = this.byPartition.get(partition)
    return line === undefined || line.maxima.length === 0 ? -1 : line.maxima[line.maxima.length - 1]!
  }
}

/** Every ownership (claim to release or exit) per partition. */
export const ownerships = (history: History): Map<number, Array<Ownership>> => {
  const releases = new Map<string, number>()
  for (const release of history.releases) {
    const id = `${release.member}|${release.generation}|${release.partition}`
    const known = releases.get(id)
    releases.set(id, known === undefined ? release.t : Math.min(known, release.t))
  }
  const exits = new Map<string, number>()
  for (const exit of history.exits) exits.set(exit.member, Math.min(exits.get(exit.member) ?? Infinity, exit.t))
  const result = new Map<number, Array<Ownership>>()
  for (const claim of history.claims) {
    const released = releases.get(`${claim.member}|${claim.generation}|${claim.partition}`)
    const to = Math.min(released ?? Infinity, exits.get(claim.member) ?? Infinity)
    const list = result.get(claim.partition) ?? []
    list.push({ member: claim.member, generation: claim.generation, from: claim.t, to })
    result.set(claim.partition, list)
  }
  for (const list of result.values()) list.sort((x, y) => x.from - y.from)
  return result
}

/** Reads `history` and reports every broken promise; an empty report is a clean history. */
export const check = (history: History): Report => {
  const commits = new CommitTimeline(history.commits)
  const handledSorted = [...history.handled].sort((x, y) => x.start - y.start || x.end - y.end)

  // ---- lost ---------------------------------------------------------------------------------------
  const handledAt = new Map<string, Array<Handled>>()
  for (const handled of handledSorted) {
    const id = at(handled.partition, handled.offset)
    const list = handledAt.get(id)
    if (list === undefined) handledAt.set(id, [handled])
    else list.push(handled)
  }
  const deadLetterCounts = new Map<string, number>()
  if (history.deadLetterTopic !== undefined) {
    for (const letter of history.deadLetterTopic) {
      const id = at(letter.sourcePartition, letter.sourceOffset)
      deadLetterCounts.set(id, (deadLetterCounts.get(id) ?? 0) + 1)
    }
  } else {
    for (const letter of history.deadLettered) {
      const id = at(letter.partition, letter.offset)
      deadLetterCounts.set(id, (deadLetterCounts.get(id) ?? 0) + 1)
    }
  }
  const topicAt = history.topic === undefined ? undefined : new Map(history.topic.map((record) => [at(record.partition, record.offset), record]))
  const outputCounts = new Map<string, number>()
  for (const output of history.outputTopic ?? []) {
    const id = at(output.sourcePartition, output.sourceOffset)
    outputCounts.set(id, (outputCounts.get(id) ?? 0) + 1)
  }
  const lost: Array<Lost> = []
  for (const record of history.produced) {
    const id = at(record.partition, record.offset)
    const base = { partition: record.partition, offset: record.offset, key: record.key, seq: record.seq }
    if (topicAt !== undefined) {
      const stored = topicAt.get(id)
      if (stored === undefined || stored.key !== record.key || stored.seq !== record.seq) {
        lost.push({ ...base, why: "missing from the topic" })
        continue
      }
    }
    const handled = handledAt.has(id)
    if (!handled && !deadLetterCounts.has(id)) {
      lost.push({ ...base, why: "never handled or dead-lettered" })
      continue
    }
    if (handled && history.outputTopic !== undefined && !outputCounts.has(id)) lost.push({ ...base, why: "no output record" })
  }

  // ---- duplicates -----------------------------------------------------------------------------------
  const duplicates: Array<Duplicate> = []
  for (const list of handledAt.values()) {
    for (let index = 1; index < list.length; index++) {
      const again = list[index]!
      const committedThen = commits.before(again.partition, again.start)
      duplicates.push({
        partition: again.partition,
        offset: again.offset,
        nth: index + 1,
        first: list[0]!.member,
        again: again.member,
        at: again.start,
        committedThen,
        inWindow: committedThen <= again.offset,
      })
    }
  }
  duplicates.sort((x, y) => x.partition - y.partition || x.offset - y.offset || x.nth - y.nth)
  const duplicateDeadLetters = [...deadLetterCounts.entries()].filter(([, count]) => count > 1).map(([id, count]) => {
    const [partition, offset] = id.split("@").map(Number)
    return { partition: partition!, offset: offset!, count }
  })
  let duplicateOutputs = 0
  for (const count of outputCounts.values()) duplicateOutputs += count - 1

  // ---- order ------------------------------------------------------------------------------------------
  const orderViolations: Array<OrderViolation> = []
  const runs = new Map<string, Array<Handled>>()
  for (const handled of handledSorted) {
    const id = `${handled.member}|${handled.generation}|${handled.partition}`
    const list = runs.get(id)
    if (list === undefined) runs.set(id, [handled])
    else list.push(handled)
  }
  for (const run of runs.values()) {
    const highest = new Map<string, number>()
    for (const handled of run) {
      const previous = highest.get(handled.key)
      // Equal is allowed: a producer retry can store one (key, seq) twice.
      if (previous !== undefined && handled.seq < previous) {
        orderViolations.push({
          key: handled.key,
          partition: handled.partition,
          member: handled.member,
          generation: handled.generation,
          where: "handled",
          previousSeq: previous,
          seq: handled.seq,
          offset: handled.offset,
        })
      } else highest.set(handled.key, handled.seq)
    }
  }
  const producedByKey = new Map<string, Array<Produced>>()
  for (const record of history.produced) {
    const list = producedByKey.get(record.key)
    if (list === undefined) producedByKey.set(record.key, [record])
    else list.push(record)
  }
  for (const [key, list] of producedByKey) {
    const sorted = [...list].sort((x, y) => x.partition - y.partition || x.offset - y.offset)
    for (let index = 1; index < sorted.length; index++) {
      const previous = sorted[index - 1]!
      const record = sorted[index]!
      if (record.partition === previous.partition && record.seq < previous.seq) {
        orderViolations.push({
          key,
          partition: record.partition,
          member: undefined,
          generation: undefined,
          where: "topic",
          previousSeq: previous.seq,
          seq: record.seq,
          offset: record.offset,
        })
      }
    }
  }

  // ---- offsets going backwards ------------------------------------------------------------------------
  const backwardsOffsets: Array<BackwardsOffset> = []
  const sortedCommits = [...history.commits].sort((x, y) => x.t - y.t)
  const highestCommit = new Map<number, number>()
  for (const commit of sortedCommits) {
    const before = highestCommit.get(commit.partition)
    if (before !== undefined && commit.offset < before) {
      backwardsOffsets.push({ partition: commit.partition, kind: "commit", member: commit.member, before, after: commit.offset, t: commit.t })
    } else highestCommit.set(commit.partition, commit.offset)
  }
  for (const claim of history.claims) {
    const before = commits.before(claim.partition, claim.t)
    if (claim.startOffset < before) {
      backwardsOffsets.push({ partition: claim.partition, kind: "claim", member: claim.member, before, after: claim.startOffset, t: claim.t })
    }
  }
  if ((history.ordering ?? "partition") === "partition") {
    for (const run of runs.values()) {
      let highest = -1
      for (const handled of run) {
        if (handled.offset < highest) {
          backwardsOffsets.push({
            partition: handled.partition,
            kind: "handled",
            member: handled.member,
            before: highest,
            after: handled.offset,
            t: handled.start,
          })
        } else highest = handled.offset
      }
    }
  }
  for (const [partition, offset] of history.finalCommitted ?? new Map<number, number>()) {
    const before = commits.highest(partition)
    if (offset < before) backwardsOffsets.push({ partition, kind: "final commit", member: undefined, before, after: offset, t: undefined })
  }

  // ---- overlapping owners -----------------------------------------------------------------------------
  const overlappingOwners: Array<Overlap> = []
  for (const [partition, list] of ownerships(history)) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i]!
        const b = list[j]!
        if (b.from >= a.to) continue
        if (a.member === b.member) continue
        const handledDuring = history.handled.filter((h) =>
          h.partition === partition &&
          ((h.member === a.member && h.generation === a.generation && h.end > b.from) ||
            (h.member === b.member && h.generation === b.generation && h.start < a.to))
        ).length
        overlappingOwners.push({ partition, a, b, handledDuring })
      }
    }
  }

  return {
    lost,
    duplicates,
    duplicateDeadLetters,
    duplicateOutputs,
    orderViolations,
    backwardsOffsets,
    overlappingOwners,
    counts: {
      produced: history.produced.length,
      handled: history.handled.length,
      distinctHandled: handledAt.size,
      deadLettered: [...deadLetterCounts.values()].reduce((sum, count) => sum + count, 0),
      commits: history.commits.length,
      claims: history.claims.length,
    },
  }
}

/** Duplicates outside the uncommitted window: committed records handled again. */
export const outOfWindow = (report: Report): ReadonlyArray<Duplicate> => report.duplicates.filter((d) => !d.inWindow)

/** One line of figures for a scenario's log. */
export const figures = (report: Report): string => {
  const inWindow = report.duplicates.filter((d) => d.inWindow).length
  return [
    `produced=${report.counts.produced}`,
    `handled=${report.counts.handled}`,
    `lost=${report.lost.length}`,
    `dup_in_window=${inWindow}`,
    `dup_out_of_window=${report.duplicates.length - inWindow}`,
    `dlq=${report.counts.deadLettered}`,
    `dlq_dup=${report.duplicateDeadLetters.length}`,
    `output_dup=${report.duplicateOutputs}`,
    `order=${report.orderViolations.length}`,
    `backwards=${report.backwardsOffsets.length}`,
    `overlaps=${report.overlappingOwners.length}`,
  ].join(" ")
}

/** A short, readable account of what a report found, for assertion messages. */
export const describeReport = (report: Report, limit = 5): string => {
  const show = <A>(name: string, list: ReadonlyArray<A>) =>
    list.length === 0 ? [] : [`${name} (${list.length}): ${list.slice(0, limit).map((item) => JSON.stringify(item)).join(", ")}`]
  return [
    figures(report),
    ...show("lost", report.lost),
    ...show("duplicates out of window", outOfWindow(report)),
    ...show("duplicate dead letters", report.duplicateDeadLetters),
    ...show("order violations", report.orderViolations),
    ...show("backwards offsets", report.backwardsOffsets),
    ...show("overlapping owners", report.overlappingOwners),
  ].join("\n")
}

// ---- the logs ----------------------------------------------------------------------------------------

/**
 * One line of a process's append-only log. `e` names the event; `m` the member (process label and
 * incarnation), `g` its generation (its count of assignments), `p`/`o` partition and offset.
 */
export type LogLine =
  | { readonly e: "produced"; readonly key: string; readonly seq: number; readonly p: number; readonly o: number; readonly t: number }
  | { readonly e: "claim"; readonly m: string; readonly g: number; readonly p: number; readonly o: number; readonly t: number }
  | { readonly e: "release"; readonly m: string; readonly g: number; readonly p: number; readonly t: number }
  | {
    readonly e: "handled"
    readonly m: string
    readonly g: number
    readonly p: number
    readonly o: number
    readonly key: string
    readonly seq: number
    readonly st: number
    readonly en: number
  }
  | { readonly e: "commit"; readonly m: string; readonly g: number; readonly p: number; readonly o: number; readonly t: number }
  | { readonly e: "dead"; readonly m: string; readonly p: number; readonly o: number; readonly t: number }
  | { readonly e: "exit"; readonly m: string; readonly t: number; readonly code: number | string }
  | { readonly e: string; readonly [field: string]: unknown }

/** Builds a history from log lines (any order, any number of files); unknown events are ignored. */
export const parseLog = (text: string): Omit<History, "topic" | "deadLetterTopic" | "outputTopic" | "finalCommitted" | "ordering"> => {
  const history = {
    produced: [] as Array<Produced>,
    claims: [] as Array<Claim>,
    releases: [] as Array<Release>,
    handled: [] as Array<Handled>,
    commits: [] as Array<Commit>,
    deadLettered: [] as Array<DeadLettered>,
    exits: [] as Array<Exited>,
  }
  for (const raw of text.split("\n")) {
    if (raw.trim() === "") continue
    let line: Record<string, any>
    try {
      line = JSON.parse(raw)
    } catch {
      // The last line of a process killed mid-write is cut short; nothing after it was written.
      continue
    }
    switch (line["e"]) {
      case "produced":
        history.produced.push({ key: line["key"], seq: line["seq"], partition: line["p"], offset: line["o"], t: line["t"] })
        break
      case "claim":
        history.claims.push({ member: line["m"], generation: line["g"], partition: line["p"], startOffset: line["o"], t: line["t"] })
        break
      case "release":
        history.releases.push({ member: line["m"], generation: line["g"], partition: line["p"], t: line["t"] })
        break
      case "handled":
        history.handled.push({
          member: line["m"],
          generation: line["g"],
          partition: line["p"],
          offset: line["o"],
          key: line["key"],
          seq: line["seq"],
          start: line["st"],
          end: line["en"],
        })
        break
      case "commit":
        history.commits.push({ member: line["m"], generation: line["g"], partition: line["p"], offset: line["o"], t: line["t"] })
        break
      case "dead":
        history.deadLettered.push({ member: line["m"], partition: line["p"], offset: line["o"], t: line["t"] })
        break
      case "exit":
        history.exits.push({ member: line["m"], t: line["t"], code: line["code"] })
        break
    }
  }
  return history
}
