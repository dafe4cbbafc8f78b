/**
 * The actor system: joins each actor's consumer group and runs one partition actor per
 * assigned partition.
 *
 * For every partition a group assigns, the system forks a partition actor, a fiber in the scope
 * of the actor's current group membership. On revocation the actor stops taking records,
 * finishes what it has started (within the actor's `drainDeadline`, then it is interrupted),
 * commits what completed, and ends; only then is the revocation acknowledged and the partition
 * given up.
 *
 * A membership the group takes away (a member fenced or expired, a revocation not acknowledged in
 * time, a consumer that crashed) is not the end: its partition actors are interrupted (they can
 * no longer commit), and the system joins the group again with a new subscription on the
 * `rejoinSchedule`. While an actor is out of its group the health report says so, unhealthy
 * after `membershipGrace`; after `maxRejoins` failed rejoins in a row the system fails with
 * `MembershipLost`.
 *
 * Closing the system's scope (or interrupting `run`) is a graceful shutdown, bounded as a whole
 * by `shutdownDeadline` plus one second: fetching stops and prefetched records are left to the
 * next owner; records already started finish within `shutdownDeadline` (then they are
 * interrupted); completed offsets are committed and the producer flushes within the second
 * after; the groups are left. Whatever did not finish in time is named in a
 * `ShutdownDeadlineExceeded`.
 *
 * Health answers from in-process state and never waits on the broker: lag comes from high
 * watermarks a background fiber reads every `lagInterval` (each read bounded by
 * `brokerTimeout`), reported with their age; readiness includes whether the broker answered
 * within `brokerWindow`.
 *
 * `layer` makes the running system a service (`System`) an app composes like any other; through
 * it an operator pauses and resumes an actor or one partition (the pause outlives rebalances),
 * seeks a partition to an offset or a time, and restarts a partition a `halt` policy stopped.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Actor, ActorSystem, ErrorPolicy, Main, MemoryTransport } from "partita"
 *
 * const greeter = Actor.make({
 *   name: "greeter",
 *   topics: ["greetings"],
 *   value: Schema.Struct({ to: Schema.String }),
 *   handle: (greeting) => Effect.log(`hello, ${greeting.to}`),
 *   onError: { default: ErrorPolicy.skip },
 * })
 *
 * // Runs until interrupted (Ctrl-C is a graceful shutdown); Main.runMain sets the exit code.
 * ActorSystem.run([greeter]).pipe(
 *   Effect.provide(MemoryTransport.layer({ topics: [{ topic: "greetings", partitions: 3 }] })),
 *   Main.runMain,
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Clock, Context, Data, Deferred, Duration, Effect, Exit, Layer, Option, Schedule, Scope } from "effect"
import type { Actor } from "./Actor.ts"
import * as DeadLetter from "./internal/deadLetter.ts"
import * as DenoFiberContext from "./internal/denoFiberContext.ts"
import * as PartitionActor from "./internal/partitionActor.ts"
import * as SystemControl from "./internal/systemControl.ts"
import { measureLag, report } from "./internal/systemHealth.ts"
import {
  closeBy,
  join,
  keepMembership,
  keyOf,
  type MembershipLost,
  type Settings,
  type Shared,
  stopPartition,
  type SystemState,
} from "./internal/systemMembership.ts"
import * as Producer from "./Producer.ts"
import type { RecordContext } from "./RecordContext.ts"
import { type PartitionClaim, type TopicPartition, Transport } from "./Transport.ts"
import * as TransportError from "./TransportError.ts"

export {
  /**
   * An actor's dead-letter topic does not exist and the actor did not ask to create it
   * (`deadLetter.create`): `start` fails with it before taking any record.
   *
   * @since 0.1.0
   * @category errors
   */
  DeadLetterTopicMissing,
} from "./internal/deadLetter.ts"

export {
  /**
   * A partition actor restarted more often than its supervision allows, with `then: "fail-system"`.
   *
   * @since 0.1.0
   * @category errors
   */
  RestartsExhausted,
} from "./internal/partitionActor.ts"

