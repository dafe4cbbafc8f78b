/**
 * The actor system: joins each actor's consumer group and runs one partition actor per
 * assigned partition.
 *
 * For every partition a group assigns, the system forks a partition actor, a fiber in a
 * `FiberMap` keyed by topic-partition inside the system's scope. On revocation the actor stops
 * taking records, finishes what it has started (within the actor's `drainDeadline`, then it is
 * interrupted), commits what completed, and ends; only then is the revocation acknowledged and
 * the partition given up. Closing the system's scope (or interrupting `run`) is a graceful
 * shutdown: fetching stops, mailboxes drain within the shutdown deadline, completed offsets are
 * committed, the producer flushes and every group is left.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ActorSystem, MemoryTransport } from "partita"
 * import { notifier } from "./actors.ts"
 *
 * ActorSystem.run([notifier]).pipe(Effect.provide(MemoryTransport.layer()), ActorSystem.runMain)
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Context, Data, Deferred, Duration, Effect, Fiber, FiberMap, Metric, type Scope, Stream } from "effect"
import type { Actor } from "./Actor.ts"
import * as PartitionActor from "./internal/partitionActor.ts"
import * as Producer from "./Producer.ts"
import type { RecordContext } from "./RecordContext.ts"
import { type GroupEvent, Transport } from "./Transport.ts"
import type { TransportError } from "./TransportError.ts"

export {
  /**
   * A partition actor restarted more often than its supervision allows, with `then: "fail-system"`.
   *
   * @since 0.1.0
   * @category errors
   */
  RestartsExhausted,
} from "./internal/partitionActor.ts"

/**
 * What a list of actors' handlers need from the context, together.
 *
 * @since 0.1.0
 * @category models
 */
export type Requirements<Actors extends ReadonlyArray<Actor<any>>> = Actors[number] extends Actor<infer R> ? R : never

/**
 * An actor whose definition cannot run, found before anything starts.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidActor extends Data.TaggedError("InvalidActor")<{
  readonly actor: string
  readonly reason: string
}> {
  override get message(): string {
    return `Actor "${this.actor}" cannot run: ${this.reason}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a graceful shutdown may drain mailboxes before interrupting. Default 30 seconds. */
  readonly shutdownDeadline?: Duration.Input | undefined
  /** The producer handlers and dead letters use. */
  readonly producer?: Producer.Options | undefined
  /** How often consumer lag is measured for the `partita.consumer.lag` metric. Default 10 seconds. */
  readonly lagInterval?: Duration.Input | undefined
}

const consumerLag = Metric.gauge("partita.consumer.lag", {
  description: "Records in a partition past the group's committed offset",
})

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  shutdownDeadline: Duration.seconds(30),
  lagInterval: Duration.seconds(10),
}

/**
 * One partition actor's health.
 *
 * @since 0.1.0
 * @category models
 */
