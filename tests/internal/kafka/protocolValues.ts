/**
 * Values for the generated protocol codecs, built from the generator's own model of Kafka's
 * message definitions: seeded pseudo-random contents in every field a version has (tagged fields
 * included), the JSON default in every field it lacks, which is what a decoder gives back.
 */
import { uuidToString } from "../../../lib/internal/kafka/protocol/wire.ts"
import {
  type ApiModel,
  contains,
  type DataModel,
  defaultJar,
  defaultValue,
  type FieldModel,
  intersect,
  isEmpty,
  loadApis,
  loadData,
  type StructModel,
  type TypeModel,
} from "../../../scripts/generate-protocol.ts"

/** A seeded pseudo-random generator (mulberry32): the same seed gives the same values everywhere. */
export const seeded = (seed: number) => {
  let state = seed >>> 0
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
  const int = (lo: number, hi: number): number => lo + Math.floor(next() * (hi - lo + 1))
  const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => int(0, 255))
  return { next, int, bytes }
}

export type Random = ReturnType<typeof seeded>

const texts = ["", "a", "topic-1", "é", "漢字", "🎼 partita", "x".repeat(40), "ünïcødé-" + "y".repeat(130)]

const randomInt64 = (random: Random): number => {
  switch (random.int(0, 4)) {
    case 0:
      return -1
    case 1:
      return random.int(0, 1000)
    case 2:
      return random.int(-(2 ** 31), 2 ** 31)
    case 3:
      return Number.MAX_SAFE_INTEGER - random.int(0, 10)
    default:
      return -(2 ** 53) + 1 + random.int(0, 10)
  }
}

const randomOf = (type: TypeModel, v: number, random: Random): unknown => {
  if (type.kind === "array") return Array.from({ length: random.int(0, 3) }, () => randomOf(type.element, v, random))
  if (type.kind === "struct") return valueOf(type.struct, v, random)
  switch (type.name) {
    case "bool":
      return random.next() < 0.5
    case "int8":
      return random.int(-128, 127)
    case "int16":
      return random.int(-32768, 32767)
    case "uint16":
      return random.int(0, 65535)
    case "int32":
      return random.int(-(2 ** 31), 2 ** 31 - 1)
    case "uint32":
      return random.int(0, 2 ** 32 - 1)
    case "int64":
      return randomInt64(random)
    case "float64":
      return (random.next() - 0.5) * 10 ** random.int(-5, 12)
    case "string":
      return texts[random.int(0, texts.length - 1)]!
    case "bytes":
      return random.bytes(random.int(0, 12))
    case "records":
      return random.bytes(random.int(0, 40))
    case "uuid":
      return uuidToString(random.bytes(16))
  }
}

const fieldValue = (field: FieldModel, v: number, random: Random): unknown => {
  if (!contains(field.versions, v)) return defaultValue(field)
  const isRecords = field.type.kind === "primitive" && field.type.name === "records"
  if ((contains(field.nullable, v) || isRecords) && random.next() < 0.2) return null
  return randomOf(field.type, v, random)
}

/** A value of `struct` for version v: every field of the struct's type, random where v has it. */
export const valueOf = (struct: StructModel, v: number, random: Random): Record<string, unknown> => {
  const value: Record<string, unknown> = {}
  for (const field of struct.fields) {
    if (isEmpty(intersect(field.versions, struct.range))) continue
    value[field.prop] = fieldValue(field, v, random)
  }
  return value
}

let models: ApiModel[] | undefined

/** The generator's model of every generated API, read once from the kafka-clients jar. */
export const apiModels = (): ApiModel[] => (models ??= loadApis(defaultJar()))

let data: DataModel[] | undefined

/** The generator's model of every generated data message, read once from the kafka-clients jar. */
export const dataModels = (): DataModel[] => (data ??= loadData(defaultJar()))
