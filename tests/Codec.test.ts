import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect"
import * as Codec from "../lib/Codec.ts"
import { bytes } from "./fixtures/effect.ts"

const Notification = Schema.Struct({
  from: Schema.Struct({ id: Schema.Number, name: Schema.String }),
  to: Schema.Struct({ id: Schema.Number }),
  message: Schema.String,
})
const notification = Codec.json(Notification)

const decodeError = (
  codec: { readonly decode: (bytes: Uint8Array | null) => Effect.Effect<unknown, Codec.CodecError> },
  input: Uint8Array | null,
) =>
  Effect.runPromise(Effect.flip(codec.decode(input)))

test("Codec.json decodes valid JSON through the schema", async () => {
  const value = await Effect.runPromise(
    notification.decode(bytes(`{"from":{"id":2,"name":"Bruno"},"to":{"id":1},"message":"hi"}`)),
  )
  assert.deepEqual(value, { from: { id: 2, name: "Bruno" }, to: { id: 1 }, message: "hi" })
})

test("Codec.json reports every schema problem with its path", async () => {
  const error = await decodeError(notification, bytes(`{"from":{"id":2},"to":{"id":"1"},"message":3}`))
  assert.equal(error.reason, "SchemaMismatch")
  assert.deepEqual(error.problems, [
    { path: ["from", "name"], message: "Missing key" },
    { path: ["to", "id"], message: "Expected number" },
    { path: ["message"], message: "Expected string" },
  ])
  assert.equal(
    error.message,
    `Missing key at ["from","name"]; Expected number at ["to","id"]; Expected string at ["message"]`,
  )
})

test("Codec.json rejects invalid UTF-8 and invalid JSON as typed errors", async () => {
  const utf8 = await decodeError(notification, Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d]))
  assert.equal(utf8.reason, "InvalidUtf8")
  assert.match(utf8.message, /Expected UTF-8 text, got 4 bytes/)
  const json = await decodeError(notification, bytes("{not json"))
  assert.equal(json.reason, "InvalidJson")
  assert.match(json.message, /^Expected JSON: /)
})

test("Codec.json reads a tombstone as null, which only a nullable schema accepts", async () => {
  const tombstone = await decodeError(notification, null)
  assert.equal(tombstone.reason, "SchemaMismatch")
  const nullable = Codec.json(Schema.NullOr(Notification))
  assert.equal(await Effect.runPromise(nullable.decode(null)), null)
})

test("Codec.json refuses to encode a value the schema rejects", async () => {
  const error = await Effect.runPromise(
    Effect.flip(notification.encode({ from: { id: "2" }, to: { id: 1 }, message: "x" } as never)),
  )
  assert.equal(error.reason, "SchemaMismatch")
  assert.deepEqual(error.problems.map((p) => p.path), [["from", "id"], ["from", "name"]])
})

test("Codec.json encodes to UTF-8 JSON that decodes back", async () => {
  const value = { from: { id: 2, name: "Brüno ✓" }, to: { id: 1 }, message: "hi" }
  const encoded = await Effect.runPromise(notification.encode(value))
  assert.equal(new TextDecoder().decode(encoded!), JSON.stringify(value))
  assert.deepEqual(await Effect.runPromise(notification.decode(encoded)), value)
})

test("Codec.string and Codec.bytes keep null as null", async () => {
  assert.equal(await Effect.runPromise(Codec.string.decode(null)), null)
  assert.equal(await Effect.runPromise(Codec.string.decode(bytes("é"))), "é")
  assert.equal((await decodeError(Codec.string, Uint8Array.from([0xc3]))).reason, "InvalidUtf8")
  const raw = Uint8Array.from([0, 1, 255])
  assert.equal(await Effect.runPromise(Codec.bytes.decode(raw)), raw)
})

