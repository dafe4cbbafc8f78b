/**
 * Generates Partita's Kafka protocol codecs, lib/internal/kafka/protocol/<Api>.ts and index.ts,
 * from Kafka's own message definitions: the `common/message/*.json` files (JSON with //
 * comments) inside the kafka-clients jar that `scripts/kafka fetch` (or `start`) puts into
 * .cache/kafka/libs. franz-go (generate/, pkg/kmsg) and Kafka's Java generator
 * (generator/src/main/java/org/apache/kafka/message) do the same; the wire rules followed here
 * are theirs.
 *
 * Usage (from the repository root; any of the three runtimes):
 *   node scripts/generate-protocol.ts            (Node 22.6+, which strips types)
 *   bun scripts/generate-protocol.ts
 *   deno run -A scripts/generate-protocol.ts
 * Options: --out DIR (default lib/internal/kafka/protocol), --jar PATH (default the
 * kafka-clients jar of the Kafka version pinned in scripts/kafka.pom.xml).
 *
 * Which APIs and versions: {@link apis} below, one line per API. Each is generated from the lowest
 * version a Kafka 3.9 broker accepts that the jar still lists, up to the jar's highest. The
 * generated files are committed; tests/internal/kafka/protocol.test.ts fails when regenerating
 * would change them. Never edit them by hand.
 *
 * What the generated code looks like, and why: one encode and one decode function per struct,
 * straight-line reads and writes with a `v >= N` test where a field's presence or encoding
 * changes with the version, no reflection and no closures per field (Fetch and Produce go
 * through here). Decoders fill fields a version lacks with the JSON default; encoders refuse a
 * non-default value in a version without the field unless it is `ignorable`, as Kafka's Java
 * client does.
 */
import { execFileSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { inflateRawSync } from "node:zlib"

/**
 * The APIs generated. `oldest39` is the lowest version a Kafka 3.9 broker accepts (every one of
 * these from 0: Kafka dropped old versions only in 4.0, KIP-896); the lowest generated is the
 * higher of it and the jar's lowest. Add an API by adding a line.
 */
export const apis: ReadonlyArray<{ readonly name: string; readonly oldest39: number }> = [
  { name: "ApiVersions", oldest39: 0 },
  { name: "Metadata", oldest39: 0 },
  { name: "Produce", oldest39: 0 },
  { name: "Fetch", oldest39: 0 },
  { name: "ListOffsets", oldest39: 0 },
  { name: "FindCoordinator", oldest39: 0 },
  { name: "JoinGroup", oldest39: 0 },
  { name: "SyncGroup", oldest39: 0 },
  { name: "Heartbeat", oldest39: 0 },
  { name: "LeaveGroup", oldest39: 0 },
  { name: "OffsetCommit", oldest39: 0 },
  { name: "OffsetFetch", oldest39: 0 },
  { name: "ConsumerGroupHeartbeat", oldest39: 0 },
  { name: "ConsumerGroupDescribe", oldest39: 0 },
  { name: "InitProducerId", oldest39: 0 },
  { name: "AddPartitionsToTxn", oldest39: 0 },
  { name: "AddOffsetsToTxn", oldest39: 0 },
  { name: "EndTxn", oldest39: 0 },
  { name: "TxnOffsetCommit", oldest39: 0 },
  { name: "CreateTopics", oldest39: 0 },
  { name: "DeleteTopics", oldest39: 0 },
  { name: "CreatePartitions", oldest39: 0 },
  { name: "DescribeConfigs", oldest39: 0 },
  { name: "DescribeGroups", oldest39: 0 },
  { name: "ListGroups", oldest39: 0 },
  { name: "DeleteGroups", oldest39: 0 },
  { name: "SaslHandshake", oldest39: 0 },
  { name: "SaslAuthenticate", oldest39: 0 },
  { name: "DescribeCluster", oldest39: 0 },
]

/**
 * The "data" messages generated: not APIs but payloads that API messages carry as opaque bytes,
 * with an int16 version in front (api.ts's Data). The classic consumer protocol puts these in
 * JoinGroup's protocol metadata and SyncGroup's assignments (ConsumerProtocol.java). Every version
 * the jar lists is generated: they are read and written by clients, never by a broker.
 */
export const dataMessages: ReadonlyArray<{ readonly name: string }> = [
  { name: "ConsumerProtocolSubscription" },
  { name: "ConsumerProtocolAssignment" },
]

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
export const defaultOutDir = join(root, "lib/internal/kafka/protocol")

/** The Kafka version pinned by scripts/kafka.pom.xml, whose kafka-clients jar is read. */
export const kafkaVersion = (): string => {
  const pom = readFileSync(join(root, "scripts/kafka.pom.xml"), "utf8")
  const match = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)
  if (match === null) throw new Error("scripts/kafka.pom.xml has no <kafka.version>")
  return match[1]!
}

export const defaultJar = (version = kafkaVersion()): string =>
  join(root, ".cache/kafka/libs", `kafka-clients-${version}.jar`)

// ---------------------------------------------------------------------------------------------
// Reading the jar

/** Entries of a zip file (a jar), read without any tool: the central directory, then each entry. */
export const readZip = (zip: Uint8Array, wanted: (name: string) => boolean): Map<string, Uint8Array> => {
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength)
  let eocd = -1
  for (let at = zip.length - 22; at >= Math.max(0, zip.length - 22 - 65_535); at--) {
    if (view.getUint32(at, true) === 0x06054b50) {
      eocd = at
      break
    }
  }
  if (eocd < 0) throw new Error("not a zip file: no end of central directory record")
  const entries = view.getUint16(eocd + 10, true)
  let at = view.getUint32(eocd + 16, true)
  const files = new Map<string, Uint8Array>()
  const decoder = new TextDecoder()
  for (let i = 0; i < entries; i++) {
    if (view.getUint32(at, true) !== 0x02014b50) throw new Error(`zip: bad central directory entry at ${at}`)
    const method = view.getUint16(at + 10, true)
    const compressedSize = view.getUint32(at + 20, true)
    const nameLength = view.getUint16(at + 28, true)
    const extraLength = view.getUint16(at + 30, true)
    const commentLength = view.getUint16(at + 32, true)
    const localHeader = view.getUint32(at + 42, true)
    const name = decoder.decode(zip.subarray(at + 46, at + 46 + nameLength))
    at += 46 + nameLength + extraLength + commentLength
    if (!wanted(name)) continue
    const dataStart = localHeader + 30 + view.getUint16(localHeader + 26, true) + view.getUint16(localHeader + 28, true)
    const data = zip.subarray(dataStart, dataStart + compressedSize)
    if (method === 0) files.set(name, data)
    else if (method === 8) files.set(name, new Uint8Array(inflateRawSync(data)))
    else throw new Error(`zip: ${name} uses compression method ${method}`)
  }
  return files
}

