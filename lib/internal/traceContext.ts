/**
 * W3C Trace Context in Kafka record headers: `traceparent` written on produce, read on consume.
 *
 * Header values arrive as bytes, names are matched case-insensitively, and anything malformed
 * reads as "no parent" (a new root trace) and never throws: a producer we do not control must
 * not be able to break a consumer.
 */
import { Context, Tracer } from "effect"
import type { Header } from "../Transport.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const HEX_32 = /^[0-9a-f]{32}$/
const HEX_16 = /^[0-9a-f]{16}$/
const HEX_2 = /^[0-9a-f]{2}$/

/** `tracestate` and `baggage` as they arrived, passed on to what the handler produces. */
export class InboundState extends Context.Service<InboundState, {
  readonly tracestate: string | undefined
  readonly baggage: string | undefined
}>()("partita/internal/InboundState") {}

/** The first header named `name` (case-insensitively), as text, or undefined. */
export const headerText = (headers: ReadonlyArray<Header>, name: string): string | undefined => {
  for (const header of headers) {
    if (header.key.length === name.length && header.key.toLowerCase() === name) {
      return header.value === null ? undefined : decoder.decode(header.value)
    }
  }
  return undefined
}

export const hasHeader = (headers: ReadonlyArray<Header>, name: string): boolean =>
  headers.some((header) => header.key.length === name.length && header.key.toLowerCase() === name)

/** Parses a `traceparent` value; undefined for anything that is not a valid W3C one. */
export const parseTraceparent = (value: string | undefined): { traceId: string; spanId: string; sampled: boolean } | undefined => {
  if (value === undefined) return undefined
  const parts = value.trim().split("-")
  if (parts.length < 4) return undefined
  const [version, traceId, spanId, flags] = parts as [string, string, string, string]
  if (!HEX_2.test(version) || version === "ff" || (version === "00" && parts.length !== 4)) return undefined
  if (!HEX_32.test(traceId) || /^0+$/.test(traceId)) return undefined
  if (!HEX_16.test(spanId) || /^0+$/.test(spanId)) return undefined
  if (!HEX_2.test(flags)) return undefined
  return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 }
}

/** Lowercase hex digits, by byte; every other byte is false. */
const isHex = new Uint8Array(256)
for (const char of "0123456789abcdef") isHex[char.charCodeAt(0)] = 1

/** Whether `bytes[from, to)` are lowercase hex digits, not all zeros. */
const hexRun = (bytes: Uint8Array, from: number, to: number): boolean => {
  let nonZero = false
  for (let i = from; i < to; i++) {
    const byte = bytes[i]!
    if (isHex[byte] === 0) return false
    if (byte !== 48) nonZero = true
  }
  return nonZero
}

// Measured on Bun, Deno and Node: decoding a view beats building the string from char codes.
const ascii = (bytes: Uint8Array, from: number, to: number): string => decoder.decode(bytes.subarray(from, to))

/**
 * A producer's span context read from a version-00 `traceparent`'s bytes. Its ids become text
 * only when something reads them: a traced consumer makes one per record, and the OTLP writer
 * copies the ids straight from these bytes (`header[3, 35)` the trace id, `[36, 52)` the span
 * id), so the usual record never pays for two strings. The bytes are a copy of the header's.
 */
export class InboundSpan implements Tracer.ExternalSpan {
  readonly _tag = "ExternalSpan"
  readonly header: Uint8Array
  readonly sampled: boolean
  readonly annotations: Context.Context<never>
  private traceText: string | undefined
  private spanText: string | undefined
  constructor(header: Uint8Array, sampled: boolean, annotations: Context.Context<never>) {
    this.header = header
    this.sampled = sampled
    this.annotations = annotations
  }
  get traceId(): string {
    return this.traceText ??= ascii(this.header, 3, 35)
  }
  get spanId(): string {
    return this.spanText ??= ascii(this.header, 36, 52)
  }
}

/**
 * Whether `bytes` are a version-00 `traceparent` (the form every producer writes), checked on the
 * bytes: decoding to text first cost more than the rest of the parse. Anything else goes through
 * `parseTraceparent`.
 */
