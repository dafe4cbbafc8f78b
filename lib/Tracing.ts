/**
 * OpenTelemetry tracing across produce → consume hops.
 *
 * Partita's spans are Effect spans, so they go to whatever `Tracer` the program has. Tracing is
 * off until a layer of this module is provided: then the producer opens a `send {topic}` span
 * (PRODUCER) and writes its W3C `traceparent` into the record's headers, and every partition
 * actor opens a `poll {topic}` span (CLIENT) per fetched batch, a `process {topic}` span
 * (CONSUMER) per record, whose parent is the producer's span carried in the headers, and a
 * `commit {topic}` span (CLIENT) per commit. Attributes follow the OpenTelemetry messaging
 * semantic conventions. Off, none of this runs: no span, no header, a boolean check per batch.
 *
 * Two ready layers:
 * - `layerOtlp` / `layerFromEnv`: Effect's own OTLP exporter (traces and metrics over HTTP, protobuf or JSON)
 *   to Jaeger or any collector, configured by the standard `OTEL_*` environment. Chosen over
 *   `@effect/opentelemetry` because it needs no OpenTelemetry SDK packages at all and runs
 *   unchanged on Bun, Deno and Node. Spans are Partita's own lean spans, written straight to
 *   OTLP bytes on top of that exporter (`internal/otlpTracer.ts`): a span per record is the hot
 *   path of a traced consumer, and Effect's tracer built and encoded an object tree per span.
 * - `layer`: tracing on with the tracer the program already has (for instance a bridge to an
 *   OpenTelemetry SDK the application set up).
 *
 * There is no monkey-patching. If you also enable `@opentelemetry/instrumentation-kafkajs`
 * (Node only), set `producerSpans: false` so sends are not traced twice.
 *
 * @since 0.1.0
 */
import process from "node:process"
import { Context, Data, Duration, Effect, Layer, Tracer } from "effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpMetrics from "effect/observability/OtlpMetrics"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as PartitaOtlpTracer from "./internal/otlpTracer.ts"
import * as OtelBridge from "./internal/otelBridge.ts"
import * as TraceContext from "./internal/traceContext.ts"
import type { Header } from "./Transport.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  readonly enabled: boolean
  /**
   * How a `process` span relates to the producer's span in the record's headers: as its
   * `parent` (the default: one trace per message, across hops) or as a `link` (each process
   * span starts its own trace, pointing back at the producer's).
   */
  readonly consumerParent: "parent" | "link"
  /** Open `send` spans and inject `traceparent`. Turn off when another instrumentation does. */
  readonly producerSpans: boolean
  /** How trace context is written to and read from record headers. Default: W3C Trace Context. */
  readonly propagator: Propagator
}

/**
 * Writes a span's context into record headers and reads a producer's context back. Reading
 * never fails: a malformed context reads as none.
 *
 * @since 0.1.0
 * @category models
 */
export interface Propagator {
  readonly inject: (headers: ReadonlyArray<Header> | undefined, span: Tracer.Span) => ReadonlyArray<Header>
  readonly extract: (headers: ReadonlyArray<Header>) => Tracer.ExternalSpan | undefined
}

/**
 * W3C Trace Context (`traceparent`, with `tracestate` and `baggage` carried through).
 *
 * @since 0.1.0
 * @category propagators
 */
export const w3c: Propagator = { inject: TraceContext.inject, extract: TraceContext.extract }

/**
 * The tracing settings in effect; off by default.
 *
 * @since 0.1.0
 * @category references
 */
export const Settings = Context.Reference<Settings>("partita/Tracing/Settings", {
  defaultValue: () => ({ enabled: false, consumerParent: "parent", producerSpans: true, propagator: w3c }),
})

/**
 * Tracing on, with the program's own `Tracer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (settings: Partial<Omit<Settings, "enabled">> = {}): Layer.Layer<never> =>
  Layer.succeed(Settings, { enabled: true, consumerParent: "parent", producerSpans: true, propagator: w3c, ...settings }) as Layer.Layer<never>

/**
 * Tracing on, with Effect's spans bridged to `@opentelemetry/api`: they become spans of the
 * tracer provider the application registered (its SDK, exporters and samplers), and trace
 * context travels through the application's global propagator.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGlobal = (
  settings: Partial<Omit<Settings, "enabled" | "propagator">> & { readonly tracerName?: string | undefined } = {},
): Layer.Layer<never> => {
  const { tracerName, ...rest } = settings
  return Layer.mergeAll(
    Layer.succeed(Tracer.Tracer, OtelBridge.make({ name: tracerName ?? "partita" })),
    layer({ ...rest, propagator: OtelBridge.globalPropagator }),
  ) as Layer.Layer<never>
}

/**
 * The samplers of `OTEL_TRACES_SAMPLER`.
 *
 * @since 0.1.0
 * @category models
 */
