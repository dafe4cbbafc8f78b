/**
 * The actor system's mechanics for group membership: one subscription at a time per actor, the
 * partition actors its assignments start and its revocations stop, and the loop that joins the
 * group again when the membership is lost. `ActorSystem` holds the state; `systemHealth` reads it.
 */
import { Cause, Clock, Data, Deferred, Duration, Effect, Exit, Fiber, Option, Queue, Schedule, Scope, Stream } from "effect"
import type { Actor } from "../Actor.ts"
import * as Producer from "../Producer.ts"
import { type GroupEvent, type PartitionClaim, type Subscription, type TopicPartition, Transport } from "../Transport.ts"
import * as TransportError from "../TransportError.ts"
import * as MemberTransactions from "./memberTransactions.ts"
import * as PartitionActor from "./partitionActor.ts"

/**
 * An actor lost its group membership and could not join again: `maxRejoins` attempts in a row
 * failed, or the `rejoinSchedule` ended. Re-exported by `ActorSystem`.
 */
export class MembershipLost extends Data.TaggedError("MembershipLost")<{
  readonly actor: string
  readonly group: string
  /** Failed rejoins in a row. */
  readonly rejoins: number
  readonly lastError: string
}> {
  override get message(): string {
    return `Actor "${this.actor}" lost its membership of group "${this.group}" and ${this.rejoins} rejoins failed; last error: ${this.lastError}. Check that the cluster is reachable and that the group and its topics are still usable`
  }
}

// The system's state: every field is written by the steps below and read by `systemHealth`.

/** One running partition actor. */
export interface Held {
  readonly key: string
  readonly status: PartitionActor.PartitionStatus
  readonly stallAfter: number
  control: PartitionActor.Control | undefined
  fiber: Fiber.Fiber<void, PartitionActor.RestartsExhausted> | undefined
}

/** One actor's membership of its group, across rejoins. */
export interface Membership {
  readonly actor: Actor<unknown>
  member: boolean
  since: number
  rejoins: number
  lastError: string | undefined
  assignedOnce: boolean
  /** The current subscription had an assignment. */
  assigned: boolean
  /** The partition actors of the current subscription. */
  readonly partitions: Map<string, Held>
  /**
   * The operator's pauses, kept across rebalances and rejoins: a partition (`topic/partition`)
   * is paused when `all` differs from whether it is in `toggled`.
   */
  readonly paused: { all: boolean; readonly toggled: Set<string> }
}

/** Whether the operator paused this partition of the membership's actor. */
export const operatorPaused = (membership: Membership, key: string) => membership.paused.all !== membership.paused.toggled.has(key)

export interface SystemState {
  readonly memberships: ReadonlyArray<Membership>
  readonly failure: Deferred.Deferred<never, PartitionActor.RestartsExhausted | MembershipLost>
  /** High watermark per `topic/partition`, and when it was read. */
  readonly watermarks: Map<string, { readonly highWatermark: number; readonly at: number }>
  readonly broker: { lastAnswer: number; lastError: string | undefined }
  readonly shutdown: {
    started: boolean
    /** Clock millis after which a commit is abandoned. */
    commitBy: number
    /** Offsets a shutdown could not commit, by `actor: topic/partition`. */
    readonly uncommitted: Map<string, string>
  }
}

export interface Settings {
  readonly shutdownDeadline: number
  readonly lagInterval: Duration.Input
  readonly brokerTimeout: Duration.Input
  readonly brokerWindow: number
  readonly rejoinSchedule: Schedule.Schedule<unknown, TransportError.TransportError>
  readonly maxRejoins: number
  readonly membershipGrace: number
}

export const keyOf = (tp: TopicPartition) => `${tp.topic}/${tp.partition}`

/** Waits for a fiber for at most `millis`; true if it ended. */
export const awaitWithin = (fiber: Fiber.Fiber<unknown, unknown>, millis: number) =>
  Effect.map(Effect.timeoutOption(Fiber.await(fiber), Duration.millis(Math.max(0, millis))), Option.isSome)

/** Closes a scope, waiting until `until` (Clock millis) at most; true if it closed in time. */
export const closeBy = (scope: Scope.Closeable, until: number) =>
  Effect.gen(function*() {
    const closing = yield* Effect.forkDetach(Scope.close(scope, Exit.void))
    return yield* awaitWithin(closing, until - (yield* Clock.currentTimeMillis))
  })