export interface PartitionHealth {
  readonly actor: string
  readonly group: string
  readonly topic: string
  readonly partition: number
  readonly state: PartitionActor.PartitionStatus["state"]
  readonly healthy: boolean
  /** Records waiting and no progress for longer than the actor's `stallAfter`. */
  readonly stalled: boolean
  readonly paused: boolean
  readonly processed: number
  readonly failed: number
  readonly retried: number
  readonly deadLettered: number
  readonly skipped: number
  readonly restarts: number
  readonly mailbox: number
  readonly committed: number
  /** Commits of this partition that failed, each try counted. */
  readonly commitFailures: number
  readonly position: number
  /** Records in the partition past the committed offset, when the transport could tell. */
  readonly lag: number | undefined
  /** Epoch milliseconds of the last completed record. */
  readonly lastProgress: number
  readonly lastError: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HealthReport {
  /** Every partition actor healthy. */
  readonly healthy: boolean
  /** Every actor's group has given it its first assignment: the system is taking records. */
  readonly ready: boolean
  readonly partitions: ReadonlyArray<PartitionHealth>
}

/**
 * A running system.
 *
 * @since 0.1.0
 * @category models
 */
export interface System {
  readonly health: Effect.Effect<HealthReport>
  /** Completes when a partition actor fails the system (supervision `then: "fail-system"`). */
  readonly failure: Effect.Effect<never, PartitionActor.RestartsExhausted>
}

/**
 * The running system, for handlers and HTTP endpoints that report health.
 *
 * @since 0.1.0
 * @category services
 */
export class ActorSystem extends Context.Service<ActorSystem, System>()("partita/ActorSystem") {}

const policiesDeadLetter = (actor: Actor<unknown>) =>
  actor.policies.some((policy) =>
    policy._tag === "DeadLetter" || (policy._tag === "Retry" && policy.then === "dead-letter")
  )

const validate = (actors: ReadonlyArray<Actor<unknown>>) =>
  Effect.forEach(actors, (actor) => {
    if (actor.topics.length === 0) return Effect.fail(new InvalidActor({ actor: actor.name, reason: "it names no topics" }))
    if (actor.deadLetter === undefined && policiesDeadLetter(actor)) {
      return Effect.fail(
        new InvalidActor({ actor: actor.name, reason: "a policy dead-letters records but no deadLetter topic is set" }),
      )
    }
    if (actor.deadLetter !== undefined && actor.topics.includes(actor.deadLetter.topic)) {
      return Effect.fail(
        new InvalidActor({ actor: actor.name, reason: `its dead-letter topic "${actor.deadLetter.topic}" is one it consumes` }),
      )
    }
    return Effect.void
  }, { discard: true }).pipe(
    Effect.andThen(() => {
      const names = actors.map((actor) => actor.name)
      const duplicate = names.find((name, index) => names.indexOf(name) !== index)
      return duplicate === undefined
        ? Effect.void
        : Effect.fail(new InvalidActor({ actor: duplicate, reason: "two actors have this name" }))
    }),
  )

/**
 * Starts the actors in the current scope and returns the running system. Closing the scope
 * shuts it down gracefully.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = <const Actors extends ReadonlyArray<Actor<any>>>(
  actors: Actors,
  options: Options = {},
): Effect.Effect<System, InvalidActor | TransportError, Transport | Scope.Scope | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>> =>
  Effect.gen(function*() {
    yield* validate(actors as ReadonlyArray<Actor<unknown>>)
    const transport = yield* Transport
    const producer = yield* Producer.make(options.producer)
    const statuses = new Map<string, { readonly status: PartitionActor.PartitionStatus; readonly stallAfter: number }>()
    const failure = yield* Deferred.make<never, PartitionActor.RestartsExhausted>()
    const shutdownDeadline = options.shutdownDeadline ?? defaults.shutdownDeadline
    const stoppers: Array<Effect.Effect<boolean>> = []
    const assignedOnce = new Set<string>()
    // One duration histogram per partition an actor ever held, exported for the system's life.
    const metricsContext = yield* Effect.context<never>()
    const durations = new Map<string, ReturnType<typeof PartitionActor.registerDurations>>()
    yield* Effect.addFinalizer(() => Effect.sync(() => durations.forEach((series) => series.remove())))

    for (const actor of actors) {
      const subscription = yield* transport.subscribe({ ...actor.consumer, group: actor.group, topics: actor.topics })
      const fibers = yield* FiberMap.make<string>()
      const controls = new Map<string, PartitionActor.Control>()

      /** Stops one partition actor: ask, wait up to the deadline, then interrupt. True if in time. */
      const stopPartition = (key: string, mode: "drain" | "in-flight", deadline: Duration.Input) =>
        Effect.gen(function*() {
          const control = controls.get(key)
          const fiber = yield* FiberMap.get(fibers, key)
          if (control !== undefined) yield* control.stop(mode)
          let inTime = true
          if (fiber._tag === "Some") {
            const done = yield* Fiber.await(fiber.value).pipe(Effect.timeoutOption(deadline))
            inTime = done._tag === "Some"
            if (!inTime) yield* Effect.logWarning(`Partition actor ${key} missed its ${Duration.fromInputUnsafe(deadline).toString()} deadline; interrupting it`)
          }
          yield* FiberMap.remove(fibers, key)
          controls.delete(key)
          statuses.delete(`${actor.name}:${key}`)
          return inTime
        })

      const onEvent = (event: GroupEvent) =>
        Effect.gen(function*() {
          if (event._tag === "Assigned") {
            assignedOnce.add(actor.name)
            for (const claim of event.claims) {
              const key = `${claim.topic}/${claim.partition}`
              const status: PartitionActor.PartitionStatus = {
                actor: actor.name,
                group: actor.group,
                topic: claim.topic,
                partition: claim.partition,
                state: "running",
                pausedFor: new Set(),
                processed: 0,
                failed: 0,
                retried: 0,
                deadLettered: 0,
                skipped: 0,
                restarts: 0,
                mailbox: 0,
                committed: claim.startOffset,
                position: claim.startOffset,
                lastProgress: yield* Clock.currentTimeMillis,
                lastError: undefined,
                lastOutcome: "handled",
              }
              statuses.set(`${actor.name}:${key}`, { status, stallAfter: Duration.toMillis(actor.stallAfter) })
              let series = durations.get(`${actor.name}:${key}`)
              if (series === undefined) {
                series = PartitionActor.registerDurations(metricsContext, { ...claim, group: actor.group })
                durations.set(`${actor.name}:${key}`, series)
              }
              yield* FiberMap.run(
                fibers,
                key,
                PartitionActor.run(
                  { actor, claim, subscription, producer, status, telemetry: transport.telemetry, durations: series.histogram },
                  (control) => controls.set(key, control),
                ).pipe(
                  Effect.tapError((error) => Deferred.fail(failure, error)),
                ),
              )
            }
            yield* Effect.logInfo(
              `Actor ${actor.name} assigned ${event.claims.map((claim) => `${claim.topic}/${claim.partition}`).join(", ") || "no partitions"}`,
            )
            return
          }
          yield* Effect.forEach(
            event.partitions,
            (tp) => stopPartition(`${tp.topic}/${tp.partition}`, "in-flight", actor.drainDeadline),
            { concurrency: "unbounded", discard: true },
          )
          yield* Effect.logInfo(
            `Actor ${actor.name} gave up ${event.partitions.map((tp) => `${tp.topic}/${tp.partition}`).join(", ")}`,
          )
          yield* event.acknowledge
        })

