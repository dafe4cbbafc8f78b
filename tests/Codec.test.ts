import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Schema } from "effect"
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
