/**
 * The telemetry hooks a partition actor's core calls: when a batch is polled, when a record's
 * handling starts and ends (with its retries and pauses), when offsets are committed, when a
 * record is dead-lettered. The core knows nothing of spans beyond handing the one a hook returns
 * to the handler's context; what a hook records lives in its implementation
 * (`partitionTracing.ts` for Partita's spans), as franz-go keeps telemetry behind `kgo.Hook`s.
 *
 * With tracing off the core gets `noHooks`, and it checks `enabled` once per record rather than
 * calling them, so the hot path pays nothing for telemetry it does not record.
 */
import { Effect, type Exit, type Tracer } from "effect"
import type { ConsumerRecord } from "../Transport.ts"
import type { TransportError } from "../TransportError.ts"

/** How a record's handling ended, when it ended without a failure. */
export type RecordOutcome = "handled" | "dead_lettered" | "skipped"

export interface PartitionHooks {
  /** False for `noHooks`: the core may skip the calls (and the clock reads they would need). */
  readonly enabled: boolean
  /** The fetcher starts waiting for the next batch. */
  readonly onPollStart: () => void
  /** A batch arrived from the transport. */
  readonly onPoll: (batch: ReadonlyArray<ConsumerRecord>) => void
  /**
   * A record's handling starts, at `startTime` (Clock nanoseconds) or now. What it returns is
   * the handler's parent span while the record is handled, and is given back to `onRecordEnd`.
   */
  readonly onRecordStart: (record: ConsumerRecord, startTime?: bigint) => Tracer.Span | undefined
  /**
   * A batch handler's batch (the records that may start, in offset order) starts. What it
   * returns is the handler's parent span while the batch is handled, retries and bisected halves
   * included, and is given back to `onRecordEnd` when the batch ends.
   */
  readonly onBatchStart: (records: ReadonlyArray<ConsumerRecord>) => Tracer.Span | undefined
  /**
   * A record's (or a batch's) handling ended: `exit` fails only for a halt, a defect or an interruption.
   * Returns the end time it used (Clock nanoseconds), which the next record in line may start at.
   */
  readonly onRecordEnd: (
    span: Tracer.Span,
    exit: Exit.Exit<unknown, unknown>,
    outcome: RecordOutcome,
    endTime?: bigint,
  ) => bigint
  /**
   * A failed try is retried, or the partition paused for it, after `delay`, or (a batch) it is
   * bisected; runs in the record's (or batch's) context.
   */
  readonly onRecordRetry: (
    what: "retry" | "pause" | "bisect",
    details: { readonly attempt: number; readonly delayMillis: number; readonly error: string },
  ) => Effect.Effect<void>
  /** Wraps one commit of `offset`, inline or from the committer. */
  readonly onCommit: (offset: number, commit: Effect.Effect<void, TransportError>) => Effect.Effect<void, TransportError>
  /** Wraps the write of `record`'s dead letter. */
  readonly onDeadLetter: <A, E, R>(record: ConsumerRecord, send: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** Hooks that record nothing: telemetry off. */
export const noHooks: PartitionHooks = {
  enabled: false,
  onPollStart: () => {},
  onPoll: () => {},
  onRecordStart: () => undefined,
  onBatchStart: () => undefined,
  onRecordEnd: (_span, _exit, _outcome, endTime) => endTime ?? 0n,
  onRecordRetry: () => Effect.void,
  onCommit: (_offset, commit) => commit,
  onDeadLetter: (_record, send) => send,
}
