import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import { type Api, type Data, decodeVersionPrefixed, encodeVersionPrefixed, tryDecodeVersionPrefixed } from "../../../lib/internal/kafka/protocol/api.ts"
import { ApiVersions } from "../../../lib/internal/kafka/protocol/ApiVersions.ts"
import { apis, ConsumerProtocolAssignment, ConsumerProtocolSubscription, dataMessages } from "../../../lib/internal/kafka/protocol/index.ts"
import { Reader, Writer } from "../../../lib/internal/kafka/protocol/wire.ts"
import {
  apis as generatorList,
  dataMessages as generatorDataList,
  defaultJar,
  defaultOutDir,
  generatedFilesIn,
  readDefinitions,
} from "../../../scripts/generate-protocol.ts"
import { apiModels, dataModels, seeded, valueOf } from "./protocolValues.ts"

const root = join(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../../..")

test("the committed protocol files are what the generator writes from the kafka-clients jar", () => {
  const out = mkdtempSync(join(tmpdir(), "partita-protocol-"))
  try {
    // The generator as a user runs it, with whichever runtime runs this test.
    const runtime = process.execPath
    const args = "Deno" in globalThis ? ["run", "-A"] : []
    execFileSync(runtime, [...args, join(root, "scripts/generate-protocol.ts"), "--out", out], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    })
    const fresh = readdirSync(out).sort()
    assert.deepEqual(generatedFilesIn(defaultOutDir).sort(), fresh, "the same set of generated files")
    for (const name of fresh) {
      assert.equal(
        readFileSync(join(defaultOutDir, name), "utf8"),
        readFileSync(join(out, name), "utf8"),
        `lib/internal/kafka/protocol/${name} differs from a fresh generation: run \`node scripts/generate-protocol.ts\``,
      )
    }
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? ""
    if (stderr.includes("is missing")) assert.fail(`${stderr.trim()}`)
    throw error
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
})

test("the generator reads the jar the same way with unzip and with its own zip reader", () => {
  const names = generatorList.flatMap((api) => [`${api.name}Request.json`, `${api.name}Response.json`])
  const own = readDefinitions(defaultJar(), names, false)
  assert.equal(own.size, names.length)
  for (const text of own.values()) assert.match(text, /"validVersions"/)
  let hasUnzip = true
  try {
    execFileSync("unzip", ["-v"], { stdio: "ignore" })
  } catch {
    hasUnzip = false
  }
  // Without unzip the generator uses only its own reader, checked above.
  if (hasUnzip) assert.deepEqual(readDefinitions(defaultJar(), names, true), own)
})

test("index.ts lists every API of the generator's list, each with the version range the model gives", () => {
  const models = apiModels()
  assert.deepEqual(
    apis.map((api) => api.name),
    generatorList.map((api) => api.name),
  )
  for (const [i, api] of apis.entries()) {
    const model = models[i]!
    assert.equal(api.key, model.key, api.name)
    assert.equal(api.minVersion, model.minVersion, api.name)
    assert.equal(api.maxVersion, model.maxVersion, api.name)
  }
  // Kafka 4 dropped old versions; what is left is what a 3.9 broker accepts too.
  const fetch = apis.find((api) => api.name === "Fetch")!
  assert.deepEqual([fetch.minVersion, fetch.maxVersion], [4, 18])
})

test("header versions follow each API's flexible versions; ApiVersions responses always use header v0", () => {
  for (const [i, api] of apis.entries()) {
    const model = apiModels()[i]!
    for (let v = api.minVersion; v <= api.maxVersion; v++) {
      const flexible = v >= model.request.flexible.lo && v <= model.request.flexible.hi
      assert.equal(api.requestHeaderVersion(v), flexible ? 2 : 1, `${api.name} v${v}`)
      assert.equal(api.responseHeaderVersion(v), api.name === "ApiVersions" ? 0 : flexible ? 1 : 0, `${api.name} v${v}`)
    }
  }
})

const roundTrip = (
  api: Api<unknown, unknown>,
  side: "Request" | "Response",
  version: number,
  value: unknown,
): void => {
  const encode = side === "Request" ? api.encodeRequest : api.encodeResponse
  const decode = side === "Request" ? api.decodeRequest : api.decodeResponse
  const what = `${api.name}${side} v${version}`
  const writer = new Writer(16)
  encode(writer, version, value)
  const bytes = writer.finish().slice()
  const reader = new Reader(bytes)
  const decoded = decode(reader, version)
  assert.equal(reader.remaining, 0, `${what}: the decoder reads every byte`)
  assert.deepStrictEqual(decoded, value, `${what}: decode(encode(value)) equals value`)
  const again = new Writer(16)
  encode(again, version, decoded)
  assert.deepStrictEqual(again.finish(), bytes, `${what}: encode(decode(bytes)) equals bytes`)
}

test("every request and response of every version survives encode, decode and encode again", () => {
  const random = seeded(12)
  const rounds = Number(process.env.PARTITA_PROTOCOL_ROUNDS ?? 4)
  let cases = 0
  for (const [i, api] of (apis as ReadonlyArray<Api<unknown, unknown>>).entries()) {
    const model = apiModels()[i]!
    for (let v = api.minVersion; v <= api.maxVersion; v++) {
      for (let round = 0; round < rounds; round++) {
        roundTrip(api, "Request", v, valueOf(model.request.top, v, random))
        roundTrip(api, "Response", v, valueOf(model.response.top, v, random))
        cases += 2
      }
    }
  }
  assert.ok(cases > 1000, `${cases} cases`)
})

test("every version of every data message survives encode, decode and encode again, with and without its version prefix", () => {
  assert.deepEqual(
    dataMessages.map((data) => data.name),
    generatorDataList.map((data) => data.name),
  )
  const random = seeded(33)
  const rounds = Number(process.env.PARTITA_PROTOCOL_ROUNDS ?? 4) * 4
  for (const [i, data] of (dataMessages as ReadonlyArray<Data<unknown>>).entries()) {
    const model = dataModels()[i]!
    assert.deepEqual([data.minVersion, data.maxVersion], [model.minVersion, model.maxVersion], data.name)
    for (let v = data.minVersion; v <= data.maxVersion; v++) {
      for (let round = 0; round < rounds; round++) {
        const value = valueOf(model.message.top, v, random)
        const writer = new Writer(16)
        data.encode(writer, v, value)
        const bytes = writer.finish().slice()
        const reader = new Reader(bytes)
        assert.deepStrictEqual(data.decode(reader, v), value, `${data.name} v${v}`)
        assert.equal(reader.remaining, 0, `${data.name} v${v}: the decoder reads every byte`)
        const prefixed = encodeVersionPrefixed(data, v, value)
        assert.deepEqual([...prefixed.subarray(2)], [...bytes], `${data.name} v${v}: the body follows the version`)
        assert.deepStrictEqual(decodeVersionPrefixed(data, prefixed), { version: v, value }, `${data.name} v${v}`)
      }
    }
  }
})

test("a data message of a newer version is read as the newest generated; one below the lowest is refused", () => {
  const subscription = { topics: ["a", "b"], userData: null, ownedPartitions: [{ topic: "a", partitions: [0, 2] }], generationId: 7, rackId: "r1" }
  const v3 = encodeVersionPrefixed(ConsumerProtocolSubscription, 3, subscription)
  // A v9 from a future client: the v3 fields, then fields this side does not know.
  const v9 = Uint8Array.from([0, 9, ...v3.subarray(2), 1, 2, 3, 4])
  assert.deepStrictEqual(decodeVersionPrefixed(ConsumerProtocolSubscription, v9), { version: 9, value: subscription })
  const old = tryDecodeVersionPrefixed(ConsumerProtocolAssignment, Uint8Array.from([0xff, 0xff, 0, 0, 0, 0]))
  assert.ok(!old.ok && /ConsumerProtocolAssignment: version -1 is below the lowest known, 0/.test(old.error.message))
  const short = tryDecodeVersionPrefixed(ConsumerProtocolAssignment, Uint8Array.from([0, 3, 0, 0, 0, 5]))
  assert.ok(!short.ok && short.error.name === "ProtocolError", "a truncated body is a ProtocolError")
  assert.throws(
    () => encodeVersionPrefixed(ConsumerProtocolAssignment, 4, { assignedPartitions: [], userData: null }),
    (error: Error) => error.name === "ProtocolError" && /only versions 0 to 3 are generated/.test(error.message),
  )
})

test("a tagged field longer than 127 bytes moves its value to make room for a longer size", () => {
  const supportedFeatures = Array.from({ length: 40 }, (_, i) => ({ name: `feature.${i}`, minVersion: 0, maxVersion: i }))
  const response = {
    errorCode: 0,
    apiKeys: [{ apiKey: 18, minVersion: 0, maxVersion: 5 }],
    throttleTimeMs: 0,
    supportedFeatures,
    finalizedFeaturesEpoch: 3,
    finalizedFeatures: [],
    zkMigrationReady: true,
  }
  roundTrip(ApiVersions as Api<unknown, unknown>, "Response", 4, response)
  const writer = new Writer()
  ApiVersions.encodeResponse(writer, 4, response)
  assert.ok(writer.length > 400)
})

test("encoders refuse a set field the version lacks unless it is ignorable, and versions outside the range", () => {
  const fetch = apis.find((api) => api.name === "Fetch")! as Api<unknown, unknown>
  // FetchRequest's ClusterId (v12+) is ignorable: dropped in v11. A partition's LastFetchedEpoch
  // (v12+) is not: a fetch without it would skip the log divergence check it asks for.
  const request = (lastFetchedEpoch: number) => ({
    maxWaitMs: 500,
    minBytes: 1,
    clusterId: "c",
    topics: [{ topic: "t", partitions: [{ partition: 0, fetchOffset: 0, partitionMaxBytes: 1, lastFetchedEpoch }] }],
  })
  fetch.encodeRequest(new Writer(), 11, request(-1))
  assert.throws(
    () => fetch.encodeRequest(new Writer(), 11, request(5)),
    (error: Error) =>
      error.name === "ProtocolError" && /FetchRequest v11: field lastFetchedEpoch is set but v11 does not have it/.test(error.message),
  )
  assert.throws(
    () => ApiVersions.encodeRequest(new Writer(), 6, {}),
    (error: Error) => error.name === "ProtocolError" && /only versions 0 to 5 are generated/.test(error.message),
  )
  assert.throws(
    () => ApiVersions.decodeResponse(new Reader(new Uint8Array(10)), -1),
    (error: Error) => error.name === "ProtocolError",
  )
})

test("bytes and records fields decode as views into the input, not copies", () => {
  const produce = apis.find((api) => api.name === "Produce")! as Api<unknown, unknown>
  const records = Uint8Array.from({ length: 64 }, (_, i) => i)
  const request = {
    transactionalId: null,
    acks: -1,
    timeoutMs: 1000,
    topicData: [{ name: "t", topicId: "AAAAAAAAAAAAAAAAAAAAAA", partitionData: [{ index: 0, records }] }],
  }
  const writer = new Writer()
  produce.encodeRequest(writer, 9, request)
  const bytes = writer.finish()
  const decoded = produce.decodeRequest(new Reader(bytes), 9) as typeof request
  const view = decoded.topicData[0]!.partitionData[0]!.records
  assert.deepEqual(view, records)
  assert.equal(view.buffer, bytes.buffer)
})
