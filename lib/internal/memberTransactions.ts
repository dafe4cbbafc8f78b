/**
 * Exactly-once with one transactional producer per group member (`transaction.producer:
 * "per-member"`), the KIP-447 model: the member's partitions share one Kafka transaction at a
 * time, and a zombie is fenced by the group, which refuses offsets carrying a generation that
 * lost the partition, rather than by a transactional id per partition. It needs a transport whose
 * transactions carry the member's generation (`Features.groupFencedTransactions`: Partita's own
 * Kafka client).
 *
 * Each claimed partition gets a view with the interface of `partitionTransactions.ts`, so the
 * partition actor runs the same loop either way. What sharing changes:
 * - **Begin** joins the member's open transaction, or begins one. While a transaction is
 *   committing, a partition that has not joined it waits for the next.
 * - **Commit** says "this partition is at a record boundary, with this offset", and waits: the
 *   transaction commits once every partition in it said so, with all their offsets in one
 *   TxnOffsetCommit. Every partition's handler is between records then, so no record's output is
 *   split from its offset. A partition whose handler is slow holds the others' commit back.
 * - **Abort** by any partition (a failed try that produced, a defect, a stop, a halt) aborts the
 *   transaction for all of them: each partition in it rewinds to its committed offset, when it
 *   next sends, commits or waits for the outcome. Kafka Streams does the same with its tasks.
 * - **Unknown outcomes and fencing** reopen the one producer, or end every partition in it.
 *
 * The transactional id is `<prefix>-<group>-<instance>`: with static membership the instance id
 * (a restarted instance fences its predecessor's producer at once), else random per membership.
 * Without a static id, a transaction a crashed member left open stays open until the transport's
 * transaction timeout: read-committed consumers of its output partitions wait that long. The
 * per-partition producers (the default) have no such wait: a partition's next owner fences its
 * id at once.
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Option, type Schedule, Scope, Semaphore } from "effect"
import { TransactionFenced } from "../Actor.ts"
import type { Producer } from "../Producer.ts"
import { RecordContext } from "../RecordContext.ts"
import type { OffsetCommit, ProducerRecord, RecordMetadata, TopicPartition, Transaction, TransactionalProducer } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"
import { fencingCodes, type PartitionTransactions, producerSlot, TransactionAborted } from "./partitionTransactions.ts"

export interface Options {
  readonly transactionalId: string
  readonly group: string
  readonly open: (transactionalId: string) => Effect.Effect<TransactionalProducer, TransportError, Scope.Scope>
  /** How long a commit or abort may take before its outcome counts as unknown. */
  readonly timeout: Duration.Input
  readonly retry: Schedule.Schedule<unknown, unknown>
}

export interface MemberTransactions {
  readonly transactionalId: string
  /** A claimed partition's view of the member's transactions, for as long as the scope is open. */
  readonly partition: (tp: TopicPartition, status: { committed: number }) => Effect.Effect<PartitionTransactions, never, Scope.Scope>
}

type Outcome =
  | { readonly _tag: "Committed" }
  | { readonly _tag: "Aborted"; readonly reason: string; readonly fenced: TransportError | undefined }

interface Participant {
  readonly key: string
  readonly tp: TopicPartition
  readonly status: { committed: number }
  /** At a record boundary, waiting for the outcome, with the offset to commit. */
  ready: number | undefined
}

interface Open {
  readonly transaction: Transaction
  readonly openedAt: number
  readonly participants: Map<string, Participant>
  readonly outcome: Deferred.Deferred<Outcome>
  /** A send in it failed: it can only abort. */
  doomed: boolean
  /** Committing or aborting: nobody joins it any more. */
  ending: boolean
}