const isTraceparent00 = (bytes: Uint8Array): boolean =>
  bytes.length === 55 && bytes[0] === 48 && bytes[1] === 48 && bytes[2] === 45 && bytes[35] === 45 &&
  bytes[52] === 45 && hexRun(bytes, 3, 35) && hexRun(bytes, 36, 52) && isHex[bytes[53]!] === 1 &&
  isHex[bytes[54]!] === 1

/** The sampled flag of a checked version-00 `traceparent`: the last hex digit's low bit ('1', '3', … 'f'). */
const sampledFlag = (bytes: Uint8Array): boolean => {
  const flags = bytes[54]!
  return ((flags <= 57 ? flags - 48 : flags - 87) & 1) === 1
}

const isName = (key: string, name: string): boolean =>
  key === name || (key.length === name.length && key.toLowerCase() === name)

/** The producer's span context carried by a record, as an Effect external span, if any. */
export const extract = (headers: ReadonlyArray<Header>): Tracer.ExternalSpan | undefined => {
  // One pass over the headers for the three names; the first of each counts.
  let traceparentBytes: Uint8Array | null | undefined
  let tracestate: string | undefined
  let baggage: string | undefined
  let seenState = false
  let seenBaggage = false
  for (const header of headers) {
    if (traceparentBytes === undefined && isName(header.key, "traceparent")) traceparentBytes = header.value
    else if (!seenState && isName(header.key, "tracestate")) {
      seenState = true
      tracestate = header.value === null ? undefined : decoder.decode(header.value)
    } else if (!seenBaggage && isName(header.key, "baggage")) {
      seenBaggage = true
      baggage = header.value === null ? undefined : decoder.decode(header.value)
    }
  }
  if (traceparentBytes === undefined || traceparentBytes === null) return undefined
  const annotations = tracestate === undefined && baggage === undefined
    ? Context.empty()
    : Context.make(InboundState, { tracestate, baggage })
  // A copy of the 55 bytes, not the record's view: a span can outlive its record (queued for
  // export), and a view would keep the record's whole fetch response alive with it.
  if (isTraceparent00(traceparentBytes)) {
    return new InboundSpan(traceparentBytes.slice(), sampledFlag(traceparentBytes), annotations)
  }
  const parsed = parseTraceparent(decoder.decode(traceparentBytes))
  return parsed === undefined ? undefined : Tracer.externalSpan({ ...parsed, annotations })
}

/** The W3C `traceparent` for a span. */
export const traceparent = (span: { readonly traceId: string; readonly spanId: string; readonly sampled: boolean }): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/** The inbound `tracestate`/`baggage` nearest up a span's ancestry, if any. */
const inboundOf = (span: Tracer.AnySpan | undefined): InboundState["Service"] | undefined => {
  let current: Tracer.AnySpan | undefined = span
  for (let depth = 0; current !== undefined && depth < 32; depth++) {
    const state = Context.getOrUndefined(current.annotations, InboundState)
    if (state !== undefined) return state
    current = current._tag === "Span" && current.parent._tag === "Some" ? current.parent.value : undefined
  }
  return undefined
}

/**
 * Headers with `span`'s context added: `traceparent`, and `tracestate`/`baggage` carried over
 * from the record being handled. A context the caller already put in the headers is left alone.
 */
export const inject = (headers: ReadonlyArray<Header> | undefined, span: Tracer.Span): ReadonlyArray<Header> => {
  const existing = headers ?? []
  if (hasHeader(existing, "traceparent")) return existing
  const added: Array<Header> = [{ key: "traceparent", value: encoder.encode(traceparent(span)) }]
  const inbound = inboundOf(span)
  if (inbound?.tracestate !== undefined && !hasHeader(existing, "tracestate")) {
    added.push({ key: "tracestate", value: encoder.encode(inbound.tracestate) })
  }
  if (inbound?.baggage !== undefined && !hasHeader(existing, "baggage")) {
    added.push({ key: "baggage", value: encoder.encode(inbound.baggage) })
  }
  return [...existing, ...added]
}