export {
  /**
   * An actor lost its group membership and could not join again: `maxRejoins` attempts in a row
   * failed, or the `rejoinSchedule` ended.
   *
   * @since 0.1.0
   * @category errors
   */
  MembershipLost,
} from "./internal/systemMembership.ts"

export {
  /**
   * Run-time control (`pause`, `resume`, `seek`) named an actor the system does not run; the
   * error lists the ones it does.
   *
   * @since 0.4.0
   * @category errors
   */
  UnknownActor,
  /**
   * Run-time control named a partition this member cannot act on: a seek of a partition it does
   * not hold now, a resume of one neither held nor paused, or a partition of a topic the actor
   * does not consume.
   *
   * @since 0.4.0
   * @category errors
   */
  PartitionNotHeld,
  /**
   * A seek that cannot be done: an offset outside the partition's log, a timestamp that is not
   * a time, or an exactly-once actor that cannot seek one partition (one transactional producer
   * per member, or a batch actor).
   *
   * @since 0.4.0
   * @category errors
   */
  InvalidSeek,
} from "./internal/systemControl.ts"

/**
 * Where `seek` moves a partition: to an offset, or to the first record whose timestamp is at or
 * after a time (epoch milliseconds), found through the transport's list-offsets; with no record
 * that recent, to the end of the log.
 *
 * @since 0.4.0
 * @category models
 */