test("A schema whose encoded form is a string is written as plain UTF-8 text, as Kafka tools expect", async () => {
  const key = Codec.fromSchema(Schema.String)
  assert.equal(new TextDecoder().decode((await Effect.runPromise(key.encode("customer-1")))!), "customer-1")
  assert.equal(await Effect.runPromise(key.decode(bytes("customer-1"))), "customer-1")
  const number = Codec.fromSchema(Schema.FiniteFromString)
  assert.equal(await Effect.runPromise(number.decode(bytes("42"))), 42)
  assert.equal((await decodeError(number, bytes("forty-two"))).reason, "SchemaMismatch")
  const struct = Codec.fromSchema(Schema.Struct({ a: Schema.String }))
  assert.equal(new TextDecoder().decode((await Effect.runPromise(struct.encode({ a: "x" })))!), `{"a":"x"}`, "other schemas: JSON")
})

/**
 * Schema's own verdict on a JSON text, in the codec's terms: the value, or the problems. Given a
 * schema of its own (the same definition, made again), so that it is Schema's interpreter
 * answering, not the compiled parser the codec set up for its schema.
 */
const schemaVerdict = async <A, I>(schema: Schema.Codec<A, I>, text: string) => {
  const result = await Effect.runPromise(Effect.result(Schema.decodeUnknownEffect(schema)(JSON.parse(text), { errors: "all" })))
  if (result._tag === "Success") return { value: result.success as unknown }
  return {
    problems: SchemaIssue.makeFormatterStandardSchemaV1()(result.failure.issue).issues.map((issue) => ({
      path: (issue.path ?? []).map((segment) => typeof segment === "object" ? segment.key : segment),
      message: issue.message,
    })),
  }
}

const codecVerdict = async (codec: Codec.Codec<unknown>, text: string) => {
  const result = await Effect.runPromise(Effect.result(codec.decode(bytes(text))))
  if (result._tag === "Success") return { value: result.success }
  assert.equal(result.failure.reason, "SchemaMismatch", text)
  return { problems: result.failure.problems }
}

const makeOrder = () =>
  Schema.Struct({
    id: Schema.Int.check(Schema.isGreaterThan(0)),
    amount: Schema.FiniteFromString,
    note: Schema.optionalKey(Schema.String),
    tags: Schema.Array(Schema.Literals(["new", "paid"])),
    currency: Schema.String.pipe(Schema.optionalKey, Schema.withDecodingDefaultKey(Effect.succeed("EUR"))),
    lines: Schema.optionalKey(Schema.Array(Schema.Struct({ sku: Schema.NonEmptyString, qty: Schema.Number }))),
  })

test("Codec.json decodes transformations, refinements and defaults as Schema does, every problem with its path", async () => {
  const codec = Codec.json(makeOrder()) as Codec.Codec<unknown>
  const reference = makeOrder()
  const texts = [
    `{"id":1,"amount":"9.5","tags":["new"]}`,
    `{"id":2,"amount":"1e3","note":"x","tags":[],"currency":"USD","extra":true}`,
    `{"id":3,"amount":"2","tags":["paid"],"lines":[{"sku":"a","qty":1},{"sku":"b","qty":2.5}]}`,
    `{"id":0,"amount":"9.5","tags":["old"]}`,
    `{"id":1.5,"amount":"abc","tags":"new","note":7}`,
    `{"id":4,"amount":"2","tags":["paid"],"lines":[{"sku":"","qty":"1"},{"qty":2}]}`,
    `{"id":-1,"amount":"2","tags":["paid"],"currency":"ÉUR"}`,
    `[]`,
    `null`,
  ]
  for (const text of texts) {
    // Twice: a compiled parser may take a different path once warm.
    for (let round = 0; round < 2; round++) assert.deepStrictEqual(await codecVerdict(codec, text), await schemaVerdict(reference, text), text)
  }
  assert.deepStrictEqual(await codecVerdict(codec, `{"id":1,"amount":"9.5","tags":["new"]}`), {
    value: { id: 1, amount: 9.5, tags: ["new"], currency: "EUR" },
  })
  const error = await decodeError(codec, bytes(`{"id":1.5,"amount":"abc","tags":"new","note":7}`))
  assert.deepEqual(error.problems.map((problem) => problem.path), [["id"], ["amount"], ["note"], ["tags"]])
})

