/**
 * Kafka's record batch v2 (magic 2): what a Produce request carries and a Fetch response returns,
 * as Kafka's `DefaultRecordBatch` / `DefaultRecord` define it.
 *
 * Batch header, 61 bytes, big-endian:
 *
 *     baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 (2)
 *     crc uint32 (CRC-32C of everything from attributes to the end)
 *     attributes int16 (bits 0-2 codec, 3 log-append time, 4 transactional, 5 control)
 *     lastOffsetDelta int32 | baseTimestamp int64 | maxTimestamp int64
 *     producerId int64 | producerEpoch int16 | baseSequence int32 | recordCount int32
 *
 * then `recordCount` records (compressed as one block when the codec is not `none`), each
 * `length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
 * keyLength varint | key | valueLength varint | value | headerCount varint |
 * (keyLength varint | key utf-8 | valueLength varint | value)*`, lengths -1 for null.
 *
 * Decoding is lazy, for speed: a fetch response's bytes stay as they are; each batch's header is
 * read, its CRC checked and its records section decompressed (when compressed) once, and its
 * records' framing (the chain of lengths) checked; then iteration hands out `BatchRecord`s whose
 * offset and timestamp are numbers from the batch base plus varint deltas, and whose key, value
 * and headers are read from the bytes only when a handler asks (views, never copies).
 *
 * Int64 fields (offsets, timestamps, producer ids) are JavaScript numbers, read as
 * `hi * 2^32 + lo`: exact to 2^53, which offsets and epoch-millisecond timestamps never reach.
 * No BigInt or Long on this path: it is what makes kafkajs spend ~1 µs a record.
 *
 * Bad bytes throw one class, `RecordBatchError`, naming topic-partition and offset;
 * `decodeRecordBatches` is the entry that never throws and returns the error beside the batches
 * that decoded before it (Java's fetcher, too, hands out the records before a corrupt batch).
 */
import type { ConsumerRecord, Header } from "../../Transport.ts"
import { CodecError } from "./codecError.ts"
import { type Compression, compress, compressionByCode, compressionCode, decompress } from "./compression.ts"
import { crc32c, crc32cCombine, crc32cWords, wordsOf } from "./crc32c.ts"

export type { Compression } from "./compression.ts"

/** The batch header's size, and where its fields sit. */
const HEADER = 61
const LOG_OVERHEAD = 12 // baseOffset + batchLength
const MAGIC_AT = 16
const CRC_AT = 17
const ATTRIBUTES_AT = 21

const TIMESTAMP_LOG_APPEND = 0x08
const TRANSACTIONAL = 0x10
const CONTROL = 0x20

const TWO_32 = 4294967296

/** What went wrong, for callers that branch on it. */
export type RecordBatchErrorReason = "corrupt" | "crc" | "unsupported" | "compression"

/**
 * The one error the record batch codec throws (and `decodeRecordBatches` returns) on bad bytes.
 *
 * `offset` is the batch's base offset, or the record's offset when one record is malformed.
 */
export class RecordBatchError extends Error {
  readonly _tag = "RecordBatchError"
  readonly reason: RecordBatchErrorReason
  readonly topic: string
  readonly partition: number
  readonly offset: number | undefined
  readonly detail: string
  constructor(
    reason: RecordBatchErrorReason,
    topic: string,
    partition: number,
    offset: number | undefined,
    detail: string,
  ) {
    super(
      `Cannot decode the record batch of ${topic}/${partition}${offset === undefined ? "" : ` at offset ${offset}`}: ${detail}`,
    )
    this.reason = reason
    this.topic = topic
    this.partition = partition
    this.offset = offset
    this.detail = detail
    this.name = "RecordBatchError"
  }
}

// --- varints -------------------------------------------------------------------------------
// Zigzag varints as Kafka writes them (protobuf's). A varlong is read with arithmetic past 28 bits
// instead of BigInt; values past 2^53 lose precision, and no offset or timestamp delta comes near.

/** Bytes a zigzag varint of the int32 `value` takes. */
const varintSize = (value: number): number => {
  let v = ((value << 1) ^ (value >> 31)) >>> 0
  let n = 1
  while (v >= 0x80) {
    v >>>= 7
    n++
  }
  return n
}

const zigzagLong = (value: number): number => (value >= 0 ? value * 2 : -value * 2 - 1)

/** Bytes a zigzag varlong of `value` (a safe integer) takes. */
const varlongSize = (value: number): number => {
  let v = zigzagLong(value)
  let n = 1
  while (v >= 0x80) {
    v = Math.floor(v / 128)
    n++
  }
  return n
}

const writeUnsigned = (bytes: Uint8Array, at: number, v: number): number => {
  while (v >= 0x80) {
    bytes[at++] = (v & 0x7f) | 0x80
    v >>>= 7
  }
  bytes[at++] = v
  return at
}

const writeVarint = (bytes: Uint8Array, at: number, value: number): number =>
  writeUnsigned(bytes, at, ((value << 1) ^ (value >> 31)) >>> 0)

