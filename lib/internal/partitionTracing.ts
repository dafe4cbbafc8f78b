/**
 * Partita's spans for one partition actor, as its telemetry hooks (see `partitionHooks.ts`):
 * a `poll {topic}` span per batch linking the records' producer contexts, a `process {topic}`
 * span per record (child of, or linked to, the producer's span in its headers) with an event per
 * retry or pause, or for a batch handler one `process {topic}` span per batch linking every
 * record's producer context (the conventions' batch form), with an event per retry, pause or bisection, a `commit {topic}` span per commit, and a link from a dead letter's `send` to
 * the record's producer span. Follows OpenTelemetry's messaging conventions.
 */
import { Cause, type Clock, Context, Effect, Exit, Option, Tracer } from "effect"
import type { ConsumerRecord } from "../Transport.ts"
import type * as Tracing from "../Tracing.ts"
import * as OtlpTracer from "./otlpTracer.ts"
import type { PartitionHooks, RecordOutcome } from "./partitionHooks.ts"

const keyText = new TextDecoder()

/** At most this many links per poll span: reading more contexts than are kept would only repeat, per record, the parsing each process span does anyway. */
const maxPollLinks = 128

export const make = (options: {
  readonly topic: string
  readonly settings: Tracing.Settings
  readonly tracer: Tracer.Tracer
  readonly clock: Clock.Clock
  /** The messaging and transport attributes every span of this partition carries. */
  readonly attributes: Readonly<Record<string, unknown>>
}): PartitionHooks => {
  const { topic, settings, tracer, clock } = options
  // Written once per partition actor, not per span (see `OtlpTracer.SharedAttributes`).
  const processAttributes = new OtlpTracer.SharedAttributes({
    ...options.attributes,
    "messaging.operation.name": "process",
    "messaging.operation.type": "process",
  })
  const pollAttributes = new OtlpTracer.SharedAttributes({
    ...options.attributes,
    "messaging.operation.name": "poll",
    "messaging.operation.type": "receive",
  })
  const processName = `process ${topic}`
  let waitingSince = clock.currentTimeNanosUnsafe()

  return {
    enabled: true,
    onPollStart: () => {
      waitingSince = clock.currentTimeNanosUnsafe()
    },
    // CLIENT, from when the actor asked for records to when they came, linking them.
    onPoll: (batch) => {
      const links: Array<Tracer.SpanLink> = []
      for (const record of batch) {
        if (links.length >= maxPollLinks) break
        const context = settings.propagator.extract(record.headers)
        if (context !== undefined) links.push({ span: context, attributes: {} })
      }
      const span = tracer.span({
        name: `poll ${topic}`,
        parent: Option.none(),
        annotations: Context.empty(),
        links,
        startTime: waitingSince,
        kind: "client",
        root: true,
        sampled: true,
      })
      OtlpTracer.setAll(span, pollAttributes)
      span.attribute("messaging.batch.message_count", batch.length)
      span.end(clock.currentTimeNanosUnsafe(), Exit.void)
    },
    // CONSUMER; its parent is the producer's span from the headers, or it links to it.
    onRecordStart: (record: ConsumerRecord, startTime: bigint = clock.currentTimeNanosUnsafe()) => {
      const inbound = settings.propagator.extract(record.headers)
      const asParent = inbound !== undefined && settings.consumerParent === "parent"
      const span = tracer.span({
        name: processName,
        parent: asParent ? Option.some(inbound) : Option.none(),
        annotations: inbound?.annotations ?? Context.empty(),
        links: inbound !== undefined && !asParent ? [{ span: inbound, attributes: {} }] : [],
        startTime,
        kind: "consumer",
        root: !asParent,
        sampled: inbound?.sampled ?? true,
      })
      OtlpTracer.setAll(span, processAttributes)
      span.attribute("messaging.kafka.offset", record.offset)
      if (record.key !== null) span.attribute("messaging.kafka.message.key", keyText.decode(record.key))
      if (record.value === null) span.attribute("messaging.kafka.message.tombstone", true)
      return span
    },
    // CONSUMER, a root: a batch has no one parent, so each record's context is a link.
    onBatchStart: (records) => {
      const links: Array<Tracer.SpanLink> = []
      for (const record of records) {
        const context = settings.propagator.extract(record.headers)
        if (context !== undefined) links.push({ span: context, attributes: { "messaging.kafka.offset": record.offset } })
      }
      const span = tracer.span({
        name: processName,
        parent: Option.none(),
        annotations: Context.empty(),
        links,
        startTime: clock.currentTimeNanosUnsafe(),
        kind: "consumer",
        root: true,
        sampled: true,
      })
      OtlpTracer.setAll(span, processAttributes)
      span.attribute("messaging.batch.message_count", records.length)
      span.attribute("messaging.kafka.offset", records[0]!.offset)
      return span
    },
    onRecordEnd: (
      span: Tracer.Span,
      exit: Exit.Exit<unknown, unknown>,
      outcome: RecordOutcome,
      endTime: bigint = clock.currentTimeNanosUnsafe(),
    ) => {
      if (Exit.isFailure(exit)) {
        const error = Cause.findErrorOption(exit.cause)
        const tag = error._tag === "Some" ? (error.value as { readonly _tag?: unknown })._tag : undefined
        span.attribute("error.type", typeof tag === "string" ? tag : "_OTHER")
      } else if (outcome !== "handled") {
        span.attribute("partita.outcome", outcome)
      }
      span.end(endTime, exit)
      return endTime
    },
    onRecordRetry: (what, details) =>
      Effect.ignore(Effect.map(Effect.currentSpan, (span) =>
        span.event(what, clock.currentTimeNanosUnsafe(), {
          "messaging.retry.attempt": details.attempt,
          "messaging.retry.delay_ms": details.delayMillis,
          "error.type": details.error,
        }))),
    onCommit: (offset, commit) =>
      Effect.useSpan(`commit ${topic}`, {
        kind: "client",
        attributes: {
          ...options.attributes,
          "messaging.operation.name": "commit",
          "messaging.operation.type": "settle",
          "messaging.kafka.offset": offset,
        },
      }, (span) => Effect.tapError(commit, (error) => Effect.sync(() => span.attribute("error.type", error.code)))),
    onDeadLetter: (record, send) => {
      const original = settings.propagator.extract(record.headers)
      return original === undefined ? send : Effect.linkSpans(send, original, { "partita.link": "dead-lettered record" })
    },
  }
}
