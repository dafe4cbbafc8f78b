/**
 * An exactly-once partition actor's Kafka transactions (`delivery: "exactly-once"`).
 *
 * Each partition has its own transactional producer, with an id derived from the group, the
 * topic and the partition. Opening it fences every older producer with that id (Kafka bumps the
 * epoch and aborts what the older one left open), so a zombie that still thinks it owns the
 * partition can no longer commit. On Partita's own Kafka client the offsets also carry the
 * member's generation (KIP-447), and the group refuses them from a member whose generation
 * moved on: that transaction aborts and the partition handles its records again (see
 * `fencingCodes`). kafkajs and the embedded broker fence by the transactional id alone.
 *
 * A transaction holds one partition's work: the records its handlers produced through
 * `Producer`, its dead letters, and the consumed offset, committed together by `commit`. Nothing
 * of it is visible to a read-committed consumer before that, and nothing ever if it aborts.
 *
 * When a transaction cannot commit, the partition actor rewinds: it aborts the transaction,
 * rereads the committed offset and handles the partition again from there. This module asks for
 * that by dying with a `TransactionAborted` signal, which supervision (`partitionActor.ts`)
 * recognises: a rewind, not a defect. The signal can come from a handler's send as well as from a
 * commit, which is why it is a defect and not a typed error: the handler's error channel is the
 * user's.
 *
 * A commit or abort that takes longer than the actor's `transaction.timeout` has an unknown
 * outcome: its request may still reach the coordinator and commit or abort a later transaction
 * (Jepsen found this with Bufstream). The producer is then opened again, with a new epoch, which
 * makes the coordinator refuse anything the old one still has on the way.
 */
import { Cause, Clock, Duration, Effect, Exit, Option, Schedule, Scope } from "effect"
import { TransactionFenced } from "../Actor.ts"
import type { Producer } from "../Producer.ts"
import { RecordContext } from "../RecordContext.ts"
import type { ProducerRecord, RecordMetadata, Transaction, TransactionalProducer } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"

/**
 * Kafka's answers that mean another instance owns the partition now: a newer producer opened
 * the partition's transactional id, or another process took this member's static identity.
 *
 * A group that refuses the transaction's offsets because the member's generation moved on
 * (`ILLEGAL_GENERATION`, `FENCED_MEMBER_EPOCH`, `UNKNOWN_MEMBER_ID`) is not among them: a
 * rebalance bumps the generation of members that keep their partitions too, so the refusal only
 * says this transaction cannot commit. It aborts and the partition handles its records again;
 * a partition that did move is revoked (or its membership lost) and its actor stopped, and a
 * new owner's producer fences anything this one still sends.
 */
export const fencingCodes: ReadonlySet<string> = new Set([
  "PRODUCER_FENCED",
  "INVALID_PRODUCER_EPOCH",
  "FENCED_INSTANCE_ID",
])

/**
 * The signal that ends the open transaction: supervision aborts it and rewinds the partition to
 * its committed offset, or, when `fenced` is set, ends the partition actor without a restart.
 */
export class TransactionAborted {
  readonly _tag = "TransactionAborted"
  readonly reason: string
  readonly fenced: TransactionFenced | undefined
  constructor(reason: string, fenced: TransactionFenced | undefined) {
    this.reason = reason
    this.fenced = fenced
  }
  toString(): string {
    return this.fenced?.message ?? this.reason
  }
}

/** The `TransactionAborted` signal a failure carries, if it does. */
export const abortedBy = (cause: Cause.Cause<unknown>): TransactionAborted | undefined => {
  for (const reason of cause.reasons) {
    if (Cause.isDieReason(reason) && reason.defect instanceof TransactionAborted) return reason.defect
  }
  return undefined
}

/** `${prefix}-${group}-${topic}-${partition}`: the same on every instance, so a new owner fences the old one. */
export const transactionalIdOf = (prefix: string, group: string, topic: string, partition: number): string =>
  `${prefix}-${group}-${topic}-${partition}`

export interface Options {
  readonly transactionalId: string
  readonly group: string
  readonly topic: string
  readonly partition: number
  /** Opens a transactional producer with the id (`Transport.transactional`). */
  readonly open: (transactionalId: string) => Effect.Effect<TransactionalProducer, TransportError, Scope.Scope>
  /** How long a commit or abort may take before its outcome counts as unknown. */
  readonly timeout: Duration.Input
  /** How opening the producer is tried again after a retriable failure. */
  readonly retry: Schedule.Schedule<unknown, unknown>
  /** Kept current: the offset the last commit carried. */
  readonly status: { committed: number }
}