const writeVarlong = (bytes: Uint8Array, at: number, value: number): number => {
  let v = zigzagLong(value)
  if (v < TWO_32) return writeUnsigned(bytes, at, v)
  while (v >= 0x80) {
    bytes[at++] = (v % 128) | 0x80
    v = Math.floor(v / 128)
  }
  bytes[at++] = v
  return at
}

/**
 * What the checked readers below throw (multi-byte varints, header lists, framing checks: the
 * paths off the per-record fast path). `end` bounds every read; a read past it or a varint too
 * long throws this, and the caller, which knows the topic-partition and offset, turns it into a
 * `RecordBatchError`. It never leaves this module.
 */
class Malformed {
  readonly detail: string
  constructor(detail: string) {
    this.detail = detail
  }
}

const readUnsigned = (bytes: Uint8Array, cursor: { at: number }, end: number, maxBytes: number): number => {
  let result = 0
  let scale = 1
  for (let i = 0; i < maxBytes; i++) {
    if (cursor.at >= end) throw new Malformed("a varint runs past the end of its record")
    const b = bytes[cursor.at++]!
    result += (b & 0x7f) * scale
    if (b < 0x80) {
      if (result > Number.MAX_SAFE_INTEGER) throw new Malformed("a varlong exceeds 2^53")
      return result
    }
    scale *= 128
  }
  throw new Malformed(`a varint is longer than ${maxBytes} bytes`)
}

/** Decodes a zigzag value read as unsigned (exact in the safe-integer range). */
const unzigzag = (v: number): number => (v % 2 === 0 ? v / 2 : -(v + 1) / 2)

const readVarint = (bytes: Uint8Array, cursor: { at: number }, end: number): number =>
  unzigzag(readUnsigned(bytes, cursor, end, 5))

const readVarlong = (bytes: Uint8Array, cursor: { at: number }, end: number): number =>
  unzigzag(readUnsigned(bytes, cursor, end, 10))

const readInt64 = (view: DataView, at: number): number => view.getInt32(at) * TWO_32 + view.getUint32(at + 4)

const writeInt64 = (view: DataView, at: number, value: number): void => {
  const hi = Math.floor(value / TWO_32)
  view.setInt32(at, hi)
  view.setUint32(at + 4, value - hi * TWO_32)
}

// --- strings -------------------------------------------------------------------------------

const utf8 = new TextDecoder("utf-8")
const utf8Encoder = new TextEncoder()

/** Header keys are short and almost always ASCII: building the string directly beats TextDecoder. */
const decodeString = (bytes: Uint8Array, start: number, end: number): string => {
  if (end - start <= 32) {
    let s = ""
    for (let i = start; i < end; i++) {
      const c = bytes[i]!
      if (c >= 0x80) return utf8.decode(bytes.subarray(start, end))
      s += String.fromCharCode(c)
    }
    return s
  }
  return utf8.decode(bytes.subarray(start, end))
}

const utf8Length = (s: string): number => {
  let n = s.length
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) continue
    if (c < 0x800) n += 1
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2 // a surrogate pair: 2 UTF-16 units, 4 UTF-8 bytes
      i++
    } else n += 2
  }
  return n
}

const writeString = (bytes: Uint8Array, at: number, s: string, length: number): number => {
  if (length === s.length) {
    for (let i = 0; i < s.length; i++) bytes[at + i] = s.charCodeAt(i)
  } else {
    utf8Encoder.encodeInto(s, bytes.subarray(at, at + length))
  }
  return at + length
}

// --- encoding ------------------------------------------------------------------------------

/**
 * A record to put in a batch.
 */
export interface RecordInput {
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly headers?: ReadonlyArray<Header> | undefined
  /** Epoch milliseconds. */
  readonly timestamp: number
}

/**
 * How a batch is written. Defaults are a plain (non-idempotent) producer's: ids and sequence -1.
 */
export interface EncodeOptions {
  readonly compression?: Compression | undefined
  /** The idempotent or transactional producer's id (from InitProducerId); -1 for none. */
  readonly producerId?: number | undefined
  readonly producerEpoch?: number | undefined
  /** The sequence number of the batch's first record, per partition; -1 for none. */
  readonly baseSequence?: number | undefined
  /** Sets the transactional bit: the records belong to the producer's open transaction. */
  readonly transactional?: boolean | undefined
  /** The broker assigns offsets; a producer writes 0. Log segments in tests use others. */
  readonly baseOffset?: number | undefined
  /** -1 from producers; the broker fills it in. */
  readonly partitionLeaderEpoch?: number | undefined
  /** Sets the control bit (transaction markers, written by the coordinator or by tests). */
  readonly control?: boolean | undefined
}

/** Bytes of one record's body (everything after its length varint). */
const bodySize = (
  key: Uint8Array | null,
  value: Uint8Array | null,
  headers: ReadonlyArray<Header> | undefined,
  offsetDelta: number,
  timestampDelta: number,
): number => {
  let size =
    1 +
    varlongSize(timestampDelta) +
    varintSize(offsetDelta) +
    (key == null ? 1 : varintSize(key.length) + key.length) +
    (value == null ? 1 : varintSize(value.length) + value.length)
  if (headers === undefined || headers.length === 0) return size + 1
  size += varintSize(headers.length)
  for (let h = 0; h < headers.length; h++) {
    const header = headers[h]!
    const keyLength = utf8Length(header.key)
    size += varintSize(keyLength) + keyLength
    const headerValue = header.value
    size += headerValue === null ? 1 : varintSize(headerValue.length) + headerValue.length
  }
  return size
}