export const describeCause = (cause: Cause.Cause<{ readonly message: string }>): string => {
  const error = Cause.findErrorOption(cause)
  return error._tag === "Some" ? error.value.message : Cause.pretty(cause)
}

// ---------------------------------------------------------------------------------------------
// Partition actors

const initialStatus = (actor: Actor<unknown>, claim: PartitionClaim, now: number): PartitionActor.PartitionStatus => ({
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
  lastProgress: now,
  lastError: undefined,
  lastOutcome: "handled",
  halted: undefined,
})

/**
 * Stops one partition actor: ask it to finish what it started, wait up to `deadline` ms, then
 * interrupt it (its final commit runs then) and wait for that until `interruptUntil` (Clock
 * millis; unbounded without). True if it finished within the deadline.
 */
export const stopPartition = (membership: Membership, key: string, deadline: number, interruptUntil?: number) =>
  Effect.gen(function*() {
    const held = membership.partitions.get(key)
    if (held === undefined) return true
    // Not started yet (no control): nothing is in flight, so no reason to wait.
    if (held.control !== undefined) yield* held.control.stop("in-flight")
    const fiber = held.fiber!
    const finished = held.control === undefined || (yield* awaitWithin(fiber, deadline))
    // Past "stopped" (or "halted") no record is being handled: only the final commit is left.
    const inTime = finished || held.status.state === "stopped" || held.status.state === "halted"
    if (!inTime) {
      yield* Effect.logWarning(
        `Partition actor ${membership.actor.name} ${key} missed its ${deadline} ms deadline; interrupting it`,
      )
    }
    const stopped = interruptUntil === undefined
      ? yield* Effect.as(Fiber.interrupt(fiber), true)
      : yield* Effect.andThen(
        Effect.sync(() => fiber.interruptUnsafe()),
        Effect.flatMap(Clock.currentTimeMillis, (now) => awaitWithin(fiber, interruptUntil - now)),
      )
    if (stopped) membership.partitions.delete(key)
    return inTime
  })

/**
 * A subscription whose commits, once a shutdown began, give up at the shutdown's commit
 * deadline (the broker may never answer) and are booked as left uncommitted. A commit the broker
 * refused is the partition actor's to log, as at any other time: the deadline did not cut it.
 */
const boundCommits = (subscription: Subscription, actor: Actor<unknown>, state: SystemState): Subscription => {
  const { shutdown } = state
  const commit: Subscription["commit"] = (offsets) =>
    Effect.suspend(() => {
      if (!shutdown.started) return subscription.commit(offsets)
      const keys = offsets.map((offset) => `${actor.name}: ${keyOf(offset)}`)
      const book = (reason: string) =>
        Effect.sync(() => offsets.forEach((offset, index) => shutdown.uncommitted.set(keys[index]!, `offsets below ${offset.offset} completed but not committed (${reason})`)))
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.interruptible(subscription.commit(offsets)).pipe(
          Effect.timeoutOption(Duration.millis(Math.max(0, shutdown.commitBy - now))),
          Effect.flatMap(Option.match({
            onNone: () =>
              Effect.andThen(
                book("the commit got no answer in time"),
                Effect.fail(TransportError.make("REQUEST_TIMED_OUT", "commit", `Commit of ${keys.join(", ")} got no answer before the shutdown deadline`)),
              ),
            onSome: () => Effect.sync(() => keys.forEach((key) => shutdown.uncommitted.delete(key))),
          })),
        ))
    })
  return {
    group: subscription.group,
    // A getter: a transport may learn the member id after subscribing.
    get memberId() {
      return subscription.memberId
    },
    events: subscription.events,
    commit,
    committed: subscription.committed,
    pause: subscription.pause,
    resume: subscription.resume,
    seek: subscription.seek,
  }
}

export interface Shared {
  readonly state: SystemState
  readonly settings: Settings
  readonly producer: Producer.Producer["Service"]
  readonly telemetry: Readonly<Record<string, string | number>>
  readonly durationsFor: (actor: Actor<unknown>, claim: PartitionClaim) => ReturnType<typeof PartitionActor.registerDurations>
  /** The transport's transactional producers, for exactly-once actors. */
  readonly transactional: Transport["Service"]["transactional"]
}

