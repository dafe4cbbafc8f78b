/**
 * `KafkaJsTransport.subscribe`: a consumer group membership on one kafkajs consumer, its claims fed
 * by `eachBatch`, and revocation mapped onto kafkajs' eager rebalances (see `KafkaJsTransport`'s
 * module documentation for how and why).
 */
import kafkajs from "kafkajs"
import type { EachBatchPayload, PartitionAssigner } from "kafkajs"
import { Cause, Clock, Deferred, Duration, Effect, Exit, LogLevel, Option, Queue, References, Schedule, Stream } from "effect"
import type {
  CommittedOffset,
  ConsumerRecord,
  GroupEvent,
  OffsetCommit,
  PartitionClaim,
  SubscribeOptions,
  Subscription,
  TopicPartition,
} from "../Transport.ts"
import * as TransportError from "../TransportError.ts"
import {
  attempt,
  attemptSync,
  byTopic,
  Calls,
  disconnect,
  type Environment,
  fromKafkaJS,
  keyOf,
  nonRetriable,
  shapeOf,
  toConsumerRecord,
} from "./kafkajs.ts"
import type { JoinGate } from "./joinGate.ts"
import { Sightings } from "./consumerSightings.ts"
import { Signal } from "./signal.ts"

// kafkajs is CommonJS: the default import is `module.exports` on every runtime.
const { KafkaJSProtocolError, PartitionAssigners } = kafkajs

// ---------------------------------------------------------------------------------------------
// Consuming

export class Claim {
  readonly startOffset: number
  /**
   * Whether kafkajs' fetch position is known to match `startOffset`: checked on the first batch
   * rather than set by a seek up front, because a seek makes kafkajs drop the first fetch it has
   * usually sent by then (a whole batch per partition, fetched twice on every assignment).
   */
  positioned = false
  /** A seek to `startOffset` was made: the next batch starts there (after control records kafkajs skips). */
  sought = false
  ended = false
  failure: TransportError.TransportError | undefined = undefined
  paused = false
  /**
   * Chunks of the last fetched batch not yet pulled. kafkajs already moved past them, so the
   * next batch is fetched while these are handled; anything that drops them sets the position.
   */
  buffered: Array<ReadonlyArray<ConsumerRecord>> = []
  readonly changed = new Signal()

  constructor(startOffset: number) {
    this.startOffset = startOffset
  }

  /** Drops the buffered chunks: a seek, a revocation or the end makes them stale. */
  drop(): void {
    if (this.buffered.length === 0) return
    this.buffered = []
    this.changed.notify()
  }

  end(failure: TransportError.TransportError | undefined): void {
    if (this.ended) return
    this.ended = true
    this.failure = failure
    this.buffered = []
    this.changed.notify()
  }
}

/** One kafkajs generation of this member: from a `GROUP_JOIN` to the next rejoin. */
export class Generation {
  state: "preparing" | "assigned" | "revoked" = "preparing"
  /** This member's count of kafkajs joins: names the generation in diagnostics. */
  number = 0
  /** When kafkajs was first seen fetching after this generation was given up, with no join since. */
  strayFetchSince: number | undefined = undefined
  readonly claims = new Map<string, Claim>()
  /** Done once the claims exist, or the generation was revoked before they did. */
  readonly settled = Deferred.makeUnsafe<void>()
  /** Done once the member acknowledged the revocation, or none was needed. */
  readonly acknowledged = Deferred.makeUnsafe<void>()
  readonly assignment: ReadonlyArray<TopicPartition>
  constructor(assignment: ReadonlyArray<TopicPartition>) {
    this.assignment = assignment
  }
}

export type Control =
  | { readonly _tag: "Joined"; readonly generation: Generation }
  | { readonly _tag: "Revoked"; readonly generation: Generation }
  | { readonly _tag: "Stop" }

/**
 * What `eachBatch` throws to make kafkajs join the group again: its runner answers a rebalance
 * error (this one among them) with a JoinGroup, keeping its member id if it has one.
 */
export const staleGeneration = (group: string, generation: number): Error =>
  new KafkaJSProtocolError(Object.assign(
    new Error(`A batch for group "${group}" arrived for generation ${generation}, which this member already gave up: joining again`),
    { type: "ILLEGAL_GENERATION", code: 22, retriable: false },
  ))