/** Writes one record (its length varint first) at `at`; returns where it ends. */
const writeRecord = (
  bytes: Uint8Array,
  at: number,
  size: number,
  key: Uint8Array | null,
  value: Uint8Array | null,
  headers: ReadonlyArray<Header> | undefined,
  offsetDelta: number,
  timestampDelta: number,
): number => {
  at = writeVarint(bytes, at, size)
  bytes[at++] = 0 // record attributes: unused
  at = writeVarlong(bytes, at, timestampDelta)
  at = writeVarint(bytes, at, offsetDelta)
  // `== null`: a record from JavaScript that leaves the key or value out has none (not a crash).
  if (key == null) bytes[at++] = 1 // zigzag(-1)
  else {
    at = writeVarint(bytes, at, key.length)
    bytes.set(key, at)
    at += key.length
  }
  if (value == null) bytes[at++] = 1
  else {
    at = writeVarint(bytes, at, value.length)
    bytes.set(value, at)
    at += value.length
  }
  if (headers === undefined || headers.length === 0) {
    bytes[at++] = 0
    return at
  }
  at = writeVarint(bytes, at, headers.length)
  for (let h = 0; h < headers.length; h++) {
    const header = headers[h]!
    const keyLength = utf8Length(header.key)
    at = writeVarint(bytes, at, keyLength)
    at = writeString(bytes, at, header.key, keyLength)
    const headerValue = header.value
    if (headerValue === null) bytes[at++] = 1
    else {
      at = writeVarint(bytes, at, headerValue.length)
      bytes.set(headerValue, at)
      at += headerValue.length
    }
  }
  return at
}

const writeRecords = (
  records: ReadonlyArray<RecordInput>,
  sizes: Int32Array,
  baseTimestamp: number,
  bytes: Uint8Array,
  at: number,
): number => {
  for (let i = 0; i < records.length; i++) {
    const record = records[i]!
    at = writeRecord(bytes, at, sizes[i]!, record.key, record.value, record.headers, i, record.timestamp - baseTimestamp)
  }
  return at
}

/**
 * Writes the batch header into `bytes[0, 61)` (the records follow it; `bytes` is the whole
 * batch) except the CRC, which covers it from `attributes` on and is the caller's to write.
 */
const writeHeader = (
  bytes: Uint8Array,
  count: number,
  baseTimestamp: number,
  maxTimestamp: number,
  codec: Compression,
  options: EncodeOptions,
): DataView => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  writeInt64(view, 0, options.baseOffset ?? 0)
  view.setInt32(8, bytes.length - LOG_OVERHEAD)
  view.setInt32(12, options.partitionLeaderEpoch ?? -1)
  view.setInt8(MAGIC_AT, 2)
  const attributes =
    compressionCode[codec] | (options.transactional === true ? TRANSACTIONAL : 0) | (options.control === true ? CONTROL : 0)
  view.setInt16(ATTRIBUTES_AT, attributes)
  view.setInt32(23, count - 1)
  writeInt64(view, 27, baseTimestamp)
  writeInt64(view, 35, maxTimestamp)
  writeInt64(view, 43, options.producerId ?? -1)
  view.setInt16(51, options.producerEpoch ?? -1)
  view.setInt32(53, options.baseSequence ?? -1)
  view.setInt32(57, count)
  return view
}

/**
 * Encodes `records` as one record batch v2, ready for a Produce request's `records` field (or,
 * one after another, a log segment). Offsets are `baseOffset + index`; the base timestamp is the
 * first record's, as in Java's `MemoryRecordsBuilder`.
 *
 * One buffer for an uncompressed batch: a first pass sizes every record (kept in one Int32Array),
 * a second writes varints and bytes in place. A compressed batch writes its records section into
 * a scratch buffer that the codec reads. (The producer builds its batches as records arrive,
 * with {@link BatchBuilder}, which writes the same bytes.)
 */
export const encodeRecordBatch = (records: ReadonlyArray<RecordInput>, options: EncodeOptions = {}): Uint8Array => {
  const count = records.length
  if (count === 0) throw new RangeError("A record batch needs at least one record")
  const baseTimestamp = records[0]!.timestamp
  let maxTimestamp = baseTimestamp
  const sizes = new Int32Array(count)
  let recordsSize = 0
  for (let i = 0; i < count; i++) {
    const record = records[i]!
    if (record.timestamp > maxTimestamp) maxTimestamp = record.timestamp
    const size = bodySize(record.key, record.value, record.headers, i, record.timestamp - baseTimestamp)
    sizes[i] = size
    recordsSize += varintSize(size) + size
  }
  const codec = options.compression ?? "none"
  let bytes: Uint8Array
  if (codec === "none") {
    bytes = new Uint8Array(HEADER + recordsSize)
    writeRecords(records, sizes, baseTimestamp, bytes, HEADER)
  } else {
    const section = new Uint8Array(recordsSize)
    writeRecords(records, sizes, baseTimestamp, section, 0)
    const compressed = compress(codec, section)
    bytes = new Uint8Array(HEADER + compressed.length)
    bytes.set(compressed, HEADER)
  }
  const view = writeHeader(bytes, count, baseTimestamp, maxTimestamp, codec, options)
  view.setUint32(CRC_AT, crc32c(bytes, ATTRIBUTES_AT))
  return bytes
}

