/**
 * Partita's OTLP tracer: spans kept lean, queued and sent in batches by `spanExport.ts` (bounded,
 * one request at a time, retried, flushed on shutdown) and written to OTLP/protobuf (or JSON)
 * directly.
 *
 * Why not Effect's `OtlpTracer`: it turns each span into a tree of OTLP objects when it ends and
 * encodes the batch generically, which cost more than handling a record (a span per record is
 * what a consumer traces). Here a span is written once, when its batch is sent, and an attribute
 * that repeats (the topic, the group, the server: most of a messaging span's attributes) is
 * encoded once and copied. The output is what Effect's tracer sends (tests hold both formats to
 * it): the same resource, scope, kinds, status, exception events and attribute encoding.
 */
import { Cause, type Context, type Duration, Effect, type Exit, type Option, Tracer, Version } from "effect"
import { Hex } from "effect/encoding"
import * as HttpBody from "effect/http/HttpBody"
import * as SpanExport from "./spanExport.ts"
import * as OtlpResource from "effect/observability/OtlpResource"
import * as Proto from "./otlpProtobuf.ts"
import { InboundSpan } from "./traceContext.ts"

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
  private encoded: Uint8Array | undefined
  get json(): string {
    return this.written ??= attributesJson(this.entries)
  }
  /** As span attributes (field 9), ready to copy into a span. */
  get proto(): Uint8Array {
    return this.encoded ??= Proto.attributes(0x4a, this.entries)
  }
}

/** Sets `shared` on `span`: in one step on this tracer's spans, one by one on any other. */
export const setAll = (span: Tracer.Span, shared: SharedAttributes): void => {
  if (span instanceof LeanSpan) span.share(shared)
  else for (const [key, value] of shared.entries) span.attribute(key, value)
}

const hex32 = (half: number): string => half.toString(16).padStart(8, "0")

class LeanSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly name: string
  readonly parent: Option.Option<Tracer.AnySpan>
  readonly annotations: Context.Context<never>
  readonly links: Array<Tracer.SpanLink>
  readonly kind: Tracer.SpanKind
  readonly sampled: boolean
  /**
   * The span id as two random 32-bit halves: written to OTLP/protobuf as they are, made text
   * only if something reads `spanId` (a span per record, most never read).
   */
  readonly spanHigh: number
  readonly spanLow: number
  private traceText: string | undefined
  private spanText: string | undefined
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
    const high = (Math.random() * 0x1_0000_0000) >>> 0
    this.spanHigh = high === 0 ? 1 : high // never the all-zero (invalid) id
    this.spanLow = (Math.random() * 0x1_0000_0000) >>> 0
    this.status = { _tag: "Started", startTime: options.startTime }
    this.onEnd = onEnd
  }

  /** The parent's trace id (read through, so an inbound parent's stays bytes until asked), or a new one. */
  get traceId(): string {
    return this.traceText ??= this.parent._tag === "Some" ? this.parent.value.traceId : Hex.random(32)
  }

  get spanId(): string {
    return this.spanText ??= hex32(this.spanHigh) + hex32(this.spanLow)
  }

  get attributes(): ReadonlyMap<string, unknown> {
    const all = new Map<string, unknown>(this.shared?.entries)
    for (let i = 0; i < this.ownKeys.length; i++) all.set(this.ownKeys[i]!, this.ownValues[i])
    return all
  }

  share(shared: SharedAttributes): void {
    if (this.status._tag === "Ended") return
    if (this.shared !== undefined || this.ownKeys.length > 0 && this.ownKeys.some((key) => shared.keys.has(key))) {
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

const writeAttributeJson = (key: string, value: unknown): string =>
  `{"key":${quote(key)},"value":${JSON.stringify(OtlpResource.unknownToAttributeValue(value))}}`
const cachedAttributeJson = Proto.cachedByKeyAndValue(writeAttributeJson)

const attributeJson = (key: string, value: unknown): string => {
  if (typeof value === "string" || typeof value === "boolean") return cachedAttributeJson(key, value)
  if (typeof value === "number" && Number.isSafeInteger(value)) return `{"key":${quote(key)},"value":{"intValue":${value}}}`
  return writeAttributeJson(key, value)
}

const attributesJson = (entries: Iterable<readonly [string, unknown]>): string => {
  let out = ""
  for (const [key, value] of entries) out += (out === "" ? "" : ",") + attributeJson(key, value)
  return out
}

const padded = (id: string): string => id.length < 32 ? id.padStart(32, "0") : id
const padTraceId = (id: string): string => quote(padded(id))

type Ended = Extract<Tracer.SpanStatus, { _tag: "Ended" }>

/** How a span ended, as OTLP says it: status, and the exceptions that become events. */
interface Outcome {
  readonly code: 0 | 1 | 2
  readonly message: string | undefined
  readonly interrupted: boolean
  readonly exceptions: ReadonlyArray<ReadonlyArray<readonly [string, string]>>
}
const succeeded: Outcome = { code: 1, message: undefined, interrupted: false, exceptions: [] }

const outcomeOf = (status: Ended): Outcome => {
  const exit = status.exit
  if (exit._tag === "Success") return succeeded
  if (Cause.hasInterruptsOnly(exit.cause)) return { code: 0, message: undefined, interrupted: true, exceptions: [] }
  const errors = Cause.prettyErrors(exit.cause, { includeCauseInStack: true })
  return {
    code: errors.length > 0 ? 2 : 1,
    message: errors[0]?.message,
    interrupted: false,
    exceptions: errors.map((error) => [
      ["exception.type", error.name],
      ["exception.message", error.message],
      ["exception.stacktrace", error.stack ?? "No stack trace available"],
    ]),
  }
}

const spanJson = (span: LeanSpan): string => {
  const status = span.status as Ended
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
  const outcome = outcomeOf(status)
  const otelStatus = outcome.message === undefined ? `{"code":${outcome.code}}` : `{"code":${outcome.code},"message":${quote(outcome.message)}}`
  if (outcome.interrupted) attributes += (attributes === "" ? "" : ",") + attributeJson("effect.fiber.interrupted", true)
  for (const error of outcome.exceptions) {
    events += `${events === "" ? "" : ","}{"name":"exception","timeUnixNano":"${status.endTime}","droppedAttributesCount":0,"attributes":[${
      attributesJson(error)
    }]}`
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

// ---- OTLP/protobuf ----------------------------------------------------------------------------

/** Reused for every batch: what it wrote is copied out (`take`) before the next one. */
const batchWriter = new Proto.ProtoWriter()

const kindVarint = (span: LeanSpan): number => kinds[span.kind] ?? 0

/**
 * A span's trace id: its root's, copied from an inbound `traceparent`'s bytes when the trace came
 * in with a record, without making it text.
 */
const writeTraceId = (out: Proto.ProtoWriter, tag: number, span: Tracer.AnySpan): void => {
  let source = span
  while (source instanceof LeanSpan && source.parent._tag === "Some") source = source.parent.value
  if (source instanceof InboundSpan) out.hexAscii(tag, source.header, 3, 35)
  else out.hex(tag, padded(source.traceId))
}

const writeSpanId = (out: Proto.ProtoWriter, tag: number, span: Tracer.AnySpan): void => {
  if (span instanceof LeanSpan) out.id64(tag, span.spanHigh, span.spanLow)
  else if (span instanceof InboundSpan) out.hexAscii(tag, span.header, 36, 52)
  else out.hex(tag, span.spanId)
}

/** Writes `span`'s fields (a `Span` message's content) at the end of `out`. */
const writeSpan = (out: Proto.ProtoWriter, span: LeanSpan): void => {
  const status = span.status as Ended
  const outcome = outcomeOf(status)
  writeTraceId(out, 0x0a, span)
  writeSpanId(out, 0x12, span)
  if (span.parent._tag === "Some") writeSpanId(out, 0x22, span.parent.value)
  out.string(0x2a, span.name)
  out.byte(0x30)
  out.varint(kindVarint(span))
  out.byte(0x39)
  out.fixed64(status.startTime)
  out.byte(0x41)
  out.fixed64(status.endTime)
  if (span.shared !== undefined) out.raw(span.shared.proto)
  for (let i = 0; i < span.ownKeys.length; i++) Proto.writeAttribute(out, 0x4a, span.ownKeys[i]!, span.ownValues[i])
  if (outcome.interrupted) Proto.writeAttribute(out, 0x4a, "effect.fiber.interrupted", true)
  const event = (time: bigint, name: string, attributes: Iterable<readonly [string, unknown]>) => {
    const start = out.begin(0x5a)
    out.byte(0x09)
    out.fixed64(time)
    out.string(0x12, name)
    for (const [key, value] of attributes) Proto.writeAttribute(out, 0x1a, key, value)
    out.end(start)
  }
  if (span.events !== undefined) {
    for (const [name, time, attributes] of span.events) event(time, name, attributes === undefined ? [] : Object.entries(attributes))
  }
  for (const exception of outcome.exceptions) event(status.endTime, "exception", exception)
  for (const link of span.links) {
    const start = out.begin(0x6a)
    writeTraceId(out, 0x0a, link.span)
    writeSpanId(out, 0x12, link.span)
    for (const [key, value] of Object.entries(link.attributes)) Proto.writeAttribute(out, 0x22, key, value)
    out.end(start)
  }
  const statusStart = out.begin(0x7a)
  if (outcome.message !== undefined && outcome.message !== "") out.string(0x12, outcome.message)
  out.byte(0x18)
  out.varint(outcome.code)
  out.end(statusStart)
}

/** A `TracesData` message: one resource, one scope, these spans. */
const tracesProto = (resource: Uint8Array, scope: Uint8Array, spans: ReadonlyArray<LeanSpan>): Uint8Array => {
  const out = batchWriter
  out.reset()
  const resourceSpans = out.begin(0x0a) // TracesData.resource_spans = 1
  out.field(0x0a, resource) // ResourceSpans.resource = 1
  const scopeSpans = out.begin(0x12) // ResourceSpans.scope_spans = 2
  out.field(0x0a, scope) // ScopeSpans.scope = 1
  for (const span of spans) {
    const start = out.begin(0x12) // ScopeSpans.spans = 2
    writeSpan(out, span)
    out.end(start)
  }
  out.end(scopeSpans)
  out.end(resourceSpans)
  return out.take()
}

/** How ended spans are queued and sent: OpenTelemetry's batch span processor settings. */
export interface BatchOptions {
  /** Spans held at most; more are dropped and counted. Default 2048. */
  readonly maxQueueSize?: number | undefined
  /** Spans per request at most. Default 512. */
  readonly maxExportBatchSize?: number | undefined
  /** The longest a span waits for its batch to fill. */
  readonly exportInterval: Duration.Input
  /** One request, retries included. Default 30 seconds. */
  readonly exportTimeout?: Duration.Input | undefined
  /** How long closing may take to send what is queued. Default 3 seconds. */
  readonly shutdownTimeout?: Duration.Input | undefined
}

/**
 * A tracer exporting over OTLP/HTTP (protobuf unless `protocol` says JSON) to `url`, for as long
 * as the scope is open, through a bounded queue (see `spanExport.ts`); what is still queued is
 * sent when the scope closes.
 */
export const make = Effect.fnUntraced(function*(options: BatchOptions & {
  readonly url: string
  readonly resource: { readonly serviceName?: string | undefined }
  /** `http/protobuf` (the OTLP default) or `http/json`. */
  readonly protocol?: "http/protobuf" | "http/json" | undefined
}) {
  const bodies = bodiesFor(yield* OtlpResource.fromConfig(options.resource))
  const json = options.protocol === "http/json"
  const exporter = yield* SpanExport.make<LeanSpan>({
    url: options.url,
    maxQueueSize: options.maxQueueSize ?? 2048,
    maxExportBatchSize: options.maxExportBatchSize ?? 512,
    scheduledDelay: options.exportInterval,
    exportTimeout: options.exportTimeout ?? "30 seconds",
    shutdownTimeout: options.shutdownTimeout ?? "3 seconds",
    exporterType: json ? "otlp_http_json_span_exporter" : "otlp_http_span_exporter",
    body: (spans) =>
      json
        ? HttpBody.text(bodies.json(spans), "application/json")
        : HttpBody.uint8Array(bodies.protobuf(spans), "application/x-protobuf"),
  })
  return Tracer.make({ span: (spanOptions) => new LeanSpan(spanOptions, exporter.push) })
})

/** For tests: the OTLP/JSON of one ended span, as `make` sends it. */
export const spanToJson = (span: Tracer.Span): string => spanJson(span as LeanSpan)

/** The two ways to write a batch of ended spans of this tracer, for `resource`. */
export const bodiesFor = (resource: OtlpResource.Resource) => {
  // Effect's scope, so spans read the same whichever tracer wrote them.
  const scope = { name: "effect", version: Version.getCurrentVersion() }
  const prefix = `{"resourceSpans":[{"resource":${JSON.stringify(resource)},"scopeSpans":[{"scope":${JSON.stringify(scope)},"spans":[`
  // Resource: attributes = 1 (dropped count = 2, never set). Scope: name = 1, version = 2.
  const resourceProto = Proto.keyValues(0x0a, resource.attributes)
  const scopeWriter = new Proto.ProtoWriter()
  scopeWriter.string(0x0a, scope.name)
  if (scope.version !== "") scopeWriter.string(0x12, scope.version)
  const scopeProto = scopeWriter.take()
  return {
    json: (spans: ReadonlyArray<Tracer.Span>): string => {
      const parts = new Array<string>(spans.length)
      for (let index = 0; index < spans.length; index++) parts[index] = spanJson(spans[index] as LeanSpan)
      return `${prefix}${parts.join(",")}]}]}]}`
    },
    protobuf: (spans: ReadonlyArray<Tracer.Span>): Uint8Array => tracesProto(resourceProto, scopeProto, spans as ReadonlyArray<LeanSpan>),
  }
}

/** For tests: a span of this tracer that is not exported anywhere. */
export const makeSpan = (options: Parameters<Tracer.Tracer["span"]>[0]): Tracer.Span => new LeanSpan(options, () => {})