/** Heartbeat errors after which kafkajs rejoins the group. */
export const rejoinsGroup = (error: unknown): boolean => {
  const type = shapeOf(error).type
  return type === "REBALANCE_IN_PROGRESS" || type === "NOT_COORDINATOR_FOR_GROUP" ||
    type === "ILLEGAL_GENERATION" || type === "UNKNOWN_MEMBER_ID"
}

export const claimStream = (
  claim: Claim,
): Stream.Stream<ReadonlyArray<ConsumerRecord>, TransportError.TransportError> => {
  const pull: Effect.Effect<
    readonly [ReadonlyArray<ConsumerRecord>],
    TransportError.TransportError | Cause.Done
  > = Effect.suspend(() => {
    if (claim.ended) return claim.failure === undefined ? Cause.done() : Effect.fail(claim.failure)
    if (claim.paused || claim.buffered.length === 0) return Effect.andThen(claim.changed.wait, pull)
    const chunk = claim.buffered.shift()!
    // The last one: wakes an `eachBatch` waiting to hand over the next batch.
    if (claim.buffered.length === 0) claim.changed.notify()
    return Effect.succeed([chunk] as const)
  })
  return Stream.fromPull(Effect.succeed(pull))
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/** How often a subscription logs, at Debug, what its consumer was last seen doing. */
const sightingsInterval = Duration.seconds(5)

export const subscribe = (environment: Environment, options: SubscribeOptions) =>
  Effect.gen(function* () {
    const { admin, adminCalls } = environment
    const group = options.group
    const sessionTimeout = Duration.toMillis(options.sessionTimeout ?? environment.defaults.sessionTimeout)
    const heartbeatInterval = Duration.toMillis(options.heartbeatInterval ?? environment.defaults.heartbeatInterval)
    const rebalanceTimeout = Duration.toMillis(options.rebalanceTimeout ?? environment.defaults.rebalanceTimeout)
    const maxBatchSize = Math.max(1, options.maxBatchSize ?? environment.defaults.maxBatchSize)
    const reset = options.reset ?? "earliest"
    // kafkajs throttles heartbeats to one per interval, so asking often is cheap.
    const tick = Duration.millis(Math.min(1000, Math.max(50, heartbeatInterval / 2)))
    // A held eachBatch must let kafkajs rejoin before the coordinator gives up on this member.
    const acknowledgeWindow = Duration.millis(Math.max(1000, rebalanceTimeout - 2 * heartbeatInterval))
    // The leader must send SyncGroup before its session expires and before followers' requests time out.
    const leaderWindow = Duration.millis(Math.min(sessionTimeout, environment.requestTimeout) / 2)

    if (heartbeatInterval >= sessionTimeout) {
      return yield* Effect.fail(
        TransportError.make(
          "INVALID_SESSION_TIMEOUT",
          "subscribe",
          `Cannot join group "${group}": the heartbeat interval (${heartbeatInterval} ms) must be shorter than the session timeout (${sessionTimeout} ms)`,
        ),
      )
    }

    // Fails at once for a missing topic, and bounds how many batches kafkajs hands over at once.
    // (No topics would ask for every topic's metadata.)
    const metadata = options.topics.length === 0 ? { topics: [] } : yield* adminCalls.attempt(
      "subscribe",
      `Cannot subscribe group "${group}" to ${options.topics.map((topic) => `"${topic}"`).join(", ")}`,
      () => admin.fetchTopicMetadata({ topics: [...options.topics] }),
    )
    const partitionCount = metadata.topics.reduce((sum, topic) => sum + topic.partitions.length, 0)

    const context = yield* Effect.context<never>()
    const runPromise = Effect.runPromiseWith(context)
    const clock = yield* Clock.Clock
    const sightings = new Sightings()
    const note = (what: string, detail?: string) => sightings.note(what, clock.currentTimeMillisUnsafe(), detail)
    let joins = 0
    const events = yield* Queue.unbounded<GroupEvent, TransportError.TransportError | Cause.Done>()
    const control = yield* Queue.unbounded<Control>()
    const state = {
      current: undefined as Generation | undefined,
      /** The last generation revoked with an acknowledgement pending. */
      revoked: undefined as Generation | undefined,
      memberId: "",
      fatal: undefined as TransportError.TransportError | undefined,
      closed: false,
      /** kafkajs' heartbeat, from the last `eachBatch` payload: kept to heartbeat while a rejoin is held. */
      heartbeat: undefined as (() => Promise<void>) | undefined,
      /**
       * Whether kafkajs' runner runs, from the last `eachBatch` payload. kafkajs 2.2.4 answers a
       * commit made while its runner is stopped (a crash disconnecting it, before its CRASH event)
       * as done without sending it; the commit is refused here instead.
       */
      running: undefined as (() => boolean) | undefined,
    }

    /** Ends a generation's claims and, if the member held any, asks it to acknowledge. Synchronous. */
    const revoke = (generation: Generation, why: string, failure?: TransportError.TransportError): void => {
      if (generation.state === "revoked") return
      const wasAssigned = generation.state === "assigned"
      generation.state = "revoked"
      note("revoke", `generation ${generation.number} ${wasAssigned ? "assigned" : "preparing"}, by ${why}`)
      for (const claim of generation.claims.values()) claim.end(failure)
      Deferred.doneUnsafe(generation.settled, Exit.void)
      if (
        !wasAssigned || generation.claims.size === 0 || state.closed || state.fatal !== undefined ||
        failure !== undefined
      ) {
        Deferred.doneUnsafe(generation.acknowledged, Exit.void)
        return
      }
      state.revoked = generation
      Queue.offerUnsafe(events, {
        _tag: "Revoked",
        partitions: generation.assignment,
        acknowledge: Effect.andThen(
          Effect.sync(() => note("acknowledged", `generation ${generation.number}`)),
          Deferred.succeed(generation.acknowledged, undefined),
        ),
      })
      Queue.offerUnsafe(control, { _tag: "Revoked", generation })
    }

    /**
     * The member is out: its streams fail, its events fail, nothing waits on it any more, and
     * kafkajs stops (it would otherwise fetch, again and again, batches nobody takes).
     */
    const fatal = (error: TransportError.TransportError): void => {
      if (state.closed || state.fatal !== undefined) return
      state.fatal = error
      if (state.current !== undefined) revoke(state.current, "a fatal error", error)
      if (state.revoked !== undefined) Deferred.doneUnsafe(state.revoked.acknowledged, Exit.void)
      Queue.failCauseUnsafe(events, Cause.fail(error))
      Queue.offerUnsafe(control, { _tag: "Stop" })
    }

    // kafkajs calls the assignor's `protocol()` while it builds every JoinGroup (which `joinGate`
    // then holds until the revocation is acknowledged), and its `assign()` on the group leader
    // before SyncGroup, held the same way.
    const assignor: PartitionAssigner = (assignorConfig) => {
      const roundRobin = PartitionAssigners.roundRobin(assignorConfig)
      return {
        name: roundRobin.name,
        version: roundRobin.version,
        protocol: (subscription) => {
          if (state.current !== undefined) revoke(state.current, "a JoinGroup being built")
          return roundRobin.protocol.call(roundRobin, subscription)
        },
        assign: (groupState) =>
          runPromise(Effect.suspend(() => {
            const revoked = state.revoked
            return revoked === undefined
              ? Effect.void
              : Effect.asVoid(Effect.timeoutOption(Deferred.await(revoked.acknowledged), leaderWindow))
          })).then(() => roundRobin.assign.call(roundRobin, groupState)),
      }
    }

    // Every JoinGroup waits for the acknowledgement of the generation it ends (see `joinGate.ts`):
    // the commits made before acknowledging land, and no member starts on the partitions first.
    // Bounded as the hold in `eachBatch` is; past it, `awaitAcknowledgement` removes the member.
    const runFork = Effect.runForkWith(context)
    const joinGate: JoinGate = (release) => {
      if (state.current !== undefined) revoke(state.current, "a JoinGroup sent")
      const revoked = state.revoked
      if (revoked === undefined || Deferred.isDoneUnsafe(revoked.acknowledged)) {
        note("join.sent")
        return release()
      }
      const hold = sightings.hold("JoinGroup", clock.currentTimeMillisUnsafe(), `generation ${revoked.number}'s acknowledgement`)
      runFork(
        Effect.timeoutOption(Deferred.await(revoked.acknowledged), acknowledgeWindow).pipe(
          Effect.ensuring(Effect.sync(() => {
            sightings.release(hold)
            note("join.sent", `after a hold for generation ${revoked.number}`)
            release()
          })),
        ),
      )
    }

    const client = environment.kafka(options.clientId, joinGate)
    // The consumer's calls its own disconnect does not wait for (commits, the subscribe's metadata
    // reads); `run` and `stop` are not among them: its disconnect stops the runner first.
    const consumerCalls = new Calls()
    const consumer = yield* attemptSync("subscribe", `Cannot create a consumer for group "${group}"`, () =>
      client.consumer({
        groupId: group,
        partitionAssigners: [assignor],
        sessionTimeout,
        heartbeatInterval,
        rebalanceTimeout,
        maxWaitTimeInMs: Duration.toMillis(environment.options.fetchMaxWait ?? environment.defaults.fetchMaxWait),
        maxBytesPerPartition: environment.options.maxBytesPerPartition ?? environment.defaults.maxBytesPerPartition,
        maxBytes: environment.options.maxBytes ?? environment.defaults.maxBytes,
        readUncommitted: options.isolation === "read-uncommitted",
        allowAutoTopicCreation: false,
        retry: { ...environment.defaults.retry, ...environment.options.retry },
      }))
    yield* Effect.acquireRelease(
      attempt("subscribe", `Cannot connect a consumer of group "${group}"`, () =>
        consumer.connect()),
      () =>
        disconnect(consumer, `consumer of group "${group}"`, consumerCalls, Duration.millis(environment.requestTimeout)),
    )

    const removers = [
      consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        state.memberId = payload.memberId
        if (state.current !== undefined) {
          revoke(state.current, "a new join")
        }
        const assignment = Object.entries(payload.memberAssignment)
          .flatMap(([topic, partitions]) =>
            partitions.map((partition) => ({ topic, partition }))
          )
          .sort((a, b) => a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition)
        const generation = new Generation(assignment)
        generation.number = ++joins
        note("join", `generation ${generation.number}, ${assignment.length} partitions, member ${payload.memberId}${payload.isLeader ? ", leader" : ""}`)
        state.current = generation
        Queue.offerUnsafe(control, { _tag: "Joined", generation })
      }),
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        // A restart brings a new kafkajs runner: the old one's heartbeat is for a stopped member.
        state.heartbeat = undefined
        note("crash", `${payload.restart ? "restarting" : "for good"}: ${shapeOf(payload.error).message ?? String(payload.error)}`)
        if (state.current !== undefined) revoke(state.current, "a crash")
        if (!payload.restart) {
          fatal(
            nonRetriable(fromKafkaJS("subscribe", `The consumer of group "${group}" stopped`)(payload.error)),
          )
        }
      }),
    ]
    /**
     * kafkajs fetching while the generation it had is given up and no join followed: the state
     * `onBatch` answers with a rebalance error when a batch comes (see there). With nothing to
     * fetch no batch comes, so after a session timeout of such fetches (past which the
     * coordinator has dropped a member that neither joins nor heartbeats) the member is out.
     */
    const strayFetch = (): void => {
      const current = state.current
      if (current === undefined || current.state !== "revoked" || !Deferred.isDoneUnsafe(current.acknowledged)) return
      const now = clock.currentTimeMillisUnsafe()
      current.strayFetchSince ??= now
      if (now - current.strayFetchSince < sessionTimeout) return
      fatal(
        TransportError.make(
          "UNKNOWN_MEMBER_ID",
          "subscribe",
          `Member ${state.memberId} left group "${group}": kafkajs failed to join again after generation ${current.number} and went on fetching without a member id for ${sessionTimeout} ms`,
        ),
      )
    }
    // The rest of kafkajs' instrumentation is only seen, for the Debug line below.
    const { events: kafkaEvents } = consumer
    removers.push(
      consumer.on(kafkaEvents.FETCH_START, () => note("fetch.start")),
      consumer.on(kafkaEvents.FETCH, ({ payload }) => {
        note("fetch", `${payload.duration} ms`)
        strayFetch()
      }),
      consumer.on(kafkaEvents.START_BATCH_PROCESS, ({ payload }) => note("batch.start", `${payload.topic}/${payload.partition}@${payload.firstOffset}`)),
      consumer.on(kafkaEvents.END_BATCH_PROCESS, ({ payload }) => note("batch.end", `${payload.topic}/${payload.partition} in ${payload.duration} ms`)),
      consumer.on(kafkaEvents.HEARTBEAT, ({ payload }) => note("heartbeat", `generation id ${payload.groupGenerationId}`)),
      consumer.on(kafkaEvents.COMMIT_OFFSETS, () => note("commit")),
      consumer.on(kafkaEvents.REBALANCING, () => note("rebalancing")),
      consumer.on(kafkaEvents.REQUEST_TIMEOUT, ({ payload }) => note("request.timeout", `${payload.apiName} to ${payload.broker}`)),
      consumer.on(kafkaEvents.CONNECT, () => note("connect")),
      consumer.on(kafkaEvents.DISCONNECT, () => note("disconnect")),
      consumer.on(kafkaEvents.STOP, () => note("stop")),
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const remove of removers) remove()
      })
    )

    /** The committed offset of each assigned partition, or its reset position. */
    const startOffsets = (assignment: ReadonlyArray<TopicPartition>) =>
      Effect.gen(function* () {
        const positions = new Map<string, number>()
        if (assignment.length === 0) return positions
        const topics = byTopic(assignment).map(({ topic }) => topic)
        const committed = yield* adminCalls.attempt(
          "subscribe",
          `Cannot read the committed offsets of group "${group}"`,
          () => admin.fetchOffsets({ groupId: group, topics }),
        )
        for (const { topic, partitions } of committed) {
          for (const { partition, offset } of partitions) {
            if (Number(offset) >= 0) positions.set(keyOf({ topic, partition }), Number(offset))
          }
        }
        for (const { topic, partitions } of byTopic(assignment.filter((tp) => !positions.has(keyOf(tp))))) {
          const offsets = yield* adminCalls.attempt(
            "subscribe",
            `Cannot read the offsets of topic "${topic}"`,
            () => admin.fetchTopicOffsets(topic),
          )
          for (const { partition, low, high } of offsets) {
            if (partitions.includes(partition)) {
              positions.set(keyOf({ topic, partition }), Number(reset === "latest" ? high : low))
            }
          }
        }
        return positions
      })

    /** Turns a joined generation into claims, once the previous one was acknowledged. */
    const prepare = (generation: Generation) =>
      Effect.gen(function* () {
        if (generation.state !== "preparing") return
        const positions = yield* startOffsets(generation.assignment).pipe(
          Effect.retry({
            schedule: Schedule.max([Schedule.exponential("200 millis"), Schedule.recurs(5)]),
            while: (error) => error.retriable,
          }),
        )
        if (generation.state !== "preparing") return
        // kafkajs keeps pauses across rebalances: a new claim is not paused. (Its position is
        // checked against `startOffset` on its first batch: see `Claim.positioned`.)
        const resumed = yield* attemptSync(
          "subscribe",
          `Cannot position the consumer of group "${group}"`,
          () => consumer.resume(byTopic(generation.assignment)),
        ).pipe(Effect.option)
        // Not running any more: the crash that stopped it revokes this generation.
        if (Option.isNone(resumed) || generation.state !== "preparing") return
        const claims = generation.assignment.map((tp): PartitionClaim => {
          const claim = new Claim(positions.get(keyOf(tp)) ?? 0)
          generation.claims.set(keyOf(tp), claim)
          return { ...tp, startOffset: positions.get(keyOf(tp)) ?? 0, records: claimStream(claim) }
        })
        generation.state = "assigned"
        Deferred.doneUnsafe(generation.settled, Exit.void)
        Queue.offerUnsafe(events, { _tag: "Assigned", claims })
      }).pipe(
        Effect.catch((error) =>
          Effect.sync(() =>
            fatal(nonRetriable(
              TransportError.make(
                error.code,
                "subscribe",
                `Cannot start consuming for group "${group}": ${error.message}`,
                error,
              ),
            ))
          )
        ),
      )

    /** A member that does not acknowledge within the rebalance timeout is removed, as the contract says. */
    const awaitAcknowledgement = (generation: Generation) =>
      Effect.gen(function* () {
        // While held, kafkajs sends no heartbeats, and the coordinator drops a member that has not
        // rejoined within the session timeout: heartbeat for it (answered REBALANCE_IN_PROGRESS, each
        // still renews the session). A member that never got a batch has no heartbeat to send.
        const heartbeats = Effect.forever(Effect.andThen(
          Effect.sleep(Duration.millis(heartbeatInterval)),
          Effect.suspend(() => {
            const heartbeat = state.heartbeat
            return heartbeat === undefined ? Effect.void : Effect.ignore(Effect.tryPromise(heartbeat))
          }),
        ))
        const acknowledged = yield* Effect.timeoutOption(
          Effect.raceFirst(Deferred.await(generation.acknowledged), heartbeats),
          acknowledgeWindow,
        )
        if (Option.isSome(acknowledged) || state.closed || state.fatal !== undefined) return
        fatal(
          TransportError.make(
            "UNKNOWN_MEMBER_ID",
            "subscribe",
            `Member ${state.memberId} left group "${group}": it did not acknowledge a revocation within ${
              Duration.toMillis(acknowledgeWindow)
            } ms`,
          ),
        )
      })

    // Joins and revocations are handled in order, so a generation's claims start only after the
    // previous one was acknowledged (its last commits are what the new start offsets read).
    const stop = Effect.ignore(
      attempt("subscribe", `Cannot stop the consumer of group "${group}"`, () => consumer.stop()),
    )
    yield* Effect.forkScoped(Effect.forever(
      Effect.flatMap(Queue.take(control), (item) => {
        switch (item._tag) {
          case "Joined":
            return prepare(item.generation)
          case "Revoked":
            return awaitAcknowledgement(item.generation)
          case "Stop":
            return stop
        }
      }),
    ))

    /** The generation now, for the Debug line: what the member holds and what it still owes. */
    const describeGeneration = (): string => {
      const current = state.current
      if (current === undefined) return "not joined yet"
      const claims = [...current.claims.values()]
      const waiting = claims.filter((claim) => claim.buffered.length > 0).length
      const paused = claims.filter((claim) => claim.paused).length
      const owed = state.revoked !== undefined && !Deferred.isDoneUnsafe(state.revoked.acknowledged)
        ? `; generation ${state.revoked.number}'s revocation not acknowledged yet`
        : ""
      const out = state.fatal === undefined ? "" : `; out of the group: ${state.fatal.message}`
      return `generation ${current.number} ${current.state}, ${current.assignment.length} partitions (${waiting} with chunks not pulled, ${paused} paused)${owed}${out}`
    }
    // Off unless Debug is on: it is for diagnosing a member that stopped consuming.
    if (!LogLevel.isLessThan("Debug", yield* References.MinimumLogLevel)) {
      yield* Effect.forkScoped(Effect.forever(Effect.andThen(
        Effect.sleep(sightingsInterval),
        Effect.suspend(() =>
          Effect.logDebug(
            `Kafka consumer of group "${group}" (member ${state.memberId || "none yet"}): ${describeGeneration()}; ${
              sightings.describe(clock.currentTimeMillisUnsafe())
            }`,
          )
        ),
      )))
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        state.closed = true
        if (state.current !== undefined) revoke(state.current, "the subscription closing")
        if (state.revoked !== undefined) Deferred.doneUnsafe(state.revoked.acknowledged, Exit.void)
        Queue.endUnsafe(events)
      })
    )

    /** Hands a fetched batch to its claim's stream and waits until it is pulled, heartbeating. */
    const onBatch = (payload: EachBatchPayload) =>
      Effect.gen(function* () {
        const generation = state.current
        if (generation === undefined || state.closed) return undefined
        const { batch } = payload
        // A batch for a generation given up (revoked and acknowledged) with no join since: kafkajs
        // (2.2.4) fetches then only when its rejoin failed. After UNKNOWN_MEMBER_ID its runner drops
        // its member id and joins; when that JoinGroup fails with a retriable error (a coordinator
        // still loading after the broker was frozen, F5), it goes back to fetching its old
        // assignment with no member id, for which it sends no heartbeat, so no answer ever tells it
        // to join: a member out of the group, fetching for ever what nobody takes. Tell it to join.
        if (generation.state === "revoked" && Deferred.isDoneUnsafe(generation.acknowledged)) {
          note("stale.batch", `${keyOf(batch)} of generation ${generation.number}: asking kafkajs to join again`)
          return staleGeneration(group, generation.number)
        }
        state.heartbeat = payload.heartbeat
        state.running = payload.isRunning
        // Done when kafkajs stops, or a seek made this batch stale.
        const halt = Deferred.makeUnsafe<void>()
        let rejoin: unknown = undefined
        const heartbeats = Effect.gen(function* () {
          while (true) {
            yield* Effect.sleep(tick)
            if (!payload.isRunning() || payload.isStale()) {
              Deferred.doneUnsafe(halt, Exit.void)
              return
            }
            const beat = yield* Effect.result(
              Effect.tryPromise({ try: () => payload.heartbeat(), catch: (error) => error }),
            )
            if (beat._tag === "Failure" && rejoinsGroup(beat.failure)) {
              rejoin = beat.failure
              revoke(generation, `a heartbeat answered ${shapeOf(beat.failure).type}`)
              return
            }
          }
        })
        const hold = sightings.hold(
          `eachBatch of ${keyOf(batch)}`,
          clock.currentTimeMillisUnsafe(),
          `generation ${generation.number}'s claims`,
        )
        return yield* Effect.scoped(Effect.gen(function* () {
          yield* Effect.forkScoped(heartbeats)
          const halted = Deferred.await(halt)
          yield* Effect.raceFirst(Deferred.await(generation.settled), halted)
          const claim = generation.claims.get(keyOf(batch))
          if (claim !== undefined) {
            const stopped = () => claim.ended || claim.paused || Deferred.isDoneUnsafe(halt) || payload.isStale()
            const untilPulled = Effect.gen(function* () {
              while (claim.buffered.length > 0 && !stopped()) {
                yield* Effect.raceFirst(claim.changed.wait, halted)
              }
            })
            // The first batch must start at `startOffset`. kafkajs starts where the group
            // committed, like `startOffset`, so this is rare: a reset to the latest offset read at
            // another moment, a commit made in between. Then seek once, and this batch is stale.
            if (!claim.positioned && !stopped()) {
              const fetched = (batch as { readonly fetchedOffset?: unknown }).fetchedOffset
              if (claim.sought || (typeof fetched === "string" && Number(fetched) === claim.startOffset)) {
                claim.positioned = true
              } else {
                claim.sought = true
                yield* attemptSync(
                  "seek",
                  `Cannot position ${keyOf(batch)} at ${claim.startOffset}`,
                  () => consumer.seek({ topic: batch.topic, partition: batch.partition, offset: String(claim.startOffset) }),
                ).pipe(Effect.ignore)
              }
            }
            // One batch ahead at most: wait (heartbeating) until the one before is pulled whole.
            sightings.step(hold, "the previous batch to be pulled")
            yield* untilPulled
            // Not taken when paused or stale: kafkajs did not move past it and fetches it again.
            if (!stopped() && batch.messages.length > 0) {
              const records = batch.messages.map(toConsumerRecord(batch.topic, batch.partition))
              for (let from = 0; from < records.length; from += maxBatchSize) {
                claim.buffered.push(records.slice(from, from + maxBatchSize))
              }
              const last = records[records.length - 1]!.offset
              payload.resolveOffset(String(last))
              claim.changed.notify()
              // At the log's end there is nothing to fetch ahead: hold it until pulled, so a
              // rebalance found meanwhile still waits for the acknowledgement (1. below).
              if (Number(batch.highWatermark) <= last + 1) {
                sightings.step(hold, "its batch to be pulled (the log's end)")
                yield* untilPulled
              }
            }
          }
          // kafkajs rejoins only once this returns: hold it until the member acknowledged.
          if (generation.state === "revoked") {
            sightings.step(hold, `generation ${generation.number}'s acknowledgement`)
            yield* Effect.timeoutOption(Deferred.await(generation.acknowledged), acknowledgeWindow)
          }
          return rejoin
        })).pipe(Effect.ensuring(Effect.sync(() => sightings.release(hold))))
      })

    yield* consumerCalls.attempt(
      "subscribe",
      `Cannot join group "${group}"`,
      () => consumer.subscribe({ topics: [...options.topics], fromBeginning: reset === "earliest" }),
    )
    // Resolves once kafkajs first joined the group (or crashed trying).
    yield* attempt("subscribe", `Cannot join group "${group}"`, () =>
      consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: Math.max(1, partitionCount),
        eachBatch: (payload) =>
          runPromise(onBatch(payload)).then((rejoin) => {
            // The heartbeat's rebalance error makes kafkajs rejoin, after the acknowledgement.
            if (rejoin !== undefined) throw rejoin
          }),
      }))
    if (state.fatal !== undefined) return yield* Effect.fail(state.fatal)

    /** The claim this member holds now for `tp`, if any. */
    const held = (tp: TopicPartition): Claim | undefined => {
      const current = state.current
      return current?.state === "assigned" ? current.claims.get(keyOf(tp)) : undefined
    }

    const notHeld = (tp: TopicPartition, operation: string) =>
      TransportError.make(
        state.fatal === undefined && !state.closed ? "ILLEGAL_GENERATION" : "UNKNOWN_MEMBER_ID",
        operation,
        `Member ${state.memberId} of group "${group}" does not hold ${keyOf(tp)}`,
      )

    const setPaused = (partitions: ReadonlyArray<TopicPartition>, paused: boolean) =>
      attemptSync(
        paused ? "pause" : "resume",
        `Cannot ${paused ? "pause" : "resume"} partitions of group "${group}"`,
        () => {
          const claimed = partitions.filter((tp) => {
            const claim = held(tp)
            if (claim === undefined) return false
            claim.paused = paused
            // Chunks already buffered stay, and are pulled after `resume`.
            claim.changed.notify()
            return true
          })
          if (claimed.length === 0) return
          if (paused) consumer.pause(byTopic(claimed))
          else consumer.resume(byTopic(claimed))
        },
      ).pipe(Effect.ignore)

    const subscription: Subscription = {
      group,
      get memberId() {
        return state.memberId
      },
      events: Stream.fromQueue(events),
      commit: (offsets) =>
        Effect.suspend(() => {
          if (offsets.length === 0) return Effect.void
          const revoking = state.revoked !== undefined && !Deferred.isDoneUnsafe(state.revoked.acknowledged)
            ? state.revoked
            : undefined
          for (const offset of offsets) {
            const ours = held(offset) !== undefined || revoking?.claims.has(keyOf(offset)) === true
            if (!ours || state.fatal !== undefined || state.closed) {
              return Effect.fail(notHeld(offset, "commit"))
            }
          }
          if (state.running !== undefined && !state.running()) {
            return Effect.fail(TransportError.make(
              "COORDINATOR_NOT_AVAILABLE",
              "commit",
              `Cannot commit offsets of group "${group}": its kafkajs consumer is stopping (it crashed or is restarting), so the commit would not be sent; try again once it runs`,
            ))
          }
          return consumerCalls.attempt("commit", `Cannot commit offsets of group "${group}"`, () =>
            consumer.commitOffsets(offsets.map((offset: OffsetCommit) => ({
              topic: offset.topic,
              partition: offset.partition,
              offset: String(offset.offset),
              metadata: offset.metadata ?? null,
            })))).pipe(
              Effect.mapError((error) =>
                error.code === "ILLEGAL_GENERATION" || error.code === "REBALANCE_IN_PROGRESS" ||
                  error.code === "UNKNOWN_MEMBER_ID"
                  ? TransportError.make(
                    error.code,
                    "commit",
                    `Cannot commit offsets of group "${group}": the group rebalanced and member ${state.memberId}'s generation ended first; whoever gets these partitions resumes from the last committed offset (${error.code})`,
                    error,
                  )
                  : error
              ),
            )
        }),
      committed: (partitions) =>
        partitions.length === 0 ? Effect.succeed([]) : adminCalls.attempt(
          "committed",
          `Cannot read the committed offsets of group "${group}"`,
          () => admin.fetchOffsets({ groupId: group, topics: byTopic(partitions).map(({ topic }) => topic) }),
        ).pipe(Effect.map((responses) =>
          partitions.flatMap((tp): Array<CommittedOffset> => {
            const found = responses
              .find(({ topic }) => topic === tp.topic)?.partitions
              .find(({ partition }) => partition === tp.partition)
            return found === undefined || Number(found.offset) < 0
              ? []
              : [{ ...tp, offset: Number(found.offset), metadata: found.metadata ?? "" }]
          })
        )),
      pause: (partitions) => setPaused(partitions, true),
      resume: (partitions) => setPaused(partitions, false),
      seek: (tp, offset) =>
        Effect.suspend(() => {
          const claim = held(tp)
          if (claim === undefined || state.fatal !== undefined || state.closed) {
            return Effect.fail(notHeld(tp, "seek"))
          }
          // Buffered chunks are from before the seek.
          claim.drop()
          claim.positioned = true
          return attemptSync(
            "seek",
            `Cannot seek ${keyOf(tp)} to ${offset}`,
            () => consumer.seek({ ...tp, offset: String(offset) }),
          )
        }),
    }
    return subscription
  })