/**
 * A record batch v2 written as its records arrive (the producer's accumulator appends each one
 * as it is sent): each record is encoded once, straight after the header's place in the batch's
 * buffer, and, uncompressed, the CRC-32C of the records is carried along. {@link finish} then
 * writes only the header and combines its CRC with the records' (`crc32cCombine`): the bytes
 * that go to the socket are the ones written at append time, and the work left when the batch
 * is sent does not grow with its size. The same records give the same bytes as
 * {@link encodeRecordBatch}.
 *
 * The buffer starts at `capacity` bytes and doubles when a record does not fit.
 */
export class BatchBuilder {
  private bytes: Uint8Array
  /** `bytes` as words, for the CRC (`crc32cWords`): made once per buffer, not per record. */
  private words: Int32Array
  /** Bytes written: the header's 61, then the records. */
  private used = HEADER
  private baseTimestamp = 0
  private maxTimestamp = 0
  /** The CRC-32C of the records written so far (kept only without compression). */
  private recordsCrc = 0
  private readonly codec: Compression
  /** Records appended. */
  count = 0

  /**
   * `buffer`, when given, is used instead of a new one (its old contents are overwritten, never
   * read): a buffer {@link release}d by a batch that is done with it.
   */
  constructor(capacity: number, compression: Compression = "none", buffer?: Uint8Array) {
    this.bytes = buffer ?? new Uint8Array(Math.max(HEADER + 64, capacity))
    this.words = wordsOf(this.bytes.buffer)
    this.codec = compression
  }

  /**
   * The buffer, for another builder; this one and every batch it finished must not be used again
   * (`count` still says how many records it held).
   */
  release(): Uint8Array {
    const bytes = this.bytes
    this.bytes = new Uint8Array(0)
    this.words = new Int32Array(0)
    this.used = HEADER
    return bytes
  }

  /** Bytes of the batch so far, uncompressed. */
  get size(): number {
    return this.used
  }

  /** Appends a record; its offset is the batch's base offset plus the number appended before it. */
  append(key: Uint8Array | null, value: Uint8Array | null, headers: ReadonlyArray<Header> | undefined, timestamp: number): void {
    if (this.count === 0) this.baseTimestamp = this.maxTimestamp = timestamp
    else if (timestamp > this.maxTimestamp) this.maxTimestamp = timestamp
    const delta = timestamp - this.baseTimestamp
    const size = bodySize(key, value, headers, this.count, delta)
    const needed = this.used + varintSize(size) + size
    if (needed > this.bytes.length) {
      let capacity = this.bytes.length * 2
      while (capacity < needed) capacity *= 2
      const grown = new Uint8Array(capacity)
      grown.set(this.bytes.subarray(0, this.used))
      this.bytes = grown
      this.words = wordsOf(grown.buffer)
    }
    const start = this.used
    this.used = writeRecord(this.bytes, start, size, key, value, headers, this.count, delta)
    if (this.codec === "none") this.recordsCrc = crc32cWords(this.recordsCrc, this.bytes, this.words, start, this.used)
    this.count++
  }

  /**
   * The batch with its header written from `options` (the codec is the builder's). Uncompressed,
   * a view of the builder's buffer: finishing again (a retry with another producer epoch)
   * rewrites the header in place. Compressed, a new buffer each time. Throws a `RangeError` with
   * no record, and what `compress` throws for a codec this runtime lacks. No record may be
   * appended after it.
   */
  finish(options: Omit<EncodeOptions, "compression">): Uint8Array {
    if (this.count === 0) throw new RangeError("A record batch needs at least one record")
    const codec = this.codec
    let bytes: Uint8Array
    if (codec === "none") bytes = this.bytes.subarray(0, this.used)
    else {
      const compressed = compress(codec, this.bytes.subarray(HEADER, this.used))
      bytes = new Uint8Array(HEADER + compressed.length)
      bytes.set(compressed, HEADER)
    }
    const view = writeHeader(bytes, this.count, this.baseTimestamp, this.maxTimestamp, codec, options)
    const crc = codec === "none"
      ? crc32cCombine(crc32c(bytes, ATTRIBUTES_AT, HEADER), this.recordsCrc, this.used - HEADER)
      : crc32c(bytes, ATTRIBUTES_AT)
    view.setUint32(CRC_AT, crc)
    return bytes
  }
}

/**
 * A transaction marker as the coordinator writes it: a control batch of one record whose key is
 * `version int16 (0) | type int16 (0 abort, 1 commit)` and value `version int16 (0) |
 * coordinatorEpoch int32`.
 */
