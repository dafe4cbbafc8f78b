/**
 * A member of a classic consumer group (JoinGroup / SyncGroup / Heartbeat), for brokers without
 * KIP-848 (Kafka 3.x), with the cooperative-sticky assignor (stickyAssignor.ts) run by whichever
 * member the coordinator makes leader.
 *
 * One fiber runs the rounds: join (retrying once with the id the coordinator hands out on
 * MEMBER_ID_REQUIRED), the leader assigns, sync; then the member revokes what it lost in this
 * round (the Revoked event; the partitions stay its own until acknowledged), announces what it
 * gained, and, if it revoked anything, rejoins only after the acknowledge, so that the next round
 * can give those partitions on (cooperative rebalancing: only what moves is revoked, and a
 * partition is never held by two members in one generation). Heartbeats run on their own fiber
 * while the generation is stable: REBALANCE_IN_PROGRESS sends the member back to join, keeping
 * what it owns; ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID / FENCED_INSTANCE_ID mean it lost
 * everything (announced, acknowledged, then it rejoins).
 *
 * Only cooperative-sticky is offered: a group mixing Partita with eager-only (range) Java
 * members finds no common protocol (INCONSISTENT_GROUP_PROTOCOL). A static member does not send
 * LeaveGroup on close (as the Java consumer), so it keeps its assignment for its session timeout.
 */
import { Deferred, Duration, Effect, Fiber, Queue } from "effect"
import * as TransportError from "../../TransportError.ts"
import * as Core from "./groupCore.ts"
import { decodeVersionPrefixed, encodeVersionPrefixed } from "./protocol/api.ts"
import { ConsumerProtocolAssignment } from "./protocol/ConsumerProtocolAssignment.ts"
import { ConsumerProtocolSubscription } from "./protocol/ConsumerProtocolSubscription.ts"
import { Heartbeat } from "./protocol/Heartbeat.ts"
import { JoinGroup, type JoinGroupResponse } from "./protocol/JoinGroup.ts"
import { LeaveGroup } from "./protocol/LeaveGroup.ts"
import { SyncGroup } from "./protocol/SyncGroup.ts"
import { ProtocolError } from "./protocol/wire.ts"
import { assignCooperativeSticky, cooperativeStickyName, cooperativeStickyUserData, generationOf, type Member } from "./stickyAssignor.ts"