/** Forks a partition actor for each claim, in the membership's scope. */
const startPartitions = (
  shared: Shared,
  membership: Membership,
  subscription: Subscription,
  scope: Scope.Scope,
  claims: ReadonlyArray<PartitionClaim>,
  memberTransactions: MemberTransactions.MemberTransactions | undefined,
) =>
  Effect.gen(function*() {
    const { actor } = membership
    membership.assignedOnce = true
    membership.assigned = true
    membership.rejoins = 0
    // Claims given during a shutdown are left to the next owner.
    if (shared.state.shutdown.started) return
    const now = yield* Clock.currentTimeMillis
    for (const claim of claims) {
      const key = keyOf(claim)
      const held: Held = { key, status: initialStatus(actor, claim, now), stallAfter: Duration.toMillis(actor.stallAfter), control: undefined, fiber: undefined }
      membership.partitions.set(key, held)
      const deps = {
        actor,
        claim,
        subscription,
        producer: shared.producer,
        status: held.status,
        telemetry: shared.telemetry,
        durations: shared.durationsFor(actor, claim).histogram,
        transactional: shared.transactional,
        memberTransactions,
        startPaused: () => operatorPaused(membership, key),
      }
      held.fiber = yield* PartitionActor.run(deps, (control) => {
        held.control = control
      }).pipe(
        Effect.tapError((error) => Deferred.fail(shared.state.failure, error)),
        Effect.forkIn(scope),
      )
    }
    yield* Effect.logInfo(`Actor ${actor.name} assigned ${claims.map(keyOf).join(", ") || "no partitions"}`)
  })

const revokePartitions = (membership: Membership, event: GroupEvent & { readonly _tag: "Revoked" }) =>
  Effect.gen(function*() {
    const deadline = Duration.toMillis(membership.actor.drainDeadline)
    yield* Effect.forEach(
      event.partitions,
      (tp) => stopPartition(membership, keyOf(tp), deadline),
      { concurrency: "unbounded", discard: true },
    )
    yield* Effect.logInfo(`Actor ${membership.actor.name} gave up ${event.partitions.map(keyOf).join(", ")}`)
    yield* event.acknowledge
  })

// ---------------------------------------------------------------------------------------------
// Group membership

/** Joins the actor's group with a new subscription in a fresh scope, a child of `parent`. */
export const join = (shared: Shared, membership: Membership, parent: Scope.Scope) =>
  Effect.gen(function*() {
    const { actor } = membership
    const transport = yield* Transport
    const scope = yield* Scope.fork(parent)
    const subscribed = yield* Effect.exit(
      Scope.provide(transport.subscribe({ ...actor.consumer, group: actor.group, topics: actor.topics }), scope),
    )
    if (Exit.isFailure(subscribed)) {
      yield* Scope.close(scope, subscribed)
      return yield* Effect.failCause(subscribed.cause)
    }
    // Whatever ends the membership, its partition actors are interrupted first (their
    // finalizers run before the subscription's: they were added after it), then it is left.
    yield* Scope.addFinalizer(scope, Effect.sync(() => membership.partitions.clear()))
    membership.member = true
    membership.assigned = false
    membership.since = yield* Clock.currentTimeMillis
    membership.lastError = undefined
    // Exactly-once with one producer per member: it lives as long as this membership.
    const memberTransactions = actor.delivery === "exactly-once" && actor.transaction.producer === "per-member"
      ? yield* Effect.orDie(Scope.provide(
        MemberTransactions.make({
          transactionalId: `${actor.transaction.idPrefix}-${actor.group}-${globalThis.crypto.randomUUID()}`,
          group: actor.group,
          open: transport.transactional,
          timeout: actor.transaction.timeout,
          retry: actor.commit.retry,
        }),
        scope,
      ))
      : undefined
    return { scope, subscription: boundCommits(subscribed.value, actor, shared.state), memberTransactions } as Joined
  })

/** A membership: its scope, its subscription, and exactly-once's producer per member if it has one. */
export interface Joined {
  readonly scope: Scope.Closeable
  readonly subscription: Subscription
  readonly memberTransactions?: MemberTransactions.MemberTransactions | undefined
}

