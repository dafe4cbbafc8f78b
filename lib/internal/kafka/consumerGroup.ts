/**
 * A member of a KIP-848 consumer group (`group.protocol=consumer`, Kafka 4's default): the
 * coordinator computes every member's target assignment, and the member converges to it through
 * ConsumerGroupHeartbeat alone (https://cwiki.apache.org/confluence/x/HhD1D).
 *
 * One heartbeat in flight at a time, at the interval the broker gives, sooner when the owned set
 * changed. Each request is a full one (subscription, rebalance timeout, instance id and owned
 * partitions every time): the broker accepts unchanged fields, and a full request needs no
 * bookkeeping of what the last one said.
 *
 * Revocation IS the protocol's: a partition missing from the target stays owned (and reported
 * as owned) until Partita acknowledges its `Revoked` event; the next heartbeat reports the
 * smaller set, and only then does the coordinator hand it on. Newly assigned partitions come in
 * a heartbeat answer only once their old owner released them, so they are announced as soon as
 * their committed offsets are read, then reported owned.
 *
 * FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID: the member lost everything; it announces the loss,
 * waits for the acknowledge (bounded by the rebalance timeout) and rejoins with epoch 0 and the
 * same member id. Closing leaves with epoch -1 (-2 for a static member, whose assignment the
 * coordinator keeps for its session timeout).
 */
import { Duration, Effect, Fiber, Queue, Random, type Result } from "effect"
import * as TransportError from "../../TransportError.ts"
import * as Core from "./groupCore.ts"
import { ConsumerGroupHeartbeat, type ConsumerGroupHeartbeatResponse } from "./protocol/ConsumerGroupHeartbeat.ts"
import { uuidToString } from "./protocol/wire.ts"

/** Heartbeat answers that mean the member is no longer in the group. */
const fenced: ReadonlySet<string> = new Set(["FENCED_MEMBER_EPOCH", "UNKNOWN_MEMBER_ID"])

/** Heartbeat answers to retry after a pause (the coordinator moving or loading). */
const retryHeartbeat: ReadonlySet<string> = new Set([
  "NOT_COORDINATOR",
  "COORDINATOR_NOT_AVAILABLE",
  "COORDINATOR_LOAD_IN_PROGRESS",
  "NETWORK_EXCEPTION",
  "REQUEST_TIMED_OUT",
])

/** A member id as the Java consumer makes one (KIP-848 v1+: the client picks it): a random UUID. */
const randomMemberId = Effect.gen(function* () {
  const bytes = new Uint8Array(16)
  for (let i = 0; i < 16; i++) bytes[i] = yield* Random.nextIntBetween(0, 255)
  return uuidToString(bytes)
})

