/**
 * The classic group protocol's client-side assignors: "cooperative-sticky" (the one Partita
 * prefers) and "range" (the eager fallback every Java consumer also offers, so a group mixing
 * Partita and Java members finds a common protocol). The group leader runs one of them on every
 * member's JoinGroup metadata (a ConsumerProtocolSubscription) and sends the result back in
 * SyncGroup (one ConsumerProtocolAssignment per member).
 *
 * Cooperative-sticky promises what Kafka's CooperativeStickyAssignor (AbstractStickyAssignor)
 * does, with its own, smaller algorithm:
 * - balanced: no member can take a partition, directly or along a chain of members that each
 *   pass one on, from a member holding two more than it. That is an optimal semi-matching
 *   (Harvey, Ladner, Lovász, Tamir, "Semi-matchings for bipartite graphs and load balancing",
 *   2006): the highest count is as low, and the spread as small, as the subscriptions allow;
 *   members with the same subscriptions differ by at most one.
 * - sticky: a member keeps the partitions it owns unless balance takes them; moves prefer
 *   partitions nobody owned, then ones that go back to their owner.
 * - cooperative: a partition that changes owner is left out of this round (its owner, seeing it
 *   missing, revokes it and rejoins; the next round gives it to its new owner), so no partition is
 *   ever consumed by two members at once. A partition claimed by several members goes to the one
 *   with the highest generation; claimed by several of the same generation, to nobody this round.
 *
 * Pure and deterministic: the result depends on the inputs' contents, not their order. Plain
 * synchronous TypeScript (the leader runs it once per rebalance, on up to thousands of
 * partitions).
 */

/** The assignor names on the wire (JoinGroup protocol names), as Kafka's Java consumer uses them. */
export const cooperativeStickyName = "cooperative-sticky"
export const rangeName = "range"

/** Partitions of one topic, as the consumer protocol lists them. */
export interface TopicPartitions {
  readonly topic: string
  readonly partitions: ReadonlyArray<number>
}

/** One member as the leader sees it in JoinGroup: its subscription, and what it says it owns. */
export interface Member {
  readonly memberId: string
  readonly topics: ReadonlyArray<string>
  /** Partitions the member owned before this rebalance (subscription v1+; empty for eager members). */
  readonly ownedPartitions: ReadonlyArray<TopicPartitions>
  /** The generation those were assigned in, -1 when unknown (see {@link generationOf}). */
  readonly generation: number
}

/** What an assignor returns: every member's partitions (sorted by topic, then partition). */
export interface GroupAssignment {
  readonly assignment: ReadonlyMap<string, ReadonlyArray<TopicPartitions>>
  /**
   * Partitions left out of this round because they change owner (cooperative-sticky only): each
   * goes to `to` in the follow-up rebalance once its owner has revoked it.
   */
  readonly transfers: ReadonlyArray<{ readonly topic: string; readonly partition: number; readonly to: string }>
}

/**
 * The user data Kafka's CooperativeStickyAssignor puts in its subscription: its generation as an
 * int32. Subscriptions v2+ carry the generation in a field of their own; older ones only here.
 */
export const cooperativeStickyUserData = (generation: number): Uint8Array => {
  const bytes = new Uint8Array(4)
  new DataView(bytes.buffer).setInt32(0, generation)
  return bytes
}

/**
 * A member's generation from its subscription, as Kafka's CooperativeStickyAssignor reads it: the
 * GenerationId field (v2+) when it is set, else the user data's int32; -1 when neither says
 * (a missing or unreadable user data: an eager member, or another assignor's).
 */
export const generationOf = (subscription: { readonly generationId?: number | undefined; readonly userData: Uint8Array | null }): number => {
  const field = subscription.generationId ?? -1
  if (field >= 0) return field
  const data = subscription.userData
  if (data === null || data.length < 4) return -1
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getInt32(0)
}

/** The topics sorted and deduplicated, with their partition counts (unknown topics dropped). */
const topicIndex = (partitionsPerTopic: ReadonlyMap<string, number>) => {
  const topics = [...partitionsPerTopic.keys()].sort()
  const first: number[] = []
  let total = 0
  for (const topic of topics) {
    first.push(total)
    total += Math.max(0, Math.floor(partitionsPerTopic.get(topic)!))
  }
  first.push(total)
  const byName = new Map(topics.map((topic, i) => [topic, i]))
  /** The partition's index in 0..total, or -1 when the topic or partition does not exist. */
  const indexOf = (topic: string, partition: number): number => {
    const t = byName.get(topic)
    if (t === undefined || !Number.isInteger(partition) || partition < 0 || first[t]! + partition >= first[t + 1]!) return -1
    return first[t]! + partition
  }
  const topicOf = new Int32Array(total)
  for (let t = 0; t < topics.length; t++) topicOf.fill(t, first[t]!, first[t + 1]!)
  return { topics, first, total, byName, indexOf, topicOf }
}