export const encodeControlBatch = (
  type: "abort" | "commit",
  options: EncodeOptions & { readonly timestamp: number; readonly coordinatorEpoch?: number | undefined },
): Uint8Array => {
  const key = new Uint8Array([0, 0, 0, type === "commit" ? 1 : 0])
  const value = new Uint8Array(6)
  new DataView(value.buffer).setInt32(2, options.coordinatorEpoch ?? 0)
  return encodeRecordBatch([{ key, value, timestamp: options.timestamp }], {
    ...options,
    compression: "none",
    transactional: true,
    control: true,
  })
}

// --- decoding ------------------------------------------------------------------------------

/**
 * A record of a decoded batch: offset and timestamp are computed when iteration reaches it; key,
 * value and headers are read from the batch's bytes on access. Each `key` / `value` read returns
 * a fresh view of the same bytes (no copy); `headers` is built once, on first access.
 *
 * The batch's framing was checked when it was decoded; a record whose key, value or header
 * lengths disagree with its own length (a CRC-valid batch from a broken producer) throws
 * `RecordBatchError` from the getter.
 */
export class BatchRecord implements ConsumerRecord {
  private cachedHeaders: ReadonlyArray<Header> | undefined = undefined
  readonly topic: string
  readonly partition: number
  readonly offset: number
  readonly timestamp: number
  /** The records section: the fetch response's bytes, or the decompressed section. */
  private readonly bytes: Uint8Array
  /** Where the key's length varint starts. */
  private readonly at: number
  /** Where the record ends. */
  private readonly end: number
  constructor(
    topic: string,
    partition: number,
    offset: number,
    timestamp: number,
    bytes: Uint8Array,
    at: number,
    end: number,
  ) {
    this.topic = topic
    this.partition = partition
    this.offset = offset
    this.timestamp = timestamp
    this.bytes = bytes
    this.at = at
    this.end = end
  }

  private fail(detail: string): never {
    throw new RecordBatchError("corrupt", this.topic, this.partition, this.offset, detail)
  }

  /** The bytes field starting at `cursor.at`, advancing past it. */
  private field(cursor: { at: number }, what: string): Uint8Array | null {
    const bytes = this.bytes
    let length: number
    const b = bytes[cursor.at]!
    if (b < 0x80 && cursor.at < this.end) {
      cursor.at++
      length = (b >>> 1) ^ -(b & 1)
    } else {
      try {
        length = readVarint(bytes, cursor, this.end)
      } catch (error) {
        return this.fail(`its ${what} length: ${(error as Malformed).detail}`)
      }
    }
    if (length < 0) {
      if (length !== -1) this.fail(`its ${what} length is ${length}`)
      return null
    }
    const start = cursor.at
    if (length > this.end - start) this.fail(`its ${what} of ${length} bytes runs past the record's ${this.end - start}`)
    cursor.at = start + length
    return new Uint8Array(bytes.buffer, bytes.byteOffset + start, length)
  }

  /**
   * The bytes of the record's key, value and headers with their lengths, read without parsing
   * them: what a mailbox counts a record as pinning (fetcher.ts), where reading `headers` to
   * count them would build them for every record, wanted or not.
   */
  get pinnedBytes(): number {
    return this.end - this.at
  }

  // Views are made with `new Uint8Array(buffer, offset, length)`: on V8 about 10 ns less than
  // `subarray`, the same on Bun.
  get key(): Uint8Array | null {
    const bytes = this.bytes
    const at = this.at
    const b = bytes[at]!
    // The usual case: a one-byte length. Anything else takes the checked path.
    if (b < 0x80 && at < this.end) {
      const length = (b >>> 1) ^ -(b & 1)
      if (length === -1) return null
      if (length >= 0 && length <= this.end - at - 1) return new Uint8Array(bytes.buffer, bytes.byteOffset + at + 1, length)
    }
    return this.field({ at }, "key")
  }

  get value(): Uint8Array | null {
    const bytes = this.bytes
    const end = this.end
    let at = this.at
    let b = bytes[at]!
    if (b < 0x80 && at < end) {
      const keyLength = (b >>> 1) ^ -(b & 1)
      if (keyLength >= -1 && keyLength <= end - at - 1) {
        at += 1 + (keyLength > 0 ? keyLength : 0)
        b = bytes[at]!
        if (b < 0x80 && at < end) {
          const length = (b >>> 1) ^ -(b & 1)
          if (length === -1) return null
          if (length >= 0 && length <= end - at - 1) return new Uint8Array(bytes.buffer, bytes.byteOffset + at + 1, length)
        }
      }
    }
    const cursor = { at: this.at }
    this.field(cursor, "key")
    return this.field(cursor, "value")
  }

  get headers(): ReadonlyArray<Header> {
    if (this.cachedHeaders !== undefined) return this.cachedHeaders
    const cursor = { at: this.at }
    this.field(cursor, "key")
    this.field(cursor, "value")
    let count: number
    try {
      count = readVarint(this.bytes, cursor, this.end)
    } catch (error) {
      return this.fail(`its header count: ${(error as Malformed).detail}`)
    }
    // Each header takes at least 2 bytes: a count beyond that is corrupt, not an allocation.
    if (count < 0 || count * 2 > this.end - cursor.at) this.fail(`its header count ${count} does not fit the record`)
    const headers: Array<Header> = []
    for (let i = 0; i < count; i++) {
      const key = this.field(cursor, "header key")
      if (key === null) this.fail("a header key is null")
      headers.push({ key: decodeString(key, 0, key.length), value: this.field(cursor, "header value") })
    }
    if (cursor.at !== this.end) this.fail(`${this.end - cursor.at} bytes are left after its headers`)
    this.cachedHeaders = headers
    return headers
  }

