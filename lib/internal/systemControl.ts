/**
 * Run-time control of a running actor system: the operator's pause and resume of an actor or of
 * one partition, seeks, and restarting a halted partition. `ActorSystem` exposes these on its
 * `System` service; the partition actors do the work (`partitionActor.ts`, `Control`).
 *
 * Pauses belong to the membership, not to the partition actor: they outlive rebalances and
 * rejoins, so a partition that moves away and comes back, or is newly assigned to a paused actor,
 * starts paused. They are this member's: another member that gets the partition fetches it.
 */
import { Data, Effect } from "effect"
import type { Actor } from "../Actor.ts"
import type { TopicPartition, Transport } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"
import { keyOf, type Membership, operatorPaused, type SystemState } from "./systemMembership.ts"

/** No actor of this name runs in the system. Re-exported by `ActorSystem`. */
export class UnknownActor extends Data.TaggedError("UnknownActor")<{
  readonly actor: string
  /** The actors the system runs. */
  readonly actors: ReadonlyArray<string>
}> {
  override get message(): string {
    return `No actor named "${this.actor}" runs in this system; its actors are ${this.actors.map((name) => `"${name}"`).join(", ")}`
  }
}

/**
 * A control call named a partition this member cannot act on: one it does not hold now (a seek,
 * a resume of a partition not paused), or one of a topic the actor does not consume. Re-exported
 * by `ActorSystem`.
 */
export class PartitionNotHeld extends Data.TaggedError("PartitionNotHeld")<{
  readonly operation: "pause" | "resume" | "seek"
  readonly actor: string
  readonly topic: string
  readonly partition: number
  readonly reason: string
}> {
  override get message(): string {
    return `Cannot ${this.operation} ${this.topic}/${this.partition} of actor "${this.actor}": ${this.reason}`
  }
}

/** A seek that cannot be done: an offset outside the partition, or an actor that cannot seek. Re-exported by `ActorSystem`. */
export class InvalidSeek extends Data.TaggedError("InvalidSeek")<{
  readonly actor: string
  readonly topic: string
  readonly partition: number
  readonly reason: string
}> {
  override get message(): string {
    return `Cannot seek ${this.topic}/${this.partition} of actor "${this.actor}": ${this.reason}`
  }
}

/** Where a seek goes: an offset, or the first record at or after a time (epoch milliseconds). */
export type SeekTarget = { readonly offset: number } | { readonly timestamp: number }

const nameOf = (actor: string | { readonly name: string }) => typeof actor === "string" ? actor : actor.name

const held = (membership: Membership) => {
  const keys = [...membership.partitions.keys()].sort()
  return keys.length === 0 ? "it holds no partitions now" : `it holds ${keys.join(", ")}`
}

