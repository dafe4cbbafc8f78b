/**
 * Ended spans on their way to an OTLP/HTTP endpoint, sent the way OpenTelemetry's batch span
 * processor sends them: a bounded queue (a span that finds it full is dropped and counted, never
 * held without limit), one export in flight at a time, a batch sent as soon as it is full or once
 * the delay since the last export has passed, and what is still queued sent when the scope closes.
 *
 * Why not Effect's `OtlpExporter`: its buffer has no bound and it starts another export for every
 * full batch, so a collector slower than the pipeline (a Jaeger on the same machine takes about
 * 9 µs of CPU per span) makes requests and memory pile up for as long as the pipeline runs.
 * Tracing must never be what takes a pipeline down; losing spans under overload is the standard
 * trade, and the drops are counted (`otel.sdk.processor.span.processed`, `error.type=queue_full`)
 * and logged.
 */
import { Cause, Clock, Duration, Effect, Fiber, Metric, Schedule, Scope } from "effect"
import type * as HttpBody from "effect/http/HttpBody"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import { Signal } from "./signal.ts"

export interface Options<A> {
  readonly url: string
  /** Spans held at most; OpenTelemetry's `OTEL_BSP_MAX_QUEUE_SIZE`, default 2048. */
  readonly maxQueueSize: number
  /** Spans per request at most; `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512. */
  readonly maxExportBatchSize: number
  /** The longest a span waits for a batch to fill; `OTEL_BSP_SCHEDULE_DELAY`. */
  readonly scheduledDelay: Duration.Input
  /** One request, retries included; `OTEL_BSP_EXPORT_TIMEOUT`, default 30 seconds. */
  readonly exportTimeout: Duration.Input
  /** How long closing the scope may take to send what is queued. */
  readonly shutdownTimeout: Duration.Input
  readonly body: (items: ReadonlyArray<A>) => HttpBody.HttpBody
  /** What the exporter metrics call it: protobuf or JSON over HTTP. */
  readonly exporterType: "otlp_http_span_exporter" | "otlp_http_json_span_exporter"
  /** Retries of a request refused as transient (429, 5xx, no connection): exponential from `base`, jittered. */
  readonly retry?: { readonly base: Duration.Input; readonly times: number } | undefined
}

export interface SpanExport<A> {
  /** Queues an ended span, or drops it if the queue is full. Never blocks, never fails. */
  readonly push: (item: A) => void
  /** Counts so far, for tests and diagnostics. */
  readonly stats: () => { readonly queued: number; readonly exported: number; readonly dropped: number; readonly failed: number }
}

/** Instances so far, for the `{type}/{index}` component names the OpenTelemetry SDK metrics use. */
let instances = 0
const processed = Metric.counter("otel.sdk.processor.span.processed", {
  description: "Spans the batch processor finished with: exported, or dropped (error.type)",
  incremental: true,
})
const exportedMetric = Metric.counter("otel.sdk.exporter.span.exported", {
  description: "Spans sent to the OTLP endpoint; error.type when the export failed",
  incremental: true,
})

/** How often at most a warning about dropped or failed spans is logged. */
const warnEvery = 60_000