/** Answers that mean the member is no longer in the group. */
const fencedOut: ReadonlySet<string> = new Set(["ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "FENCED_INSTANCE_ID"])

/** Answers after which the same request is made again (after a pause). */
const coordinatorBusy: ReadonlySet<string> = new Set([
  "NOT_COORDINATOR",
  "COORDINATOR_NOT_AVAILABLE",
  "COORDINATOR_LOAD_IN_PROGRESS",
  "NETWORK_EXCEPTION",
  "REQUEST_TIMED_OUT",
])

type Signal = { readonly _tag: "Rejoin" } | { readonly _tag: "Lost"; readonly code: string }

/** What one join-and-sync round ended with. */
type Round =
  | { readonly _tag: "Synced"; readonly assigned: ReadonlyArray<Core.Held> }
  | { readonly _tag: "Again" }
  | { readonly _tag: "Lost"; readonly code: string }

const byTopic = (held: Iterable<Core.Held>) => {
  const topics = new Map<string, Array<number>>()
  for (const tp of held) {
    const list = topics.get(tp.topic) ?? []
    list.push(tp.partition)
    topics.set(tp.topic, list)
  }
  return [...topics].map(([topic, partitions]) => ({ topic, partitions: partitions.sort((a, b) => a - b) }))
}

export const join = (brokers: Core.GroupBrokers, options: Core.Options) =>
  Effect.gen(function* () {
    const core = yield* Core.makeCore(brokers, options)
    const sessionMs = Duration.toMillis(Duration.fromInputUnsafe(options.sessionTimeout ?? Core.defaults.sessionTimeout))
    const heartbeatMs = Duration.toMillis(Duration.fromInputUnsafe(options.heartbeatInterval ?? Core.defaults.heartbeatInterval))
    const instanceId = options.instanceId ?? null
    const signals = yield* Queue.unbounded<Signal>()
    const pause = Effect.sleep(Duration.millis(Math.min(heartbeatMs, 500)))
    const fail = (code: number, what: string) =>
      Effect.fail(Core.errorOf(code, "subscribe", `Member ${core.memberId || "(new)"} of group "${options.group}" cannot ${what}: ${TransportError.nameOfCode(code)}`))

    const leaderAssigns = (response: JoinGroupResponse) =>
      Effect.gen(function* () {
        const members: Array<Member> = []
        for (const m of response.members) {
          const decoded = yield* Effect.try({
            try: () => decodeVersionPrefixed(ConsumerProtocolSubscription, m.metadata).value,
            catch: (cause) =>
              TransportError.make("PROTOCOL_ERROR", "subscribe", `Member ${m.memberId} of group "${options.group}" sent a subscription that does not decode: ${cause instanceof ProtocolError ? cause.message : String(cause)}`, cause),
          })
          members.push({ memberId: m.memberId, topics: decoded.topics, ownedPartitions: decoded.ownedPartitions ?? [], generation: generationOf(decoded) })
        }
        const topics = [...new Set(members.flatMap((m) => m.topics))]
        const info = yield* brokers.topics(topics)
        const counts = new Map([...info].map(([name, topic]) => [name, topic.partitions] as const))
        const result = yield* Effect.try({
          try: () => assignCooperativeSticky(members, counts),
          catch: (cause) => TransportError.make("INVALID_REQUEST", "subscribe", `The assignor refused group "${options.group}": ${String(cause)}`, cause),
        })
        return members.map((m) => ({
          memberId: m.memberId,
          assignment: encodeVersionPrefixed(ConsumerProtocolAssignment, 1, { assignedPartitions: result.assignment.get(m.memberId) ?? [], userData: null }),
        }))
      })

    /** One round: JoinGroup (as often as MEMBER_ID_REQUIRED asks), the leader's assignment, SyncGroup. */
    const round: Effect.Effect<Round, TransportError.TransportError> = Effect.gen(function* () {
      const connection = yield* brokers.coordinatorFor(core.key)
      const subscription = encodeVersionPrefixed(ConsumerProtocolSubscription, 3, {
        topics: options.topics,
        userData: cooperativeStickyUserData(core.epoch),
        ownedPartitions: byTopic(core.owned.values()),
        generationId: core.epoch,
        rackId: null,
      })
      const joinVersion = yield* connection.versionFor(JoinGroup)
      const joined = yield* connection.request(JoinGroup, {
        groupId: options.group,
        sessionTimeoutMs: sessionMs,
        rebalanceTimeoutMs: core.rebalanceTimeoutMs,
        memberId: core.memberId,
        groupInstanceId: joinVersion >= 5 ? instanceId : null,
        protocolType: "consumer",
        protocols: [{ name: cooperativeStickyName, metadata: subscription }],
        reason: null,
      }, { timeout: Duration.millis(core.rebalanceTimeoutMs + 5_000) })
      const joinCode = TransportError.nameOfCode(joined.errorCode)
      if (joined.errorCode !== 0) {
        if (joinCode === "MEMBER_ID_REQUIRED") {
          core.memberId = joined.memberId
          return { _tag: "Again" } as const
        }
        if (joinCode === "UNKNOWN_MEMBER_ID" || joinCode === "ILLEGAL_GENERATION") return { _tag: "Lost", code: joinCode } as const
        if (joinCode === "REBALANCE_IN_PROGRESS") return { _tag: "Again" } as const
        if (coordinatorBusy.has(joinCode)) {
          yield* brokers.invalidateCoordinator(core.key)
          yield* pause
          return { _tag: "Again" } as const
        }
        return yield* fail(joined.errorCode, "join")
      }
      core.memberId = joined.memberId
      const assignments = joined.leader === joined.memberId && joined.skipAssignment !== true ? yield* leaderAssigns(joined) : []
      const synced = yield* connection.request(SyncGroup, {
        groupId: options.group,
        generationId: joined.generationId,
        memberId: core.memberId,
        groupInstanceId: instanceId,
        protocolType: "consumer",
        protocolName: joined.protocolName,
        assignments,
      }, { timeout: Duration.millis(core.rebalanceTimeoutMs + 5_000) })
      const syncCode = TransportError.nameOfCode(synced.errorCode)
      if (synced.errorCode !== 0) {
        if (fencedOut.has(syncCode)) return { _tag: "Lost", code: syncCode } as const
        if (syncCode === "REBALANCE_IN_PROGRESS") return { _tag: "Again" } as const
        if (coordinatorBusy.has(syncCode)) {
          yield* brokers.invalidateCoordinator(core.key)
          yield* pause
          return { _tag: "Again" } as const
        }
        return yield* fail(synced.errorCode, "sync")
      }
      core.epoch = joined.generationId
      const assigned = synced.assignment.length === 0 ? [] : yield* Effect.try({
        try: () => decodeVersionPrefixed(ConsumerProtocolAssignment, synced.assignment).value.assignedPartitions,
        catch: (cause) => TransportError.make("PROTOCOL_ERROR", "subscribe", `The assignment of group "${options.group}" does not decode: ${String(cause)}`, cause),
      })
      return { _tag: "Synced", assigned: assigned.flatMap(({ topic, partitions }) => partitions.map((partition) => ({ topic, partition }))) } as const
    }).pipe(
      Effect.catchIf((error) => error.retriable, () =>
        Effect.andThen(brokers.invalidateCoordinator(core.key), Effect.as(pause, { _tag: "Again" } as const))),
    )

    /** Heartbeats of one generation, on their own fiber, until the coordinator says it is over. */
    const heartbeats = (generation: number) =>
      Effect.gen(function* () {
        while (true) {
          yield* Effect.sleep(Duration.millis(heartbeatMs))
          const answer = yield* Effect.result(Effect.flatMap(brokers.coordinatorFor(core.key), (connection) =>
            connection.request(Heartbeat, { groupId: options.group, generationId: generation, memberId: core.memberId, groupInstanceId: instanceId })))
          if (answer._tag === "Failure") {
            if (!answer.failure.retriable) return yield* Effect.fail(answer.failure)
            yield* brokers.invalidateCoordinator(core.key)
            continue
          }
          const code = TransportError.nameOfCode(answer.success.errorCode)
          if (answer.success.errorCode === 0) continue
          if (code === "REBALANCE_IN_PROGRESS") return yield* Queue.offer(signals, { _tag: "Rejoin" })
          if (fencedOut.has(code)) return yield* Queue.offer(signals, { _tag: "Lost", code })
          if (coordinatorBusy.has(code)) {
            yield* brokers.invalidateCoordinator(core.key)
            continue
          }
          return yield* fail(answer.success.errorCode, "heartbeat")
        }
      }).pipe(Effect.catch((error) => Queue.fail(core.events, error)))

    const lose = (code: string) =>
      Effect.gen(function* () {
        yield* Effect.logInfo(`Member ${core.memberId} of group "${options.group}" was fenced (${code}): its partitions are lost; it rejoins`)
        yield* Core.loseAll(core)
        if (code !== "ILLEGAL_GENERATION") core.memberId = ""
        core.epoch = -1
      })

    /** The lost signal, if one comes (a rejoin request is kept for after the acknowledge). */
    const lostSignal = Effect.gen(function* () {
      while (true) {
        const signal = yield* Queue.take(signals)
        if (signal._tag === "Lost") return signal.code
      }
    })

    const rounds = Effect.gen(function* () {
      while (true) {
        const result = yield* round
        if (result._tag === "Again") continue
        if (result._tag === "Lost") {
          yield* lose(result.code)
          continue
        }
        yield* Queue.clear(signals)
        const beating = yield* Effect.forkScoped(heartbeats(core.epoch))
        const assigned = new Set(result.assigned.map(Core.keyOf))
        const revoked = [...core.owned.values()].filter((held) => !assigned.has(Core.keyOf(held)))
        let lostCode: string | undefined
        if (revoked.length > 0) {
          const acknowledged = yield* Core.offerRevoked(core, revoked, false, Effect.void)
          const first = yield* Effect.raceFirst(Effect.as(Deferred.await(acknowledged), undefined), lostSignal)
          lostCode = first
        }
        if (lostCode === undefined) {
          const added = result.assigned.filter((tp) => !core.owned.has(Core.keyOf(tp)))
          if (added.length > 0) yield* Core.offerAssigned(core, added)
          // Having revoked, the member rejoins so the next round can give those partitions on.
          if (revoked.length === 0) {
            const signal = yield* Queue.take(signals)
            if (signal._tag === "Lost") lostCode = signal.code
          }
        }
        yield* Fiber.interrupt(beating)
        if (lostCode !== undefined) yield* lose(lostCode)
      }
    })

    const loop = yield* rounds.pipe(Effect.catch((error) => Queue.fail(core.events, error)), Effect.forkScoped)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Fiber.interrupt(loop)
        if (core.memberId !== "" && instanceId === null) {
          yield* Effect.flatMap(brokers.coordinatorFor(core.key), (connection) =>
            Effect.flatMap(connection.versionFor(LeaveGroup), (version) =>
              connection.request(LeaveGroup, version >= 3
                ? { groupId: options.group, members: [{ memberId: core.memberId, groupInstanceId: null, reason: "the consumer closed" }] }
                : { groupId: options.group, memberId: core.memberId }))).pipe(
              Effect.timeoutOption(Duration.seconds(5)),
              Effect.ignore,
            )
        }
        core.epoch = -1
        core.owned.clear()
        yield* Queue.end(core.events)
      })
    )
    return Core.groupOf(core, "classic")
  })
