import assert from "node:assert/strict"
import { test } from "node:test"
import type { Api } from "../../../lib/internal/kafka/protocol/api.ts"
import { decodeResponseHeader, tryDecodeResponse } from "../../../lib/internal/kafka/protocol/api.ts"
import { apis } from "../../../lib/internal/kafka/protocol/index.ts"
import { ProtocolError, Reader, Writer } from "../../../lib/internal/kafka/protocol/wire.ts"
import { apiModels, type Random, seeded, valueOf } from "./protocolValues.ts"

// Every decoder, fed bytes that are not a valid encoding, either decodes something or throws a
// ProtocolError: never a RangeError or TypeError, never a hang, never an allocation sized by a
// corrupted length (lengths are checked against the bytes left, so a decode that returns holds
// no more elements than the input has bytes). PARTITA_PROTOCOL_FUZZ scales the number of cases.

const scale = Number(process.env.PARTITA_PROTOCOL_FUZZ ?? 1)

type Decoder = { readonly what: string; readonly version: number; readonly decode: (r: Reader, v: number) => unknown }

const decoders = (): Array<Decoder & { readonly valid: (random: Random) => Uint8Array }> => {
  const models = apiModels()
  return (apis as ReadonlyArray<Api<unknown, unknown>>).flatMap((api, i) => {
    const model = models[i]!
    const out = []
    for (let v = api.minVersion; v <= api.maxVersion; v++) {
      for (const side of ["Request", "Response"] as const) {
        const message = side === "Request" ? model.request : model.response
        const encode = side === "Request" ? api.encodeRequest : api.encodeResponse
        out.push({
          what: `${api.name}${side} v${v}`,
          version: v,
          decode: side === "Request" ? api.decodeRequest : api.decodeResponse,
          valid: (random: Random) => {
            const writer = new Writer()
            encode(writer, v, valueOf(message.top, v, random))
            return writer.finish().slice()
          },
        })
      }
    }
    return out
  })
}

/** The array elements in a decoded value and its longest string, to bound what a decode built. */
const measure = (value: unknown, into = { elements: 0, longestString: 0 }): typeof into => {
  if (Array.isArray(value)) {
    into.elements += value.length
    for (const item of value) measure(item, into)
  } else if (typeof value === "string") into.longestString = Math.max(into.longestString, value.length)
  else if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    for (const item of Object.values(value)) measure(item, into)
  }
  return into
}

const decodeOnly = (decoder: Decoder, bytes: Uint8Array, label: string): "ok" | "error" => {
  try {
    const value = decoder.decode(new Reader(bytes), decoder.version)
    // Every array element decoded took at least one input byte; a string at most one UTF-16 unit
    // per byte (a UUID's 22 characters come from 16 bytes, and the zero UUID is a default).
    const { elements, longestString } = measure(value)
    assert.ok(elements <= bytes.length, `${decoder.what} (${label}): ${elements} array elements from ${bytes.length} bytes`)
    assert.ok(longestString <= Math.max(22, bytes.length), `${decoder.what} (${label}): a string of ${longestString} from ${bytes.length} bytes`)
    return "ok"
  } catch (error) {
    if (error instanceof ProtocolError) {
      assert.ok(error.message.startsWith(`Cannot decode ${decoder.what}: `), error.message)
      assert.match(error.message, / at byte \d+$/)
      return "error"
    }
    throw new Error(`${decoder.what} (${label}) threw ${(error as Error).name}, not a ProtocolError: ${(error as Error).message}`, {
      cause: error,
    })
  }
}

test("decoders given random bytes decode or throw a ProtocolError, nothing else", () => {
  const random = seeded(1)
  let errors = 0
  for (const decoder of decoders()) {
    for (let i = 0; i < 20 * scale; i++) {
      const bytes = random.bytes(random.int(0, 80))
      if (decodeOnly(decoder, bytes, `random ${i}`) === "error") errors++
    }
  }
  assert.ok(errors > 0)
})

test("decoders given every truncation of a valid encoding throw a ProtocolError", () => {
  const random = seeded(2)
  for (const decoder of decoders()) {
    const bytes = decoder.valid(random)
    for (let end = 0; end < bytes.length; end++) {
      // A prefix may still decode when what is cut is optional (an empty message); never anything but ProtocolError.
      decodeOnly(decoder, bytes.subarray(0, end), `truncated to ${end} of ${bytes.length}`)
    }
    if (bytes.length > 0) {
      assert.throws(() => decoder.decode(new Reader(bytes.subarray(0, bytes.length - 1)), decoder.version), ProtocolError, decoder.what)
    }
  }
})

test("decoders given single-byte corruptions of valid encodings decode or throw a ProtocolError", () => {
  const random = seeded(3)
  for (const decoder of decoders()) {
    for (let round = 0; round < scale; round++) {
      const bytes = decoder.valid(random)
      for (let at = 0; at < bytes.length; at++) {
        for (const replacement of [0x00, 0xff, 0x80, random.int(0, 255)]) {
          const corrupt = bytes.slice()
          corrupt[at] = replacement
          decodeOnly(decoder, corrupt, `byte ${at} set to ${replacement}`)
        }
      }
    }
  }
})

test("a huge array or string length is refused before anything is allocated for it", () => {
  const metadata = apis.find((api) => api.name === "Metadata")! as Api<unknown, unknown>
  // MetadataResponse v12: throttle time, then a compact array of brokers whose length claims 2^32 - 2.
  const writer = new Writer()
  writer.int32(0)
  writer.unsignedVarint(0xffff_ffff)
  const started = performance.now()
  const result = tryDecodeResponse(metadata, new Reader(writer.finish()), 12)
  assert.equal(result.ok, false)
  if (!result.ok) {
    assert.match(result.error.message, /^Cannot decode MetadataResponse v12: compact array of 4294967294 elements cannot fit in the 0 bytes left at byte 9$/)
  }
  // v0 (classic encoding): an int32 string length larger than what is left.
  const classic = new Writer()
  classic.int32(1) // one broker
  classic.int32(7) // node id
  classic.int16(0x7fff) // host: 32767 bytes claimed
  classic.raw(new Uint8Array(3))
  assert.throws(
    () => metadata.decodeResponse(new Reader(classic.finish()), 0),
    /Cannot decode MetadataResponse v0: string length 32767 exceeds the 3 bytes left at byte 10/,
  )
  assert.ok(performance.now() - started < 1000)
})

test("the response header decoder reports truncation as a ProtocolError", () => {
  assert.throws(() => decodeResponseHeader(new Reader(new Uint8Array(3)), 0), ProtocolError)
  assert.throws(() => decodeResponseHeader(new Reader(Uint8Array.of(0, 0, 0, 1, 1, 5)), 1), ProtocolError)
})