/**
 * Handles a subscription's events until its event stream ends (the subscription closed) or
 * fails (the membership was lost). Events are handled on their own fiber, so a loss found while
 * a revocation is waiting for in-flight records ends that wait at once.
 */
const consume = (
  shared: Shared,
  membership: Membership,
  joined: Joined,
): Effect.Effect<void, TransportError.TransportError, unknown> =>
  Effect.gen(function*() {
    const { scope, subscription } = joined
    const events = yield* Queue.unbounded<GroupEvent>()
    const pump = Stream.runForEach(subscription.events, (event) => Queue.offer(events, event))
    // The handlers' `Producer`, provided here once for every partition actor forked from this
    // fiber (they inherit its context): provided per partition actor, it cost each a context of
    // its own. Exactly-once actors provide their transactions' producer in its place.
    const handle = Effect.forever(Effect.flatMap(Queue.take(events), (event) =>
      event._tag === "Assigned"
        ? startPartitions(shared, membership, subscription, scope, event.claims, joined.memberTransactions)
        : revokePartitions(membership, event))).pipe(Effect.provideService(Producer.Producer, shared.producer))
    return yield* Effect.raceFirst(pump, handle)
  }).pipe(Effect.ensuring(Scope.close(joined.scope, Exit.void)))

/**
 * Keeps the actor in its group: consumes the first subscription, and whenever a membership is
 * lost, joins again on the rejoin schedule; fails the system after too many failed rejoins in a
 * row. A membership that ended before its first assignment counts as a failed rejoin.
 */
export const keepMembership = (
  shared: Shared,
  membership: Membership,
  first: Joined,
  parent: Scope.Scope,
) =>
  Effect.gen(function*() {
    const { actor } = membership
    const { settings, state } = shared
    let joined: typeof first | undefined = first
    let step = yield* Schedule.toStep(settings.rejoinSchedule)
    let error: TransportError.TransportError | undefined
    while (true) {
      if (joined !== undefined) {
        const exit: Exit.Exit<void, TransportError.TransportError> = yield* Effect.exit(consume(shared, membership, joined))
        joined = undefined
        if (state.shutdown.started) return
        error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined
        const reason = Exit.isFailure(exit) ? describeCause(exit.cause) : "its subscription ended"
        membership.member = false
        membership.since = yield* Clock.currentTimeMillis
        membership.lastError = reason
        if (membership.assigned) {
          step = yield* Schedule.toStep(settings.rejoinSchedule)
          yield* Effect.logError(`Actor ${actor.name} lost its membership of group "${actor.group}": ${reason}; joining again`)
        } else {
          membership.rejoins++
          yield* Effect.logWarning(`Actor ${actor.name} left group "${actor.group}" before an assignment (attempt ${membership.rejoins}): ${reason}`)
        }
      }
      if (membership.rejoins >= settings.maxRejoins) return yield* exhausted(shared, membership)
      const now: number = yield* Clock.currentTimeMillis
      const next: Exit.Exit<readonly [unknown, Duration.Duration], unknown> = yield* Effect.exit(step(now, error as TransportError.TransportError))
      if (Exit.isFailure(next)) return yield* exhausted(shared, membership)
      yield* Effect.sleep(next.value[1])
      if (state.shutdown.started) return
      const attempt = yield* Effect.exit(join(shared, membership, parent))
      if (Exit.isSuccess(attempt)) {
        joined = attempt.value
        yield* Effect.logInfo(`Actor ${actor.name} joined group "${actor.group}" again`)
        continue
      }
      membership.rejoins++
      membership.lastError = describeCause(attempt.cause)
      error = Option.getOrUndefined(Cause.findErrorOption(attempt.cause))
      yield* Effect.logWarning(`Actor ${actor.name} could not join group "${actor.group}" (attempt ${membership.rejoins}): ${membership.lastError}`)
    }
  }).pipe(Effect.annotateLogs({ actor: membership.actor.name }))

const exhausted = (shared: Shared, membership: Membership) =>
  Effect.gen(function*() {
    const error = new MembershipLost({
      actor: membership.actor.name,
      group: membership.actor.group,
      rejoins: membership.rejoins,
      lastError: membership.lastError ?? "unknown",
    })
    yield* Effect.logError(error.message)
    yield* Deferred.fail(shared.state.failure, error)
  })