const hasUnzip = (): boolean => {
  try {
    execFileSync("unzip", ["-v"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
}

/**
 * The message definitions in the jar, by file name ("FetchRequest.json" → its text), read with
 * `unzip -p` when it is installed, else by {@link readZip}.
 */
export const readDefinitions = (jar: string, names: ReadonlyArray<string>, useUnzip = hasUnzip()): Map<string, string> => {
  if (!existsSync(jar)) {
    throw new Error(
      `${jar} is missing: run \`scripts/kafka fetch\` (it fetches the Kafka jars with Maven), then run this again`,
    )
  }
  const texts = new Map<string, string>()
  if (useUnzip) {
    for (const name of names) {
      texts.set(name, execFileSync("unzip", ["-p", jar, `common/message/${name}`], { encoding: "utf8", maxBuffer: 1 << 26 }))
    }
  } else {
    const wanted = new Set(names.map((name) => `common/message/${name}`))
    const files = readZip(new Uint8Array(readFileSync(jar)), (name) => wanted.has(name))
    for (const name of names) {
      const bytes = files.get(`common/message/${name}`)
      if (bytes !== undefined) texts.set(name, new TextDecoder().decode(bytes))
    }
  }
  for (const name of names) {
    if (!texts.get(name)) throw new Error(`${jar} has no common/message/${name}`)
  }
  return texts
}

/** JSON with // line comments (Kafka's message files) to a value: comments go, strings stay. */
export const parseCommentedJson = (text: string): unknown => {
  let out = ""
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (inString) {
      out += c
      if (c === "\\") out += text[++i] ?? ""
      else if (c === '"') inString = false
    } else if (c === '"') {
      inString = true
      out += c
    } else if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++
      out += "\n"
    } else out += c
  }
  return JSON.parse(out)
}

// ---------------------------------------------------------------------------------------------
// The model

/** A contiguous version range; `hi` is Infinity for "N+", and lo > hi is empty ("none"). */
export interface Versions {
  readonly lo: number
  readonly hi: number
}

export const none: Versions = { lo: 0, hi: -1 }

export const parseVersions = (text: string | undefined, fallback: Versions = none): Versions => {
  if (text === undefined) return fallback
  const trimmed = text.trim()
  if (trimmed === "none") return none
  let match = /^(\d+)\+$/.exec(trimmed)
  if (match !== null) return { lo: Number(match[1]), hi: Infinity }
  match = /^(\d+)-(\d+)$/.exec(trimmed)
  if (match !== null) return { lo: Number(match[1]), hi: Number(match[2]) }
  match = /^(\d+)$/.exec(trimmed)
  if (match !== null) return { lo: Number(match[1]), hi: Number(match[1]) }
  throw new Error(`bad versions "${text}"`)
}

export const isEmpty = (a: Versions): boolean => a.lo > a.hi
export const intersect = (a: Versions, b: Versions): Versions => ({ lo: Math.max(a.lo, b.lo), hi: Math.min(a.hi, b.hi) })
export const contains = (a: Versions, v: number): boolean => v >= a.lo && v <= a.hi
const hull = (a: Versions, b: Versions): Versions =>
  isEmpty(a) ? b : isEmpty(b) ? a : { lo: Math.min(a.lo, b.lo), hi: Math.max(a.hi, b.hi) }

export type Primitive =
  | "bool"
  | "int8"
  | "int16"
  | "uint16"
  | "int32"
  | "uint32"
  | "int64"
  | "float64"
  | "string"
  | "bytes"
  | "uuid"
  | "records"

const primitives = new Set<string>([
  "bool",
  "int8",
  "int16",
  "uint16",
  "int32",
  "uint32",
  "int64",
  "float64",
  "string",
  "bytes",
  "uuid",
  "records",
])

export type TypeModel =
  | { readonly kind: "primitive"; readonly name: Primitive }
  | { readonly kind: "array"; readonly element: TypeModel }
  | { readonly kind: "struct"; readonly struct: StructModel }

export interface FieldModel {
  /** The JSON name, e.g. "ErrorCode". */
  readonly name: string
  /** The TypeScript property, e.g. "errorCode". */
  readonly prop: string
  readonly type: TypeModel
  readonly versions: Versions
  readonly nullable: Versions
  readonly tagged: Versions
  readonly tag: number | undefined
  /** The JSON default as written, or undefined. */
  readonly default: string | undefined
  readonly ignorable: boolean
  /** A field's own flexibleVersions (only strings have one: RequestHeader's ClientId). */
  readonly flexible: Versions | undefined
  readonly about: string
}

export interface StructModel {
  /** The JSON type name ("FetchTopic"), or the message's name for the top level. */
  readonly jsonName: string
  /** The TypeScript interface name. */
  tsName: string
  readonly fields: FieldModel[]
  /** The versions in which this struct can occur in the generated range. */
  range: Versions
  /** Whether a decoder needs a default value of the struct (a field absent in some version). */
  needsDefault: boolean
  /** Whether an encoder needs to tell the default value apart (a tagged struct field). */
  needsIsDefault: boolean
}

export interface MessageModel {
  readonly name: string
  readonly file: string
  readonly flexible: Versions
  readonly valid: Versions
  readonly top: StructModel
  /** Every struct, the top one first, each before the structs it contains. */
  readonly structs: StructModel[]
}

export interface ApiModel {
  readonly name: string
  readonly key: number
  readonly minVersion: number
  readonly maxVersion: number
  /** The request's latestVersionUnstable: brokers offer the highest version only when told to. */
  readonly latestUnstable: boolean
  readonly request: MessageModel
  readonly response: MessageModel
}

const camel = (name: string): string => name[0]!.toLowerCase() + name.slice(1)

interface JsonField {
  readonly name: string
  readonly type: string
  readonly versions?: string
  readonly nullableVersions?: string
  readonly taggedVersions?: string
  readonly tag?: number
  readonly default?: string | number | boolean
  readonly ignorable?: boolean
  readonly flexibleVersions?: string
  readonly about?: string
  readonly fields?: ReadonlyArray<JsonField>
}

interface JsonMessage {
  readonly apiKey?: number
  readonly type: string
  readonly name: string
  readonly validVersions: string
  readonly flexibleVersions: string
  readonly latestVersionUnstable?: boolean
  readonly fields: ReadonlyArray<JsonField>
  readonly commonStructs?: ReadonlyArray<{ readonly name: string; readonly fields: ReadonlyArray<JsonField> }>
}

const parseMessage = (file: string, json: JsonMessage, range: Versions): MessageModel => {
  const structs: StructModel[] = []
  const byName = new Map<string, StructModel>()
  const common = new Map((json.commonStructs ?? []).map((s) => [s.name, s]))
  const newStruct = (jsonName: string, fields: ReadonlyArray<JsonField>): StructModel => {
    if (byName.has(jsonName)) throw new Error(`${file}: struct ${jsonName} is defined more than once`)
    const struct: StructModel = { jsonName, tsName: jsonName, fields: [], range: none, needsDefault: false, needsIsDefault: false }
    byName.set(jsonName, struct)
    structs.push(struct)
    for (const field of fields) struct.fields.push(parseField(field))
    return struct
  }
  const parseType = (field: JsonField): TypeModel => {
    const isArray = field.type.startsWith("[]")
    const name = isArray ? field.type.slice(2) : field.type
    if (name.startsWith("[]")) throw new Error(`${file}: field ${field.name}: arrays of arrays are not supported`)
    let element: TypeModel
    if (primitives.has(name)) element = { kind: "primitive", name: name as Primitive }
    else if (field.fields !== undefined) element = { kind: "struct", struct: newStruct(name, field.fields) }
    else {
      const known = byName.get(name)
      const shared = common.get(name)
      if (known !== undefined) element = { kind: "struct", struct: known }
      else if (shared !== undefined) element = { kind: "struct", struct: newStruct(name, shared.fields) }
      else throw new Error(`${file}: field ${field.name} has unknown type ${field.type}`)
    }
    return isArray ? { kind: "array", element } : element
  }
  const parseField = (field: JsonField): FieldModel => {
    const versions = parseVersions(field.versions)
    if (field.versions === undefined) throw new Error(`${file}: field ${field.name} has no versions`)
    const tagged = parseVersions(field.taggedVersions)
    if (!isEmpty(tagged)) {
      if (field.tag === undefined) throw new Error(`${file}: field ${field.name} has taggedVersions but no tag`)
      if (tagged.hi !== Infinity) throw new Error(`${file}: field ${field.name}: taggedVersions must be open-ended`)
    }
    return {
      name: field.name,
      prop: camel(field.name),
      type: parseType(field),
      versions,
      nullable: parseVersions(field.nullableVersions),
      tagged,
      tag: field.tag,
      default: field.default === undefined ? undefined : String(field.default),
      ignorable: field.ignorable === true,
      flexible: field.flexibleVersions === undefined ? undefined : parseVersions(field.flexibleVersions),
      about: field.about ?? "",
    }
  }
  const top = newStruct(json.name, json.fields)
  // Reachable ranges: a struct occurs where the fields holding it exist, within its parent's.
  top.range = range
  let changed = true
  while (changed) {
    changed = false
    for (const struct of structs) {
      if (isEmpty(struct.range)) continue
      for (const field of struct.fields) {
        const inner = field.type.kind === "array" ? field.type.element : field.type
        if (inner.kind !== "struct") continue
        const reach = hull(inner.struct.range, intersect(field.versions, struct.range))
        if (reach.lo !== inner.struct.range.lo || reach.hi !== inner.struct.range.hi) {
          inner.struct.range = reach
          changed = true
        }
      }
    }
  }
  const flexible = parseVersions(json.flexibleVersions)
  for (const struct of structs) {
    for (const field of struct.fields) {
      const present = intersect(field.versions, struct.range)
      if (field.type.kind === "struct" && !isEmpty(struct.range)) {
        const absent = present.lo > struct.range.lo || present.hi < struct.range.hi
        const nullDefault = field.default === "null"
        if ((absent || !isEmpty(intersect(field.tagged, struct.range))) && !nullDefault) markDefault(field.type.struct)
        if (!isEmpty(intersect(field.tagged, struct.range))) markIsDefault(field.type.struct)
      }
    }
    const tags = struct.fields.filter((f) => f.tag !== undefined).map((f) => f.tag!)
    if (new Set(tags).size !== tags.length) throw new Error(`${file}: struct ${struct.jsonName} uses a tag twice`)
    // Every element of an array must take at least one byte, so that a length can be checked
    // against the bytes left: a struct in a non-flexible version needs a field of its own.
    for (let v = struct.range.lo; v <= Math.min(struct.range.hi, range.hi); v++) {
      if (struct === top || contains(flexible, v)) continue
      if (!struct.fields.some((f) => contains(f.versions, v) && !contains(f.tagged, v))) {
        throw new Error(`${file}: struct ${struct.jsonName} has no fields in v${v}`)
      }
    }
  }
  return { name: json.name, file, flexible, valid: parseVersions(json.validVersions), top, structs: structs.filter((s) => !isEmpty(s.range)) }
}

/** A struct whose default value must be told apart needs the same of the structs in its fields. */
const markIsDefault = (struct: StructModel): void => {
  if (struct.needsIsDefault) return
  struct.needsIsDefault = true
  for (const field of struct.fields) if (field.type.kind === "struct") markIsDefault(field.type.struct)
}

/** A struct with a default value needs one for each struct field whose default is not null. */
const markDefault = (struct: StructModel): void => {
  if (struct.needsDefault) return
  struct.needsDefault = true
  for (const field of struct.fields) {
    if (field.type.kind === "struct" && field.default !== "null") markDefault(field.type.struct)
  }
}

/** Reads the definitions of every API in {@link apis} (or `only`) and builds their models. */
export const loadApis = (jar: string, only?: ReadonlyArray<string>, useUnzip?: boolean): ApiModel[] => {
  const chosen = apis.filter((api) => only === undefined || only.includes(api.name))
  const files = chosen.flatMap((api) => [`${api.name}Request.json`, `${api.name}Response.json`])
  const texts = readDefinitions(jar, files, useUnzip)
  return chosen.map((api) =>
    buildApi(api, texts.get(`${api.name}Request.json`)!, texts.get(`${api.name}Response.json`)!)
  )
}

/** The model of one API from the text of its two definitions (for {@link loadApis}, and tests). */
export const buildApi = (
  api: { readonly name: string; readonly oldest39: number },
  requestText: string,
  responseText: string,
): ApiModel => {
  const requestJson = parseCommentedJson(requestText) as JsonMessage
  const responseJson = parseCommentedJson(responseText) as JsonMessage
  const valid = parseVersions(requestJson.validVersions)
  const responseValid = parseVersions(responseJson.validVersions)
  if (valid.lo !== responseValid.lo || valid.hi !== responseValid.hi) {
    throw new Error(`${api.name}: request and response validVersions differ`)
  }
  if (requestJson.apiKey === undefined) throw new Error(`${api.name}Request.json has no apiKey`)
  const range = { lo: Math.max(valid.lo, api.oldest39), hi: valid.hi }
  if (isEmpty(range)) throw new Error(`${api.name}: no version is both in the jar and accepted by Kafka 3.9`)
  const request = parseMessage(`${api.name}Request.json`, requestJson, range)
  const response = parseMessage(`${api.name}Response.json`, responseJson, range)
  nameStructs(api.name, request, response)
  const latestUnstable = requestJson.latestVersionUnstable === true
  return { name: api.name, key: requestJson.apiKey, minVersion: range.lo, maxVersion: range.hi, latestUnstable, request, response }
}

/** One generated data message (see {@link dataMessages}). */
export interface DataModel {
  readonly name: string
  readonly minVersion: number
  readonly maxVersion: number
  readonly message: MessageModel
}

/** Reads the definitions of every message in {@link dataMessages} and builds their models. */
export const loadData = (jar: string, useUnzip?: boolean): DataModel[] => {
  const texts = readDefinitions(jar, dataMessages.map((data) => `${data.name}.json`), useUnzip)
  return dataMessages.map((data) => buildData(data.name, texts.get(`${data.name}.json`)!))
}

/** The model of one data message from the text of its definition. */
export const buildData = (name: string, text: string): DataModel => {
  const json = parseCommentedJson(text) as JsonMessage
  const file = `${name}.json`
  if (json.type !== "data") throw new Error(`${file}: type is "${json.type}", not "data"`)
  if (json.name !== name) throw new Error(`${file}: defines ${json.name}, not ${name}`)
  const range = parseVersions(json.validVersions)
  if (isEmpty(range) || range.hi === Infinity) throw new Error(`${file}: bad validVersions "${json.validVersions}"`)
  const message = parseMessage(file, json, range)
  // The top struct's interface shares its name with the Data constant (a type and a value).
  const reserved = new Set(["Data", "Reader", "Writer", "ProtocolError"])
  for (const struct of message.structs.slice(1)) {
    if (reserved.has(struct.jsonName) || struct.jsonName === name) struct.tsName = name + struct.jsonName
  }
  return { name, minVersion: range.lo, maxVersion: range.hi, message }
}

/**
 * TypeScript names for the structs: the JSON type name, prefixed with its message's name where
 * it would clash with the other message's structs, a message or the file's imports.
 */
const nameStructs = (api: string, request: MessageModel, response: MessageModel): void => {
  const reserved = new Set([api, "Api", "Reader", "Writer", "ProtocolError", request.name, response.name])
  const requestNames = new Set(request.structs.slice(1).map((s) => s.jsonName))
  const responseNames = new Set(response.structs.slice(1).map((s) => s.jsonName))
  for (const [message, other] of [
    [request, responseNames],
    [response, requestNames],
  ] as const) {
    for (const struct of message.structs.slice(1)) {
      const name = struct.jsonName
      const clash = other.has(name) || reserved.has(name)
      struct.tsName = clash && !name.startsWith(message.name) ? message.name + name : name
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Defaults

/** A field's default as a JavaScript value (structs: their default object), as decoders fill it in. */
export const defaultValue = (field: FieldModel): unknown => {
  const d = field.default
  const t = field.type
  if (d === "null") {
    if (isEmpty(field.nullable)) throw new Error(`field ${field.name}: default null but never nullable`)
    return null
  }
  if (t.kind === "array") {
    if (d !== undefined) throw new Error(`field ${field.name}: an array's default can only be null`)
    return []
  }
  if (t.kind === "struct") return defaultStruct(t.struct)
  switch (t.name) {
    case "bool":
      return d === "true"
    case "string":
      return d ?? ""
    case "bytes":
      return new Uint8Array(0)
    case "records":
      return null
    case "uuid":
      return "AAAAAAAAAAAAAAAAAAAAAA"
    default: {
      if (d === undefined) return 0
      const n = Number(d)
      if (!Number.isFinite(n)) throw new Error(`field ${field.name}: bad default ${d}`)
      return n
    }
  }
}

/** A struct with every field it has in the generated range at its default. */
export const defaultStruct = (struct: StructModel): Record<string, unknown> =>
  Object.fromEntries(struct.fields.filter((f) => !isEmpty(intersect(f.versions, struct.range))).map((f) => [f.prop, defaultValue(f)]))

/** A field's default as TypeScript source. */
const defaultSource = (field: FieldModel): string => {
  const t = field.type
  if (field.default === "null") return "null"
  if (t.kind === "array") return "emptyArray"
  if (t.kind === "struct") return `default${t.struct.tsName}`
  switch (t.name) {
    case "bytes":
      return "emptyBytes"
    case "uuid":
      return "zeroUuid"
    case "records":
      return "null"
    case "string":
      return JSON.stringify(defaultValue(field))
    case "int64": {
      const n = defaultValue(field) as number
      // Long.MAX_VALUE (2^63 - 1) is 2^63 as a double; wire.ts writes it back as Long.MAX_VALUE.
      if (Math.abs(n) > Number.MAX_SAFE_INTEGER) return n > 0 ? "2 ** 63" : "-(2 ** 63)"
      return String(n)
    }
    default:
      return String(defaultValue(field))
  }
}

// ---------------------------------------------------------------------------------------------
// Emitting TypeScript

/** A version condition: always, never, or a test on `v`. */
type Cond = true | false | string

/** The condition `v ∈ set`, knowing `v ∈ within`. */
const cond = (set: Versions, within: Versions): Cond => {
  const i = intersect(set, within)
  if (isEmpty(i)) return false
  const parts: string[] = []
  if (i.lo > within.lo) parts.push(`v >= ${i.lo}`)
  if (i.hi < within.hi) parts.push(`v <= ${i.hi}`)
  return parts.length === 0 ? true : parts.join(" && ")
}

/** The versions of `within` that are not in `set` (which may split in two: a condition string). */
const notCond = (set: Versions, within: Versions): Cond => {
  const i = intersect(set, within)
  if (isEmpty(i)) return true
  const parts: string[] = []
  if (i.lo > within.lo) parts.push(`v < ${i.lo}`)
  if (i.hi < within.hi) parts.push(`v > ${i.hi}`)
  return parts.length === 0 ? false : parts.join(" || ")
}

const indent = (lines: ReadonlyArray<string>, by = "  "): string[] => lines.map((l) => (l === "" ? l : by + l))

/** `if (c) a else b`, collapsed when c is constant or both sides are the same. */
const branch = (c: Cond, a: () => string[], b: () => string[]): string[] => {
  if (c === true) return a()
  if (c === false) return b()
  const left = a()
  const right = b()
  if (left.join("\n") === right.join("\n")) return left
  if (left.length === 1 && right.length <= 1) return [`if (${c}) ${left[0]}`, ...right.map((l) => `else ${l}`)]
  if (right.length === 0) return [`if (${c}) {`, ...indent(left), "}"]
  return [`if (${c}) {`, ...indent(left), "} else {", ...indent(right), "}"]
}

const tsType = (t: TypeModel): string => {
  if (t.kind === "array") return `ReadonlyArray<${tsType(t.element)}>`
  if (t.kind === "struct") return t.struct.tsName
  switch (t.name) {
    case "bool":
      return "boolean"
    case "string":
    case "uuid":
      return "string"
    case "bytes":
    case "records":
      return "Uint8Array"
    default:
      return "number"
  }
}

const fieldType = (field: FieldModel, range: Versions): string => {
  const base = tsType(field.type)
  const nullable = !isEmpty(intersect(field.nullable, range)) || (field.type.kind === "primitive" && field.type.name === "records")
  return nullable ? `${base} | null` : base
}

/** Whether a field is optional in its struct's type: absent in some version, or tagged. */
const isOptional = (field: FieldModel, range: Versions): boolean => {
  const present = intersect(field.versions, range)
  return present.lo > range.lo || present.hi < range.hi || !isEmpty(intersect(field.tagged, range))
}

/** The smallest number of bytes an array element takes (bounds array lengths read from the wire). */
const minSize = (t: TypeModel, flexible: boolean): number => {
  if (t.kind !== "primitive") return 1
  switch (t.name) {
    case "bool":
    case "int8":
      return 1
    case "int16":
    case "uint16":
      return 2
    case "int32":
    case "uint32":
      return 4
    case "int64":
    case "float64":
      return 8
    case "uuid":
      return 16
    case "string":
      return flexible ? 1 : 2
    default:
      return flexible ? 1 : 4
  }
}

/** `c ? a : b` for expressions, collapsed when c is constant or both sides are the same. */
const chooseExpr = (c: Cond, a: string, b: string): string => {
  if (c === true || a === b) return a
  if (c === false) return b
  const wrap = (e: string) => (e.includes(" ? ") ? `(${e})` : e)
  return `${c} ? ${wrap(a)} : ${wrap(b)}`
}

const always: Versions = { lo: 0, hi: Infinity }

/** The versions of `within` outside `set`, as one range (the hull, if they fall on both sides). */
const outside = (set: Versions, within: Versions): Versions => {
  const i = intersect(set, within)
  if (isEmpty(i)) return within
  if (i.lo > within.lo && i.hi < within.hi) return within
  if (i.lo > within.lo) return { lo: within.lo, hi: i.lo - 1 }
  if (i.hi < within.hi) return { lo: i.hi + 1, hi: within.hi }
  return none
}

/**
 * Statements for "v in set" and "v not in set", knowing v is in `within`; each side is built for
 * the versions it covers, so the tests nested in it do not repeat what is already known.
 */
const branchOn = (set: Versions, within: Versions, a: (w: Versions) => string[], b: (w: Versions) => string[]): string[] =>
  branch(cond(set, within), () => a(intersect(set, within)), () => b(outside(set, within)))

/** The same for expressions. */
const chooseOn = (set: Versions, within: Versions, a: (w: Versions) => string, b: (w: Versions) => string): string => {
  const c = cond(set, within)
  if (c === true) return a(within)
  if (c === false) return b(within)
  return chooseExpr(c, a(intersect(set, within)), b(outside(set, within)))
}

/** One statement or a block per line, on one line when it fits: `for (...) stmt`. */
const loopOver = (head: string, body: ReadonlyArray<string>): string[] =>
  body.length === 1 ? [`${head} ${body[0]}`] : [`${head} {`, ...indent(body), "}"]

/** How a field is encoded: in which versions compactly (`flexible`) and where null is allowed. */
interface Encoding {
  readonly flexible: Versions
  readonly nullable: Versions
}

/**
 * Statements writing `e`, a value of type t, in the versions `within`; `eNonNull` is `e` where
 * null is not allowed.
 */
const writeStmts = (t: TypeModel, how: Encoding, within: Versions, e: string, eNonNull = e): string[] => {
  if (t.kind === "struct") {
    const encode = `encode${t.struct.tsName}`
    return branchOn(
      how.nullable,
      within,
      () => ["{", `  const item = ${e}`, "  if (item === null) w.int8(-1)", "  else {", "    w.int8(1)", `    ${encode}(w, v, item)`, "  }", "}"],
      () => [`${encode}(w, v, ${eNonNull})`],
    )
  }
  if (t.kind === "array") {
    const element: Encoding = { flexible: how.flexible, nullable: none }
    const length = (n: string, w: Versions) =>
      branchOn(how.flexible, w, () => [`w.compactArrayLength(${n})`], () => [`w.arrayLength(${n})`])
    const loop = (w: Versions) => loopOver("for (let i = 0; i < items.length; i++)", writeStmts(t.element, element, w, "items[i]!"))
    return branchOn(
      how.nullable,
      within,
      (w) => [
        "{",
        `  const items = ${e}`,
        ...indent(branch("items === null", () => length("null", w), () => [...length("items.length", w), ...loop(w)])),
        "}",
      ],
      (w) => ["{", `  const items = ${eNonNull}`, ...indent(length("items.length", w)), ...indent(loop(w)), "}"],
    )
  }
  const method = (flexible: boolean, canBeNull: boolean): string => {
    const kind = t.name === "string" ? "String" : "Bytes"
    if (flexible) return canBeNull ? `compactNullable${kind}` : `compact${kind}`
    return canBeNull ? `nullable${kind}` : kind.toLowerCase()
  }
  switch (t.name) {
    case "string":
    case "bytes":
    case "records": {
      const write = (flexible: boolean) => (w: Versions) =>
        branchOn(how.nullable, w, () => [`w.${method(flexible, true)}(${e})`], () => [`w.${method(flexible, false)}(${eNonNull})`])
      return branchOn(how.flexible, within, write(true), write(false))
    }
    default:
      return [`w.${t.name}(${eNonNull})`]
  }
}

/** An expression reading a non-array value of type t in the versions `within`. */
const readExpr = (t: TypeModel, how: Encoding, within: Versions): string => {
  if (t.kind === "struct") {
    const decode = `decode${t.struct.tsName}(r, v)`
    return chooseOn(how.nullable, within, () => `r.int8() < 0 ? null : ${decode}`, () => decode)
  }
  if (t.kind === "array") throw new Error("readExpr: array")
  switch (t.name) {
    case "string":
    case "bytes":
    case "records": {
      const kind = t.name === "string" ? "String" : "Bytes"
      const plain = kind === "String" ? "string" : "bytes"
      return chooseOn(
        how.flexible,
        within,
        (w) => chooseOn(how.nullable, w, () => `r.compactNullable${kind}()`, () => `r.compact${kind}()`),
        (w) => chooseOn(how.nullable, w, () => `r.nullable${kind}()`, () => `r.${plain}()`),
      )
    }
    default:
      return `r.${t.name}()`
  }
}

/** Statements reading a value of type t into `target`, in the versions `within`. */
const readStmts = (t: TypeModel, how: Encoding, within: Versions, target: string): string[] => {
  if (t.kind !== "array") return [`${target} = ${readExpr(t, how, within)}`]
  const compact = minSize(t.element, true)
  const classic = minSize(t.element, false)
  const length = chooseOn(
    how.flexible,
    within,
    (w) => chooseOn(how.nullable, w, () => `r.compactNullableArrayLength(${compact})`, () => `r.compactArrayLength(${compact})`),
    (w) => chooseOn(how.nullable, w, () => `r.nullableArrayLength(${classic})`, () => `r.arrayLength(${classic})`),
  )
  const fill = [
    `const items: ${tsType(t.element)}[] = []`,
    `for (let i = 0; i < n; i++) items.push(${readExpr(t.element, { flexible: how.flexible, nullable: none }, within)})`,
    `${target} = items`,
  ]
  if (cond(how.nullable, within) === false) return ["{", `  const n = ${length}`, ...indent(fill), "}"]
  return ["{", `  const n = ${length}`, `  if (n < 0) ${target} = null`, "  else {", ...indent(fill, "    "), "  }", "}"]
}

/** An expression true when `e` (of a field) holds something other than the field's default. */
const nonDefault = (field: FieldModel, e: string): string | undefined => {
  const t = field.type
  const nullDefault = field.default === "null"
  if (t.kind === "array") return nullDefault ? `${e} != null` : `${e} !== undefined && (${e} === null || ${e}.length > 0)`
  if (t.kind === "struct") {
    if (nullDefault) return `${e} != null`
    return t.struct.needsIsDefault ? `${e} !== undefined && (${e} === null || !isDefault${t.struct.tsName}(${e}))` : undefined
  }
  switch (t.name) {
    case "bytes":
    case "records":
      return nullDefault || t.name === "records" ? `${e} != null` : `${e} !== undefined && (${e} === null || ${e}.length > 0)`
    default:
      return `${e} !== undefined && ${e} !== ${defaultSource(field)}`
  }
}

/** `e`, or the field's default where it is undefined (`??` would replace a null too). */
const orDefault = (field: FieldModel, e: string, range: Versions): string =>
  fieldType(field, range).endsWith("| null") && defaultSource(field) !== "null"
    ? `${e} === undefined ? ${defaultSource(field)} : ${e}`
    : `${e} ?? ${defaultSource(field)}`

const jsdoc = (text: string): string => text.replace(/\*\//g, "*\\/")

const describeVersions = (field: FieldModel, range: Versions): string => {
  const present = intersect(field.versions, range)
  const parts: string[] = []
  const span = (x: Versions) => (x.hi >= range.hi ? `v${x.lo}+` : x.lo === x.hi ? `v${x.lo}` : `v${x.lo}-${x.hi}`)
  if (present.lo > range.lo || present.hi < range.hi) parts.push(span(present))
  const tagged = intersect(field.tagged, range)
  if (!isEmpty(tagged)) parts.push(`tagged (tag ${field.tag}) ${span(tagged)}`)
  const nullable = intersect(field.nullable, range)
  if (!isEmpty(nullable) && (nullable.lo > present.lo || nullable.hi < present.hi)) parts.push(`nullable ${span(nullable)}`)
  if (field.default !== undefined) parts.push(`default ${field.default}`)
  if (field.ignorable && (present.lo > range.lo || present.hi < range.hi)) parts.push("ignorable")
  return parts.length === 0 ? "" : ` (${parts.join("; ")})`
}

/** The version parameter's name: `_v` where a struct's code does not depend on the version. */
const usesV = (body: ReadonlyArray<string>): string => (body.some((line) => /\bv\b/.test(line)) ? "v" : "_v")

const emitStruct = (message: MessageModel, struct: StructModel): string[] => {
  // records are nullable in every version (Kafka's generator treats them so).
  const encodingOf = (field: FieldModel): Encoding => ({
    flexible: field.flexible ?? message.flexible,
    nullable: field.type.kind === "primitive" && field.type.name === "records" ? always : field.nullable,
  })
  const range = struct.range
  const name = struct.tsName
  const what = JSON.stringify(message.name)
  const flex = intersect(message.flexible, range)
  const out: string[] = []

  // The interface.
  const top = struct === message.top
  out.push(top ? `/** ${message.name}, versions ${range.lo} to ${range.hi}. */` : `/** ${struct.jsonName} in ${message.name}. */`)
  out.push(`export interface ${name} {`)
  for (const field of struct.fields) {
    if (isEmpty(intersect(field.versions, range))) continue
    out.push(`  /** ${jsdoc(field.about)}${describeVersions(field, range)} */`)
    out.push(`  readonly ${field.prop}${isOptional(field, range) ? "?" : ""}: ${fieldType(field, range)}${isOptional(field, range) ? " | undefined" : ""}`)
  }
  out.push("}", "")
  const fields = struct.fields.filter((f) => !isEmpty(intersect(f.versions, range)))
  const regular = (f: FieldModel): Versions => intersect(f.versions, { lo: 0, hi: isEmpty(f.tagged) ? Infinity : f.tagged.lo - 1 })
  const taggedFields = fields.filter((f) => !isEmpty(intersect(f.tagged, range))).sort((a, b) => a.tag! - b.tag!)

  // The encoder.
  const enc: string[] = []
  for (const field of fields) {
    const optional = isOptional(field, range)
    const access = `x.${field.prop}`
    const value = optional ? orDefault(field, access, range) : access
    const reg = regular(field)
    const nullableType = fieldType(field, range).endsWith("| null")
    const write = (inVersions: Versions): string[] => {
      const how = encodingOf(field)
      // Nullable in other versions but not in these: null is refused, not sent as garbage.
      const guarded = nullableType && cond(how.nullable, inVersions) !== true
        ? `${access} === null ? nullNotAllowed(${what}, ${JSON.stringify(field.prop)}, v) : ${value}`
        : value
      return writeStmts(field.type, how, inVersions, value, guarded)
    }
    const regCond = cond(reg, range)
    const absent = notCond(field.versions, range)
    const check = field.ignorable || absent === false ? undefined : nonDefault(field, access)
    // Where the field is neither regular nor tagged: refuse a value that would be dropped.
    const refuseIf = (when: Cond) =>
      check === undefined || when === false
        ? []
        : [`if (${when === true ? "" : `(${when}) && `}${check}) fieldNotInVersion(${what}, ${JSON.stringify(field.prop)}, v)`]
    if (regCond === false) {
      enc.push(...refuseIf(absent))
      continue
    }
    const body = write(intersect(reg, range))
    // In the regular-versions test's else branch, a field never tagged is absent for sure.
    const refuse = refuseIf(isEmpty(intersect(field.tagged, range)) ? true : absent)
    if (regCond === true) enc.push(...body)
    else enc.push(...branch(regCond, () => body, () => refuse))
  }
  const fc = cond(message.flexible, range)
  if (fc !== false) {
    const tags: string[] = []
    if (taggedFields.length === 0) tags.push("w.taggedFields(0)")
    else {
      const present = (f: FieldModel) => {
        const c = cond(f.tagged, flex)
        const nd = nonDefault(f, `x.${f.prop}`) ?? `x.${f.prop} !== undefined`
        return c === true ? nd : `${c} && (${nd})`
      }
      tags.push("let count = 0")
      for (const f of taggedFields) tags.push(`if (${present(f)}) count++`)
      tags.push("w.taggedFields(count)")
      for (const f of taggedFields) {
        const inTagged = intersect(f.tagged, flex)
        const value = orDefault(f, `x.${f.prop}`, range)
        const how = { flexible: always, nullable: encodingOf(f).nullable }
        tags.push(`if (${present(f)}) {`, `  w.unsignedVarint(${f.tag})`, "  const at = w.beginSized()", ...indent(writeStmts(f.type, how, inTagged, value)), "  w.endSized(at)", "}")
      }
    }
    enc.push(...branch(fc, () => tags, () => []))
  }
  out.push(`function encode${name}(w: Writer, ${usesV(enc)}: number, x: ${name}): void {`, ...indent(enc), "}", "")

  // The decoder.
  const dec: string[] = []
  for (const field of fields) {
    const local = `_${field.prop}`
    const reg = intersect(regular(field), range)
    const regCond = cond(reg, range)
    const type = fieldType(field, range)
    const how = encodingOf(field)
    const tagged = !isEmpty(intersect(field.tagged, range))
    if (regCond === false) {
      dec.push(`let ${local}: ${type} = ${defaultSource(field)}`)
    } else if (field.type.kind !== "array" && !tagged) {
      const expr = readExpr(field.type, how, reg)
      dec.push(`const ${local} = ${regCond === true ? expr : chooseExpr(regCond, expr, defaultSource(field))}`)
    } else if (!tagged) {
      dec.push(`let ${local}: ${type}`, ...branch(regCond, () => readStmts(field.type, how, reg, local), () => [`${local} = ${defaultSource(field)}`]))
    } else {
      dec.push(`let ${local}: ${type} = ${defaultSource(field)}`, ...branch(regCond, () => readStmts(field.type, how, reg, local), () => []))
    }
  }
  if (fc !== false) {
    const tags: string[] = []
    if (taggedFields.length === 0) tags.push("skipTaggedFields(r)")
    else {
      tags.push("const count = r.unsignedVarint()", "for (let i = 0; i < count; i++) {", "  const tag = r.unsignedVarint()", "  const size = r.unsignedVarint()")
      tags.push("  switch (tag) {")
      for (const f of taggedFields) {
        const c = cond(f.tagged, flex)
        const how = { flexible: always, nullable: encodingOf(f).nullable }
        const body = ["const end = r.pushLimit(size)", ...readStmts(f.type, how, intersect(f.tagged, flex), `_${f.prop}`), "r.popLimit(end)"]
        tags.push(`    case ${f.tag}: {`)
        if (c === true) tags.push(...indent(body, "      "), "      break")
        else tags.push(`      if (${c}) {`, ...indent(body, "        "), "      } else r.skip(size)", "      break")
        tags.push("    }")
      }
      tags.push("    default:", "      r.skip(size)", "  }", "}")
    }
    dec.push(...branch(fc, () => tags, () => []))
  }
  dec.push("return {", ...fields.map((f) => `  ${f.prop}: _${f.prop},`), "}")
  out.push(`function decode${name}(r: Reader, ${usesV(dec)}: number): ${name} {`, ...indent(dec), "}", "")

  if (struct.needsIsDefault) {
    const checks = fields.map((f) => {
      const nd = nonDefault(f, `x.${f.prop}`)
      return nd === undefined ? "true" : `!(${nd})`
    })
    out.push(`function isDefault${name}(x: ${name}): boolean {`, `  return ${checks.join(" &&\n    ")}`, "}", "")
  }
  return out
}

const header = (version: string, sources: string): string[] => [
  `// Generated by scripts/generate-protocol.ts from Kafka ${version}'s message definitions`,
  `// (${sources} in kafka-clients-${version}.jar).`,
  "// Do not edit: change the generator and run `node scripts/generate-protocol.ts` (Node 22.6+, or bun).",
  "",
]

/**
 * The codecs and default values of the structs of `messages`, and the import lines they need
 * (with `apiImports` from api.ts besides the helpers the code uses).
 */
const emitMessages = (messages: ReadonlyArray<MessageModel>, apiImports: string[]): { imports: string[]; body: string[] } => {
  const body: string[] = []
  for (const message of messages) {
    for (const struct of message.structs) body.push(...emitStruct(message, struct))
  }
  // Default values, one frozen object per struct shared by every decode that needs it (decoded
  // values are read-only), each after the defaults it contains.
  const emitted = new Set<StructModel>()
  const emitDefault = (struct: StructModel): void => {
    if (emitted.has(struct)) return
    emitted.add(struct)
    const fields = struct.fields.filter((f) => !isEmpty(intersect(f.versions, struct.range)))
    for (const f of fields) if (f.type.kind === "struct" && f.default !== "null") emitDefault(f.type.struct)
    body.push(
      `/** ${struct.tsName} with every field at its default. */`,
      `const default${struct.tsName}: ${struct.tsName} = Object.freeze({`,
      ...fields.map((f) => `  ${f.prop}: ${defaultSource(f)},`),
      "})",
      "",
    )
  }
  for (const message of messages) {
    for (const struct of message.structs) if (struct.needsDefault) emitDefault(struct)
  }
  const text = body.join("\n")
  if (text.includes("fieldNotInVersion(")) apiImports.push("fieldNotInVersion")
  if (text.includes("nullNotAllowed(")) apiImports.push("nullNotAllowed")
  if (text.includes("skipTaggedFields(")) apiImports.push("skipTaggedFields")
  const wireImports = ["type Reader", "type Writer"]
  if (/\bemptyArray\b/.test(text)) wireImports.unshift("emptyArray")
  if (/\bemptyBytes\b/.test(text)) wireImports.unshift("emptyBytes")
  if (/\bzeroUuid\b/.test(text)) wireImports.push("zeroUuid")
  const imports = [`import { ${apiImports.join(", ")} } from "./api.ts"`, `import { ${wireImports.join(", ")} } from "./wire.ts"`, ""]
  return { imports, body }
}

/** The source of lib/internal/kafka/protocol/<Api>.ts. */
export const emitApi = (api: ApiModel, version: string): string => {
  const lines = header(version, `common/message/${api.request.file} and ${api.response.file}`)
  const { imports, body } = emitMessages([api.request, api.response], ["type Api", "unsupportedVersion"])
  lines.push(...imports, ...body)
  const req = api.request.top.tsName
  const res = api.response.top.tsName
  const min = api.minVersion
  const max = api.maxVersion
  const check = (what: string) => `if (v < ${min} || v > ${max}) throw unsupportedVersion("${what}", v, ${min}, ${max})`
  // (v) => the header version, from the message's flexible versions.
  const headerVersion = (message: MessageModel, flexible: number, before: number) => {
    const c = cond(message.flexible, { lo: min, hi: max })
    return c === true ? `() => ${flexible}` : c === false ? `() => ${before}` : `(v) => (${c} ? ${flexible} : ${before})`
  }
  lines.push(
    `/** ${api.name} (API key ${api.key}), versions ${min} to ${max}${api.latestUnstable ? ` (v${max} is unstable in Kafka ${version}: brokers offer it only when configured to)` : ""}. */`,
    `export const ${api.name}: Api<${req}, ${res}> = {`,
    `  name: "${api.name}",`,
    `  key: ${api.key},`,
    `  minVersion: ${min},`,
    `  maxVersion: ${max},`,
    `  requestHeaderVersion: ${headerVersion(api.request, 2, 1)},`,
    ...(api.name === "ApiVersions"
      ? ["  // Always 0: a client reads this response before it knows which versions the broker speaks.", "  responseHeaderVersion: () => 0,"]
      : [`  responseHeaderVersion: ${headerVersion(api.response, 1, 0)},`]),
    "  encodeRequest: (w, v, x) => {",
    `    ${check(`${api.name}Request`)}`,
    `    encode${req}(w, v, x)`,
    "  },",
    "  decodeRequest: (r, v) => {",
    `    ${check(`${api.name}Request`)}`,
    `    r.what = \`${api.name}Request v\${v}\``,
    `    return decode${req}(r, v)`,
    "  },",
    "  encodeResponse: (w, v, x) => {",
    `    ${check(`${api.name}Response`)}`,
    `    encode${res}(w, v, x)`,
    "  },",
    "  decodeResponse: (r, v) => {",
    `    ${check(`${api.name}Response`)}`,
    `    r.what = \`${api.name}Response v\${v}\``,
    `    return decode${res}(r, v)`,
    "  },",
    "}",
    "",
  )
  return lines.join("\n")
}

/** The source of lib/internal/kafka/protocol/<Data>.ts, for a data message. */
export const emitData = (data: DataModel, version: string): string => {
  const lines = header(version, `common/message/${data.message.file}`)
  const { imports, body } = emitMessages([data.message], ["type Data", "unsupportedVersion"])
  lines.push(...imports, ...body)
  const name = data.name
  const top = data.message.top.tsName
  const min = data.minVersion
  const max = data.maxVersion
  const check = `if (v < ${min} || v > ${max}) throw unsupportedVersion("${name}", v, ${min}, ${max})`
  lines.push(
    `/** ${name}, versions ${min} to ${max}: a data message, carried as bytes with its version in front (api.ts's encodeVersionPrefixed). */`,
    `export const ${name}: Data<${top}> = {`,
    `  name: "${name}",`,
    `  minVersion: ${min},`,
    `  maxVersion: ${max},`,
    "  encode: (w, v, x) => {",
    `    ${check}`,
    `    encode${top}(w, v, x)`,
    "  },",
    "  decode: (r, v) => {",
    `    ${check}`,
    `    r.what = \`${name} v\${v}\``,
    `    return decode${top}(r, v)`,
    "  },",
    "}",
    "",
  )
  return lines.join("\n")
}

/** The source of lib/internal/kafka/protocol/index.ts. */
export const emitIndex = (models: ReadonlyArray<ApiModel>, data: ReadonlyArray<DataModel>, version: string): string => {
  const lines = header(version, "the definitions of the APIs and data messages listed in the generator,")
  // The coverage, for readers and the README: one line per API.
  const flexibleFrom = (api: ApiModel) => {
    const f = intersect(api.request.flexible, { lo: api.minVersion, hi: api.maxVersion })
    return isEmpty(f) ? "none" : `v${f.lo}+`
  }
  lines.push("// Coverage: API (key) versions generated, flexible versions.")
  for (const api of models) {
    const versions = `${api.minVersion}-${api.maxVersion}${api.latestUnstable ? ` (v${api.maxVersion} unstable)` : ""}`
    lines.push(`//   ${`${api.name} (${api.key})`.padEnd(30)} ${versions.padEnd(18)} flexible ${flexibleFrom(api)}`)
  }
  lines.push("")
  // Only the API constants and their request and response types: nested struct names repeat
  // across APIs (LeaderIdAndEpoch, Assignment), so they are imported from the API's own file.
  for (const api of models) lines.push(`import { ${api.name} } from "./${api.name}.ts"`)
  for (const d of data) lines.push(`import { ${d.name} } from "./${d.name}.ts"`)
  lines.push("")
  for (const api of models) {
    lines.push(`export { ${api.name}, type ${api.request.top.tsName}, type ${api.response.top.tsName} } from "./${api.name}.ts"`)
  }
  lines.push("")
  lines.push("/** Every generated API, in the generator's order. */")
  lines.push(`export const apis = [${models.map((a) => a.name).join(", ")}] as const`, "")
  lines.push("/** The generated APIs by key. */")
  lines.push("export const apisByKey: ReadonlyMap<number, (typeof apis)[number]> = new Map(apis.map((api) => [api.key, api]))", "")
  // The data messages' top structs share their names with their constants: one export gives both.
  for (const d of data) lines.push(`export { ${d.name} } from "./${d.name}.ts"`)
  lines.push("")
  lines.push("/** Every generated data message (payloads API messages carry as version-prefixed bytes), in the generator's order. */")
  lines.push(`export const dataMessages = [${data.map((d) => d.name).join(", ")}] as const`, "")
  return lines.join("\n")
}

/** Every generated file: name → content. */
export const generate = (options: { readonly jar?: string; readonly useUnzip?: boolean } = {}): Map<string, string> => {
  const version = kafkaVersion()
  const jar = options.jar ?? defaultJar(version)
  const models = loadApis(jar, undefined, options.useUnzip)
  const data = loadData(jar, options.useUnzip)
  const files = new Map<string, string>()
  for (const api of models) files.set(`${api.name}.ts`, emitApi(api, version))
  for (const d of data) files.set(`${d.name}.ts`, emitData(d, version))
  files.set("index.ts", emitIndex(models, data, version))
  return files
}

/** The files generated into a directory that hold the generated header (to find stale ones). */
export const generatedFilesIn = (dir: string): string[] =>
  readdirSync(dir).filter((name) => name.endsWith(".ts") && readFileSync(join(dir, name), "utf8").startsWith("// Generated by scripts/generate-protocol.ts"))

const main = (args: ReadonlyArray<string>): void => {
  const option = (name: string) => {
    const at = args.indexOf(name)
    return at >= 0 ? args[at + 1] : undefined
  }
  const out = resolve(option("--out") ?? defaultOutDir)
  const jar = option("--jar")
  const files = generate(jar === undefined ? {} : { jar: resolve(jar) })
  mkdirSync(out, { recursive: true })
  for (const [name, text] of files) writeFileSync(join(out, name), text)
  console.log(`generate-protocol: wrote ${files.size} files to ${out}`)
}

const invoked = process.argv[1] === undefined ? "" : pathToFileURL(resolve(process.argv[1])).href
if (invoked === import.meta.url) {
  try {
    main(process.argv.slice(2))
  } catch (error) {
    // A missing jar or a definition this generator cannot handle: the message says which.
    console.error(`generate-protocol: ${(error as Error).message}`)
    process.exit(1)
  }
}
