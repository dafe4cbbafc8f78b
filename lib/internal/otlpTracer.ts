/**
 * Partita's OTLP tracer: Effect's OTLP exporter (batching, HTTP, retries, the flush on
 * shutdown) with spans kept lean and written to OTLP/JSON directly.
 *
 * Why not Effect's `OtlpTracer`: it turns each span into a tree of OTLP objects when it ends and
 * `JSON.stringify`s the batch, which cost more than handling a record (a span per record is what
 * a consumer traces). Here a span is written once, as text, when its batch is sent, and an
 * attribute that repeats (the topic, the group, the server: most of a messaging span's
 * attributes) is written once and reused. The output is what Effect's tracer sends: the same
 * resource, scope, kinds, status, exception events and attribute encoding.
 */
import { Cause, type Context, type Duration, Effect, type Exit, type Option, Tracer, Version } from "effect"
import { Hex } from "effect/encoding"
import * as HttpBody from "effect/http/HttpBody"
import * as OtlpExporter from "effect/observability/OtlpExporter"
import * as OtlpResource from "effect/observability/OtlpResource"

const kinds: Record<Tracer.SpanKind, number> = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 }

/**
 * Attributes many spans share (a partition's topic, group, server): kept and written once.
 * `setAll` hands them to a span in one step.
 */
export class SharedAttributes {
  readonly entries: ReadonlyArray<readonly [string, unknown]>
  readonly keys: ReadonlySet<string>
  private written: string | undefined
  constructor(attributes: Readonly<Record<string, unknown>>) {
    this.entries = Object.entries(attributes)
    this.keys = new Set(Object.keys(attributes))
  }
  get json(): string {
    return this.written ??= attributesJson(this.entries)
  }
}

/** Sets `shared` on `span`: in one step on this tracer's spans, one by one on any other. */
export const setAll = (span: Tracer.Span, shared: SharedAttributes): void => {
  if (span instanceof LeanSpan) span.share(shared)
  else for (const [key, value] of shared.entries) span.attribute(key, value)
}

class LeanSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly name: string
  readonly parent: Option.Option<Tracer.AnySpan>
  readonly annotations: Context.Context<never>
  readonly links: Array<Tracer.SpanLink>
  readonly kind: Tracer.SpanKind
  readonly sampled: boolean
  readonly traceId: string
  readonly spanId: string
  /** Attributes as pairs, not a Map: a span has a handful, and most spans are short-lived. */
  ownKeys: Array<string> = []
  ownValues: Array<unknown> = []
  shared: SharedAttributes | undefined = undefined
  events: Array<readonly [name: string, time: bigint, attributes: Record<string, unknown> | undefined]> | undefined
  status: Tracer.SpanStatus
  private readonly onEnd: (span: LeanSpan) => void

  constructor(options: Parameters<Tracer.Tracer["span"]>[0], onEnd: (span: LeanSpan) => void) {
    this.name = options.name
    this.parent = options.parent
    this.annotations = options.annotations
    this.links = options.links
    this.kind = options.kind
    this.sampled = options.sampled
    this.traceId = options.parent._tag === "Some" ? options.parent.value.traceId : Hex.random(32)
    this.spanId = Hex.random(16)
    this.status = { _tag: "Started", startTime: options.startTime }
    this.onEnd = onEnd
  }

  get attributes(): ReadonlyMap<string, unknown> {
    const all = new Map<string, unknown>(this.shared?.entries)
    for (let i = 0; i < this.ownKeys.length; i++) all.set(this.ownKeys[i]!, this.ownValues[i])
    return all
  }

  share(shared: SharedAttributes): void {
    if (this.status._tag === "Ended") return
    if (this.shared !== undefined || this.ownKeys.some((key) => shared.keys.has(key))) {
      for (const [key, value] of shared.entries) this.attribute(key, value)
    } else {
      this.shared = shared
    }
  }

  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    if (this.status._tag === "Ended") return
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
    if (this.sampled) this.onEnd(this)
  }

  attribute(key: string, value: unknown): void {
    if (this.status._tag === "Ended") return
    if (this.shared?.keys.has(key)) {
      // Overriding a shared one: from now on this span keeps its own copy of them all.
      const shared = this.shared
      this.shared = undefined
      for (const [sharedKey, sharedValue] of shared.entries) this.attribute(sharedKey, sharedValue)
    }
    const index = this.ownKeys.indexOf(key)
    if (index === -1) {
      this.ownKeys.push(key)
      this.ownValues.push(value)
    } else {
      this.ownValues[index] = value
    }
  }

  event(name: string, startTime: bigint, attributes?: Record<string, unknown>): void {
    if (this.status._tag === "Started") (this.events ??= []).push([name, startTime, attributes])
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    if (this.status._tag === "Started") this.links.push(...links)
  }
}

// ---- OTLP/JSON ------------------------------------------------------------------------------

const quote = (text: string): string => JSON.stringify(text)

/** Written attributes by key, then by value, for values that repeat; bounded per key. */
const cachedAttributes = new Map<string, Map<unknown, string>>()
const cachePerKey = 256