/** Joins; the membership runs on a fiber of the current scope and leaves when it closes. */
export const join = (brokers: Core.GroupBrokers, options: Core.Options) =>
  Effect.gen(function* () {
    const core = yield* Core.makeCore(brokers, options)
    core.memberId = yield* randomMemberId
    core.epoch = 0
    const operation = "heartbeat"
    const wake = yield* Queue.sliding<void>(1)
    const poke = Queue.offer(wake, undefined).pipe(Effect.asVoid)
    /** The last target the coordinator sent, by key. */
    let target = new Map<string, Core.Held>()
    /** Partitions whose Revoked event is out and not acknowledged. */
    const revoking = new Set<string>()
    /** Partitions whose committed offsets are being read before they are announced. */
    const assigning = new Set<string>()
    let intervalMs = 5_000

    const ownedByTopicId = () => {
      const byId = new Map<string, Array<number>>()
      for (const held of core.owned.values()) {
        if (held.topicId === undefined) continue
        const list = byId.get(held.topicId) ?? []
        list.push(held.partition)
        byId.set(held.topicId, list)
      }
      return [...byId].map(([topicId, partitions]) => ({ topicId, partitions }))
    }

    const resolve = (assignment: NonNullable<ConsumerGroupHeartbeatResponse["assignment"]>) =>
      Effect.gen(function* () {
        const names = new Map<string, string>()
        const info = yield* Core.topicsOf(core, options.topics)
        for (const [name, topic] of info) names.set(topic.topicId, name)
        const next = new Map<string, Core.Held>()
        for (const tps of assignment.topicPartitions) {
          // A topic id not (yet) in metadata: skipped now; the next assignment brings it again.
          const topic = names.get(tps.topicId)
          if (topic === undefined) continue
          for (const partition of tps.partitions) next.set(Core.keyOf({ topic, partition }), { topic, partition, topicId: tps.topicId })
        }
        return next
      })

    /** Moves toward the target: revocations first (their events out now), then the new partitions. */
    const reconcile = Effect.gen(function* () {
      const toRevoke = [...core.owned].filter(([key]) => !target.has(key) && !revoking.has(key)).map(([, held]) => held)
      if (toRevoke.length > 0) {
        for (const held of toRevoke) revoking.add(Core.keyOf(held))
        yield* Core.offerRevoked(core, toRevoke, false, Effect.andThen(Effect.sync(() => {
          for (const held of toRevoke) revoking.delete(Core.keyOf(held))
        }), poke))
      }
      const toAssign = [...target].filter(([key]) => !core.owned.has(key) && !assigning.has(key)).map(([, held]) => held)
      if (toAssign.length > 0) {
        for (const held of toAssign) assigning.add(Core.keyOf(held))
        const incarnation = core.incarnation
        yield* Core.offerAssigned(core, toAssign, (held) => target.has(Core.keyOf(held))).pipe(
          Effect.andThen(poke),
          Effect.catch((error) => Queue.fail(core.events, error)),
          Effect.ensuring(Effect.sync(() => {
            if (incarnation === core.incarnation) for (const held of toAssign) assigning.delete(Core.keyOf(held))
          })),
          Effect.forkScoped,
        )
      }
    })

    const heartbeat = (memberEpoch: number) =>
      Effect.flatMap(brokers.coordinatorFor(core.key), (connection) =>
        connection.request(ConsumerGroupHeartbeat, {
          groupId: options.group,
          memberId: core.memberId,
          memberEpoch,
          instanceId: options.instanceId ?? null,
          rackId: null,
          rebalanceTimeoutMs: core.rebalanceTimeoutMs,
          subscribedTopicNames: options.topics,
          serverAssignor: null,
          topicPartitions: memberEpoch < 0 ? null : ownedByTopicId(),
        }))

    /** What follows from one heartbeat's answer; fails when the membership must end. */
    const handle = (answer: Result.Result<ConsumerGroupHeartbeatResponse, TransportError.TransportError>) => Effect.gen(function* () {
      if (answer._tag === "Failure") {
        const error = answer.failure
        if (!error.retriable) return yield* Effect.fail(error)
        yield* brokers.invalidateCoordinator(core.key)
        yield* Effect.sleep(Duration.millis(Math.min(intervalMs, 1_000)))
        return
      }
      const response = answer.success
      if (response.errorCode !== 0) {
        const code = TransportError.nameOfCode(response.errorCode)
        if (fenced.has(code)) {
          yield* Effect.logInfo(`Member ${core.memberId} of group "${options.group}" was fenced (${code}): its partitions are lost; it rejoins`)
          target = new Map()
          revoking.clear()
          assigning.clear()
          yield* Core.loseAll(core)
          core.epoch = 0
          return
        }
        if (retryHeartbeat.has(code)) {
          if (code !== "COORDINATOR_LOAD_IN_PROGRESS") yield* brokers.invalidateCoordinator(core.key)
          yield* Effect.sleep(Duration.millis(Math.min(intervalMs, 1_000)))
          return
        }
        return yield* Effect.fail(Core.errorOf(
          response.errorCode,
          operation,
          `Member ${core.memberId} of group "${options.group}" cannot stay in the group: ${code}${response.errorMessage === null ? "" : ` (${response.errorMessage})`}`,
        ))
      }
      if (response.memberId !== null && response.memberId !== "") core.memberId = response.memberId
      core.epoch = response.memberEpoch
      if (response.heartbeatIntervalMs > 0) intervalMs = response.heartbeatIntervalMs
      if (response.assignment !== null) {
        target = yield* resolve(response.assignment)
        yield* reconcile
      }
      yield* Effect.raceFirst(Queue.take(wake), Effect.sleep(Duration.millis(intervalMs)))
    })
    const step = Effect.flatMap(Effect.result(Effect.suspend(() => heartbeat(core.epoch))), handle)

    // The first heartbeat is sent before `join` returns: a coordinator that lists
    // ConsumerGroupHeartbeat but has the consumer protocol off (Kafka 3.9 by default, or 4.x
    // with `group.coordinator.rebalance.protocols=classic`) answers it UNSUPPORTED_VERSION,
    // without making a member, and group.ts then joins with the classic protocol instead.
    const first = yield* Effect.result(heartbeat(core.epoch))
    if (first._tag === "Success" && TransportError.nameOfCode(first.success.errorCode) === "UNSUPPORTED_VERSION") {
      return yield* Effect.fail(Core.errorOf(
        first.success.errorCode,
        operation,
        `The coordinator of group "${options.group}" does not accept the consumer group protocol (KIP-848): UNSUPPORTED_VERSION${
          first.success.errorMessage === null ? "" : ` (${first.success.errorMessage})`
        }; use the classic protocol`,
      ))
    }

    const loop = yield* handle(first).pipe(
      Effect.andThen(Effect.forever(step)),
      Effect.catch((error) => Queue.fail(core.events, error)),
      Effect.forkScoped,
    )
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Fiber.interrupt(loop)
        // Leaving releases the partitions now instead of after the session timeout; a static
        // member (-2) keeps its assignment for when it comes back.
        if (core.epoch >= 0) {
          yield* heartbeat(options.instanceId === undefined ? -1 : -2).pipe(
            Effect.timeoutOption(Duration.seconds(5)),
            Effect.ignore,
          )
        }
        core.epoch = -1
        core.owned.clear()
        yield* Queue.end(core.events)
      })
    )
    return Core.groupOf(core, "consumer")
  })
