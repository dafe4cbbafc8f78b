/**
 * OTLP/protobuf for Partita's tracer: a growable byte writer and the few OTLP messages a span
 * needs (KeyValue, AnyValue), written straight into bytes.
 *
 * Why not Effect's encoder: it is generic (a BigInt per varint, a small array per field, a copy
 * per nesting level), which made protobuf slower than JSON. Here an attribute that repeats is
 * encoded once and copied, and a span is written into one reusable buffer. Field numbers and
 * order follow `opentelemetry/proto/trace/v1/trace.proto` as Effect's encoder writes them, so the
 * bytes are the same (a test holds them to it).
 */
import * as OtlpResource from "effect/observability/OtlpResource"

const utf8 = new TextEncoder()

/** Lowercase and uppercase hex digits by char code; -1 for anything else. */
const hexValue = new Int8Array(128).fill(-1)
for (let digit = 0; digit < 16; digit++) {
  hexValue["0123456789abcdef".charCodeAt(digit)] = digit
  hexValue["0123456789ABCDEF".charCodeAt(digit)] = digit
}

const encodedStrings = new Map<string, Uint8Array>()

export class ProtoWriter {
  bytes = new Uint8Array(1024)
  length = 0
  private view = new DataView(this.bytes.buffer)

  reset(): void {
    this.length = 0
  }

  // The check inline, the growing apart: `ensure` runs for every field written.
  private ensure(more: number): void {
    if (this.length + more > this.bytes.length) this.grow(more)
  }

  private grow(more: number): void {
    let size = this.bytes.length * 2
    while (size < this.length + more) size *= 2
    const grown = new Uint8Array(size)
    grown.set(this.bytes)
    this.bytes = grown
    this.view = new DataView(grown.buffer)
  }

  byte(value: number): void {
    this.ensure(1)
    this.bytes[this.length++] = value
  }

  /** A varint of a non-negative safe integer; others go through `varintBig`. */
  varint(value: number): void {
    if (value < 0 || !Number.isSafeInteger(value)) return this.varintBig(BigInt(value))
    this.ensure(10)
    while (value > 127) {
      this.bytes[this.length++] = (value % 128) | 0x80
      value = Math.floor(value / 128)
    }
    this.bytes[this.length++] = value
  }

  /** A varint of any int64, negatives as their 64-bit two's complement (10 bytes), as protobuf does. */
  varintBig(value: bigint): void {
    let n = value < 0n ? BigInt.asUintN(64, value) : value
    this.ensure(10)
    while (n > 127n) {
      this.bytes[this.length++] = Number(n & 127n) | 0x80
      n >>= 7n
    }
    this.bytes[this.length++] = Number(n)
  }

  fixed64(value: bigint): void {
    this.ensure(8)
    this.view.setBigUint64(this.length, value >= 0n ? value : BigInt.asUintN(64, value), true)
    this.length += 8
  }

  double(value: number): void {
    this.ensure(8)
    this.view.setFloat64(this.length, value, true)
    this.length += 8
  }

  /** Copies `bytes` in whole (no views: making one per copy cost more than the copy). */
  raw(bytes: Uint8Array): void {
    const size = bytes.length
    this.ensure(size)
    if (size < 64) {
      const target = this.bytes
      let at = this.length
      for (let i = 0; i < size; i++) target[at++] = bytes[i]!
    } else {
      this.bytes.set(bytes, this.length)
    }
    this.length += size
  }

  /** A length-delimited field holding `bytes`. */
  field(tag: number, bytes: Uint8Array): void {
    this.byte(tag)
    this.varint(bytes.length)
    this.raw(bytes)
  }

  /**
   * Starts a length-delimited field whose content is written next, in place: two bytes are kept
   * for its length, and `end` fixes them (moving the content when the length needs one byte or
   * three), so nested messages are never built apart and copied.
   */
  begin(tag: number): number {
    this.byte(tag)
    this.ensure(2)
    this.length += 2
    return this.length
  }