const byId = (a: Member, b: Member): number => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0)

/** Partition indexes of each member, back to TopicPartitions sorted by topic then partition. */
const toAssignment = (
  members: ReadonlyArray<Member>,
  owner: Int32Array,
  keep: (partition: number) => boolean,
  index: ReturnType<typeof topicIndex>,
): Map<string, TopicPartitions[]> => {
  const lists: TopicPartitions[][] = members.map(() => [])
  for (let t = 0; t < index.topics.length; t++) {
    const perMember = new Map<number, number[]>()
    for (let p = index.first[t]!; p < index.first[t + 1]!; p++) {
      const m = owner[p]!
      if (m < 0 || !keep(p)) continue
      let list = perMember.get(m)
      if (list === undefined) perMember.set(m, (list = []))
      list.push(p - index.first[t]!)
    }
    for (const [m, partitions] of perMember) lists[m]!.push({ topic: index.topics[t]!, partitions })
  }
  return new Map(members.map((member, m) => [member.memberId, lists[m]!]))
}

/**
 * The cooperative-sticky assignment of `partitionsPerTopic` (topic → partition count) to
 * `members`. Members are told apart by memberId (duplicates are a caller's bug and throw);
 * owned partitions of topics a member no longer subscribes to, or that no longer exist, are
 * ignored except that they hold back their transfer until revoked.
 */