export interface PartitionTransactions {
  readonly transactionalId: string
  /** What handlers and dead letters produce with: sends join the open transaction, beginning one. */
  readonly producer: Producer["Service"]
  /** Clock millis at which the open transaction began; undefined while none is open. */
  readonly openedAt: number | undefined
  /** Begins a transaction unless one is open. */
  readonly begin: Effect.Effect<void>
  /**
   * Whether the open transaction holds output of the record at `offset`, or cannot commit at
   * all (a send in it failed): a failed try of that record cannot be retried inside it.
   */
  readonly produced: (offset: number) => boolean
  /** Commits the open transaction with the consumed offset `offset` (the next to handle). */
  readonly commit: (offset: number) => Effect.Effect<void>
  /** Aborts the open transaction, if any. Never fails: a failed or late abort reopens the producer. */
  readonly abort: Effect.Effect<void>
}

/**
 * The transactional producer of one id, in a scope of its own inside the caller's, that can be
 * opened again: a new producer with the id gets a new epoch, which fences whatever the old one
 * still has on the way. Opening is tried again on `retry` while the failure is retriable.
 */
export const producerSlot = (options: {
  readonly transactionalId: string
  readonly open: (transactionalId: string) => Effect.Effect<TransactionalProducer, TransportError, Scope.Scope>
  readonly timeout: Duration.Input
  readonly retry: Schedule.Schedule<unknown, unknown>
}) =>
  Effect.gen(function*() {
    const { transactionalId } = options
    const timeout = Duration.fromInputUnsafe(options.timeout)
    const parent = yield* Effect.scope
    let producerScope: Scope.Closeable | undefined
    let producer: TransactionalProducer | undefined
    const openProducer = Effect.gen(function*() {
      const scope = yield* Scope.fork(parent)
      const opened = yield* Effect.exit(Scope.provide(options.open(transactionalId), scope))
      if (Exit.isFailure(opened)) {
        yield* Scope.close(scope, Exit.void)
        return yield* Effect.failCause(opened.cause)
      }
      producerScope = scope
      producer = opened.value
    }).pipe(
      Effect.tapError((error) => Effect.logWarning(`Opening transactional producer "${transactionalId}" failed: ${error.message}`)),
      Effect.retry({ schedule: options.retry, while: (error) => error.retriable }),
    )
    yield* openProducer
    return {
      /** The producer, opened again first if a reopen failed. */
      producer: Effect.suspend(() => producer !== undefined ? Effect.succeed(producer) : Effect.as(Effect.orDie(openProducer), producer!)),
      /** A new producer with the id, replacing the old one (closed within the timeout: it may hang). */
      reopen: (why: string) =>
        Effect.gen(function*() {
          yield* Effect.logWarning(`Reopening transactional producer "${transactionalId}": ${why}`)
          const old = producerScope
          producerScope = undefined
          producer = undefined
          if (old !== undefined) yield* Effect.ignore(Effect.timeoutOption(Scope.close(old, Exit.void), timeout))
          yield* Effect.orDie(openProducer)
        }),
    }
  })

/**
 * Opens the partition's transactional producer, fencing older ones, for as long as the scope is
 * open (closing it aborts what is open).
 */