  end(start: number): void {
    const size = this.length - start
    if (size < 128) {
      this.bytes.copyWithin(start - 1, start, this.length)
      this.bytes[start - 2] = size
      this.length -= 1
    } else if (size < 16384) {
      this.bytes[start - 2] = (size & 127) | 0x80
      this.bytes[start - 1] = size >>> 7
    } else {
      // A message over 16 KiB (a whole batch): its length takes more than the two bytes kept.
      let width = 0
      for (let rest = size; rest > 0; rest = Math.floor(rest / 128)) width++
      const shift = width - 2
      this.ensure(shift)
      this.bytes.copyWithin(start + shift, start, this.length)
      let at = start - 2
      let rest = size
      while (rest > 127) {
        this.bytes[at++] = (rest % 128) | 0x80
        rest = Math.floor(rest / 128)
      }
      this.bytes[at] = rest
      this.length += shift
    }
  }

  string(tag: number, text: string): void {
    let encoded = encodedStrings.get(text)
    if (encoded === undefined) {
      encoded = utf8.encode(text)
      // Span names and attribute keys repeat; anything else is encoded each time.
      if (text.length <= 128 && encodedStrings.size < 4096) encodedStrings.set(text, encoded)
    }
    this.field(tag, encoded)
  }

  /** Hex text as bytes: what Effect's encoder writes for trace and span ids (`parseInt` per pair). */
  hex(tag: number, text: string): void {
    const size = Math.floor(text.length / 2)
    this.byte(tag)
    this.varint(size)
    this.ensure(size)
    for (let i = 0; i < size; i++) {
      const high = hexValue[text.charCodeAt(2 * i)] ?? -1
      const low = hexValue[text.charCodeAt(2 * i + 1)] ?? -1
      this.bytes[this.length++] = high >= 0 && low >= 0 ? high * 16 + low : parsePair(text.slice(2 * i, 2 * i + 2))
    }
  }

  /** Hex digits `ascii[from, to)` (checked lowercase or uppercase hex) as the bytes they spell. */
  hexAscii(tag: number, ascii: Uint8Array, from: number, to: number): void {
    const size = (to - from) >> 1
    this.byte(tag)
    this.varint(size)
    this.ensure(size)
    const bytes = this.bytes
    let at = this.length
    for (let i = from; i < to; i += 2) bytes[at++] = hexValue[ascii[i]!]! * 16 + hexValue[ascii[i + 1]!]!
    this.length = at
  }

  /** An 8-byte id kept as two 32-bit halves, big-endian (the order its hex text reads). */
  id64(tag: number, high: number, low: number): void {
    this.byte(tag)
    this.byte(8)
    this.ensure(8)
    this.view.setUint32(this.length, high)
    this.view.setUint32(this.length + 4, low)
    this.length += 8
  }

  /** What was written, copied out. */
  take(): Uint8Array {
    return this.bytes.slice(0, this.length)
  }
}

/** `parseInt(pair, 16)` as Effect's encoder does it, for ids that are not plain hex. */
const parsePair = (pair: string): number => {
  const value = Number.parseInt(pair, 16)
  return Number.isNaN(value) ? 0 : value & 0xff
}

/** An OTLP `AnyValue` as `OtlpResource.unknownToAttributeValue` shapes it. */
type AnyValue = ReturnType<typeof OtlpResource.unknownToAttributeValue>

const writeAnyValue = (writer: ProtoWriter, value: AnyValue): void => {
  const any = value as Record<string, unknown>
  if (any["stringValue"] !== undefined && any["stringValue"] !== null) return writer.string(0x0a, String(any["stringValue"]))
  if (any["boolValue"] !== undefined && any["boolValue"] !== null) {
    writer.byte(0x10)
    return writer.byte(any["boolValue"] ? 1 : 0)
  }
  if (any["intValue"] !== undefined && any["intValue"] !== null) {
    writer.byte(0x18)
    return writer.varintBig(BigInt(any["intValue"] as string | number))
  }
  if (any["doubleValue"] !== undefined && any["doubleValue"] !== null) {
    writer.byte(0x21)
    return writer.double(Number(any["doubleValue"]))
  }
  if (any["arrayValue"] !== undefined) {
    const inner = new ProtoWriter()
    for (const item of (any["arrayValue"] as { readonly values: ReadonlyArray<AnyValue> }).values) {
      const element = new ProtoWriter()
      writeAnyValue(element, item)
      inner.field(0x0a, element.take())
    }
    return writer.field(0x2a, inner.take())
  }
  if (any["kvlistValue"] !== undefined) {
    const inner = new ProtoWriter()
    for (const entry of (any["kvlistValue"] as { readonly values: ReadonlyArray<{ key: string; value: AnyValue }> }).values) {
      const pair = keyValue(entry.key, entry.value)
      inner.field(0x0a, pair)
    }
    return writer.field(0x32, inner.take())
  }
  if (any["bytesValue"] !== undefined) return writer.field(0x3a, any["bytesValue"] as Uint8Array)
}

