/**
 * Effect's `Tracer` on top of `@opentelemetry/api`: every Effect span becomes a span of the
 * tracer provider the application registered, so Partita's spans join the application's own.
 *
 * Only the stable API is used (no SDK, no monkey-patching); without a registered provider the
 * API's no-op tracer answers and spans cost next to nothing.
 */
import * as otel from "@opentelemetry/api"
import { Cause, type Context, Exit, Option, Tracer } from "effect"
import type { Header } from "../Transport.ts"

const kinds: Record<Tracer.SpanKind, otel.SpanKind> = {
  internal: otel.SpanKind.INTERNAL,
  server: otel.SpanKind.SERVER,
  client: otel.SpanKind.CLIENT,
  producer: otel.SpanKind.PRODUCER,
  consumer: otel.SpanKind.CONSUMER,
}

/** OpenTelemetry's time input from Effect's nanoseconds. */
const toHrTime = (nanos: bigint): otel.HrTime => [Number(nanos / 1_000_000_000n), Number(nanos % 1_000_000_000n)]

/** OpenTelemetry attribute values are primitives or arrays of them; anything else is shown as JSON. */
const toAttribute = (value: unknown): otel.AttributeValue | undefined => {
  if (value === undefined || value === null) return undefined
  if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return value
  if (typeof value === "bigint") return Number(value)
  if (Array.isArray(value) && value.every((item) => typeof item === "string")) return value as Array<string>
  return JSON.stringify(value)
}

const toAttributes = (attributes: Readonly<Record<string, unknown>>): otel.Attributes => {
  const out: otel.Attributes = {}
  for (const key in attributes) {
    const value = toAttribute(attributes[key])
    if (value !== undefined) out[key] = value
  }
  return out
}

/** The OpenTelemetry span context of any Effect span: ours carry one, external ones are remote. */
export const spanContextOf = (span: Tracer.AnySpan): otel.SpanContext =>
  span instanceof BridgedSpan ? span.otelSpan.spanContext() : {
    traceId: span.traceId,
    spanId: span.spanId,
    traceFlags: span.sampled ? otel.TraceFlags.SAMPLED : otel.TraceFlags.NONE,
    isRemote: true,
  }

/** The OpenTelemetry context in which `span` is the active span, for propagators. */
export const contextOf = (span: Tracer.AnySpan): otel.Context =>
  span instanceof BridgedSpan
    ? otel.trace.setSpan(otel.ROOT_CONTEXT, span.otelSpan)
    : otel.trace.setSpanContext(otel.ROOT_CONTEXT, spanContextOf(span))

type SpanOptions = Parameters<Tracer.Tracer["span"]>[0]

class BridgedSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly otelSpan: otel.Span
  readonly name: string
  readonly parent: Option.Option<Tracer.AnySpan>
  readonly annotations: Context.Context<never>
  readonly kind: Tracer.SpanKind
  readonly spanId: string
  readonly traceId: string
  readonly sampled: boolean
  readonly attributes = new Map<string, unknown>()
  readonly links: Array<Tracer.SpanLink>
  status: Tracer.SpanStatus

  constructor(tracer: otel.Tracer, options: SpanOptions) {
    this.name = options.name
    this.parent = options.parent
    this.annotations = options.annotations
    this.kind = options.kind
    this.links = [...options.links]
    const parentContext = options.root || Option.isNone(options.parent) ? otel.ROOT_CONTEXT : contextOf(options.parent.value)
    this.otelSpan = tracer.startSpan(options.name, {
      kind: kinds[options.kind],
      startTime: toHrTime(options.startTime),
      links: options.links.map((link) => ({ context: spanContextOf(link.span), attributes: toAttributes(link.attributes) })),
      root: options.root,
    }, parentContext)
    const startTime = options.startTime
    const context = this.otelSpan.spanContext()
    this.spanId = context.spanId
    this.traceId = context.traceId
    this.sampled = (context.traceFlags & otel.TraceFlags.SAMPLED) === otel.TraceFlags.SAMPLED
    this.status = { _tag: "Started", startTime }
  }

  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) {
      this.otelSpan.setStatus({ code: otel.SpanStatusCode.ERROR, message: Cause.pretty(exit.cause).split("\n")[0] ?? "" })
    }
    this.otelSpan.end(toHrTime(endTime))
  }

  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
    const converted = toAttribute(value)
    if (converted !== undefined) this.otelSpan.setAttribute(key, converted)
  }

  event(name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
    this.otelSpan.addEvent(name, attributes === undefined ? {} : toAttributes(attributes), toHrTime(startTime))
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
    this.otelSpan.addLinks(links.map((link) => ({ context: spanContextOf(link.span), attributes: toAttributes(link.attributes) })))
  }
}

/** An Effect tracer whose spans are spans of `@opentelemetry/api`'s global tracer provider. */
export const make = (options: { readonly name: string; readonly version?: string | undefined }): Tracer.Tracer =>
  Tracer.make({
    span: (span) => new BridgedSpan(otel.trace.getTracer(options.name, options.version), span),
  })

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const getter: otel.TextMapGetter<ReadonlyArray<Header>> = {
  keys: (headers) => headers.map((header) => header.key),
  get: (headers, key) => {
    const wanted = key.toLowerCase()
    const found = headers.find((header) => header.key.toLowerCase() === wanted)
    return found?.value === null || found === undefined ? undefined : decoder.decode(found.value)
  },
}

const setter: otel.TextMapSetter<Array<Header>> = {
  set: (headers, key, value) => {
    headers.push({ key, value: encoder.encode(value) })
  },
}

/**
 * Trace context in record headers through `@opentelemetry/api`'s global propagator (W3C,
 * B3, baggage: whatever the application registered). The getter never throws on bad input.
 */
export const globalPropagator = {
  inject: (headers: ReadonlyArray<Header> | undefined, span: Tracer.Span): ReadonlyArray<Header> => {
    const existing = headers ?? []
    const fields = otel.propagation.fields()
    if (existing.some((header) => fields.includes(header.key.toLowerCase()))) return existing
    const out = [...existing]
    otel.propagation.inject(contextOf(span), out, setter)
    return out
  },
  extract: (headers: ReadonlyArray<Header>): Tracer.ExternalSpan | undefined => {
    const context = otel.trace.getSpanContext(otel.propagation.extract(otel.ROOT_CONTEXT, headers, getter))
    if (context === undefined || !otel.isSpanContextValid(context)) return undefined
    return Tracer.externalSpan({
      traceId: context.traceId,
      spanId: context.spanId,
      sampled: (context.traceFlags & otel.TraceFlags.SAMPLED) === otel.TraceFlags.SAMPLED,
    })
  },
}