test("Codec.json reads ASCII and non-ASCII JSON alike, and keys that change from record to record", async () => {
  const codec = Codec.json(Schema.Record(Schema.String, Schema.Union([Schema.Number, Schema.String])))
  for (let id = 0; id < 300; id++) {
    const value = { [`k${id % 7}`]: id, [id % 2 === 0 ? "name" : "nàme"]: `v${id}`, [`x${id}`]: "\n\u00e9" }
    assert.deepStrictEqual(await Effect.runPromise(codec.decode(bytes(JSON.stringify(value)))), value)
  }
  // An own `__proto__` key, as JSON.parse makes it: never the object's prototype.
  const proto = await Effect.runPromise(Codec.json(Schema.Unknown).decode(bytes(`{"__proto__":{"polluted":1}}`)))
  assert.equal(Object.getPrototypeOf(proto), Object.prototype)
  assert.deepStrictEqual(Object.keys(proto as object), ["__proto__"])
})

test("A schema with an asynchronous transformation decodes and encodes through its Effect", async () => {
  const Doubled = Schema.Struct({
    id: Schema.Number.pipe(Schema.decodeTo(
      Schema.Number,
      SchemaTransformation.transformEffect({
        decode: (n) => Effect.as(Effect.sleep(1), n * 2),
        encode: (n) => Effect.as(Effect.sleep(1), n / 2),
      }),
    )),
  })
  const codec = Codec.json(Doubled)
  for (let round = 0; round < 3; round++) {
    assert.deepEqual(await Effect.runPromise(codec.decode(bytes(`{"id":${round}}`))), { id: round * 2 })
    assert.equal(new TextDecoder().decode((await Effect.runPromise(codec.encode({ id: 4 })))!), `{"id":2}`)
  }
  const error = await decodeError(codec, bytes(`{"id":"x"}`))
  assert.equal(error.reason, "SchemaMismatch")
  assert.deepEqual(error.problems, [{ path: ["id"], message: "Expected number" }])
})

test("Text codecs read ASCII, UTF-8 and NUL bytes as text, reject what is not UTF-8, and read a null as null", async () => {
  const text = Codec.fromSchema(Schema.String)
  assert.equal(await Effect.runPromise(text.decode(bytes("customer-1"))), "customer-1")
  assert.equal(await Effect.runPromise(text.decode(bytes("Brüno ✓"))), "Brüno ✓")
  assert.equal(await Effect.runPromise(text.decode(Uint8Array.from([0x61, 0x00, 0x62]))), "a\u0000b")
  assert.equal(await Effect.runPromise(text.decode(new Uint8Array(0))), "")
  assert.equal(await Effect.runPromise(text.decode(bytes("x".repeat(5000)))), "x".repeat(5000))
  assert.equal(await Effect.runPromise(Codec.string.decode(Uint8Array.from([0x00]))), "\u0000")
  const invalid = await decodeError(text, Uint8Array.from([0x61, 0xc3]))
  assert.equal(invalid.reason, "InvalidUtf8")
  assert.equal(invalid.message, "Expected UTF-8 text, got 2 bytes that are not")
  const tombstone = await decodeError(text, null)
  assert.equal(tombstone.reason, "SchemaMismatch")
  assert.equal(await Effect.runPromise(Codec.fromSchema(Schema.NullOr(Schema.String)).decode(null)), null)
  const literal = Codec.fromSchema(Schema.Literals(["on", "off"]))
  assert.equal(await Effect.runPromise(literal.decode(bytes("on"))), "on")
  assert.deepEqual((await decodeError(literal, bytes("maybe"))).problems, [{ path: [], message: `Expected "on" | "off"` }])
})

test("Codec.json reads a JSON null value, bytes of NUL and empty bytes as JSON would", async () => {
  const nullable = Codec.json(Schema.NullOr(Schema.Struct({ id: Schema.Number })))
  assert.equal(await Effect.runPromise(nullable.decode(bytes("null"))), null)
  assert.equal(await Effect.runPromise(nullable.decode(null)), null)
  assert.equal((await decodeError(nullable, Uint8Array.from([0x00]))).reason, "InvalidJson")
  assert.equal((await decodeError(nullable, new Uint8Array(0))).reason, "InvalidJson")
  assert.equal((await decodeError(nullable, bytes(`{"id":1}\u0000`))).reason, "InvalidJson")
})
