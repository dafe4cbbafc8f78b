import assert from "node:assert/strict"
import { test } from "node:test"
import {
  attempt,
  ProtocolError,
  Reader,
  uuidFromString,
  uuidToString,
  Writer,
} from "../../../lib/internal/kafka/protocol/wire.ts"
import { seeded } from "./protocolValues.ts"

const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ")
const written = (write: (w: Writer) => void): string => {
  const w = new Writer(1)
  write(w)
  return hex(w.finish())
}
const reader = (text: string): Reader => new Reader(Uint8Array.from(text.split(" ").filter(Boolean), (b) => parseInt(b, 16)))

// The reference: Kafka's zigzag varlong (ByteUtils.writeVarlong) with BigInt, for checking the
// number-only implementation at values where doubles lose bits.
const referenceVarlong = (value: number): string => {
  const v = BigInt(value)
  let zigzag = BigInt.asUintN(64, (v << 1n) ^ (v >> 63n))
  const out: number[] = []
  while (zigzag >= 0x80n) {
    out.push(Number(zigzag & 0x7fn) | 0x80)
    zigzag >>= 7n
  }
  out.push(Number(zigzag))
  return hex(Uint8Array.from(out))
}

test("unsigned varints match Kafka's encoding, up to 2^32 - 1 in five bytes", () => {
  const cases: Array<[number, string]> = [
    [0, "00"],
    [1, "01"],
    [127, "7f"],
    [128, "80 01"],
    [300, "ac 02"],
    [16_383, "ff 7f"],
    [16_384, "80 80 01"],
    [2 ** 31, "80 80 80 80 08"],
    [2 ** 32 - 1, "ff ff ff ff 0f"],
  ]
  for (const [value, bytes] of cases) {
    assert.equal(written((w) => w.unsignedVarint(value)), bytes, String(value))
    assert.equal(reader(bytes).unsignedVarint(), value, bytes)
  }
})

test("zigzag varints (int32) match Kafka's encoding, negatives included", () => {
  const cases: Array<[number, string]> = [
    [0, "00"],
    [-1, "01"],
    [1, "02"],
    [-64, "7f"],
    [64, "80 01"],
    [2 ** 31 - 1, "fe ff ff ff 0f"],
    [-(2 ** 31), "ff ff ff ff 0f"],
  ]
  for (const [value, bytes] of cases) {
    assert.equal(written((w) => w.varint(value)), bytes, String(value))
    assert.equal(reader(bytes).varint(), value, bytes)
  }
})

test("zigzag varlongs match Kafka's encoding exactly up to ±(2^53 - 1)", () => {
  const edges = [0, -1, 1, 63, -64, 64, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 2 ** 32, 2 ** 32 - 1, 2 ** 52]
  const values = [...edges, ...edges.filter((v) => v !== 0).map((v) => -v), Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 2 ** 53 - 2]
  const random = seeded(53)
  for (let i = 0; i < 200; i++) values.push(Math.round((random.next() - 0.5) * 2 * Number.MAX_SAFE_INTEGER))
  for (const value of values) {
    const bytes = written((w) => w.varlong(value))
    assert.equal(bytes, referenceVarlong(value), String(value))
    assert.equal(reader(bytes).varlong(), value, bytes)
  }
  assert.equal(written((w) => w.varlong(2 ** 31)), "80 80 80 80 10")
  assert.equal(written((w) => w.varlong(Number.MAX_SAFE_INTEGER)), "fe ff ff ff ff ff ff 1f")
  assert.equal(written((w) => w.varlong(-Number.MAX_SAFE_INTEGER)), "fd ff ff ff ff ff ff 1f")
  // Long.MIN_VALUE, as Kafka writes it, reads as -2^63 (a double holds it exactly).
  assert.equal(reader("ff ff ff ff ff ff ff ff ff 01").varlong(), -(2 ** 63))
})

test("int64 reads hi * 2^32 + lo; Long.MAX_VALUE and Long.MIN_VALUE survive as the doubles nearest them", () => {
  const cases: Array<[number, string]> = [
    [0, "00 00 00 00 00 00 00 00"],
    [-1, "ff ff ff ff ff ff ff ff"],
    [2 ** 32, "00 00 00 01 00 00 00 00"],
    [Number.MAX_SAFE_INTEGER, "00 1f ff ff ff ff ff ff"],
    [-Number.MAX_SAFE_INTEGER, "ff e0 00 00 00 00 00 01"],
    [-(2 ** 63), "80 00 00 00 00 00 00 00"],
  ]
  for (const [value, bytes] of cases) {
    assert.equal(written((w) => w.int64(value)), bytes, String(value))
    assert.equal(reader(bytes).int64(), value, bytes)
  }
  assert.equal(reader("7f ff ff ff ff ff ff ff").int64(), 2 ** 63)
  assert.equal(written((w) => w.int64(2 ** 63)), "7f ff ff ff ff ff ff ff")
  assert.equal(written((w) => w.int64(2 ** 70)), "7f ff ff ff ff ff ff ff")
  assert.equal(written((w) => w.int64(-(2 ** 70))), "80 00 00 00 00 00 00 00")
})