export const make = <A>(options: Options<A>): Effect.Effect<SpanExport<A>, never, HttpClient.HttpClient | Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.Scope
    const index = instances++
    const processor = { "otel.component.type": "batching_span_processor", "otel.component.name": `batching_span_processor/${index}` }
    const exporterAttributes = { "otel.component.type": options.exporterType, "otel.component.name": `${options.exporterType}/${index}` }
    const batchSize = Math.max(1, Math.min(options.maxExportBatchSize, options.maxQueueSize))
    // At least a millisecond: a zero delay would have the idle exporter wake in a tight loop.
    const delay = Duration.max(Duration.fromInputUnsafe(options.scheduledDelay), Duration.millis(1))
    // Never traced itself (a span per export would feed the queue it drains), never propagating.
    const client = (yield* HttpClient.HttpClient).pipe(
      HttpClient.tap((response) => Effect.ignore(response.arrayBuffer)),
      HttpClient.tapError((error) => error.response ? Effect.ignore(error.response.arrayBuffer) : Effect.void),
      HttpClient.filterStatusOk,
      HttpClient.transformResponse(Effect.provideService(HttpClient.TracerPropagationEnabled, false)),
      // 429 and 5xx (and a failed connection) are retried, as OTLP asks; the export timeout bounds it all.
      HttpClient.retryTransient({
        schedule: Schedule.exponential(options.retry?.base ?? "200 millis").pipe(Schedule.jittered),
        times: options.retry?.times ?? 5,
      }),
    )
    const request = HttpClientRequest.post(options.url)
    // Taken from the front by index, not `splice`: a large queue (a raised OTEL_BSP_MAX_QUEUE_SIZE)
    // would otherwise move every span left on each batch taken.
    let queue: Array<A> = []
    let head = 0
    const queued = () => queue.length - head
    const ready = new Signal()
    let closing = false
    let exported = 0
    let dropped = 0
    let failed = 0
    // Drops are counted per span (a plain number) and reported to the metric per batch taken.
    let reportedDropped = 0
    let lastWarning = -Infinity

    const warn = (message: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        if (now - lastWarning < warnEvery) return
        lastWarning = now
        yield* Effect.logWarning(message)
      })

    /** Spans dropped since the last report, to the metric (and the log, at most once a minute). */
    const reportDrops = Effect.gen(function*() {
      const newlyDropped = dropped - reportedDropped
      reportedDropped = dropped
      if (newlyDropped > 0) {
        yield* Metric.update(Metric.withAttributes(processed, { ...processor, "error.type": "queue_full" }), newlyDropped)
        yield* warn(
          `Tracing: the span queue (${options.maxQueueSize}) was full; ${dropped} spans dropped so far. The OTLP endpoint takes spans slower than they end: sample fewer, or raise OTEL_BSP_MAX_QUEUE_SIZE.`,
        )
      }
    })

    /**
     * A batch handed to the exporter: as OpenTelemetry's SDK metrics count it, the batch's spans
     * are processed now (whatever the export's outcome), and so are the spans dropped since.
     */
    const submitted = (size: number) =>
      Effect.andThen(Metric.update(Metric.withAttributes(processed, processor), size), reportDrops)


    /** The export failure as `error.type`: the HTTP status, else the error's tag (a timeout, no connection). */
    const errorType = (cause: Cause.Cause<unknown>): string => {
      const error = Cause.findErrorOption(cause)
      const value: unknown = error._tag === "Some" ? error.value : undefined
      if (typeof value !== "object" || value === null) return "_OTHER"
      const reason = (value as { readonly reason?: { readonly _tag?: unknown; readonly response?: { readonly status?: unknown } } }).reason
      if (reason?._tag === "StatusCodeError" && typeof reason.response?.status === "number") return String(reason.response.status)
      if (typeof reason?._tag === "string") return reason._tag
      return "_tag" in value ? String(value._tag) : "_OTHER"
    }

    const send = (batch: ReadonlyArray<A>): Effect.Effect<void> =>
      Effect.andThen(
        submitted(batch.length),
        // Encoding inside the effect: a span that cannot be written fails its batch, never the exporter.
        Effect.suspend(() => client.execute(HttpClientRequest.setBody(request, options.body(batch)))),
      ).pipe(
        Effect.timeout(options.exportTimeout),
        Effect.matchCauseEffect({
          onSuccess: () => {
            exported += batch.length
            return Metric.update(Metric.withAttributes(exportedMetric, exporterAttributes), batch.length)
          },
          onFailure: (cause) => {
            failed += batch.length
            const error = errorType(cause)
            return Effect.andThen(
              Metric.update(Metric.withAttributes(exportedMetric, { ...exporterAttributes, "error.type": error }), batch.length),
              warn(`Tracing: exporting ${batch.length} spans to ${options.url} failed (${error}); ${failed} spans lost so far.`),
            )
          },
        }),
        Effect.withTracerEnabled(false),
      )

    const take = (): Array<A> => {
      if (head === 0 && queue.length <= batchSize) {
        const all = queue
        queue = []
        return all
      }
      const batch = queue.slice(head, head + batchSize)
      // The slots taken let go of their spans now, not at the next compaction.
      queue.fill(undefined as A, head, head + batch.length)
      head += batch.length
      if (head === queue.length) {
        queue = []
        head = 0
      } else if (head >= 8 * batchSize && head * 2 >= queue.length) {
        queue = queue.slice(head)
        head = 0
      }
      return batch
    }

    // The only sender: one request in flight at a time follows from there being one loop.
    const exporter = Effect.gen(function*() {
      while (true) {
        if (queued() < batchSize && !closing) {
          const woken = ready.wait
          yield* Effect.raceFirst(woken, Effect.sleep(delay))
        }
        if (queued() > 0) yield* send(take())
        else if (closing) return
      }
    })
    // Not forked into `scope`: its interruption must come after the drain below, and a scope may
    // run its finalizers concurrently. This finalizer owns the fiber's whole life.
    const running = yield* Effect.forkDetach(exporter)
    yield* Scope.addFinalizer(
      scope,
      Effect.suspend(() => {
        closing = true
        ready.notify()
        return Fiber.await(running)
      }).pipe(
        Effect.timeoutOption(options.shutdownTimeout),
        Effect.andThen(Fiber.interrupt(running)),
        // What closing left unsent is counted too: processed, failed by the shutdown.
        Effect.andThen(Effect.suspend(() => {
          const left = queued()
          return Effect.andThen(
            left > 0 ? Metric.update(Metric.withAttributes(processed, { ...processor, "error.type": "shutdown" }), left) : Effect.void,
            reportDrops,
          )
        })),
      ),
    )

    return {
      push: (item: A) => {
        if (queued() >= options.maxQueueSize) {
          dropped++
          return
        }
        queue.push(item)
        if (queued() === batchSize) ready.notify()
      },
      stats: () => ({ queued: queued(), exported, dropped, failed }),
    }
  })