  /** Plain data, for logs and `assert.deepEqual`. */
  toJSON(): ConsumerRecord {
    return {
      topic: this.topic,
      partition: this.partition,
      offset: this.offset,
      timestamp: this.timestamp,
      key: this.key,
      value: this.value,
      headers: this.headers,
    }
  }
}

/** A transaction the broker reports aborted, from a Fetch response partition's `abortedTransactions`. */
export interface AbortedTransaction {
  readonly producerId: number
  readonly firstOffset: number
}

/**
 * How `decodeRecordBatches` reads one partition's records.
 */
export interface DecodeOptions {
  /** For error messages and the records' `topic` / `partition`. */
  readonly topic: string
  readonly partition: number
  /** Verify each batch's CRC-32C, as Java's `check.crcs` (default true). */
  readonly checkCrcs?: boolean | undefined
  /**
   * `read-committed` (the default) drops batches of aborted transactions, given
   * `abortedTransactions`; control batches (transaction markers) are never handed out.
   */
  readonly isolation?: "read-committed" | "read-uncommitted" | undefined
  readonly abortedTransactions?: ReadonlyArray<AbortedTransaction> | null | undefined
  /** Records before this offset are skipped (a compressed batch may start before the fetch offset). */
  readonly fromOffset?: number | undefined
  /** The most a batch's records section may decompress to. Default 256 MiB. */
  readonly maxDecompressedBytes?: number | undefined
}

/**
 * The default bound on a decompressed records section: far above any batch a broker accepts
 * (`message.max.bytes` is 1 MiB by default, compressed), low enough that a zip bomb fails.
 */
export const defaultMaxDecompressedBytes = 256 * 1024 * 1024

/**
 * One decoded batch: header fields as numbers, and its records by iteration.
 */
export class RecordBatch implements Iterable<BatchRecord> {
  readonly topic: string
  readonly partition: number
  readonly baseOffset: number
  readonly partitionLeaderEpoch: number
  readonly crc: number
  readonly attributes: number
  readonly lastOffsetDelta: number
  readonly baseTimestamp: number
  readonly maxTimestamp: number
  readonly producerId: number
  readonly producerEpoch: number
  readonly baseSequence: number
  readonly recordCount: number
  /** The records section (decompressed when the batch is compressed), and where it lies in it. */
  readonly section: Uint8Array
  readonly sectionStart: number
  readonly sectionEnd: number
  /** Records before this offset are skipped by iteration. */
  readonly fromOffset: number
  constructor(
    topic: string,
    partition: number,
    baseOffset: number,
    partitionLeaderEpoch: number,
    crc: number,
    attributes: number,
    lastOffsetDelta: number,
    baseTimestamp: number,
    maxTimestamp: number,
    producerId: number,
    producerEpoch: number,
    baseSequence: number,
    recordCount: number,
    section: Uint8Array,
    sectionStart: number,
    sectionEnd: number,
    fromOffset: number,
  ) {
    this.topic = topic
    this.partition = partition
    this.baseOffset = baseOffset
    this.partitionLeaderEpoch = partitionLeaderEpoch
    this.crc = crc
    this.attributes = attributes
    this.lastOffsetDelta = lastOffsetDelta
    this.baseTimestamp = baseTimestamp
    this.maxTimestamp = maxTimestamp
    this.producerId = producerId
    this.producerEpoch = producerEpoch
    this.baseSequence = baseSequence
    this.recordCount = recordCount
    this.section = section
    this.sectionStart = sectionStart
    this.sectionEnd = sectionEnd
    this.fromOffset = fromOffset
  }

  get compression(): Compression {
    return compressionByCode[this.attributes & 7]!
  }
  get isTransactional(): boolean {
    return (this.attributes & TRANSACTIONAL) !== 0
  }
  get isControl(): boolean {
    return (this.attributes & CONTROL) !== 0
  }
  get timestampType(): "create-time" | "log-append-time" {
    return (this.attributes & TIMESTAMP_LOG_APPEND) !== 0 ? "log-append-time" : "create-time"
  }
  get lastOffset(): number {
    return this.baseOffset + this.lastOffsetDelta
  }
  /** Where the next fetch starts after this batch. */
  get nextOffset(): number {
    return this.baseOffset + this.lastOffsetDelta + 1
  }

  [Symbol.iterator](): RecordIterator {
    return new RecordIterator(this)
  }
}

/**
 * Walks a batch's records. `next()` reuses one result object (the for-of protocol reads it at
 * once) so that iteration allocates only the `BatchRecord`s.
 */
export class RecordIterator implements Iterator<BatchRecord> {
  private at: number
  private left: number
  private readonly result: { done: boolean; value: BatchRecord } = { done: false, value: undefined as unknown as BatchRecord }
  private readonly cursor = { at: 0 }

  private readonly batch: RecordBatch
  constructor(batch: RecordBatch) {
    this.batch = batch
    this.at = batch.sectionStart
    this.left = batch.recordCount
  }

