import assert from "node:assert/strict"
import { test } from "node:test"
import * as JsonBytes from "../../lib/internal/jsonBytes.ts"

const encoder = new TextEncoder()
const bytes = (text: string) => encoder.encode(text)

/** What the reader gives for `text`: JSON.parse's value, or `unread`, never anything else. */
const same = (reader: JsonBytes.Reader, text: string) => {
  const read = reader.read(bytes(text))
  if (read === JsonBytes.unread) return false
  const parsed = JSON.parse(text)
  assert.deepStrictEqual(read, parsed, text)
  // deepStrictEqual treats -0 and 0 alike only with Object.is: compare numbers' signs too.
  if (typeof parsed === "number") assert.ok(Object.is(read, parsed), `${text}: sign of zero`)
  return true
}

/** Reads values of any length: the default limit is a matter of speed, not of correctness. */
const unlimited = () => new JsonBytes.Reader(Number.MAX_SAFE_INTEGER)

test("The JSON byte reader reads ASCII JSON as JSON.parse does", () => {
  const reader = unlimited()
  const texts = [
    `{"id":1}`,
    `{"id":-0}`,
    `-0`,
    `0`,
    `-0.0`,
    `{"a":{"b":[1,2,{"c":null}]},"d":true,"e":false,"f":"text","g":[]}`,
    ` { "spaced" : [ 1 , 2 ] ,\n\t"tab" :\r\n"x" } `,
    `[1.5,-2e10,3E+2,4e-3,0.1,123456789012345,1234567890123456,12345678901234567890,1e400,-1e-400]`,
    `9007199254740993`,
    `"a string"`,
    `""`,
    `{}`,
    `[]`,
    `{"dup":1,"other":2,"dup":3}`,
    `{"2":"b","1":"a","x":"c"}`,
    `{"constructor":1,"toString":2,"hasOwnProperty":3}`,
    `"\u007f"`,
    `null`,
  ]
  for (const text of texts) assert.ok(same(reader, text), `read: ${text}`)
  // Keys repeat from record to record: the same key, kept, still reads right.
  for (let id = 0; id < 1000; id++) assert.ok(same(reader, `{"id":${id},"name":"n${id}"}`))
})

test("The JSON byte reader leaves to JSON.parse what it does not read: non-ASCII, escapes, errors, __proto__", () => {
  const reader = unlimited()
  const left = [
    `{"name":"Brüno"}`,
    `"a\\nb"`,
    `{"a\\u0041":1}`,
    `"\t"`,
    `{"__proto__":{"polluted":true}}`,
    `{not json`,
    `{"a":1,}`,
    `[1,]`,
    `{"a" 1}`,
    `01`,
    `1.`,
    `.5`,
    `-`,
    `+1`,
    `1e`,
    `0x10`,
    `tru`,
    `nul`,
    `falsy`,
    `{"a":1}x`,
    `[1 2]`,
    ``,
    ` `,
    `"unterminated`,
    `{"a":1`,
    "[".repeat(200) + "]".repeat(200),
  ]
  for (const text of left) assert.equal(reader.read(bytes(text)), JsonBytes.unread, text)
  // Past its limit (by default `maxFastBytes`) the runtime's decoder is faster.
  const long = `{"long":"${"x".repeat(JsonBytes.maxFastBytes)}"}`
  assert.equal(new JsonBytes.Reader().read(bytes(long)), JsonBytes.unread)
  assert.equal(same(unlimited(), long), true)
  assert.equal(same(new JsonBytes.Reader(), `{"id":12}`), true)
  // A byte of 0x80 or more is never read as a character of its own.
  assert.equal(reader.read(Uint8Array.from([0x22, 0xff, 0x22])), JsonBytes.unread)
  // And `__proto__` left to JSON.parse stays an own property there.
  assert.equal(Object.getPrototypeOf(JSON.parse(`{"__proto__":{"polluted":true}}`)), Object.prototype)
})

test("The JSON byte reader reads random ASCII JSON as JSON.parse does, or leaves it", () => {
  let seed = 42
  const random = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff
    return seed / 0x80000000
  }
  const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(random() * items.length)]!
  const value = (depth: number): unknown => {
    switch (Math.floor(random() * (depth > 3 ? 4 : 6))) {
      case 0:
        return pick([0, -0, 1, -1, 42, 1.25, -3.5e-7, 2 ** 53 + 2, 1e21, Number.MAX_VALUE, Number.MIN_VALUE])
      case 1:
        return pick(["", "a", "key", "with space", "é", "line\nbreak", "quote\"", "\u0000"])
      case 2:
        return pick([true, false, null])
      case 3:
        return Math.floor(random() * 1e6) * (random() < 0.5 ? -1 : 1)
      case 4:
        return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1))
      default:
        return Object.fromEntries(
          Array.from({ length: Math.floor(random() * 4) }, () => [pick(["a", "b", "id", "name", "ünï"]), value(depth + 1)]),
        )
    }
  }
  const reader = unlimited()
  let read = 0
  for (let round = 0; round < 2000; round++) {
    const text = JSON.stringify(value(0), null, random() < 0.2 ? 1 : undefined)
    if (same(reader, text)) read++
    // Corrupt one character: never a value JSON.parse would not give.
    const at = Math.floor(random() * text.length)
    const broken = text.slice(0, at) + pick(["", ",", "}", "]", "\"", "x", "0", " "]) + text.slice(at + 1)
    let expected: unknown
    let valid = true
    try {
      expected = JSON.parse(broken)
    } catch {
      valid = false
    }
    const got = reader.read(bytes(broken))
    if (got !== JsonBytes.unread) {
      assert.ok(valid, `read what JSON.parse rejects: ${broken}`)
      assert.deepStrictEqual(got, expected, broken)
    }
  }
  assert.ok(read > 1000, `read ${read} of 2000: most ASCII JSON takes the fast path`)
})

test("JsonBytes.ascii reads ASCII bytes, NUL included, and leaves the rest to TextDecoder", () => {
  assert.equal(JsonBytes.ascii(bytes("customer-1")), "customer-1")
  assert.equal(JsonBytes.ascii(Uint8Array.from([0x61, 0x00, 0x62])), "a\u0000b")
  assert.equal(JsonBytes.ascii(new Uint8Array(0)), "")
  assert.equal(JsonBytes.ascii(bytes("é")), JsonBytes.unread)
  // A byte-order mark is not ASCII: TextDecoder decides what to do with it.
  assert.equal(JsonBytes.ascii(Uint8Array.from([0xef, 0xbb, 0xbf, 0x61])), JsonBytes.unread)
  assert.equal(JsonBytes.ascii(new Uint8Array(JsonBytes.maxFastBytes + 1).fill(0x61)), JsonBytes.unread)
})