export const assignCooperativeSticky = (
  members: ReadonlyArray<Member>,
  partitionsPerTopic: ReadonlyMap<string, number>,
): GroupAssignment => {
  const sorted = [...members].sort(byId)
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.memberId === sorted[i - 1]!.memberId) throw new Error(`assignCooperativeSticky: member ${sorted[i]!.memberId} appears twice`)
  }
  const index = topicIndex(partitionsPerTopic)
  const n = sorted.length
  const T = index.topics.length
  const P = index.total

  // Subscriptions: subscribed[m * T + t].
  const subscribed = new Uint8Array(n * T)
  const subscribers: number[][] = index.topics.map(() => [])
  for (let m = 0; m < n; m++) {
    for (const topic of new Set(sorted[m]!.topics)) {
      const t = index.byName.get(topic)
      if (t !== undefined) subscribed[m * T + t] = 1
    }
    for (let t = 0; t < T; t++) if (subscribed[m * T + t]) subscribers[t]!.push(m)
  }

  // Claims: the member of the highest generation keeps a partition; a tie at the highest leaves
  // it unowned. `claimed` counts every claimant (stale or unsubscribed too): a partition someone
  // still holds must be revoked before anyone else gets it.
  const owner = new Int32Array(P).fill(-1)
  const ownerGeneration = new Float64Array(P).fill(-Infinity)
  const tied = new Uint8Array(P)
  const claimed = new Uint8Array(P)
  for (let m = 0; m < n; m++) {
    const member = sorted[m]!
    const seen = new Set<number>()
    for (const { topic, partitions } of member.ownedPartitions) {
      for (const partition of partitions) {
        const p = index.indexOf(topic, partition)
        if (p < 0 || seen.has(p)) continue
        seen.add(p)
        claimed[p] = 1
        if (!subscribed[m * T + index.topicOf[p]!]) continue
        const generation = member.generation
        if (generation > ownerGeneration[p]!) {
          owner[p] = m
          ownerGeneration[p] = generation
          tied[p] = 0
        } else if (generation === ownerGeneration[p]) tied[p] = 1
      }
    }
  }
  for (let p = 0; p < P; p++) if (tied[p]) owner[p] = -1
  const previous = Int32Array.from(owner)

  // What each member holds, per topic (insertion-ordered sets: deterministic iteration).
  const held: Set<number>[] = Array.from({ length: n * T }, () => new Set<number>())
  // How many of those the member did not own before: moving one of these costs no revocation.
  const free = new Int32Array(n * T)
  const load = new Int32Array(n)
  const give = (p: number, to: number): void => {
    const from = owner[p]!
    const t = index.topicOf[p]!
    if (from >= 0) {
      held[from * T + t]!.delete(p)
      if (previous[p] !== from) free[from * T + t]!--
      load[from]!--
    }
    owner[p] = to
    held[to * T + t]!.add(p)
    if (previous[p] !== to) free[to * T + t]!++
    load[to]!++
  }
  for (let p = 0; p < P; p++) {
    const m = owner[p]!
    if (m >= 0) {
      owner[p] = -1
      give(p, m)
    }
  }

  // Unowned partitions, those with the fewest possible members first, each to the least loaded.
  const unowned: number[] = []
  for (let p = 0; p < P; p++) if (owner[p]! < 0 && subscribers[index.topicOf[p]!]!.length > 0) unowned.push(p)
  unowned.sort((a, b) => subscribers[index.topicOf[a]!]!.length - subscribers[index.topicOf[b]!]!.length || a - b)
  for (const p of unowned) {
    let best = -1
    for (const m of subscribers[index.topicOf[p]!]!) if (best < 0 || load[m]! < load[best]!) best = m
    give(p, best)
  }

  // Balance: while some member can pass a partition along a chain of members to one holding two
  // fewer, do so (each pass lowers the sum of squared loads, so this ends). BFS from the most
  // loaded member finds the shortest such chain to the least loaded member it reaches. Chains
  // that move only partitions their givers did not own come first: with the owned ones fixed
  // this is the same convex min-cost problem, so when an optimum exists that keeps every owned
  // partition in place (as in the round after a cooperative revocation) it is the one found, and
  // owned partitions move only when balance needs them to.
  const parent = new Int32Array(n)
  const via = new Int32Array(n)
  const choose = (from: number, to: number, t: number): number => {
    // Back to its previous owner, then one `from` did not own, then the highest (members keep
    // their lowest partitions, as Kafka's assignor has them do).
    let pick = -1
    let rank = 3
    for (const p of held[from * T + t]!) {
      const r = previous[p] === to ? 0 : previous[p] !== from ? 1 : 2
      if (r < rank || (r === rank && p > pick)) {
        pick = p
        rank = r
      }
    }
    return pick
  }
  const order = Array.from({ length: n }, (_, m) => m)
  const pass = (freeOnly: boolean): boolean => {
    order.sort((a, b) => load[b]! - load[a]! || a - b)
    for (const source of order) {
      parent.fill(-2)
      parent[source] = -1
      const queue = [source]
      let sink = -1
      for (let head = 0; head < queue.length; head++) {
        const a = queue[head]!
        for (let b = 0; b < n; b++) {
          if (parent[b] !== -2) continue
          for (let t = 0; t < T; t++) {
            if (subscribed[b * T + t] && (freeOnly ? free[a * T + t]! : held[a * T + t]!.size) > 0) {
              parent[b] = a
              via[b] = t
              queue.push(b)
              if (load[b]! <= load[source]! - 2 && (sink < 0 || load[b]! < load[sink]!)) sink = b
              break
            }
          }
        }
      }
      if (sink < 0) continue
      // Along the chain from its end, so that each member gives before it receives.
      for (let b = sink; parent[b]! >= 0; b = parent[b]!) give(choose(parent[b]!, b, via[b]!), b)
      return true
    }
    return false
  }
  while (pass(true) || pass(false));

  // Cooperative: a partition goes out now only to its previous owner, or when nobody holds it.
  const transfers: Array<{ topic: string; partition: number; to: string }> = []
  const now = (p: number): boolean => owner[p] === previous[p] || !claimed[p]
  for (let p = 0; p < P; p++) {
    if (owner[p]! >= 0 && !now(p)) {
      const t = index.topicOf[p]!
      transfers.push({ topic: index.topics[t]!, partition: p - index.first[t]!, to: sorted[owner[p]!]!.memberId })
    }
  }
  return { assignment: toAssignment(sorted, owner, now, index), transfers }
}

/**
 * Kafka's RangeAssignor (eager): per topic, its subscribers sorted by member id take consecutive
 * ranges, the first `partitions % subscribers` one more. Owned partitions play no part; an eager
 * member revokes everything before it joins.
 */
export const assignRange = (
  members: ReadonlyArray<Member>,
  partitionsPerTopic: ReadonlyMap<string, number>,
): GroupAssignment => {
  const sorted = [...members].sort(byId)
  const index = topicIndex(partitionsPerTopic)
  const owner = new Int32Array(index.total).fill(-1)
  for (let t = 0; t < index.topics.length; t++) {
    const topic = index.topics[t]!
    const subscribers = sorted.flatMap((member, m) => (member.topics.includes(topic) ? [m] : []))
    if (subscribers.length === 0) continue
    const count = index.first[t + 1]! - index.first[t]!
    const each = Math.floor(count / subscribers.length)
    const extra = count % subscribers.length
    let p = index.first[t]!
    for (const [i, m] of subscribers.entries()) {
      const take = each + (i < extra ? 1 : 0)
      owner.fill(m, p, p + take)
      p += take
    }
  }
  return { assignment: toAssignment(sorted, owner, () => true, index), transfers: [] }
}
