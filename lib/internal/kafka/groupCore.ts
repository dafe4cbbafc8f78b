/**
 * What both group protocols share (group.ts is the entry point): the member's state, events,
 * commits and committed offsets. A member of a Kafka consumer group, on whichever protocol its
 * coordinator speaks, offers one surface close to `Transport.Subscription` (events of
 * Assigned/Revoked with acknowledge, commit, committed), without fetching: an `Assigned` event
 * carries each partition's committed offset (OffsetFetch), and the fetch loop starts there.
 *
 * - KIP-848 (`ConsumerGroupHeartbeat`, Kafka 4's default): consumerGroup.ts.
 * - Classic (JoinGroup/SyncGroup/Heartbeat) with the cooperative-sticky assignor, for brokers
 *   without KIP-848 (Kafka 3.x): classicGroup.ts.
 *
 * What both keep, and what this file holds: a partition is in `owned` from the moment its
 * `Assigned` event is offered until Partita acknowledges its `Revoked` event (or the member
 * learns it lost it). Commits are refused locally for partitions not owned; the broker refuses
 * them too once the member's generation / epoch is stale. A revoked partition is given up only
 * after the acknowledge, on every member, leader or not: on KIP-848 the next heartbeat reports
 * the smaller owned set only then; on classic the member rejoins only then.
 *
 * Not done yet (gaps, also in the report of issue 12):
 * - OffsetFetch/OffsetCommit go out at v9 at most (topic names; v10 takes topic ids).
 * - No regex subscriptions, no rack-aware assignment, no change of subscription while joined.
 * - KIP-848: a target partition whose topic id is not in the cached metadata is skipped until
 *   the coordinator sends a changed assignment (metadata is not refetched for it).
 * - A member cut off from its coordinator for a whole session keeps its partitions until the
 *   broker tells it it was fenced (Java drops them on its own after the session timeout).
 * - Classic: a member waits for Partita's acknowledge without a deadline of its own (the
 *   coordinator's rebalance timeout removes it, which its heartbeats then report as lost).
 * - Static membership (instanceId) is sent and leaves as static members do (epoch -2, no
 *   LeaveGroup), but no test covers it yet.
 * - `events` is one stream over one queue: it is meant to be run once.
 */
import { type Cause, Deferred, Duration, Effect, Queue, Schedule, Stream } from "effect"
import type { CommittedOffset, OffsetCommit as OffsetToCommit, TopicPartition } from "../../Transport.ts"
import * as TransportError from "../../TransportError.ts"
import type { Connection } from "./connection.ts"
import { OffsetCommit } from "./protocol/OffsetCommit.ts"
import { OffsetFetch } from "./protocol/OffsetFetch.ts"

/** The coordinator key of a consumer group (brokers.ts' `coordinatorFor` takes it). */
export interface GroupKey {
  readonly type: "group"
  readonly id: string
}

/** What membership needs of a topic's metadata: its id (KIP-848 assigns by id) and partition count. */
export interface TopicInfo {
  readonly topicId: string
  readonly partitions: number
}

/**
 * The narrow slice of brokers.ts membership uses: the group's coordinator, and topic metadata.
 * brokers.ts' `Brokers` is adapted to it by group.ts' `fromBrokers`.
 */