export const make = (state: SystemState, transport: Transport["Service"]) => {
  const find = (actor: string | { readonly name: string }) =>
    Effect.suspend(() => {
      const name = nameOf(actor)
      const membership = state.memberships.find((m) => m.actor.name === name)
      return membership === undefined
        ? Effect.fail(new UnknownActor({ actor: name, actors: state.memberships.map((m) => m.actor.name) }))
        : Effect.succeed(membership)
    })

  const checkPartition = (operation: "pause" | "resume" | "seek", actor: Actor<unknown>, tp: TopicPartition) =>
    !actor.topics.includes(tp.topic)
      ? Effect.fail(
        new PartitionNotHeld({
          operation,
          actor: actor.name,
          ...tp,
          reason: `the actor does not consume "${tp.topic}" (it consumes ${actor.topics.map((t) => `"${t}"`).join(", ")})`,
        }),
      )
      : !Number.isInteger(tp.partition) || tp.partition < 0
      ? Effect.fail(new PartitionNotHeld({ operation, actor: actor.name, ...tp, reason: "a partition is a number from 0" }))
      : Effect.void

  /** Sets the operator's pause of one partition (or every one), applying it to what is held. */
  const setPaused = (membership: Membership, tp: TopicPartition | undefined, paused: boolean) =>
    Effect.suspend(() => {
      const { partitions } = membership
      if (tp === undefined) {
        membership.paused.all = paused
        membership.paused.toggled.clear()
        return Effect.forEach(partitions.values(), (partition) =>
          partition.control === undefined ? Effect.void : paused ? partition.control.pause : partition.control.resume, { discard: true })
      }
      const key = keyOf(tp)
      if (operatorPaused(membership, key) !== paused) {
        if (membership.paused.toggled.has(key)) membership.paused.toggled.delete(key)
        else membership.paused.toggled.add(key)
      }
      const control = partitions.get(key)?.control
      return control === undefined ? Effect.void : paused ? control.pause : control.resume
    })

  const pause = (actor: string | { readonly name: string }, tp?: TopicPartition) =>
    Effect.gen(function*() {
      const membership = yield* find(actor)
      if (tp !== undefined) yield* checkPartition("pause", membership.actor, tp)
      yield* setPaused(membership, tp, true)
      yield* Effect.logInfo(`Actor ${membership.actor.name}: ${tp === undefined ? "every partition" : keyOf(tp)} paused by the operator`)
    })

  const resume = (actor: string | { readonly name: string }, tp?: TopicPartition) =>
    Effect.gen(function*() {
      const membership = yield* find(actor)
      if (tp === undefined) {
        yield* setPaused(membership, undefined, false)
        yield* Effect.logInfo(`Actor ${membership.actor.name}: every partition resumed by the operator`)
        return
      }
      yield* checkPartition("resume", membership.actor, tp)
      const key = keyOf(tp)
      const partition = membership.partitions.get(key)
      if (partition === undefined && !operatorPaused(membership, key)) {
        return yield* Effect.fail(
          new PartitionNotHeld({
            operation: "resume",
            actor: membership.actor.name,
            ...tp,
            reason: `it is not paused, and this member does not hold it (${held(membership)})`,
          }),
        )
      }
      yield* setPaused(membership, tp, false)
      const restarted = partition?.control === undefined ? false : yield* partition.control.restart
      yield* Effect.logInfo(`Actor ${membership.actor.name}: ${key} ${restarted ? "restarted after its halt" : "resumed"} by the operator`)
    })

  /** Resolves a seek's target to an offset within the partition's log. */
  const offsetOf = (actor: Actor<unknown>, tp: TopicPartition, to: SeekTarget) =>
    Effect.gen(function*() {
      const invalid = (reason: string) => new InvalidSeek({ actor: actor.name, ...tp, reason })
      if ("timestamp" in to) {
        if (!Number.isFinite(to.timestamp)) return yield* Effect.fail(invalid(`the timestamp ${to.timestamp} is not a time`))
        const [byTime, latest] = yield* transport.listOffsets([{ ...tp, at: { timestamp: to.timestamp } }, { ...tp, at: "latest" }])
        // No record that recent: the end of the log, where the next record will be.
        return byTime?.offset ?? latest?.offset ?? 0
      }
      if (!Number.isInteger(to.offset) || to.offset < 0) {
        return yield* Effect.fail(invalid(`the offset ${to.offset} is not a whole number from 0`))
      }
      const description = yield* transport.describeTopic(tp.topic)
      const partition = description.partitions.find((p) => p.partition === tp.partition)
      if (partition !== undefined && (to.offset < partition.logStartOffset || to.offset > partition.highWatermark)) {
        return yield* Effect.fail(
          invalid(`offset ${to.offset} is outside the log, which holds offsets ${partition.logStartOffset} to ${partition.highWatermark} (the end)`),
        )
      }
      return to.offset
    })

  const seek = (
    actor: string | { readonly name: string },
    tp: TopicPartition,
    to: SeekTarget,
  ): Effect.Effect<number, UnknownActor | PartitionNotHeld | InvalidSeek | TransportError> =>
    Effect.gen(function*() {
      const membership = yield* find(actor)
      const definition = membership.actor
      yield* checkPartition("seek", definition, tp)
      if (definition.delivery === "exactly-once" && (definition.transaction.producer === "per-member" || definition.batch !== undefined)) {
        return yield* Effect.fail(
          new InvalidSeek({
            actor: definition.name,
            ...tp,
            reason: definition.batch !== undefined
              ? "an exactly-once batch actor cannot seek: each batch is a transaction of its own"
              : "an exactly-once actor with one transactional producer per member cannot seek one partition: its transactions hold every partition's position; use per-partition producers (the default)",
          }),
        )
      }
      const partition = membership.partitions.get(keyOf(tp))
      const control = partition?.control
      if (partition !== undefined && (partition.status.state === "stopped" || partition.status.state === "failed")) {
        return yield* Effect.fail(
          new InvalidSeek({
            actor: definition.name,
            ...tp,
            reason: `the partition actor ${partition.status.state} after ${partition.status.restarts} restarts and handles nothing until the partition is assigned again`,
          }),
        )
      }
      if (control === undefined) {
        return yield* Effect.fail(
          new PartitionNotHeld({
            operation: "seek",
            actor: definition.name,
            ...tp,
            reason: `this member does not hold it now (${held(membership)}); seek on the member that does`,
          }),
        )
      }
      const offset = yield* offsetOf(definition, tp, to)
      yield* control.seek(offset)
      return offset
    })

  return { pause, resume, seek }
}