/** A `KeyValue` message's content (key = 1, value = 2). */
const keyValue = (key: string, value: AnyValue): Uint8Array => {
  const any = new ProtoWriter()
  writeAnyValue(any, value)
  const pair = new ProtoWriter()
  pair.string(0x0a, key)
  pair.field(0x12, any.take())
  return pair.take()
}

/**
 * `encode` memoized by key, then by value, for string and boolean values (the ones that repeat:
 * topics, groups, flags), at most 256 values per key: high-cardinality values (record keys) are
 * encoded each time rather than kept. Both OTLP encodings cache their attributes with it.
 */
export const cachedByKeyAndValue = <T>(encode: (key: string, value: unknown) => T) => {
  const byKey = new Map<string, Map<unknown, T>>()
  return (key: string, value: unknown): T => {
    let byValue = byKey.get(key)
    if (byValue === undefined) {
      byValue = new Map()
      byKey.set(key, byValue)
    }
    let encoded = byValue.get(value)
    if (encoded === undefined) {
      encoded = encode(key, value)
      if (byValue.size < 256) byValue.set(value, encoded)
    }
    return encoded
  }
}

/** A key's `key = 1` field, for the integer fast path. */
const keyFields = new Map<string, Uint8Array>()

const cachedAttribute = cachedByKeyAndValue((key, value) => keyValue(key, OtlpResource.unknownToAttributeValue(value)))

/** The content of an attribute's `KeyValue`, encoded once for values that repeat. */
export const attribute = (key: string, value: unknown): Uint8Array =>
  typeof value === "string" || typeof value === "boolean"
    ? cachedAttribute(key, value)
    : keyValue(key, OtlpResource.unknownToAttributeValue(value))

/** Writes one attribute as field `tag` of the enclosing message. */
export const writeAttribute = (writer: ProtoWriter, tag: number, key: string, value: unknown): void => {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
    // An offset per span: written in place rather than built and copied.
    let keyField = keyFields.get(key)
    if (keyField === undefined) {
      const field = new ProtoWriter()
      field.string(0x0a, key)
      keyField = field.take()
      if (keyFields.size < 1024) keyFields.set(key, keyField)
    }
    let size = 1
    for (let rest = value; rest > 127; rest = Math.floor(rest / 128)) size++
    writer.byte(tag)
    writer.varint(keyField.length + 2 + 1 + size)
    writer.raw(keyField)
    writer.byte(0x12)
    writer.varint(1 + size)
    writer.byte(0x18)
    return writer.varint(value)
  }
  const encoded = attribute(key, value)
  writer.field(tag, encoded)
}

/** Attributes as repeated field `tag`, encoded (for a resource, a scope or shared attributes). */
export const attributes = (tag: number, entries: Iterable<readonly [string, unknown]>): Uint8Array => {
  const writer = new ProtoWriter()
  for (const [key, value] of entries) writeAttribute(writer, tag, key, value)
  return writer.take()
}

/** OTLP `KeyValue`s already shaped (a resource's attributes) as repeated field `tag`. */
export const keyValues = (tag: number, pairs: ReadonlyArray<{ readonly key: string; readonly value: AnyValue }>): Uint8Array => {
  const writer = new ProtoWriter()
  for (const pair of pairs) writer.field(tag, keyValue(pair.key, pair.value))
  return writer.take()
}