export type Sampler =
  | "always_on"
  | "always_off"
  | "traceidratio"
  | "parentbased_always_on"
  | "parentbased_always_off"
  | "parentbased_traceidratio"

const samplers: ReadonlyArray<Sampler> = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
]

const randomUnit = (): number => crypto.getRandomValues(new Uint32Array(1))[0]! / 0x1_0000_0000

/**
 * A tracer that decides `sampled` as the OpenTelemetry sampler named does: root spans by the
 * sampler, and for `parentbased_*` every other span as its parent was.
 *
 * @since 0.1.0
 * @category constructors
 */
export const withSampler = (tracer: Tracer.Tracer, sampler: Sampler, ratio = 1): Tracer.Tracer => {
  const root = (): boolean =>
    sampler.endsWith("always_on") ? true : sampler.endsWith("always_off") ? false : randomUnit() < ratio
  const parentBased = sampler.startsWith("parentbased_")
  return Tracer.make({
    span: (options) => {
      const parent = options.parent._tag === "Some" && !options.root ? options.parent.value : undefined
      const sampled = parentBased && parent !== undefined ? parent.sampled : root()
      // Usually the decision Effect already made (a span per record comes through here).
      return tracer.span(options.sampled === sampled ? options : { ...options, sampled })
    },
    ...(tracer.context === undefined ? {} : { context: tracer.context }),
  })
}

/**
 * @since 0.1.0
 * @category models
 */
export interface OtlpOptions {
  /** The OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`. */
  readonly endpoint: string
  readonly serviceName?: string | undefined
  readonly sampler?: Sampler | undefined
  /** The ratio of `traceidratio` samplers. Default 1. */
  readonly samplerRatio?: number | undefined
  /** How often metrics are sent, and the default of `scheduleDelay`. Default 1 second. */
  readonly exportInterval?: import("effect").Duration.Input | undefined
  /** How long an ended span waits at most for its batch to fill. Default: `exportInterval`. */
  readonly scheduleDelay?: import("effect").Duration.Input | undefined
  /**
   * Ended spans held for export at most; a span that finds the queue full is dropped, counted
   * (`otel.sdk.processor.span.processed` with `error.type=queue_full`) and logged, so a collector
   * slower than the pipeline never makes memory grow. Default 2048, as in OpenTelemetry.
   */
  readonly maxQueueSize?: number | undefined
  /** Spans per export request at most. Default 512. */
  readonly maxExportBatchSize?: number | undefined
  /** How long one export request may take, retries included. Default 30 seconds. */
  readonly exportTimeout?: import("effect").Duration.Input | undefined
  /** How long closing the layer may take to send the spans still queued. Default 3 seconds. */
  readonly shutdownTimeout?: import("effect").Duration.Input | undefined
  readonly consumerParent?: "parent" | "link" | undefined
  readonly producerSpans?: boolean | undefined
  /** How spans and metrics are encoded: `http/protobuf` (the default, as in OpenTelemetry) or `http/json`. */
  readonly protocol?: "http/protobuf" | "http/json" | undefined
}