const attributeJson = (key: string, value: unknown): string => {
  if (typeof value === "string" || typeof value === "boolean") {
    let byValue = cachedAttributes.get(key)
    if (byValue === undefined) {
      byValue = new Map()
      cachedAttributes.set(key, byValue)
    }
    let json = byValue.get(value)
    if (json === undefined) {
      json = `{"key":${quote(key)},"value":${JSON.stringify(OtlpResource.unknownToAttributeValue(value))}}`
      // High-cardinality values (record keys) are written each time rather than kept.
      if (byValue.size < cachePerKey) byValue.set(value, json)
    }
    return json
  }
  if (typeof value === "number" && Number.isSafeInteger(value)) return `{"key":${quote(key)},"value":{"intValue":${value}}}`
  return `{"key":${quote(key)},"value":${JSON.stringify(OtlpResource.unknownToAttributeValue(value))}}`
}

const attributesJson = (entries: Iterable<readonly [string, unknown]>): string => {
  let out = ""
  for (const [key, value] of entries) out += (out === "" ? "" : ",") + attributeJson(key, value)
  return out
}

const padTraceId = (id: string): string => quote(id.length < 32 ? id.padStart(32, "0") : id)

const spanJson = (span: LeanSpan): string => {
  const status = span.status as Extract<Tracer.SpanStatus, { _tag: "Ended" }>
  let attributes = span.shared === undefined ? "" : span.shared.json
  for (let i = 0; i < span.ownKeys.length; i++) {
    attributes += (attributes === "" ? "" : ",") + attributeJson(span.ownKeys[i]!, span.ownValues[i])
  }
  let events = ""
  if (span.events !== undefined) {
    for (const [name, time, eventAttributes] of span.events) {
      events += `${events === "" ? "" : ","}{"name":${quote(name)},"timeUnixNano":"${time}","attributes":[${
        eventAttributes === undefined ? "" : attributesJson(Object.entries(eventAttributes))
      }],"droppedAttributesCount":0}`
    }
  }
  let otelStatus: string
  const exit = status.exit
  if (exit._tag === "Success") {
    otelStatus = `{"code":1}`
  } else if (Cause.hasInterruptsOnly(exit.cause)) {
    otelStatus = `{"code":0}`
    attributes += (attributes === "" ? "" : ",") + attributeJson("effect.fiber.interrupted", true)
  } else {
    const errors = Cause.prettyErrors(exit.cause, { includeCauseInStack: true })
    otelStatus = errors.length > 0 ? `{"code":2,"message":${quote(errors[0]!.message)}}` : `{"code":1}`
    for (const error of errors) {
      events += `${events === "" ? "" : ","}{"name":"exception","timeUnixNano":"${status.endTime}","droppedAttributesCount":0,"attributes":[${
        attributesJson([
          ["exception.type", error.name],
          ["exception.message", error.message],
          ["exception.stacktrace", error.stack ?? "No stack trace available"],
        ])
      }]}`
    }
  }
  let links = ""
  for (const link of span.links) {
    links += `${links === "" ? "" : ","}{"traceId":${padTraceId(link.span.traceId)},"spanId":${quote(link.span.spanId)},"attributes":[${
      attributesJson(Object.entries(link.attributes))
    }],"droppedAttributesCount":0}`
  }
  const parent = span.parent._tag === "Some" ? `,"parentSpanId":${quote(span.parent.value.spanId)}` : ""
  return `{"traceId":${padTraceId(span.traceId)},"spanId":"${span.spanId}"${parent},"name":${quote(span.name)},"kind":${
    kinds[span.kind] ?? 0
  },"startTimeUnixNano":"${status.startTime}","endTimeUnixNano":"${status.endTime}","attributes":[${attributes}],"droppedAttributesCount":0,"events":[${events}],"droppedEventsCount":0,"status":${otelStatus},"links":[${links}],"droppedLinksCount":0}`
}

/**
 * A tracer exporting over OTLP/HTTP JSON to `url`, for as long as the scope is open; what is
 * still buffered is sent when it closes (within `shutdownTimeout`).
 */
export const make = Effect.fnUntraced(function*(options: {
  readonly url: string
  readonly resource: { readonly serviceName?: string | undefined }
  readonly exportInterval: Duration.Input
  readonly maxBatchSize?: number | undefined
  readonly shutdownTimeout?: Duration.Input | undefined
}) {
  const resource = yield* OtlpResource.fromConfig(options.resource)
  const scope = { name: "effect", version: Version.getCurrentVersion() }
  const prefix = `{"resourceSpans":[{"resource":${JSON.stringify(resource)},"scopeSpans":[{"scope":${JSON.stringify(scope)},"spans":[`
  const exporter = yield* OtlpExporter.make({
    label: "OtlpTracer",
    url: options.url,
    headers: undefined,
    exportInterval: options.exportInterval,
    maxBatchSize: options.maxBatchSize ?? 2048,
    shutdownTimeout: options.shutdownTimeout ?? "3 seconds",
    body: (spans: Array<LeanSpan>) => {
      const parts = new Array<string>(spans.length)
      for (let index = 0; index < spans.length; index++) parts[index] = spanJson(spans[index]!)
      return [HttpBody.text(`${prefix}${parts.join(",")}]}]}]}`, "application/json"), Effect.void] as const
    },
  })
  const push = (span: LeanSpan) => exporter.push(span)
  return Tracer.make({ span: (spanOptions) => new LeanSpan(spanOptions, push) })
})

/** For tests: the OTLP/JSON of one ended span, as `make` sends it. */
export const spanToJson = (span: Tracer.Span): string => spanJson(span as LeanSpan)

/** For tests: a span of this tracer that is not exported anywhere. */
export const makeSpan = (options: Parameters<Tracer.Tracer["span"]>[0]): Tracer.Span => new LeanSpan(options, () => {})