export interface GroupBrokers {
  readonly coordinatorFor: (key: GroupKey) => Effect.Effect<Connection, TransportError.TransportError>
  readonly invalidateCoordinator: (key: GroupKey) => Effect.Effect<void>
  /** Topics that exist, by name; unknown topics are absent. */
  readonly topics: (topics: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, TopicInfo>, TransportError.TransportError>
}

/** A partition assigned to this member, with where the group left it. */
export interface AssignedPartition extends TopicPartition {
  /** The group's committed offset (the next record to consume); undefined when never committed. */
  readonly startOffset: number | undefined
  /** The metadata committed with it ("" when none). */
  readonly metadata: string
}

/**
 * A change of this member's assignment, in the order it happens.
 *
 * `Revoked` with `lost: false`: the partitions are still this member's (commits for them are
 * accepted) until `acknowledge` runs; only then are they released to the group. With
 * `lost: true` the member was fenced out of the group: the partitions are already gone (commits
 * for them fail), and `acknowledge` says Partita stopped using them, after which it rejoins.
 */
export type GroupEvent =
  | { readonly _tag: "Assigned"; readonly partitions: ReadonlyArray<AssignedPartition> }
  | {
    readonly _tag: "Revoked"
    readonly partitions: ReadonlyArray<TopicPartition>
    readonly lost: boolean
    readonly acknowledge: Effect.Effect<void>
  }

/** Which group protocol a member speaks. */
export type Protocol = "consumer" | "classic"

export interface Options {
  readonly group: string
  readonly topics: ReadonlyArray<string>
  /** Default: `consumer` (KIP-848) when the coordinator supports ConsumerGroupHeartbeat, else `classic`. */
  readonly protocol?: Protocol | undefined
  /** Static membership (`group.instance.id`). */
  readonly instanceId?: string | undefined
  /** Classic only (KIP-848's is the broker's `group.consumer.session.timeout.ms`). Default 30 s. */
  readonly sessionTimeout?: Duration.Input | undefined
  /** Classic only (KIP-848's interval is the broker's). Default 3 s. */
  readonly heartbeatInterval?: Duration.Input | undefined
  /** How long the group waits for this member to revoke (or rejoin, on classic). Default 60 s. */
  readonly rebalanceTimeout?: Duration.Input | undefined
}

export const defaults = {
  sessionTimeout: Duration.seconds(30),
  heartbeatInterval: Duration.seconds(3),
  rebalanceTimeout: Duration.seconds(60),
} as const

/** One member of a consumer group, alive while the scope that made it is open. */
export interface Group {
  readonly group: string
  readonly protocol: Protocol
  /** The member id now (classic: the coordinator's, which changes after UNKNOWN_MEMBER_ID). */
  readonly memberId: () => string
  /**
   * The member's generation now: the classic generation id, or the KIP-848 member epoch; -1
   * before it first joined. A transactional producer commits offsets with it (KIP-447), so the
   * group fences a member that is no longer what it thinks it is.
   */
  readonly generation: () => number
  /** Assignment changes; ends when the scope closes, fails on a non-retriable membership error. */
  readonly events: Stream.Stream<GroupEvent, TransportError.TransportError>
  /** Partitions owned now (assigned and not yet released). */
  readonly owned: () => ReadonlyArray<TopicPartition>
  /**
   * Commits offsets of owned partitions (including ones being revoked, until acknowledged).
   * Fails with a non-retriable error for a partition this member does not own, and with the
   * broker's (non-retriable) answer when the member was fenced.
   */
  readonly commit: (offsets: ReadonlyArray<OffsetToCommit>) => Effect.Effect<void, TransportError.TransportError>
  /** The group's committed offsets; a partition never committed is absent. */
  readonly committed: (partitions: ReadonlyArray<TopicPartition>) => Effect.Effect<ReadonlyArray<CommittedOffset>, TransportError.TransportError>
}

// ---------------------------------------------------------------------------------------------
// What both protocols share.

export const keyOf = (tp: TopicPartition): string => `${tp.topic}/${tp.partition}`

/** A partition owned, with its topic id when known (KIP-848 reports owned partitions by id). */
export interface Held extends TopicPartition {
  readonly topicId?: string | undefined
}

/** The member's state, shared by its protocol's fibers (one JS thread: no locks needed). */
export interface Core {
  readonly brokers: GroupBrokers
  readonly key: GroupKey
  readonly options: Options
  readonly rebalanceTimeoutMs: number
  memberId: string
  /** Member epoch (KIP-848) or generation (classic); what commits are fenced by. */
  epoch: number
  readonly owned: Map<string, Held>
  /** Bumped when the member loses everything: acknowledges of older revocations then do nothing. */
  incarnation: number
  readonly events: Queue.Queue<GroupEvent, TransportError.TransportError | Cause.Done>
}

export const makeCore = (brokers: GroupBrokers, options: Options): Effect.Effect<Core> =>
  Effect.map(Queue.unbounded<GroupEvent, TransportError.TransportError | Cause.Done>(), (events) => ({
    brokers,
    key: { type: "group", id: options.group },
    options,
    rebalanceTimeoutMs: Duration.toMillis(Duration.fromInputUnsafe(options.rebalanceTimeout ?? defaults.rebalanceTimeout)),
    memberId: "",
    epoch: -1,
    owned: new Map(),
    incarnation: 0,
    events,
  }))

/** Errors after which the coordinator is looked up again. */
const coordinatorMoved: ReadonlySet<string> = new Set([
  "NOT_COORDINATOR",
  "COORDINATOR_NOT_AVAILABLE",
  "NETWORK_EXCEPTION",
  "REQUEST_TIMED_OUT",
])

/** Bounded backoff for retriable coordinator errors (about 6 s in all). */
export const retrySchedule = Schedule.exponential("50 millis", 2)

export const errorOf = (code: number, operation: string, message: string): TransportError.TransportError =>
  TransportError.make(TransportError.nameOfCode(code), operation, message)

/** `f` on the group's coordinator; retriable errors retried (a moved coordinator looked up again). */
export const onCoordinator = <A>(
  core: Core,
  f: (connection: Connection) => Effect.Effect<A, TransportError.TransportError>,
): Effect.Effect<A, TransportError.TransportError> =>
  Effect.flatMap(core.brokers.coordinatorFor(core.key), f).pipe(
    Effect.tapError((error) => coordinatorMoved.has(error.code) ? core.brokers.invalidateCoordinator(core.key) : Effect.void),
    Effect.retry({ schedule: retrySchedule, times: 7, while: (error) => error.retriable }),
  )

/** Topic metadata for `topics`, failing when a subscribed topic does not exist. */
export const topicsOf = (core: Core, topics: ReadonlyArray<string>) => core.brokers.topics(topics)

// OffsetFetch/OffsetCommit v10 name topics by id; v9 is the last by name (Kafka 3.7+ has it).
const offsetApiMaxVersion = 9

/** The group's committed offsets (OffsetFetch, stable offsets only: an open transaction's wait). */
export const fetchCommitted = (
  core: Core,
  partitions: ReadonlyArray<TopicPartition>,
): Effect.Effect<ReadonlyArray<CommittedOffset>, TransportError.TransportError> => {
  if (partitions.length === 0) return Effect.succeed([])
  const byTopic = groupByTopic(partitions)
  const operation = "committed"
  return onCoordinator(core, (connection) =>
    Effect.gen(function* () {
      const version = Math.min(yield* connection.versionFor(OffsetFetch), offsetApiMaxVersion)
      const topics = [...byTopic].map(([name, indexes]) => ({ name, partitionIndexes: indexes }))
      const response = yield* connection.request(
        OffsetFetch,
        version >= 8
          ? { groups: [{ groupId: core.options.group, topics }], requireStable: true }
          : { groupId: core.options.group, topics, requireStable: version >= 7 },
        { version },
      )
      const group = version >= 8 ? response.groups?.[0] : undefined
      const groupError = version >= 8 ? group?.errorCode ?? 0 : response.errorCode ?? 0
      if (groupError !== 0) {
        return yield* Effect.fail(errorOf(groupError, operation, `Cannot read the committed offsets of group "${core.options.group}"`))
      }
      const out: Array<CommittedOffset> = []
      for (const topic of version >= 8 ? group?.topics ?? [] : response.topics ?? []) {
        for (const p of topic.partitions) {
          if (p.errorCode !== 0) {
            return yield* Effect.fail(errorOf(p.errorCode, operation, `Cannot read the committed offset of ${topic.name}/${p.partitionIndex} in group "${core.options.group}"`))
          }
          if (p.committedOffset >= 0) {
            out.push({ topic: topic.name ?? "", partition: p.partitionIndex, offset: p.committedOffset, metadata: p.metadata ?? "" })
          }
        }
      }
      return out
    }))
}

/**
 * Per-partition commit answers that the same commit may pass once the member's state settles:
 * KIP-848's epoch moved on under the commit (a heartbeat answer), or a classic round is under
 * way. ILLEGAL_GENERATION is among them because a cooperative round moves the generation while
 * the member keeps partitions: from the JoinGroup answer to the SyncGroup answer the group is at
 * a generation the member does not know yet, and a commit of a partition it keeps, with the
 * generation it knows, is refused. Retrying is safe: each attempt reads the member's generation
 * again and first checks that the partitions are still its own in the same incarnation, so a
 * member that was really fenced (its heartbeat says so, and it loses everything) is refused here.
 */
const commitRetriable: ReadonlySet<string> = new Set(["STALE_MEMBER_EPOCH", "REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION"])

/**
 * Commits owned partitions' offsets with the member's id and epoch/generation, so that the
 * coordinator fences a member that is no longer what it thinks it is. A partition not owned is
 * refused here, before anything is sent.
 */
export const commitOffsets = (
  core: Core,
  offsets: ReadonlyArray<OffsetToCommit>,
): Effect.Effect<void, TransportError.TransportError> =>
  Effect.suspend(() => {
    const operation = "commit"
    // A commit belongs to the membership it was made in: once the member lost everything
    // (fenced) and rejoined, a retry must not land under the new epoch, even for a partition it
    // got back.
    const incarnation = core.incarnation
    /** Refusals made here, not by the broker: final, never retried. */
    const refusedHere = new Set<TransportError.TransportError>()
    const refuse = (code: TransportError.KafkaErrorName, message: string) => {
      const error = TransportError.make(code, operation, message)
      refusedHere.add(error)
      return Effect.fail(error)
    }
    const attemptOnce = Effect.suspend(() => {
      if (incarnation !== core.incarnation) {
        return refuse(
          "UNKNOWN_MEMBER_ID",
          `Member ${core.memberId} of group "${core.options.group}" was fenced while committing ${offsets.map(keyOf).join(", ")}: these offsets belong to a membership that is gone, and the partitions' next owner starts from the group's last commit`,
        )
      }
      for (const offset of offsets) {
        if (!core.owned.has(keyOf(offset))) {
          return refuse(
            core.epoch < 0 ? "UNKNOWN_MEMBER_ID" : "ILLEGAL_GENERATION",
            `Member ${core.memberId} of group "${core.options.group}" does not hold ${keyOf(offset)}: it was revoked or lost, so its offset is not this member's to commit`,
          )
        }
      }
      if (offsets.length === 0) return Effect.void
      const epoch = core.epoch
      const memberId = core.memberId
      const topics = new Map<string, Array<{ partitionIndex: number; committedOffset: number; committedMetadata: string | null }>>()
      for (const o of offsets) {
        const list = topics.get(o.topic) ?? []
        list.push({ partitionIndex: o.partition, committedOffset: o.offset, committedMetadata: o.metadata ?? "" })
        topics.set(o.topic, list)
      }
      return onCoordinator(core, (connection) =>
        Effect.gen(function* () {
          const version = Math.min(yield* connection.versionFor(OffsetCommit), offsetApiMaxVersion)
          const response = yield* connection.request(OffsetCommit, {
            groupId: core.options.group,
            generationIdOrMemberEpoch: epoch,
            memberId,
            groupInstanceId: version >= 7 ? core.options.instanceId ?? null : null,
            topics: [...topics].map(([name, partitions]) => ({ name, partitions })),
          }, { version })
          for (const topic of response.topics) {
            for (const p of topic.partitions) {
              if (p.errorCode !== 0) {
                return yield* Effect.fail(errorOf(
                  p.errorCode,
                  operation,
                  `Cannot commit ${topic.name}/${p.partitionIndex} for member ${memberId} (epoch ${epoch}) of group "${core.options.group}"`,
                ))
              }
            }
          }
        }))
    })
    // The epoch moves on under a commit (a heartbeat answer) or a rebalance is under way: the
    // same commit passes once that settles, as long as the partitions are still this member's.
    // A round lasts at most the rebalance timeout, so that bounds the wait.
    return attemptOnce.pipe(
      Effect.retry({
        schedule: Schedule.spaced("200 millis").pipe(Schedule.upTo({ duration: Duration.millis(core.rebalanceTimeoutMs) })),
        while: (error) => !refusedHere.has(error) && commitRetriable.has(error.code),
      }),
    )
  })

const groupByTopic = (partitions: ReadonlyArray<TopicPartition>): Map<string, Array<number>> => {
  const byTopic = new Map<string, Array<number>>()
  for (const tp of partitions) {
    const list = byTopic.get(tp.topic) ?? []
    list.push(tp.partition)
    byTopic.set(tp.topic, list)
  }
  return byTopic
}

/**
 * Offers a revocation. Not lost: the partitions stay owned until `acknowledge`, which removes
 * them and then runs `released`. Lost: they are removed now. Resolves with the acknowledgement.
 */
export const offerRevoked = (
  core: Core,
  partitions: ReadonlyArray<Held>,
  lost: boolean,
  released: Effect.Effect<void>,
): Effect.Effect<Deferred.Deferred<void>> =>
  Effect.gen(function* () {
    const acknowledged = yield* Deferred.make<void>()
    const incarnation = core.incarnation
    if (lost) for (const tp of partitions) core.owned.delete(keyOf(tp))
    const acknowledge = Effect.suspend(() => {
      if (Deferred.isDoneUnsafe(acknowledged)) return Effect.void
      if (!lost && incarnation === core.incarnation) for (const tp of partitions) core.owned.delete(keyOf(tp))
      return Effect.andThen(Deferred.succeed(acknowledged, undefined), released)
    })
    yield* Queue.offer(core.events, {
      _tag: "Revoked",
      partitions: partitions.map(({ topic, partition }) => ({ topic, partition })),
      lost,
      acknowledge,
    })
    return acknowledged
  })

/** Everything owned is lost (fenced): removed now, announced; waits (bounded) for Partita to stop. */
export const loseAll = (core: Core): Effect.Effect<void> =>
  Effect.gen(function* () {
    core.incarnation++
    const all = [...core.owned.values()]
    if (all.length === 0) return
    const acknowledged = yield* offerRevoked(core, all, true, Effect.void)
    yield* Effect.timeoutOption(Deferred.await(acknowledged), Duration.millis(core.rebalanceTimeoutMs))
  })

/**
 * Reads the committed offsets of newly assigned partitions, makes them owned and announces them
 * — unless the member lost everything meanwhile (`incarnation` moved) or `stillWanted` says no.
 */
export const offerAssigned = (
  core: Core,
  partitions: ReadonlyArray<Held>,
  stillWanted: (tp: Held) => boolean = () => true,
): Effect.Effect<ReadonlyArray<Held>, TransportError.TransportError> =>
  Effect.gen(function* () {
    const incarnation = core.incarnation
    const committed = yield* fetchCommitted(core, partitions)
    if (incarnation !== core.incarnation) return []
    const byKey = new Map(committed.map((c) => [keyOf(c), c]))
    const taken = partitions.filter((tp) => stillWanted(tp) && !core.owned.has(keyOf(tp)))
    if (taken.length === 0) return []
    for (const tp of taken) core.owned.set(keyOf(tp), tp)
    yield* Queue.offer(core.events, {
      _tag: "Assigned",
      partitions: taken.map(({ topic, partition }) => {
        const c = byKey.get(keyOf({ topic, partition }))
        return { topic, partition, startOffset: c?.offset, metadata: c?.metadata ?? "" }
      }),
    })
    return taken
  })

/** The surface both protocols hand out. */
export const groupOf = (core: Core, protocol: Protocol): Group => ({
  group: core.options.group,
  protocol,
  memberId: () => core.memberId,
  generation: () => core.epoch,
  events: Stream.fromQueue(core.events),
  owned: () => [...core.owned.values()].map(({ topic, partition }) => ({ topic, partition })),
  commit: (offsets) => commitOffsets(core, offsets),
  committed: (partitions) => fetchCommitted(core, partitions),
})