/**
 * Traces and metrics exported over OTLP/HTTP (protobuf, or JSON) with Effect's own exporter;
 * tracing on.
 * Spans still buffered are sent when the layer's scope closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerOtlp = (options: OtlpOptions): Layer.Layer<never> => {
  const base = options.endpoint.replace(/\/+$/, "")
  const resource = { serviceName: options.serviceName ?? "partita" }
  const exportInterval = options.exportInterval ?? "1 second"
  const protocol = options.protocol ?? "http/protobuf"
  const tracer = Layer.effect(
    Tracer.Tracer,
    Effect.map(
      PartitaOtlpTracer.make({
        url: `${base}/v1/traces`,
        resource,
        exportInterval: options.scheduleDelay ?? exportInterval,
        protocol,
        maxQueueSize: options.maxQueueSize,
        maxExportBatchSize: options.maxExportBatchSize,
        exportTimeout: options.exportTimeout,
        shutdownTimeout: options.shutdownTimeout,
      }),
      (tracer) => withSampler(tracer, options.sampler ?? "parentbased_always_on", options.samplerRatio ?? 1),
    ),
  )
  const metrics = OtlpMetrics.layer({ url: `${base}/v1/metrics`, resource, exportInterval })
  return Layer.mergeAll(
    tracer,
    metrics,
    layer({
      ...(options.consumerParent === undefined ? {} : { consumerParent: options.consumerParent }),
      ...(options.producerSpans === undefined ? {} : { producerSpans: options.producerSpans }),
    }),
  ).pipe(
    Layer.provide(OtlpExporter.layerFlusher),
    Layer.provide(protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf),
    Layer.provide(FetchHttpClient.layer),
  ) as Layer.Layer<never>
}

/**
 * A tracing setting in the environment that cannot be used.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidTracingConfig extends Data.TaggedError("InvalidTracingConfig")<{
  readonly variable: string
  readonly value: string
  readonly expected: string
}> {
  override get message(): string {
    return `${this.variable} is "${this.value}": expected ${this.expected}`
  }
}

/**
 * Tracing as the standard environment says: `OTEL_EXPORTER_OTLP_ENDPOINT` (off when unset),
 * `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`,
 * `OTEL_EXPORTER_OTLP_PROTOCOL` (or `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`): `http/protobuf` (default)
 * or `http/json`; the batch span processor's `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT`
 * (milliseconds), `OTEL_BSP_MAX_QUEUE_SIZE` and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
 * A setting that cannot be used fails the layer with `InvalidTracingConfig`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromEnv = (
  defaults: { readonly serviceName?: string | undefined } = {},
  env: Readonly<Record<string, string | undefined>> = process.env,
): Layer.Layer<never, InvalidTracingConfig> => {
  const endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
  if (endpoint === undefined || endpoint === "" || env["OTEL_SDK_DISABLED"] === "true") return Layer.empty
  const sampler = (env["OTEL_TRACES_SAMPLER"] ?? "parentbased_always_on") as Sampler
  if (!samplers.includes(sampler)) {
    return Layer.effectDiscard(Effect.fail(
      new InvalidTracingConfig({ variable: "OTEL_TRACES_SAMPLER", value: sampler, expected: `one of ${samplers.join(", ")}` }),
    ))
  }
  const protocol = env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] ?? env["OTEL_EXPORTER_OTLP_PROTOCOL"] ?? "http/protobuf"
  if (protocol !== "http/protobuf" && protocol !== "http/json") {
    return Layer.effectDiscard(Effect.fail(
      new InvalidTracingConfig({
        variable: env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] === undefined ? "OTEL_EXPORTER_OTLP_PROTOCOL" : "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        value: protocol,
        expected: "http/protobuf or http/json (gRPC is not supported)",
      }),
    ))
  }
  const batch: Record<string, number | undefined> = {}
  for (const variable of ["OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"]) {
    const text = env[variable]
    if (text === undefined || text === "") continue
    const value = Number(text)
    const count = variable === "OTEL_BSP_MAX_QUEUE_SIZE" || variable === "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
    if (!Number.isSafeInteger(value) || value < 1) {
      return Layer.effectDiscard(Effect.fail(
        new InvalidTracingConfig({
          variable,
          value: text,
          expected: count ? "a whole number from 1" : "a whole number of milliseconds from 1",
        }),
      ))
    }
    batch[variable] = value
  }
  const ratio = env["OTEL_TRACES_SAMPLER_ARG"] === undefined ? 1 : Number(env["OTEL_TRACES_SAMPLER_ARG"])
  if (!(ratio >= 0 && ratio <= 1)) {
    return Layer.effectDiscard(Effect.fail(
      new InvalidTracingConfig({
        variable: "OTEL_TRACES_SAMPLER_ARG",
        value: env["OTEL_TRACES_SAMPLER_ARG"] ?? "",
        expected: "a number from 0 to 1",
      }),
    ))
  }
  return layerOtlp({
    endpoint,
    serviceName: env["OTEL_SERVICE_NAME"] ?? defaults.serviceName,
    sampler,
    samplerRatio: ratio,
    protocol,
    ...(batch["OTEL_BSP_SCHEDULE_DELAY"] === undefined ? {} : { scheduleDelay: Duration.millis(batch["OTEL_BSP_SCHEDULE_DELAY"]) }),
    ...(batch["OTEL_BSP_EXPORT_TIMEOUT"] === undefined ? {} : { exportTimeout: Duration.millis(batch["OTEL_BSP_EXPORT_TIMEOUT"]) }),
    maxQueueSize: batch["OTEL_BSP_MAX_QUEUE_SIZE"],
    maxExportBatchSize: batch["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
  })
}