  [Symbol.iterator](): RecordIterator {
    return this
  }

  next(): IteratorResult<BatchRecord> {
    const batch = this.batch
    const bytes = batch.section
    const result = this.result
    while (this.left > 0) {
      this.left--
      // The framing pass checked that each length varint and its record fit the section.
      let at = this.at
      let length = bytes[at]!
      if (length < 0x80) {
        at++
        length = (length >>> 1) ^ -(length & 1)
      } else {
        this.cursor.at = at
        length = readVarint(bytes, this.cursor, batch.sectionEnd)
        at = this.cursor.at
      }
      const end = at + length
      this.at = end
      at++ // record attributes: unused
      let timestampDelta: number
      let offsetDelta: number
      const t = bytes[at]!
      const o = bytes[at + 1]!
      if (t < 0x80 && o < 0x80) {
        timestampDelta = (t >>> 1) ^ -(t & 1)
        offsetDelta = (o >>> 1) ^ -(o & 1)
        at += 2
      } else {
        const cursor = this.cursor
        cursor.at = at
        try {
          timestampDelta = readVarlong(bytes, cursor, end)
          offsetDelta = readVarint(bytes, cursor, end)
        } catch (error) {
          throw new RecordBatchError(
            "corrupt",
            batch.topic,
            batch.partition,
            batch.baseOffset,
            `a record's deltas: ${(error as Malformed).detail}`,
          )
        }
        at = cursor.at
      }
      if (at > end) {
        throw new RecordBatchError("corrupt", batch.topic, batch.partition, batch.baseOffset, "a record is shorter than its fixed fields")
      }
      const offset = batch.baseOffset + offsetDelta
      if (offset < batch.fromOffset) continue
      const timestamp = (batch.attributes & TIMESTAMP_LOG_APPEND) !== 0 ? batch.maxTimestamp : batch.baseTimestamp + timestampDelta
      result.value = new BatchRecord(batch.topic, batch.partition, offset, timestamp, bytes, at, end)
      return result
    }
    result.done = true
    result.value = undefined as unknown as BatchRecord
    return result
  }
}

/**
 * What `decodeRecordBatches` found in one partition's `records` bytes.
 */
export interface DecodedBatches {
  /** The batches to hand out: no control batch, no batch of an aborted transaction (read-committed). */
  readonly batches: ReadonlyArray<RecordBatch>
  /**
   * The offset after the last whole batch read, skipped ones included (the next fetch offset);
   * undefined when no whole batch was read.
   */
  readonly nextOffset: number | undefined
  /** Bytes of a partial trailing batch, ignored (a fetch cut at its byte limit; normal). */
  readonly truncatedBytes: number
  /** The first bad batch: decoding stops there, and `batches` holds those before it. */
  readonly error: RecordBatchError | undefined
}

/** The control record key of an abort marker: version (int16), then type 0. */
const isAbortMarker = (batch: RecordBatch): boolean => {
  const bytes = batch.section
  const cursor = { at: batch.sectionStart }
  const end = batch.sectionEnd
  if (batch.recordCount < 1) return false
  try {
    readVarint(bytes, cursor, end) // record length
    cursor.at++ // attributes
    readVarlong(bytes, cursor, end)
    readVarint(bytes, cursor, end)
    const keyLength = readVarint(bytes, cursor, end)
    if (keyLength < 4 || cursor.at + 4 > end) return false
  } catch {
    return false
  }
  return ((bytes[cursor.at + 2]! << 8) | bytes[cursor.at + 3]!) === 0
}

/** Checks the chain of record lengths: each fits, and together they fill the section exactly. */
const checkFraming = (bytes: Uint8Array, start: number, end: number, count: number): string | undefined => {
  const cursor = { at: start }
  for (let i = 0; i < count; i++) {
    let length: number
    const b = bytes[cursor.at]!
    if (b < 0x80 && cursor.at < end) {
      // A one-byte length (records under 64 bytes): no call, no try.
      cursor.at++
      length = (b >>> 1) ^ -(b & 1)
    } else {
      try {
        length = readVarint(bytes, cursor, end)
      } catch (error) {
        return `record ${i} of ${count}: ${(error as Malformed).detail}`
      }
    }
    // attributes, timestamp delta, offset delta, key length, value length, header count
    if (length < 6) return `record ${i} of ${count} has length ${length}, less than the 6 bytes a record takes`
    if (length > end - cursor.at) return `record ${i} of ${count} (${length} bytes) runs past the batch (${end - cursor.at} left)`
    cursor.at += length
  }
  if (cursor.at !== end) return `${end - cursor.at} bytes are left after the batch's ${count} records`
  return undefined
}

/**
 * Decodes the record batches of one partition's `records` bytes (a Fetch response's, or a log
 * segment's). Never throws: a bad batch ends decoding with `error` set.
 *
 * Read-committed filtering follows Java's `CompletedFetch`: aborted transactions are consumed in
 * `firstOffset` order as batches pass them; a transactional batch whose producer has an aborted
 * transaction open is dropped, and that producer's abort marker closes it.
 */