      // Graceful shutdown of this actor's partitions; runs before the FiberMap interrupts them.
      stoppers.push(
        Effect.suspend(() =>
          Effect.forEach([...controls.keys()], (key) => stopPartition(key, "drain", shutdownDeadline), {
            concurrency: "unbounded",
          })
        ).pipe(Effect.map((inTime) => inTime.every(Boolean))),
      )

      yield* subscription.events.pipe(
        Stream.runForEach(onEvent),
        Effect.catch((error: TransportError) =>
          Effect.logError(`Actor ${actor.name} lost its group membership: ${error.message}`)
        ),
        Effect.annotateLogs({ actor: actor.name }),
        Effect.forkScoped,
      )
    }

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* Effect.logInfo("Shutting down: draining partition actors")
        const inTime = yield* Effect.all(stoppers, { concurrency: "unbounded" })
        if (!inTime.every(Boolean)) {
          // A defect in the finalizer marks the run as failed (runMain exits non-zero) while
          // everything that completed has still been committed.
          return yield* Effect.die(new ShutdownDeadlineExceeded({ deadline: Duration.fromInputUnsafe(shutdownDeadline) }))
        }
      })
    )

    const health = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const highWatermarks = new Map<string, number>()
      const topics = new Set([...statuses.values()].map(({ status }) => status.topic))
      for (const topic of topics) {
        const description = yield* Effect.option(transport.describeTopic(topic))
        if (description._tag === "Some") {
          for (const partition of description.value.partitions) {
            highWatermarks.set(`${topic}/${partition.partition}`, partition.highWatermark)
          }
        }
      }
      const partitions = [...statuses.values()].map(({ status, stallAfter }): PartitionHealth => {
        const waiting = status.mailbox > 0 || status.position > status.committed
        const stalled = waiting && now - status.lastProgress > stallAfter
        const hw = highWatermarks.get(`${status.topic}/${status.partition}`)
        return {
          actor: status.actor,
          group: status.group,
          topic: status.topic,
          partition: status.partition,
          state: status.state,
          healthy: !stalled && status.state !== "halted" && status.state !== "stopped" && status.state !== "failed",
          stalled,
          paused: status.pausedFor.size > 0,
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
          lag: hw === undefined ? undefined : Math.max(0, hw - status.committed),
          lastProgress: status.lastProgress,
          lastError: status.lastError,
        }
      })
      return { healthy: partitions.every((p) => p.healthy), ready: assignedOnce.size === actors.length, partitions }
    })

    // Consumer lag as a metric, for OTLP export: records past the committed offset, per partition.
    const lagInterval = options.lagInterval ?? defaults.lagInterval
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(
      Effect.sleep(lagInterval),
      Effect.flatMap(health, (report) =>
        Effect.forEach(report.partitions, (partition) =>
          partition.lag === undefined ? Effect.void : Metric.update(
            Metric.withAttributes(consumerLag, {
              "messaging.system": "kafka",
              "messaging.destination.name": partition.topic,
              "messaging.destination.partition.id": String(partition.partition),
              "messaging.consumer.group.name": partition.group,
            }),
            partition.lag,
          ), { discard: true })),
    )))

    return ActorSystem.of({ health, failure: Deferred.await(failure) })
  }) as Effect.Effect<System, InvalidActor | TransportError, Transport | Scope.Scope | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>>

/**
 * A graceful shutdown ran out of time and interrupted partition actors; what completed was
 * still committed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ShutdownDeadlineExceeded extends Data.TaggedError("ShutdownDeadlineExceeded")<{
  readonly deadline: Duration.Duration
}> {
  override get message(): string {
    return `Shutdown did not finish within ${this.deadline.toString()}: in-flight records were interrupted`
  }
}

/**
 * Runs the actors until interrupted (a graceful shutdown) or until a partition actor fails the
 * system. Handlers get `RecordContext` and `Producer` from the system; everything else they
 * need comes from the context `run` is given.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = <const Actors extends ReadonlyArray<Actor<any>>>(
  actors: Actors,
  options: Options = {},
): Effect.Effect<
  never,
  InvalidActor | TransportError | PartitionActor.RestartsExhausted,
  Transport | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>
> => Effect.scoped(Effect.flatMap(start(actors, options), (system) => system.failure))