export type SeekTarget = SystemControl.SeekTarget

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
 * A graceful shutdown did not finish within its deadline (plus one second for commits, the
 * producer's flush and leaving the groups). `left` says what was cut short: partitions whose
 * in-flight records were interrupted, offsets completed but not committed, a flush that did not
 * finish. What completed and could be committed in time was committed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ShutdownDeadlineExceeded extends Data.TaggedError("ShutdownDeadlineExceeded")<{
  readonly deadline: Duration.Duration
  readonly left: ReadonlyArray<string>
}> {
  override get message(): string {
    const left = this.left.length === 0 ? "in-flight records were interrupted" : this.left.join("; ")
    return `Shutdown did not finish within ${Duration.format(this.deadline)} (plus 1s for commits, flush and leaving the groups): ${left}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How long a graceful shutdown lets the records already being handled finish, across every
   * partition, before interrupting them. Commits, the producer's flush and leaving the groups
   * then get one more second: the whole shutdown ends within this plus one second. Prefetched
   * records are not handled on shutdown (the next owner handles them). Compare each actor's
   * `drainDeadline`, which bounds the same wait for one revoked partition during a rebalance.
   * Default 30 seconds.
   */
  readonly shutdownDeadline?: Duration.Input | undefined
  /**
   * Settings of a producer of the system's own, for handlers and dead letters. Without them the
   * system uses the `Producer` its context has (an app's `Producer.layer()`), so the app, its
   * handlers and the dead letters share one producer and its batches; only when the context has
   * none does the system make one with the defaults. The system flushes the producer it uses on
   * shutdown, and closes it only when it is its own.
   */
  readonly producer?: Producer.Options | undefined
  /**
   * How often high watermarks are read for consumer lag (the `partita.consumer.lag` metric and
   * the health report's `lag`). Default 10 seconds.
   */
  readonly lagInterval?: Duration.Input | undefined
  /** How long one read of high watermarks waits for the broker before giving up. Default 5 seconds. */
  readonly brokerTimeout?: Duration.Input | undefined
  /** The system is not ready once the broker has not answered for this long. Default 30 seconds. */
  readonly brokerWindow?: Duration.Input | undefined
  /** The delays between attempts to join a group again after losing the membership. */
  readonly rejoinSchedule?: Schedule.Schedule<unknown, TransportError.TransportError> | undefined
  /** Failed rejoins in a row after which the system fails with `MembershipLost`. Default 10. */
  readonly maxRejoins?: number | undefined
  /** How long an actor may be out of its group before the health report is unhealthy. Default 30 seconds. */
  readonly membershipGrace?: Duration.Input | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  shutdownDeadline: Duration.seconds(30),
  lagInterval: Duration.seconds(10),
  brokerTimeout: Duration.seconds(5),
  brokerWindow: Duration.seconds(30),
  /** Exponential from 1 second, at most 30 seconds apart. */
  rejoinSchedule: Schedule.min([Schedule.exponential("1 second"), Schedule.spaced("30 seconds")]) as Schedule.Schedule<
    unknown,
    TransportError.TransportError
  >,
  maxRejoins: 10,
  membershipGrace: Duration.seconds(30),
}

/**
 * What a shutdown adds to `shutdownDeadline`: until +500 ms for the final commits, +750 ms for
 * the producer's flush, +1 s for leaving the groups. Each step keeps a share of its own, so a
 * commit that never answers does not leave the flush no time at all.
 */
const commitGrace = 500
const flushGrace = 750
const closeGrace = 1000

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
  /** Fetching is paused, for the reasons in `pausedFor`. */
  readonly paused: boolean
  /**
   * Why: `mailbox` (full), `policy` (an error policy's pause), `dead-letter` (a dead letter cannot
   * be written yet), `halted` (see `halted`), `operator` (the system's `pause`, until `resume`).
   */
  readonly pausedFor: ReadonlyArray<"mailbox" | "policy" | "dead-letter" | "halted" | "operator">
  /**
   * While `state` is `halted`: the record a `halt` policy stopped at, and its error. The partition
   * stays assigned and idle, committing nothing past the record, until the system's `resume` of
   * this partition handles the record again (or it is revoked).
   */
  readonly halted: HaltedRecord | undefined
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
  /**
   * Records in the partition past the committed offset, from the last high watermark read
   * (`lagAge` old), or undefined before the broker first told.
   */
  readonly lag: number | undefined
  /** Milliseconds since the high watermark behind `lag` was read. */
  readonly lagAge: number | undefined
  /** Epoch milliseconds of the last completed record. */
  readonly lastProgress: number
  readonly lastError: string | undefined
}

/**
 * The record a partition halted at, and why.
 *
 * @since 0.4.0
 * @category models
 */
export interface HaltedRecord {
  readonly topic: string
  readonly partition: number
  readonly offset: number
  /** The error that made the policy halt. */
  readonly error: string
}

/**
 * One actor's membership of its consumer group.
 *
 * @since 0.1.0
 * @category models
 */
export interface MembershipHealth {
  readonly actor: string
  readonly group: string
  /** In the group now. */
  readonly member: boolean
  /** A member, or out for less than `membershipGrace`. */
  readonly healthy: boolean
  /** Epoch milliseconds of the last join, or of the loss while out. */
  readonly since: number
  /** Failed rejoins in a row since the membership was lost. */
  readonly rejoins: number
  /** Why the membership was lost, or why the last rejoin failed. */
  readonly lastError: string | undefined
}

/**
 * Whether the broker answers, as seen by the background reads of high watermarks.
 *
 * @since 0.1.0
 * @category models
 */
export interface BrokerHealth {
  /** The broker answered within `brokerWindow`. */
  readonly reachable: boolean
  /** Epoch milliseconds of its last answer (or of the start). */
  readonly lastAnswer: number
  readonly lastError: string | undefined
}

/**
 * Answered from in-process state, at once, whatever the broker does.
 *
 * @since 0.1.0
 * @category models
 */
export interface HealthReport {
  /** Liveness: every partition actor healthy, and every actor in its group (or out for less than the grace). */
  readonly healthy: boolean
  /**
   * Readiness: every actor had its first assignment and is in its group now, and the broker
   * answered within `brokerWindow`.
   */
  readonly ready: boolean
  readonly partitions: ReadonlyArray<PartitionHealth>
  readonly members: ReadonlyArray<MembershipHealth>
  readonly broker: BrokerHealth
}

/**
 * Names an actor for run-time control: its name, or the actor itself.
 *
 * @since 0.4.0
 * @category models
 */
export type ActorRef = string | { readonly name: string }

/**
 * A running system: its health, its failure, and run-time control of its actors.
 *
 * Control acts on this member only (other members of the groups are not told), and pauses last
 * until resumed, across rebalances and rejoins.
 *
 * @since 0.1.0
 * @category models
 */
export interface System {
  readonly health: Effect.Effect<HealthReport>
  /**
   * Completes when the system fails: a partition actor's supervision says `then: "fail-system"`,
   * or an actor lost its group membership and could not join again.
   */
  readonly failure: Effect.Effect<never, PartitionActor.RestartsExhausted | MembershipLost>
  /**
   * Pauses an actor (every partition it holds or will be assigned) or one of its partitions:
   * fetching stops and no record starts; records already started finish (a batch actor's
   * batch, each key lane's turn), fetched ones wait, nothing is skipped. The pause stays until `resume`, across rebalances: a paused partition
   * that moves away and comes back is still paused. A partition not held now may be paused
   * ahead, and starts paused when assigned. Health shows `pausedFor: ["operator"]`.
   */
  readonly pause: (actor: ActorRef, partition?: TopicPartition) => Effect.Effect<void, SystemControl.UnknownActor | SystemControl.PartitionNotHeld>
  /**
   * Undoes `pause`: of the actor (every partition, including ones paused one by one), or of one
   * partition. Resuming a halted partition restarts it: it handles its halting record again.
   */
  readonly resume: (actor: ActorRef, partition?: TopicPartition) => Effect.Effect<void, SystemControl.UnknownActor | SystemControl.PartitionNotHeld>
  /**
   * Moves a partition this member holds to an offset, or to the first record at or after a
   * time, and succeeds with the offset once done. The record in flight finishes; records fetched
   * past it are dropped; what completed is committed, then the new offset is committed, so a
   * seek back moves the group's committed offset back and its records are handled again. It
   * waits for the record in flight, its retries included. Works while paused (the partition
   * stays paused) and while halted (it stays halted until resumed). In key lanes (`byKey`,
   * `unordered`) every record in flight finishes first. An exactly-once actor commits its open
   * transaction, then the new offset in a transaction of its own; with one transactional
   * producer per member, or handling batches, it cannot seek one partition (`InvalidSeek`).
   */
  readonly seek: (
    actor: ActorRef,
    partition: TopicPartition,
    to: SeekTarget,
  ) => Effect.Effect<number, SystemControl.UnknownActor | SystemControl.PartitionNotHeld | SystemControl.InvalidSeek | TransportError.TransportError>
}

/**
 * The running system as a service, for handlers, HTTP endpoints that report health, and
 * operator controls: `yield* ActorSystem.System`. `layer` provides it.
 *
 * @since 0.4.0
 * @category services
 */
export const System: Context.Service<System, System> = Context.Service<System>("partita/ActorSystem")

/**
 * The former name of {@link System}, the service.
 *
 * @deprecated Use `ActorSystem.System`.
 * @since 0.1.0
 * @category services
 */
export const ActorSystem: Context.Service<System, System> = System

/**
 * @deprecated Use `ActorSystem.System`.
 * @since 0.1.0
 * @category services
 */
export type ActorSystem = System

const policiesDeadLetter = (actor: Actor<unknown>) =>
  actor.policies.some((policy) =>
    policy._tag === "DeadLetter" || (policy._tag === "Retry" && policy.then === "dead-letter")
  )

/** What a batch actor asks for that batches cannot give (the types say so too, for typed callers). */
const batchActorProblem = (actor: Actor<unknown>): string | undefined =>
  actor.batch === undefined
    ? undefined
    : actor.ordering._tag !== "Partition"
    ? `it has a batch handler with ${actor.ordering._tag} ordering; a batch is one partition's records in offset order, so use partition ordering (or handle, for ${actor.ordering._tag})`
    : actor.delivery === "exactly-once" && actor.transaction.producer === "per-member"
    ? "it has a batch handler and per-member transactions; a batch commits in a transaction of its own, so use per-partition transactions"
    : undefined

const validate = (actors: ReadonlyArray<Actor<unknown>>, transport: Transport["Service"]) =>
  Effect.forEach(actors, (actor) => {
    if (actor.topics.length === 0) return Effect.fail(new InvalidActor({ actor: actor.name, reason: "it names no topics" }))
    if (actor.invalid !== undefined) return Effect.fail(new InvalidActor({ actor: actor.name, reason: actor.invalid }))
    const batchProblem = batchActorProblem(actor)
    if (batchProblem !== undefined) return Effect.fail(new InvalidActor({ actor: actor.name, reason: batchProblem }))
    if (actor.delivery === "exactly-once" && !transport.features.transactions) {
      return Effect.fail(
        new InvalidActor({ actor: actor.name, reason: `it is exactly-once, and the ${transport.name} transport has no transactions` }),
      )
    }
    if (actor.delivery === "exactly-once" && actor.transaction.producer === "per-member" && transport.features.groupFencedTransactions !== true) {
      return Effect.fail(
        new InvalidActor({
          actor: actor.name,
          reason: `it has one transactional producer per member, and the ${transport.name} transport's transactions are not fenced by the group (KIP-447)`,
        }),
      )
    }
    if (actor.delivery === "exactly-once" && actor.ordering._tag !== "Partition") {
      return Effect.fail(
        new InvalidActor({
          actor: actor.name,
          reason: `it is exactly-once with ${actor.ordering._tag} ordering; exactly-once needs partition ordering`,
        }),
      )
    }
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

const settingsOf = (options: Options): Settings => ({
  shutdownDeadline: Duration.toMillis(options.shutdownDeadline ?? defaults.shutdownDeadline),
  lagInterval: options.lagInterval ?? defaults.lagInterval,
  brokerTimeout: options.brokerTimeout ?? defaults.brokerTimeout,
  brokerWindow: Duration.toMillis(options.brokerWindow ?? defaults.brokerWindow),
  rejoinSchedule: options.rejoinSchedule ?? defaults.rejoinSchedule,
  maxRejoins: Math.max(1, options.maxRejoins ?? defaults.maxRejoins),
  membershipGrace: Duration.toMillis(options.membershipGrace ?? defaults.membershipGrace),
})

// ---------------------------------------------------------------------------------------------
// Shutdown

/**
 * The graceful shutdown: in-flight records finish within the deadline (prefetched ones are left),
 * then the final commits, the producer's flush and leaving the groups, each by its share of the
 * second after (see `commitGrace`). Returns what was left undone, if anything.
 */
const shutdown = (shared: Shared, producerScope: Scope.Closeable, systemScope: Scope.Closeable) =>
  Effect.gen(function*() {
    const { state, settings } = shared
    const began = yield* Clock.currentTimeMillis
    state.shutdown.started = true
    state.shutdown.commitBy = began + settings.shutdownDeadline + commitGrace
    yield* Effect.logInfo("Shutting down: finishing the records in flight")
    const left: Array<string> = []
    yield* Effect.forEach(state.memberships, (membership) =>
      Effect.forEach([...membership.partitions.keys()], (key) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const inTime = yield* stopPartition(membership, key, began + settings.shutdownDeadline - now, state.shutdown.commitBy)
          if (!inTime) left.push(`${membership.actor.name}: ${key} was still handling records and was interrupted`)
          if (membership.partitions.has(key)) left.push(`${membership.actor.name}: ${key} did not stop when interrupted`)
        }), { concurrency: "unbounded", discard: true }), { concurrency: "unbounded", discard: true })
    for (const [key, what] of state.shutdown.uncommitted) left.push(`${key}: ${what}`)
    if (!(yield* closeBy(producerScope, began + settings.shutdownDeadline + flushGrace))) {
      left.push("the producer did not finish flushing: records sent by handlers may not have been acknowledged")
    }
    if (!(yield* closeBy(systemScope, began + settings.shutdownDeadline + closeGrace))) {
      left.push("leaving the groups and closing connections did not finish")
    }
    return left.length === 0
      ? undefined
      : new ShutdownDeadlineExceeded({ deadline: Duration.millis(settings.shutdownDeadline), left })
  })

// ---------------------------------------------------------------------------------------------
// Starting

/** The system, and the outcome of its shutdown once its scope closed. */
const launch = (
  actors: ReadonlyArray<Actor<unknown>>,
  options: Options,
  onIncomplete: (error: ShutdownDeadlineExceeded) => Effect.Effect<void>,
) =>
  Effect.gen(function*() {
    // On Deno, long-lived fibers (one per partition) otherwise keep a resource per suspension.
    yield* Effect.sync(DenoFiberContext.install)
    const transport = yield* Transport
    yield* validate(actors, transport)
    const settings = settingsOf(options)
    yield* DeadLetter.ensureTopics(actors, transport)
    // Everything the system owns lives in `systemScope`; the caller's scope closes it through
    // `shutdown`, which bounds the time it may take.
    const systemScope = yield* Scope.make()
    const producerScope = yield* Scope.fork(systemScope)
    const started = yield* Clock.currentTimeMillis
    const state: SystemState = {
      memberships: actors.map((actor) => ({
        actor,
        member: false,
        since: started,
        rejoins: 0,
        lastError: undefined,
        assignedOnce: false,
        assigned: false,
        partitions: new Map(),
        paused: { all: false, toggled: new Set() },
      })),
      failure: yield* Deferred.make<never, PartitionActor.RestartsExhausted | MembershipLost>(),
      watermarks: new Map(),
      broker: { lastAnswer: started, lastError: undefined },
      shutdown: { started: false, commitBy: Number.POSITIVE_INFINITY, uncommitted: new Map() },
    }
    let shared: Shared | undefined
    yield* Effect.addFinalizer(() =>
      shared === undefined
        ? Scope.close(systemScope, Exit.void)
        : Effect.flatMap(shutdown(shared, producerScope, systemScope), (left) => left === undefined ? Effect.void : onIncomplete(left))
    )

    const given = options.producer === undefined ? yield* Effect.serviceOption(Producer.Producer) : Option.none()
    const producer = Option.isSome(given)
      ? yield* Effect.as(Scope.addFinalizer(producerScope, given.value.flush), given.value)
      : yield* Scope.provide(Producer.make(options.producer), producerScope)
    // One duration histogram per partition an actor ever held, exported for the system's life.
    const metricsContext = yield* Effect.context<never>()
    const durations = new Map<string, ReturnType<typeof PartitionActor.registerDurations>>()
    yield* Scope.addFinalizer(systemScope, Effect.sync(() => durations.forEach((series) => series.remove())))
    const durationsFor = (actor: Actor<unknown>, claim: PartitionClaim) => {
      const key = `${actor.name}:${keyOf(claim)}`
      let series = durations.get(key)
      if (series === undefined) {
        series = PartitionActor.registerDurations(metricsContext, { ...claim, group: actor.group })
        durations.set(key, series)
      }
      return series
    }
    shared = { state, settings, producer, telemetry: transport.telemetry, durationsFor, transactional: transport.transactional }
    const ready = shared

    // The first join of every group is part of starting: a missing topic fails `start`.
    for (const membership of state.memberships) {
      const first = yield* join(ready, membership, systemScope)
      yield* Effect.forkIn(keepMembership(ready, membership, first, systemScope), systemScope)
    }
    yield* Effect.forkIn(
      Effect.forever(Effect.andThen(measureLag(ready), Effect.sleep(settings.lagInterval))),
      systemScope,
    )

    const control = SystemControl.make(state, transport)
    return System.of({
      health: Effect.map(Clock.currentTimeMillis, (now) => report(state, settings, now)),
      failure: Deferred.await(state.failure),
      pause: control.pause,
      resume: control.resume,
      seek: control.seek,
    })
  })

/**
 * Starts the actors in the current scope and returns the running system. Closing the scope
 * shuts it down gracefully; a shutdown that did not finish in time ends the scope with a
 * `ShutdownDeadlineExceeded` defect (what completed was still committed).
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = <const Actors extends ReadonlyArray<Actor<any>>>(
  actors: Actors,
  options: Options = {},
): Effect.Effect<System, InvalidActor | DeadLetter.DeadLetterTopicMissing | TransportError.TransportError, Transport | Scope.Scope | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>> =>
  // The handlers' requirements are erased inside; the signature restores them.
  launch(actors, options, (left) => Effect.die(left)) as Effect.Effect<
    System,
    InvalidActor | DeadLetter.DeadLetterTopicMissing | TransportError.TransportError,
    Transport | Scope.Scope | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>
  >

/**
 * Runs the actors until interrupted (a graceful shutdown) or until the system fails. Handlers get
 * `RecordContext` and `Producer` from the system; everything else they need comes from the
 * context `run` is given. A shutdown that did not finish in time fails with
 * `ShutdownDeadlineExceeded`, so `Main.runMain` exits non-zero and says what was left.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = <const Actors extends ReadonlyArray<Actor<any>>>(
  actors: Actors,
  options: Options = {},
): Effect.Effect<
  never,
  InvalidActor | DeadLetter.DeadLetterTopicMissing | TransportError.TransportError | PartitionActor.RestartsExhausted | MembershipLost | ShutdownDeadlineExceeded,
  Transport | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>
> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      let incomplete: ShutdownDeadlineExceeded | undefined
      const running = launch(actors, options, (left) => Effect.sync(() => void (incomplete = left)))
      const exit = yield* Effect.exit(restore(Effect.flatMap(Scope.provide(running, scope), (system) => system.failure)))
      yield* Scope.close(scope, exit)
      if (incomplete !== undefined) return yield* Effect.fail(incomplete)
      return yield* exit
    })
  ) as Effect.Effect<
    never,
    InvalidActor | DeadLetter.DeadLetterTopicMissing | TransportError.TransportError | PartitionActor.RestartsExhausted | MembershipLost | ShutdownDeadlineExceeded,
    Transport | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>
  >

/**
 * The actor system as a layer: starts the actors when the layer is built and provides the
 * running system as `ActorSystem.System`; closing the layer's scope shuts it down gracefully, as
 * with `start`. Handlers get `RecordContext` and `Producer` from the system; what else they need
 * is the layer's input, with `Transport`.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Actor, ActorSystem, Codec, ErrorPolicy, MemoryTransport } from "partita"
 *
 * const audit = Actor.make({
 *   name: "audit",
 *   topics: ["orders"],
 *   value: Codec.bytes,
 *   handle: () => Effect.void,
 *   onError: { default: ErrorPolicy.skip },
 * })
 *
 * const program = Effect.gen(function*() {
 *   const system = yield* ActorSystem.System
 *   yield* system.pause(audit)
 *   yield* system.resume(audit)
 * })
 *
 * program.pipe(
 *   Effect.provide(ActorSystem.layer([audit]).pipe(
 *     Layer.provide(MemoryTransport.layer({ topics: [{ topic: "orders", partitions: 1 }] })),
 *   )),
 *   Effect.runPromise,
 * )
 * ```
 *
 * @since 0.4.0
 * @category layers
 */
export const layer = <const Actors extends ReadonlyArray<Actor<any>>>(
  actors: Actors,
  options: Options = {},
): Layer.Layer<
  System,
  InvalidActor | DeadLetter.DeadLetterTopicMissing | TransportError.TransportError,
  Transport | Exclude<Requirements<Actors>, Producer.Producer | RecordContext>
> => Layer.effect(System, start(actors, options))