export const make = (options: Options): Effect.Effect<MemberTransactions, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const { transactionalId, group } = options
    const timeout = Duration.fromInputUnsafe(options.timeout)
    let open: Open | undefined
    /** Completes when the transaction being ended has ended: who waits to begin waits for it. */
    let ended: Deferred.Deferred<void> | undefined
    /** One begin at a time: two partitions finding none open must not both begin one. */
    const beginning = yield* Semaphore.make(1)

    const slot = yield* producerSlot(options)
    const reopen = slot.reopen

    /** Ends the open transaction with `outcome` for everyone in it. */
    const finish = (current: Open, outcome: Outcome) =>
      Effect.gen(function*() {
        if (open === current) open = undefined
        yield* Deferred.succeed(current.outcome, outcome)
        const waiting = ended
        ended = undefined
        if (waiting !== undefined) yield* Deferred.succeed(waiting, undefined)
      })

    /** The abort request itself; a failed or late one reopens the producer, which aborts it too. */
    const abortRequest = (current: Open) =>
      Effect.gen(function*() {
        const aborted = yield* Effect.exit(Effect.timeoutOption(current.transaction.abort, timeout))
        if (Exit.isFailure(aborted)) {
          const error = Cause.findErrorOption(aborted.cause)
          if (error._tag === "Some" && !fencingCodes.has(error.value.code)) {
            yield* reopen(`aborting the transaction failed: ${error.value.message}`)
          }
        } else if (Option.isNone(aborted.value)) {
          yield* reopen(`aborting the transaction got no answer within ${Duration.format(timeout)}`)
        }
      })

    /** Aborts the open transaction for everyone in it (or waits for it to end, if it is ending). */
    const abortOpen = (current: Open, reason: string, fenced?: TransportError) =>
      Effect.gen(function*() {
        if (current.ending) return yield* Effect.asVoid(Deferred.await(current.outcome))
        current.ending = true
        ended ??= Deferred.makeUnsafe<void>()
        if (fenced === undefined) yield* abortRequest(current)
        yield* finish(current, { _tag: "Aborted", reason, fenced })
      })

    /** Commits once every participant is at a boundary; run by the one that made it so. */
    const commitOpen = (current: Open) =>
      Effect.gen(function*() {
        current.ending = true
        ended ??= Deferred.makeUnsafe<void>()
        if (current.doomed) {
          yield* abortRequest(current)
          return yield* finish(current, { _tag: "Aborted", reason: "a send in the transaction failed", fenced: undefined })
        }
        const offsets: Array<OffsetCommit> = [...current.participants.values()].map((p) => ({ ...p.tp, offset: p.ready! }))
        const committed = yield* Effect.exit(
          Effect.timeoutOption(Effect.andThen(current.transaction.sendOffsets(group, offsets), current.transaction.commit), timeout),
        )
        if (Exit.isSuccess(committed) && Option.isSome(committed.value)) {
          for (const participant of current.participants.values()) participant.status.committed = participant.ready!
          return yield* finish(current, { _tag: "Committed" })
        }
        if (Exit.isSuccess(committed)) {
          yield* reopen(`committing the transaction got no answer within ${Duration.format(timeout)}`)
          return yield* finish(current, { _tag: "Aborted", reason: `the commit got no answer within ${Duration.format(timeout)}`, fenced: undefined })
        }
        const error = Cause.findErrorOption(committed.cause)
        if (error._tag === "None") {
          yield* finish(current, { _tag: "Aborted", reason: "the commit was interrupted", fenced: undefined })
          return yield* Effect.failCause(committed.cause as Cause.Cause<never>)
        }
        if (error.value.code === "PRODUCER_FENCED" || error.value.code === "INVALID_PRODUCER_EPOCH") {
          return yield* finish(current, { _tag: "Aborted", reason: error.value.message, fenced: error.value })
        }
        // The group refused the offsets (a generation that lost a partition), or anything else:
        // abort for all; partitions still this member's are handled again, the others revoked.
        yield* abortRequest(current)
        yield* finish(current, { _tag: "Aborted", reason: `the commit failed: ${error.value.message}`, fenced: undefined })
      })

    const partition = (tp: TopicPartition, status: { committed: number }) =>
      Effect.gen(function*() {
        const key = `${tp.topic}/${tp.partition}`
        const where = key
        const self: Participant = { key, tp, status, ready: undefined }
        /** The transaction this partition joined, if any. */
        let joined: Open | undefined
        const producedIn = new Set<number>()

        const rewindFor = (outcome: Outcome): Effect.Effect<never> =>
          Effect.die(
            new TransactionAborted(
              `the member's transaction aborted: ${outcome._tag === "Aborted" ? outcome.reason : "?"}`,
              outcome._tag === "Aborted" && outcome.fenced !== undefined
                ? new TransactionFenced({ ...tp, transactionalId, code: outcome.fenced.code, reason: outcome.fenced.message })
                : undefined,
            ),
          )
        /** This partition's transaction ended without it: its work there is gone, so it rewinds. */
        const stale = () => joined !== undefined && (open !== joined || joined.ending)

        const leave = () => {
          joined?.participants.delete(key)
          joined = undefined
          self.ready = undefined
          producedIn.clear()
        }

        const begin: Effect.Effect<void> = Effect.suspend(() => {
          if (joined !== undefined && !stale()) return Effect.void
          return Effect.gen(function*() {
            if (joined !== undefined) {
              const outcome = yield* Deferred.await(joined.outcome)
              leave()
              if (outcome._tag === "Aborted") return yield* rewindFor(outcome)
            }
            yield* joinOrBegin
          })
        })
        const joinOrBegin = beginning.withPermits(1)(Effect.gen(function*() {
          while (open !== undefined && open.ending && ended !== undefined) yield* Deferred.await(ended)
          if (open === undefined) {
            const begun = yield* Effect.exit((yield* slot.producer).begin)
            if (Exit.isFailure(begun)) {
              const error = Cause.findErrorOption(begun.cause)
              if (error._tag === "None") return yield* Effect.failCause(begun.cause as Cause.Cause<never>)
              return yield* Effect.die(new TransactionAborted(`Beginning a transaction failed: ${error.value.message}`, undefined))
            }
            open = {
              transaction: begun.value,
              openedAt: yield* Clock.currentTimeMillis,
              participants: new Map(),
              outcome: yield* Deferred.make<Outcome>(),
              doomed: false,
              ending: false,
            }
          }
          joined = open
          open!.participants.set(key, self)
        }))

        const sendAll = (records: ReadonlyArray<ProducerRecord>) =>
          Effect.gen(function*() {
            yield* begin
            const current = joined!
            const context = yield* Effect.serviceOption(RecordContext)
            if (Option.isSome(context)) producedIn.add(context.value.offset)
            const sent = yield* Effect.exit(current.transaction.send(records))
            if (Exit.isSuccess(sent)) return sent.value
            const error = Cause.findErrorOption(sent.cause)
            if (error._tag === "None") return yield* Effect.failCause(sent.cause as Cause.Cause<never>)
            if (stale()) return yield* rewindFor(yield* Deferred.await(current.outcome))
            if (error.value.code === "PRODUCER_FENCED" || error.value.code === "INVALID_PRODUCER_EPOCH") {
              yield* abortOpen(current, error.value.message, error.value)
              return yield* rewindFor(yield* Deferred.await(current.outcome))
            }
            current.doomed = true
            return yield* Effect.fail(error.value)
          })

        const view: PartitionTransactions = {
          transactionalId,
          producer: {
            send: (record: ProducerRecord) => Effect.map(sendAll([record]), (metadata): RecordMetadata => metadata[0]!),
            sendAll,
            flush: Effect.void,
          } satisfies Producer["Service"],
          get openedAt() {
            return joined === undefined ? undefined : joined.openedAt
          },
          begin,
          produced: (offset) => joined !== undefined && (joined.doomed || stale() || producedIn.has(offset)),
          commit: (offset) =>
            Effect.suspend(() => {
              const current = joined
              if (current === undefined) return Effect.void
              return Effect.gen(function*() {
                if (!stale()) {
                  self.ready = offset
                  const everyone = [...current.participants.values()].every((p) => p.ready !== undefined)
                  if (everyone) yield* commitOpen(current)
                }
                const outcome = yield* Deferred.await(current.outcome)
                leave()
                if (outcome._tag === "Aborted") return yield* rewindFor(outcome)
              })
            }),
          abort: Effect.suspend(() => {
            const current = joined
            if (current === undefined) return Effect.void
            return Effect.andThen(
              stale() ? Effect.void : abortOpen(current, `${where} aborted it`),
              Effect.sync(leave),
            )
          }),
        }
        // A partition that goes away mid-transaction takes the transaction with it.
        yield* Effect.addFinalizer(() => view.abort)
        return view
      })

    return { transactionalId, partition }
  })