test("fixed-width integers, floats and booleans", () => {
  assert.equal(written((w) => w.int8(-1)), "ff")
  assert.equal(reader("80").int8(), -128)
  assert.equal(written((w) => w.int16(-2)), "ff fe")
  assert.equal(reader("80 00").int16(), -32768)
  assert.equal(reader("ff ff").uint16(), 65535)
  assert.equal(written((w) => w.int32(-(2 ** 31))), "80 00 00 00")
  assert.equal(reader("ff ff ff ff").uint32(), 2 ** 32 - 1)
  assert.equal(written((w) => w.uint32(2 ** 32 - 1)), "ff ff ff ff")
  assert.equal(written((w) => w.float64(1.5)), "3f f8 00 00 00 00 00 00")
  assert.equal(reader("c0 09 21 fb 54 44 2d 18").float64(), -Math.PI)
  assert.equal(written((w) => w.bool(true)), "01")
  assert.equal(reader("02").bool(), true)
})

test("strings and bytes: classic int16/int32 lengths, compact ones as length + 1, null as -1 or 0", () => {
  assert.equal(written((w) => w.compactNullableString(null)), "00")
  assert.equal(written((w) => w.compactString("")), "01")
  assert.equal(written((w) => w.compactString("abc")), "04 61 62 63")
  assert.equal(written((w) => w.compactString("é")), "03 c3 a9")
  assert.equal(written((w) => w.nullableString(null)), "ff ff")
  assert.equal(written((w) => w.string("🎼")), "00 04 f0 9f 8e bc")
  assert.equal(written((w) => w.compactNullableBytes(null)), "00")
  assert.equal(written((w) => w.nullableBytes(null)), "ff ff ff ff")
  assert.equal(written((w) => w.bytes(Uint8Array.of(9))), "00 00 00 01 09")
  assert.equal(reader("00").compactNullableString(), null)
  assert.equal(reader("04 61 62 63").compactString(), "abc")
  assert.equal(reader("ff ff").nullableString(), null)
  assert.equal(reader("00 04 f0 9f 8e bc").string(), "🎼")
  assert.equal(reader("03 c3 a9").compactNullableString(), "é")
  assert.equal(reader("ff ff ff ff").nullableBytes(), null)
  assert.deepEqual(reader("02 07").compactBytes(), Uint8Array.of(7))
  const long = "ascii and ünïcödé ".repeat(20)
  const w = new Writer(1)
  w.compactString(long)
  assert.equal(new Reader(w.finish()).compactString(), long)
  // A lone surrogate is written as U+FFFD, as TextEncoder does, and its length counted the same way.
  assert.equal(written((w) => w.compactString("\ud800")), "04 ef bf bd")
  assert.throws(() => reader("00").compactString(), ProtocolError)
  assert.throws(() => reader("ff ff").string(), ProtocolError)
})

test("UUIDs print as Kafka's Uuid.toString does (URL-safe base64, no padding) and parse back", () => {
  const bytes = Uint8Array.from({ length: 16 }, (_, i) => i)
  assert.equal(uuidToString(bytes), "AAECAwQFBgcICQoLDA0ODw")
  assert.deepEqual(uuidFromString("AAECAwQFBgcICQoLDA0ODw"), bytes)
  const high = Uint8Array.from({ length: 16 }, (_, i) => 255 - i * 3)
  assert.equal(uuidToString(high), Buffer.from(high).toString("base64url"))
  assert.equal(written((w) => w.uuid("AAECAwQFBgcICQoLDA0ODw")), hex(bytes))
  assert.equal(reader(hex(high)).uuid(), uuidToString(high))
  assert.throws(() => uuidFromString("short"), ProtocolError)
  assert.throws(() => uuidFromString("AAECAwQFBgcICQoLDA0OD*"), ProtocolError)
})

test("every read past the end, and every over-long varint, is a ProtocolError naming what and where", () => {
  const r = reader("00 00 00")
  r.what = "FetchResponse v17"
  assert.throws(() => r.int32(), /^ProtocolError: Cannot decode FetchResponse v17: int32 needs 4 bytes, 3 left at byte 0$/)
  assert.throws(() => reader("80 80 80 80 80 01").unsignedVarint(), /unsigned varint is longer than 5 bytes/)
  assert.throws(() => reader("80 80").unsignedVarint(), /unsigned varint runs past the end/)
  assert.throws(() => reader("ff ff ff ff ff ff ff ff ff ff 01").varlong(), /varlong is longer than 10 bytes/)
  assert.throws(() => reader("").varlong(), /varlong runs past the end/)
  const strings = reader("00 05 61 62")
  strings.what = "MetadataResponse v0"
  assert.throws(() => strings.string(), /^ProtocolError: Cannot decode MetadataResponse v0: string length 5 exceeds the 2 bytes left at byte 2$/)
  assert.throws(() => reader("00 00 7f ff").arrayLength(1), /array of 32767 elements cannot fit in the 0 bytes left/)
  assert.throws(() => reader("00 00 00 02 00 00 00 01").arrayLength(4), /array of 2 elements cannot fit in the 4 bytes left/)
  assert.throws(() => reader("01").bytesView(2), ProtocolError)
  for (const read of ["int8", "int16", "int64", "float64", "uuid", "bool", "compactBytes", "nullableBytes"] as const) {
    assert.throws(() => reader("")[read](), ProtocolError, read)
  }
})

