/**
 * Reading a topic once, to its end as it was when the read began: what a job over a topic (a
 * dead-letter replay, a listing) needs, where an actor reads forever.
 *
 * The read is a consumer group member, so a job that commits its progress resumes where the last
 * one stopped, and read-committed, so it never sees what an aborted transaction wrote. Each
 * partition is done once its next offset reaches the high watermark taken at the start (records
 * written later are left for the next job), or once it has been idle for `idleTimeout`: a
 * transaction marker takes an offset but is never delivered, so the last offsets of a log
 * written transactionally may hold no record to reach. An empty partition, or one whose committed
 * offset is already at the end, is done at once.
 */
import { Deferred, Duration, Effect, Exit, Fiber, Option, Pull, Stream } from "effect"
import type { ConsumerRecord, PartitionClaim, SubscribeOptions, Transport } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"

/** What a batch handler says: go on with the partition, or it has had enough of it. */
export type Next = "more" | "enough"

export interface Options {
  readonly topic: string
  readonly group: string
  /** How long a partition short of its end waits for a record before it counts as done. */
  readonly idleTimeout: Duration.Input
  /** Subscription settings past group, topic and isolation (session timeout, batch size). */
  readonly consumer?: Omit<SubscribeOptions, "group" | "topics" | "isolation" | "reset"> | undefined
}

/**
 * Reads every partition of `options.topic` up to its end at the start and returns once each is
 * done. `handle` gets each partition's records in offset order, in batches, never past the end,
 * one call at a time per partition (calls for different partitions may overlap); it commits
 * whatever it wants committed. A partition that moves to another member mid-read is finished by
 * whichever member holds it.
 */
export const scan = <E, R>(
  transport: Transport["Service"],
  options: Options,
  handle: (partition: number, records: ReadonlyArray<ConsumerRecord>) => Effect.Effect<Next, E, R>,
): Effect.Effect<void, E | TransportError, R> =>
  Effect.scoped(Effect.gen(function*() {
    const description = yield* transport.describeTopic(options.topic)
    const ends = new Map(description.partitions.map((p) => [p.partition, p.highWatermark]))
    const remaining = new Set(description.partitions.filter((p) => p.highWatermark > p.logStartOffset).map((p) => p.partition))
    if (remaining.size === 0) return
    const idle = Duration.fromInputUnsafe(options.idleTimeout)
    const finished = yield* Deferred.make<void, E | TransportError>()
    const finish = (partition: number) =>
      Effect.sync(() => {
        remaining.delete(partition)
        if (remaining.size === 0) Deferred.doneUnsafe(finished, Exit.void)
      })

    const read = (claim: PartitionClaim): Effect.Effect<void, E | TransportError, R> =>
      Effect.scoped(Effect.gen(function*() {
        const end = ends.get(claim.partition) ?? 0
        if (claim.startOffset >= end) return yield* finish(claim.partition)
        const pull = yield* Stream.toPull(claim.records)
        while (true) {
          const next = yield* pull.pipe(
            Effect.timeoutOption(idle),
            Effect.map((batch) => Option.isSome(batch) ? batch.value : "idle" as const),
            Pull.catchDone(() => Effect.succeed("revoked" as const)),
          )
          // Revoked: the partition's next owner (perhaps this member again) finishes it.
          if (next === "revoked") return
          if (next === "idle") return yield* finish(claim.partition)
          const batch = next.flat()
          const inRange = batch.filter((record) => record.offset < end)
          const last = batch[batch.length - 1]!
          const said = inRange.length === 0 ? "enough" : yield* handle(claim.partition, inRange)
          if (said === "enough" || last.offset + 1 >= end) return yield* finish(claim.partition)
        }
      }))

    const subscription = yield* transport.subscribe({
      ...options.consumer,
      group: options.group,
      topics: [options.topic],
      isolation: "read-committed",
      reset: "earliest",
    })
    const scope = yield* Effect.scope
    const readers = new Map<number, Fiber.Fiber<void>>()
    const fail = (exit: Exit.Exit<void, E | TransportError>) =>
      Exit.isFailure(exit) ? Deferred.failCause(finished, exit.cause) : Effect.void
    yield* subscription.events.pipe(
      Stream.runForEach((event) =>
        Effect.gen(function*() {
          if (event._tag === "Assigned") {
            for (const claim of event.claims) {
              if (!remaining.has(claim.partition)) continue
              const reader = yield* read(claim).pipe(Effect.exit, Effect.flatMap(fail), Effect.forkIn(scope))
              readers.set(claim.partition, reader)
            }
            return
          }
          // A revoked claim's stream has ended: its reader finishes the batch it holds, then stops.
          for (const { partition } of event.partitions) {
            const reader = readers.get(partition)
            readers.delete(partition)
            if (reader !== undefined) yield* Fiber.await(reader)
          }
          yield* event.acknowledge
        })
      ),
      // The events end only as the subscription closes, which this scope does after `finished`.
      Effect.andThen(Effect.die(new Error(`The subscription to "${options.topic}" ended before its read did`))),
      Effect.exit,
      Effect.flatMap(fail),
      Effect.forkIn(scope),
    )
    yield* Deferred.await(finished)
  }))