export const decodeRecordBatches = (bytes: Uint8Array, options: DecodeOptions): DecodedBatches => {
  const { topic, partition } = options
  const checkCrcs = options.checkCrcs ?? true
  const readCommitted = (options.isolation ?? "read-committed") === "read-committed"
  const fromOffset = options.fromOffset ?? 0
  const maxDecompressed = options.maxDecompressedBytes ?? defaultMaxDecompressedBytes
  const aborted =
    readCommitted && options.abortedTransactions != null && options.abortedTransactions.length > 0
      ? [...options.abortedTransactions].sort((a, b) => a.firstOffset - b.firstOffset)
      : []
  let nextAborted = 0
  const abortedProducers = new Set<number>()

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const batches: Array<RecordBatch> = []
  let nextOffset: number | undefined = undefined
  let at = 0
  const fail = (reason: RecordBatchErrorReason, offset: number | undefined, detail: string): DecodedBatches => ({
    batches,
    nextOffset,
    truncatedBytes: 0,
    error: new RecordBatchError(reason, topic, partition, offset, detail),
  })

  while (at < bytes.length) {
    const left = bytes.length - at
    if (left < LOG_OVERHEAD) return { batches, nextOffset, truncatedBytes: left, error: undefined }
    const baseOffset = readInt64(view, at)
    const batchLength = view.getInt32(at + 8)
    if (batchLength < HEADER - LOG_OVERHEAD) {
      return fail("corrupt", baseOffset, `batch length ${batchLength} is less than the ${HEADER - LOG_OVERHEAD} bytes of a batch header`)
    }
    const size = LOG_OVERHEAD + batchLength
    if (left < HEADER) return { batches, nextOffset, truncatedBytes: left, error: undefined }
    const magic = view.getInt8(at + MAGIC_AT)
    if (magic !== 2) {
      return fail("unsupported", baseOffset, `magic ${magic}: only record batch v2 (Kafka 0.11+) is supported`)
    }
    if (size > left) return { batches, nextOffset, truncatedBytes: left, error: undefined }
    const end = at + size
    if (checkCrcs) {
      const stored = view.getUint32(at + CRC_AT)
      const computed = crc32c(bytes, at + ATTRIBUTES_AT, end)
      if (stored !== computed) {
        return fail(
          "crc",
          baseOffset,
          `CRC-32C is 0x${computed.toString(16).padStart(8, "0")} but the batch says 0x${stored.toString(16).padStart(8, "0")}; the bytes were corrupted on the way (fetch again) or on disk`,
        )
      }
    }
    const attributes = view.getInt16(at + ATTRIBUTES_AT)
    const lastOffsetDelta = view.getInt32(at + 23)
    const producerId = readInt64(view, at + 43)
    const recordCount = view.getInt32(at + 57)
    const batchEnd = baseOffset + lastOffsetDelta + 1
    const current = at
    at = end
    nextOffset = batchEnd
    if (recordCount < 0) return fail("corrupt", baseOffset, `record count ${recordCount} is negative`)
    if (batchEnd <= fromOffset && !(attributes & CONTROL)) continue

    const codecNumber = attributes & 7
    if (codecNumber > 4) return fail("unsupported", baseOffset, `compression codec ${codecNumber} is unknown`)
    let section = bytes
    let sectionStart = current + HEADER
    let sectionEnd = end
    if (codecNumber !== 0 && recordCount > 0) {
      try {
        section = decompress(compressionByCode[codecNumber] as Exclude<Compression, "none">, bytes.subarray(sectionStart, end), maxDecompressed)
      } catch (error) {
        return fail("compression", baseOffset, (error as CodecError).message)
      }
      sectionStart = 0
      sectionEnd = section.length
    }
    const framing = checkFraming(section, sectionStart, sectionEnd, recordCount)
    if (framing !== undefined) return fail("corrupt", baseOffset, framing)

    const batch = new RecordBatch(
      topic,
      partition,
      baseOffset,
      view.getInt32(current + 12),
      view.getUint32(current + CRC_AT),
      attributes,
      lastOffsetDelta,
      readInt64(view, current + 27),
      readInt64(view, current + 35),
      producerId,
      view.getInt16(current + 51),
      view.getInt32(current + 53),
      recordCount,
      section,
      sectionStart,
      sectionEnd,
      fromOffset,
    )
    if (readCommitted && producerId >= 0) {
      while (nextAborted < aborted.length && aborted[nextAborted]!.firstOffset <= batch.lastOffset) {
        abortedProducers.add(aborted[nextAborted++]!.producerId)
      }
      if (batch.isControl) {
        if (isAbortMarker(batch)) abortedProducers.delete(producerId)
        continue
      }
      if (batch.isTransactional && abortedProducers.has(producerId)) continue
    }
    if (batch.isControl) continue
    batches.push(batch)
  }
  return { batches, nextOffset, truncatedBytes: 0, error: undefined }
}

/** `decodeRecordBatches`, throwing its `RecordBatchError` (for callers inside a hot loop). */
export const readRecordBatches = (bytes: Uint8Array, options: DecodeOptions): DecodedBatches => {
  const decoded = decodeRecordBatches(bytes, options)
  if (decoded.error !== undefined) throw decoded.error
  return decoded
}