test("a reader over part of a buffer never reads outside it, and bytesView returns views", () => {
  const bytes = Uint8Array.of(1, 2, 3, 4, 5, 6)
  const r = new Reader(bytes, 1, 4)
  assert.equal(r.remaining, 3)
  const view = r.bytesView(2)
  assert.deepEqual(view, Uint8Array.of(2, 3))
  assert.equal(view.buffer, bytes.buffer)
  assert.equal(r.int8(), 4)
  assert.throws(() => r.int8(), ProtocolError)
  // A tagged field's limit: reads stop at its end, and leftovers inside it are an error.
  const t = new Reader(Uint8Array.of(1, 2, 3))
  const end = t.pushLimit(2)
  t.int8()
  assert.throws(() => t.popLimit(end), /tagged field has 1 bytes left over/)
  assert.throws(() => new Reader(Uint8Array.of(1)).pushLimit(2), ProtocolError)
})

test("the writer grows, reserves and patches size prefixes, and sizes tagged values of any length", () => {
  const w = new Writer(1)
  const at = w.reserveInt32()
  for (let i = 0; i < 1000; i++) w.int32(i)
  w.patchInt32(at, w.length - 4)
  const bytes = w.finish()
  assert.equal(bytes.length, 4004)
  const r = new Reader(bytes)
  assert.equal(r.int32(), 4000)
  for (let i = 0; i < 1000; i++) assert.equal(r.int32(), i)
  for (const size of [0, 1, 127, 128, 300, 16_384, 70_000]) {
    const t = new Writer(4)
    t.int8(9)
    const mark = t.beginSized()
    t.raw(new Uint8Array(size).fill(7))
    t.endSized(mark)
    t.int8(8)
    const back = new Reader(t.finish())
    assert.equal(back.int8(), 9)
    assert.equal(back.unsignedVarint(), size)
    assert.deepEqual(back.bytesView(size), new Uint8Array(size).fill(7))
    assert.equal(back.int8(), 8)
    assert.equal(back.remaining, 0)
  }
})

test("attempt turns a ProtocolError into a value and lets any other error through", () => {
  const failed = attempt(() => reader("").int32())
  assert.equal(failed.ok, false)
  if (!failed.ok) assert.equal(failed.error._tag, "ProtocolError")
  assert.deepEqual(attempt(() => 5), { ok: true, value: 5 })
  assert.throws(() => attempt(() => {
    throw new TypeError("a bug")
  }), TypeError)
})

test("a splicing writer hands out large byte fields as they are, between views of its own bytes, the same message as a copying writer", () => {
  const big = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff)
  const other = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff)
  const write = (w: Writer) => {
    const size = w.reserveInt32()
    w.int16(7)
    w.compactBytes(big)
    w.compactString("topic")
    w.bytes(Uint8Array.of(1, 2, 3)) // small: copied
    w.compactNullableBytes(other)
    w.patchInt32(size, w.size - size - 4)
  }
  const copying = new Writer(1)
  write(copying)
  const splicing = new Writer(1, 4096)
  write(splicing)
  const segments = splicing.finishSegments()
  // Own bytes, big, own bytes, other; nothing after `other`.
  assert.equal(segments.length, 4)
  assert.equal(segments[1], big, "the spliced field is the caller's array, not a copy")
  assert.equal(segments[3], other)
  assert.equal(splicing.size, copying.length)
  assert.equal(splicing.length, copying.length - big.length - other.length)
  const joined = new Uint8Array(splicing.size)
  let at = 0
  for (const segment of segments) {
    joined.set(segment, at)
    at += segment.length
  }
  assert.deepEqual(joined, copying.finish())
  // `finish` of a splicing writer puts the fields in place (one copy).
  assert.deepEqual(splicing.finish(), copying.finish())
  // A writer that spliced nothing gives one view.
  assert.equal(copying.finishSegments().length, 1)
  assert.deepEqual(copying.finishSegments()[0], copying.finish())
})

test("a splicing writer copies large fields inside a sized value (a tagged field), whose size is its buffer's", () => {
  const big = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff)
  const write = (w: Writer) => {
    const at = w.beginSized()
    w.compactBytes(big)
    w.endSized(at)
    w.compactBytes(big) // outside again: spliced
  }
  const copying = new Writer(1)
  write(copying)
  const splicing = new Writer(1, 4096)
  write(splicing)
  const segments = splicing.finishSegments()
  assert.equal(segments.length, 2)
  assert.equal(segments[1], big)
  assert.deepEqual(splicing.finish(), copying.finish())
  splicing.reset()
  assert.equal(splicing.size, 0)
  assert.equal(splicing.finishSegments().length, 1)
})
