import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Exit, Schema, SchemaTransformation } from "effect"
import * as Codec from "../../lib/Codec.ts"
import * as PlainDecode from "../../lib/internal/plainDecode.ts"
import { bytes } from "../fixtures/effect.ts"

/** The plain decode of `codec`, which the built-in codecs all have (the record path counts on it). */
const plainOf = (codec: Codec.Codec<any>): PlainDecode.PlainDecode => {
  const plain = PlainDecode.of(codec.decode)
  assert.ok(plain !== undefined, "a built-in codec registers its plain decode")
  return plain
}

/** The plain decode gives what `decode` gives, or declines where `decode` fails. */
const agree = async (codec: Codec.Codec<any>, input: Uint8Array | null) => {
  const exit = await Effect.runPromise(Effect.exit(codec.decode(input)))
  const plain = plainOf(codec)(input)
  if (Exit.isSuccess(exit)) assert.deepStrictEqual(plain, exit.value)
  else assert.equal(plain, PlainDecode.declined)
  return Exit.isSuccess(exit)
}

test("A schema codec's plain decode gives the value its decode gives, and declines where decode fails", async () => {
  const codec = Codec.json(Schema.Struct({ id: Schema.Int, at: Schema.optionalKey(Schema.FiniteFromString) }))
  assert.equal(await agree(codec, bytes(`{"id":1}`)), true)
  assert.equal(await agree(codec, bytes(`{"id":2,"at":"1.5","extra":0}`)), true)
  assert.equal(await agree(codec, bytes(`{"id":"1"}`)), false)
  assert.equal(await agree(codec, bytes(`{"id":1.5}`)), false)
  assert.equal(await agree(codec, bytes(`{not json`)), false)
  assert.equal(await agree(codec, Uint8Array.from([0xff])), false)
  assert.equal(await agree(codec, null), false)
  const text = Codec.fromSchema(Schema.String)
  assert.equal(await agree(text, bytes("customer-1")), true)
  assert.equal(await agree(text, bytes("Brüno")), true)
  assert.equal(await agree(text, Uint8Array.from([0xc3])), false)
  assert.equal(await agree(Codec.fromSchema(Schema.NullOr(Schema.String)), null), true)
})

test("Codec.string and Codec.bytes have plain decodes that agree with theirs", async () => {
  assert.equal(await agree(Codec.string, bytes("é")), true)
  assert.equal(await agree(Codec.string, null), true)
  assert.equal(await agree(Codec.string, Uint8Array.from([0xc3])), false)
  const raw = Uint8Array.from([0, 1, 255])
  assert.equal(plainOf(Codec.bytes)(raw), raw)
  assert.equal(plainOf(Codec.bytes)(null), null)
})

test("A schema that must wait is declined by the plain decode and decoded by its Effect", async () => {
  const Slow = Schema.Number.pipe(Schema.decodeTo(
    Schema.Number,
    SchemaTransformation.transformEffect({
      decode: (n) => Effect.as(Effect.sleep(1), n + 1),
      encode: (n) => Effect.succeed(n - 1),
    }),
  ))
  const codec = Codec.json(Slow)
  for (let round = 0; round < 3; round++) {
    assert.equal(plainOf(codec)(bytes("1")), PlainDecode.declined)
    assert.equal(await Effect.runPromise(codec.decode(bytes("1"))), 2)
  }
})