export const make = (options: Options): Effect.Effect<PartitionTransactions, TransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const { transactionalId, topic, partition } = options
    const timeout = Duration.fromInputUnsafe(options.timeout)
    const where = `${topic}/${partition}`

    let open: Transaction | undefined
    let openedAt: number | undefined
    /** Offsets of the records whose handlers sent in the open transaction. */
    const producedIn = new Set<number>()
    /** A send in the open transaction failed: it can only abort. */
    let doomed = false

    const fencedBy = (error: TransportError) =>
      new TransactionFenced({
        topic,
        partition,
        transactionalId,
        code: error.code,
        reason: error.message,
      })
    const die = (reason: string, error?: TransportError): Effect.Effect<never> =>
      Effect.die(
        new TransactionAborted(reason, error !== undefined && fencingCodes.has(error.code) ? fencedBy(error) : undefined),
      )

    const slot = yield* producerSlot(options)
    const reopen = slot.reopen

    const forget = () => {
      open = undefined
      openedAt = undefined
      producedIn.clear()
      doomed = false
    }

    const begin: Effect.Effect<void> = Effect.suspend(() => {
      if (open !== undefined) return Effect.void
      return Effect.gen(function*() {
        const begun = yield* Effect.exit((yield* slot.producer).begin)
        if (Exit.isFailure(begun)) {
          const error = Cause.findErrorOption(begun.cause)
          if (error._tag === "None") return yield* Effect.failCause(begun.cause as Cause.Cause<never>)
          return yield* die(`Beginning a transaction for ${where} failed: ${error.value.message}`, error.value)
        }
        open = begun.value
        openedAt = yield* Clock.currentTimeMillis
      })
    })

    /** Sends in the open transaction (beginning one), noting which record's handler sent. */
    const sendAll = (records: ReadonlyArray<ProducerRecord>) =>
      Effect.gen(function*() {
        yield* begin
        const context = yield* Effect.serviceOption(RecordContext)
        if (Option.isSome(context)) producedIn.add(context.value.offset)
        const sent = yield* Effect.exit(open!.send(records))
        if (Exit.isSuccess(sent)) return sent.value
        const error = Cause.findErrorOption(sent.cause)
        if (error._tag === "None") return yield* Effect.failCause(sent.cause as Cause.Cause<never>)
        if (fencingCodes.has(error.value.code)) return yield* die(`A send for ${where} was fenced`, error.value)
        // The handler sees the error and its policy decides; the transaction can only abort, so
        // the policy's next step runs after a rewind (see `produced`).
        doomed = true
        return yield* Effect.fail(error.value)
      })

    const transactionalProducer: Producer["Service"] = {
      send: (record: ProducerRecord) => Effect.map(sendAll([record]), (metadata): RecordMetadata => metadata[0]!),
      sendAll,
      // Every send is acknowledged before it returns: nothing is left to flush.
      flush: Effect.void,
    }

    const abort: Effect.Effect<void> = Effect.suspend(() => {
      const transaction = open
      forget()
      if (transaction === undefined) return Effect.void
      return Effect.gen(function*() {
        const aborted = yield* Effect.exit(Effect.timeoutOption(transaction.abort, timeout))
        if (Exit.isFailure(aborted)) {
          const error = Cause.findErrorOption(aborted.cause)
          if (error._tag === "None") return yield* Effect.failCause(aborted.cause as Cause.Cause<never>)
          // Fenced: the fencing aborted it already.
          if (fencingCodes.has(error.value.code)) return
          return yield* reopen(`aborting the transaction failed: ${error.value.message}`)
        }
        if (Option.isNone(aborted.value)) yield* reopen(`aborting the transaction got no answer within ${Duration.format(timeout)}`)
      })
    })

    const commit = (offset: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        const transaction = open
        if (transaction === undefined) return Effect.void
        if (doomed) return Effect.andThen(abort, die(`A send in the transaction of ${where} failed`))
        return Effect.gen(function*() {
          const committed = yield* Effect.exit(
            Effect.timeoutOption(
              Effect.andThen(transaction.sendOffsets(options.group, [{ topic, partition, offset }]), transaction.commit),
              timeout,
            ),
          )
          if (Exit.isSuccess(committed) && Option.isSome(committed.value)) {
            forget()
            options.status.committed = offset
            return
          }
          if (Exit.isSuccess(committed)) {
            // No answer in time: committed or not, nobody knows; a new epoch settles it.
            forget()
            yield* reopen(`committing the transaction got no answer within ${Duration.format(timeout)}`)
            return yield* die(`The commit of ${where} at ${offset} got no answer within ${Duration.format(timeout)}`)
          }
          const error = Cause.findErrorOption(committed.cause)
          if (error._tag === "None") return yield* Effect.failCause(committed.cause as Cause.Cause<never>)
          if (fencingCodes.has(error.value.code)) {
            forget()
            return yield* die(`The commit of ${where} was fenced`, error.value)
          }
          yield* abort
          return yield* die(`The commit of ${where} at ${offset} failed: ${error.value.message}`)
        })
      })

    return {
      transactionalId,
      producer: transactionalProducer,
      get openedAt() {
        return openedAt
      },
      begin,
      produced: (offset: number) => doomed || producedIn.has(offset),
      commit,
      abort,
    }
  })
