/**
 * The actor system's health report, answered from in-process state only, and the background
 * read of high watermarks that keeps its lag (and the `partita.consumer.lag` metric) fresh.
 */
import { Clock, Duration, Effect, Exit, Metric, Option } from "effect"
import type { BrokerHealth, HealthReport, MembershipHealth, PartitionHealth } from "../ActorSystem.ts"
import { Transport } from "../Transport.ts"
import { describeCause, keyOf, type Settings, type Shared, type SystemState } from "./systemMembership.ts"

const consumerLag = Metric.gauge("partita.consumer.lag", {
  description: "Records in a partition past the group's committed offset",
})

/** The health report, from in-process state only. */
export const report = (state: SystemState, settings: Settings, now: number): HealthReport => {
  const partitions = state.memberships.flatMap((membership) =>
    [...membership.partitions.values()].map(({ status, stallAfter }): PartitionHealth => {
      // A partition the operator paused is idle on purpose: not stalled, however long the pause.
      const waiting = (status.mailbox > 0 || status.position > status.committed) && !status.pausedFor.has("operator")
      const stalled = waiting && now - status.lastProgress > stallAfter
      const watermark = state.watermarks.get(keyOf(status))
      return {
        actor: status.actor,
        group: status.group,
        topic: status.topic,
        partition: status.partition,
        state: status.state,
        healthy: !stalled && status.state !== "halted" && status.state !== "stopped" && status.state !== "failed" &&
          status.state !== "blocked",
        stalled,
        paused: status.pausedFor.size > 0,
        pausedFor: [...status.pausedFor],
        halted: status.halted === undefined
          ? undefined
          : { topic: status.topic, partition: status.partition, offset: status.halted.offset, error: status.halted.error },
        processed: status.processed,
        failed: status.failed,
        retried: status.retried,
        deadLettered: status.deadLettered,
        skipped: status.skipped,
        restarts: status.restarts,
        mailbox: status.mailbox,
        committed: status.committed,
        commitFailures: status.commitFailures ?? 0,
        position: status.position,
        lag: watermark === undefined ? undefined : Math.max(0, watermark.highWatermark - status.committed),
        lagAge: watermark === undefined ? undefined : now - watermark.at,
        lastProgress: status.lastProgress,
        lastError: status.lastError,
      }
    })
  )
  const members = state.memberships.map((membership): MembershipHealth => ({
    actor: membership.actor.name,
    group: membership.actor.group,
    member: membership.member,
    healthy: membership.member || now - membership.since <= settings.membershipGrace,
    since: membership.since,
    rejoins: membership.rejoins,
    lastError: membership.lastError,
  }))
  const broker: BrokerHealth = {
    reachable: now - state.broker.lastAnswer <= settings.brokerWindow,
    lastAnswer: state.broker.lastAnswer,
    lastError: state.broker.lastError,
  }
  return {
    healthy: partitions.every((p) => p.healthy) && members.every((m) => m.healthy),
    ready: state.memberships.every((m) => m.assignedOnce && m.member) && broker.reachable,
    partitions,
    members,
    broker,
  }
}

/**
 * Reads every consumed topic's high watermarks, each read bounded by `brokerTimeout`, into the
 * cache `health` reads; then updates the lag metric.
 */
export const measureLag = (shared: Shared) =>
  Effect.gen(function*() {
    const { state, settings } = shared
    const transport = yield* Transport
    const topics = [...new Set(state.memberships.flatMap((membership) => membership.actor.topics))]
    yield* Effect.forEach(topics, (topic) =>
      Effect.gen(function*() {
        const described = yield* Effect.exit(Effect.timeoutOption(transport.describeTopic(topic), settings.brokerTimeout))
        const now = yield* Clock.currentTimeMillis
        if (Exit.isSuccess(described) && Option.isSome(described.value)) {
          state.broker.lastAnswer = now
          state.broker.lastError = undefined
          for (const partition of described.value.value.partitions) {
            state.watermarks.set(keyOf({ topic, partition: partition.partition }), { highWatermark: partition.highWatermark, at: now })
          }
        } else {
          state.broker.lastError = Exit.isFailure(described)
            ? describeCause(described.cause)
            : `Reading the high watermarks of "${topic}" got no answer within ${Duration.toMillis(settings.brokerTimeout)} ms`
        }
      }), { concurrency: "unbounded", discard: true })
    const now = yield* Clock.currentTimeMillis
    yield* Effect.forEach(report(state, settings, now).partitions, (partition) =>
      partition.lag === undefined ? Effect.void : Metric.update(
        Metric.withAttributes(consumerLag, {
          "messaging.system": "kafka",
          "messaging.destination.name": partition.topic,
          "messaging.destination.partition.id": String(partition.partition),
          "messaging.consumer.group.name": partition.group,
        }),
        partition.lag,
      ), { discard: true })
  })
