import assert from "node:assert/strict"
import { test } from "node:test"
import { Buffer } from "node:buffer"
import process from "node:process"
import type { Header } from "../../../lib/Transport.ts"
import { crc32c } from "../../../lib/internal/kafka/crc32c.ts"
import { lz4Compress, lz4Decompress, xxhash32 } from "../../../lib/internal/kafka/lz4.ts"
import {
  BatchBuilder,
  type Compression,
  decodeRecordBatches,
  type DecodeOptions,
  encodeControlBatch,
  encodeRecordBatch,
  readRecordBatches,
  RecordBatchError,
  type RecordInput,
} from "../../../lib/internal/kafka/recordBatch.ts"
import { snappyCompress, snappyCompressRaw, snappyDecompress } from "../../../lib/internal/kafka/snappy.ts"
import { lz4BlockChecksums, lz4DependentBlocksWithContentSize, lz4FrameInput } from "../../fixtures/lz4Frames.ts"

const codecs: ReadonlyArray<Compression> = ["none", "gzip", "snappy", "lz4", "zstd"]
const bytes = (text: string) => new TextEncoder().encode(text)
const at = { topic: "orders", partition: 3 } as const

/** A record as plain data, for deep comparison. */
const plain = (record: { offset: number; timestamp: number; key: Uint8Array | null; value: Uint8Array | null; headers: ReadonlyArray<Header> }) => ({
  offset: record.offset,
  timestamp: record.timestamp,
  key: record.key === null ? null : Buffer.from(record.key).toString("hex"),
  value: record.value === null ? null : Buffer.from(record.value).toString("hex"),
  headers: record.headers.map((h) => [h.key, h.value === null ? null : Buffer.from(h.value).toString("hex")]),
})

const expected = (records: ReadonlyArray<RecordInput>, baseOffset = 0) =>
  records.map((r, i) => plain({ ...r, offset: baseOffset + i, headers: r.headers ?? [] }))

const decodeAll = (data: Uint8Array, options: Partial<DecodeOptions> = {}) => {
  const decoded = readRecordBatches(data, { ...at, ...options })
  return decoded.batches.flatMap((batch) => [...batch].map(plain))
}

/** Records with every shape the format allows: null and empty keys and values, null header values, non-ASCII keys. */
const variedRecords = (count: number, seed = 1): Array<RecordInput> => {
  let state = seed
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32
  return Array.from({ length: count }, (_, i) => {
    const shape = i % 7
    const headers: Array<Header> =
      shape === 1 ? [] : shape === 2 ? [{ key: "trace", value: null }] : [
        { key: "h", value: bytes(`v${i}`) },
        { key: "schlüssel-ключ-鍵", value: new Uint8Array(0) },
        { key: "", value: Uint8Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)) },
      ]
    return {
      key: shape === 0 ? null : shape === 3 ? new Uint8Array(0) : bytes(`key-${i}`),
      value:
        shape === 4 ? null : shape === 5 ? new Uint8Array(0) : Uint8Array.from({ length: Math.floor(random() * 200) }, (_, k) => (k * i) & 0xff),
      headers,
      // Out of order, and sometimes far from the first (a multi-byte varlong delta).
      timestamp: 1_700_000_000_000 + (i % 11 === 0 ? -5000 : i * 13) + (i % 97 === 0 ? 2 ** 40 : 0),
    }
  })
}

test("every codec round-trips 1 record and 10,000, with null and empty keys, values and header values", () => {
  for (const compression of codecs) {
    for (const count of [1, 10_000]) {
      const records = variedRecords(count)
      const batch = encodeRecordBatch(records, { compression })
      assert.deepEqual(decodeAll(batch), expected(records), `${compression}, ${count} records`)
    }
  }
})

test("a batch built record by record (the producer's BatchBuilder) is byte for byte the batch encodeRecordBatch writes, for every codec, growing its buffer and finished again in place", () => {
  const options = { producerId: 4242, producerEpoch: 3, baseSequence: 17, transactional: true } as const
  for (const compression of codecs) {
    for (const count of [1, 7, 2_000]) {
      const records = variedRecords(count, count)
      // A first buffer far too small: it doubles as records arrive.
      const builder = new BatchBuilder(16, compression)
      for (const record of records) builder.append(record.key, record.value, record.headers, record.timestamp)
      assert.equal(builder.count, count)
      const built = builder.finish(options)
      assert.deepEqual(built, encodeRecordBatch(records, { ...options, compression }), `${compression}, ${count} records`)
      assert.deepEqual(decodeAll(built), expected(records))
      // A retry under a new epoch: the header changes, the records stay, the CRC follows.
      const again = builder.finish({ ...options, producerEpoch: 4, baseSequence: 0 })
      assert.deepEqual(again, encodeRecordBatch(records, { ...options, producerEpoch: 4, baseSequence: 0, compression }))
      if (compression === "none") assert.equal(again.buffer, built.buffer, "rewritten in place")
    }
  }
  assert.throws(() => new BatchBuilder(0).finish({}), RangeError)
})

test("a batch's header carries the producer's id, epoch and sequence, the flags and the offsets", () => {
  for (const compression of codecs) {
    const records = variedRecords(5)
    const data = encodeRecordBatch(records, {
      compression,
      baseOffset: 2 ** 40 + 7,
      producerId: 2 ** 45 + 3,
      producerEpoch: 17,
      baseSequence: 2_000_000_000,
      transactional: true,
      partitionLeaderEpoch: 9,
    })
    const { batches, nextOffset } = readRecordBatches(data, { ...at, isolation: "read-uncommitted" })
    const batch = batches[0]!
    assert.equal(batches.length, 1)
    assert.equal(batch.baseOffset, 2 ** 40 + 7)
    assert.equal(batch.lastOffsetDelta, 4)
    assert.equal(batch.lastOffset, 2 ** 40 + 11)
    assert.equal(nextOffset, 2 ** 40 + 12)
    assert.equal(batch.producerId, 2 ** 45 + 3)
    assert.equal(batch.producerEpoch, 17)
    assert.equal(batch.baseSequence, 2_000_000_000)
    assert.equal(batch.partitionLeaderEpoch, 9)
    assert.equal(batch.compression, compression)
    assert.equal(batch.isTransactional, true)
    assert.equal(batch.isControl, false)
    assert.equal(batch.recordCount, 5)
    assert.equal(batch.baseTimestamp, records[0]!.timestamp)
    assert.equal(batch.maxTimestamp, Math.max(...records.map((r) => r.timestamp)))
    assert.equal(batch.crc, crc32c(data, 21))
    const first = [...batch][0]!
    assert.equal(first.topic, "orders")
    assert.equal(first.partition, 3)
    assert.equal(first.offset, 2 ** 40 + 7)
  }
  // A plain producer's batch: no producer id, no sequence.
  const plainBatch = readRecordBatches(encodeRecordBatch([{ key: null, value: null, timestamp: 0 }]), at).batches[0]!
  assert.deepEqual([plainBatch.producerId, plainBatch.producerEpoch, plainBatch.baseSequence, plainBatch.isTransactional], [-1, -1, -1, false])
})

test("key, value and headers are views into the fetched bytes, read only when asked", () => {
  const data = encodeRecordBatch([{ key: bytes("k"), value: bytes("value"), headers: [{ key: "a", value: bytes("b") }], timestamp: 5 }])
  const record = [...readRecordBatches(data, at).batches[0]!][0]!
  assert.equal(record.value!.buffer, data.buffer, "the value is a view, not a copy")
  assert.equal(record.key!.buffer, data.buffer)
  assert.equal(record.headers[0]!.value!.buffer, data.buffer)
  assert.equal(record.headers, record.headers, "the headers array is built once")
  assert.equal(Buffer.from(record.value!).toString(), "value")
})

test("batches inside a larger response buffer, at an odd offset, decode to views of that buffer", () => {
  for (const compression of codecs) {
    const records = variedRecords(30)
    const batch = encodeRecordBatch(records, { compression })
    const response = new Uint8Array(batch.length + 1001)
    response.fill(0xee)
    response.set(batch, 777)
    const records777 = response.subarray(777, 777 + batch.length)
    assert.deepEqual(decodeAll(records777), expected(records), compression)
    if (compression === "none") {
      const first = [...readRecordBatches(records777, at).batches[0]!].find((r) => r.value !== null && r.value.length > 0)!
      assert.equal(first.value!.buffer, response.buffer)
    }
  }
})

test("a log-append-time batch gives every record the batch's max timestamp, as Java does", () => {
  const data = encodeRecordBatch([{ key: null, value: null, timestamp: 10 }, { key: null, value: null, timestamp: 20 }])
  const view = new DataView(data.buffer, data.byteOffset)
  view.setInt16(21, view.getInt16(21) | 0x08)
  view.setInt32(35, 0) // maxTimestamp, as the broker sets it
  view.setInt32(39, 99)
  view.setUint32(17, crc32c(data, 21))
  assert.deepEqual([...readRecordBatches(data, at).batches[0]!].map((r) => r.timestamp), [99, 99])
})

test("several batches decode in order, and a truncated last batch is skipped at every cut, never an error", () => {
  const parts = [
    encodeRecordBatch(variedRecords(3, 1), { baseOffset: 0, compression: "gzip" }),
    encodeRecordBatch(variedRecords(4, 2), { baseOffset: 3 }),
    encodeRecordBatch(variedRecords(5, 3), { baseOffset: 7, compression: "lz4" }),
  ]
  const all = new Uint8Array(Buffer.concat(parts))
  const records = [...variedRecords(3, 1), ...variedRecords(4, 2), ...variedRecords(5, 3)]
  assert.deepEqual(decodeAll(all), expected(records))
  const ends = [parts[0]!.length, parts[0]!.length + parts[1]!.length, all.length]
  for (let cut = 0; cut <= all.length; cut++) {
    const decoded = decodeRecordBatches(all.subarray(0, cut), at)
    assert.equal(decoded.error, undefined, `cut at ${cut}`)
    const whole = ends.filter((end) => end <= cut).length
    assert.equal(decoded.batches.length, whole, `cut at ${cut}`)
    assert.equal(decoded.truncatedBytes, cut - (whole === 0 ? 0 : ends[whole - 1]!))
    assert.equal(decoded.nextOffset, [undefined, 3, 7, 12][whole])
  }
})

test("a corrupted byte is a CRC error naming topic-partition and offset; with checkCrcs off it decodes", () => {
  const first = encodeRecordBatch(variedRecords(2), { baseOffset: 0 })
  const second = encodeRecordBatch([{ key: bytes("key"), value: bytes("value"), timestamp: 1 }], { baseOffset: 2 })
  const data = new Uint8Array(Buffer.concat([first, second]))
  data[data.length - 3]! ^= 0x20 // inside the second batch's value
  const decoded = decodeRecordBatches(data, at)
  assert.ok(decoded.error instanceof RecordBatchError)
  assert.equal(decoded.error.reason, "crc")
  assert.equal(decoded.error.offset, 2)
  assert.match(decoded.error.message, /^Cannot decode the record batch of orders\/3 at offset 2: CRC-32C is 0x[0-9a-f]{8} but the batch says/)
  assert.equal(decoded.batches.length, 1, "the batch before the corrupt one is still handed out")
  assert.throws(() => readRecordBatches(data, at), RecordBatchError)
  const unchecked = decodeAll(data, { checkCrcs: false })
  assert.equal(Buffer.from(unchecked[2]!.value!, "hex").toString(), "valUe")
})

test("read-committed drops aborted transactions and every control batch, as Java's fetcher does", () => {
  const v = (text: string): RecordInput => ({ key: null, value: bytes(text), timestamp: 1 })
  const log = new Uint8Array(
    Buffer.concat([
      encodeRecordBatch([v("a0"), v("a1")], { baseOffset: 0, producerId: 1, producerEpoch: 0, baseSequence: 0, transactional: true }),
      encodeRecordBatch([v("b2"), v("b3")], { baseOffset: 2, producerId: 2, producerEpoch: 0, baseSequence: 0, transactional: true, compression: "zstd" }),
      encodeControlBatch("abort", { baseOffset: 4, producerId: 1, producerEpoch: 0, timestamp: 1 }),
      encodeControlBatch("commit", { baseOffset: 5, producerId: 2, producerEpoch: 0, timestamp: 1 }),
      encodeRecordBatch([v("plain6")], { baseOffset: 6 }),
      encodeRecordBatch([v("idempotent7")], { baseOffset: 7, producerId: 3, producerEpoch: 0, baseSequence: 0 }),
      // Producer 1's next transaction, committed: only the earlier one was aborted.
      encodeRecordBatch([v("a8")], { baseOffset: 8, producerId: 1, producerEpoch: 0, baseSequence: 2, transactional: true, compression: "snappy" }),
      encodeControlBatch("commit", { baseOffset: 9, producerId: 1, producerEpoch: 0, timestamp: 1 }),
      // Producer 4 aborts a transaction that spans two batches.
      encodeRecordBatch([v("d10")], { baseOffset: 10, producerId: 4, producerEpoch: 0, baseSequence: 0, transactional: true }),
      encodeRecordBatch([v("d11")], { baseOffset: 11, producerId: 4, producerEpoch: 0, baseSequence: 1, transactional: true }),
      encodeControlBatch("abort", { baseOffset: 12, producerId: 4, producerEpoch: 0, timestamp: 1 }),
    ]),
  )
  const values = (options: Partial<DecodeOptions>) =>
    decodeAll(log, options).map((r) => `${r.offset}:${Buffer.from(r.value!, "hex").toString()}`)
  const abortedTransactions = [{ producerId: 4, firstOffset: 10 }, { producerId: 1, firstOffset: 0 }]
  assert.deepEqual(values({ abortedTransactions }), ["2:b2", "3:b3", "6:plain6", "7:idempotent7", "8:a8"])
  assert.deepEqual(values({ abortedTransactions, isolation: "read-uncommitted" }), [
    "0:a0", "1:a1", "2:b2", "3:b3", "6:plain6", "7:idempotent7", "8:a8", "10:d10", "11:d11",
  ])
  assert.equal(readRecordBatches(log, { ...at, abortedTransactions }).nextOffset, 13, "the next fetch starts after the last marker")
})

test("records before fromOffset are skipped, also inside a compressed batch", () => {
  const records = variedRecords(10)
  const data = encodeRecordBatch(records, { baseOffset: 100, compression: "lz4" })
  assert.deepEqual(decodeAll(data, { fromOffset: 104 }), expected(records, 100).slice(4))
  assert.deepEqual(decodeAll(data, { fromOffset: 110 }), [])
})

test("snappy decoding takes xerial-framed and raw blocks; lz4 decoding takes the reference tool's frames", () => {
  const input = lz4FrameInput()
  assert.deepEqual(snappyDecompress(snappyCompress(input), 1e9), input)
  assert.deepEqual(snappyDecompress(snappyCompressRaw(input), 1e9), input)
  assert.deepEqual(lz4Decompress(new Uint8Array(Buffer.from(lz4DependentBlocksWithContentSize, "base64")), 1e9), input)
  assert.deepEqual(lz4Decompress(new Uint8Array(Buffer.from(lz4BlockChecksums, "base64")), 1e9), input)
  assert.deepEqual(lz4Decompress(lz4Compress(input), 1e9), input)
  for (const size of [0, 1, 12, 13, 100, 65_536, 65_537, 200_000]) {
    const random = Uint8Array.from({ length: size }, (_, i) => (Math.imul(i, 2654435761) >>> 24) & 0xff)
    assert.deepEqual(lz4Decompress(lz4Compress(random), 1e9), random, `lz4, ${size} random bytes`)
    assert.deepEqual(snappyDecompress(snappyCompress(random), 1e9), random, `snappy, ${size} random bytes`)
  }
  // A batch whose records section is one raw Snappy block (as librdkafka writes) decodes too.
  const records = variedRecords(50)
  const plainBatch = encodeRecordBatch(records)
  const section = snappyCompressRaw(plainBatch.subarray(61))
  const raw = new Uint8Array(61 + section.length)
  raw.set(plainBatch.subarray(0, 61))
  raw.set(section, 61)
  const view = new DataView(raw.buffer)
  view.setInt32(8, raw.length - 12)
  view.setInt16(21, 2)
  view.setUint32(17, crc32c(raw, 21))
  assert.deepEqual(decodeAll(raw), expected(records))
})

test("xxhash32, the lz4 frame checksum, gives the reference's answers", () => {
  assert.equal(xxhash32(bytes("")), 0x02cc5d05)
  assert.equal(xxhash32(bytes("a")), 0x550d7456)
  assert.equal(xxhash32(bytes("abc")), 0x32d153ff)
  assert.equal(xxhash32(bytes("Nobody inspects the spammish repetition")), 0xe2293b2f)
})

test("a decompression bomb fails against maxDecompressedBytes instead of allocating", () => {
  const zeros = [{ key: null, value: new Uint8Array(4 * 1024 * 1024), timestamp: 0 }]
  for (const compression of ["gzip", "snappy", "lz4", "zstd"] as const) {
    const data = encodeRecordBatch(zeros, { compression })
    const decoded = decodeRecordBatches(data, { ...at, maxDecompressedBytes: 1024 * 1024 })
    assert.equal(decoded.error?.reason, "compression", compression)
    assert.match(decoded.error!.message, /more than the 1048576 bytes allowed/, compression)
  }
  // A snappy block announcing 4 GiB from a few bytes fails before any allocation.
  const lying = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x61])
  assert.throws(() => snappyDecompress(lying, 2 ** 40), /announces 4294967295 bytes from only 7 compressed/)
})

/** Runs `body` and returns what it threw, if it threw. */
const thrown = (body: () => void): unknown => {
  try {
    body()
    return undefined
  } catch (error) {
    return error
  }
}

/** Decodes and reads everything: the only thing allowed to escape is a RecordBatchError. */
const readEverything = (data: Uint8Array, checkCrcs: boolean): void => {
  const decoded = decodeRecordBatches(data, { ...at, checkCrcs, maxDecompressedBytes: 64 * 1024 * 1024 })
  if (decoded.error !== undefined) assert.ok(decoded.error instanceof RecordBatchError)
  for (const batch of decoded.batches) {
    const error = thrown(() => {
      for (const record of batch) {
        void record.key
        void record.value
        void record.headers
        assert.ok(Number.isFinite(record.offset) && Number.isFinite(record.timestamp))
      }
    })
    if (error !== undefined && !(error instanceof RecordBatchError)) throw error
  }
}

test("fuzz: random, truncated and corrupted bytes give a RecordBatchError or a skipped tail, nothing else", () => {
  let state = 12345
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32
  const rounds = Number(process.env["PARTITA_FUZZ_ROUNDS"] ?? 300)
  const valid = codecs.map((compression, i) =>
    new Uint8Array(Buffer.concat([
      encodeRecordBatch(variedRecords(20, i + 1), { compression, baseOffset: 0 }),
      encodeRecordBatch(variedRecords(5, i + 7), { compression, baseOffset: 20, producerId: 5, producerEpoch: 0, baseSequence: 20 }),
    ])),
  )
  const started = Date.now()
  for (let round = 0; round < rounds; round++) {
    // Random bytes, sometimes behind a plausible header.
    const noise = Uint8Array.from({ length: Math.floor(random() * 400) }, () => Math.floor(random() * 256))
    if (noise.length > 17 && random() < 0.5) noise[16] = 2
    readEverything(noise, random() < 0.5)
    for (const data of valid) {
      readEverything(data.subarray(0, Math.floor(random() * data.length)), true)
      const corrupt = data.slice()
      const flips = 1 + Math.floor(random() * 3)
      for (let f = 0; f < flips; f++) corrupt[Math.floor(random() * corrupt.length)] = Math.floor(random() * 256)
      readEverything(corrupt, true)
      // With CRCs off, corruption reaches the codecs and the record parser.
      readEverything(corrupt, false)
      assert.equal(thrown(() => readEverything(corrupt, true)) instanceof RecordBatchError, false)
    }
  }
  assert.ok(Date.now() - started < 50_000, "fuzzing stays fast: no pathological loop")
})

test("fuzz: the snappy and lz4 decoders, on their own, throw only CodecError on corrupt input", () => {
  let state = 777
  const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32
  const input = lz4FrameInput().subarray(0, 100_000)
  const streams: ReadonlyArray<[string, Uint8Array, (data: Uint8Array) => Uint8Array]> = [
    ["snappy", snappyCompress(input), (data) => snappyDecompress(data, 1 << 20)],
    ["snappy raw", snappyCompressRaw(input), (data) => snappyDecompress(data, 1 << 20)],
    ["lz4", lz4Compress(input), (data) => lz4Decompress(data, 1 << 20)],
    ["lz4 reference", new Uint8Array(Buffer.from(lz4DependentBlocksWithContentSize, "base64")), (data) => lz4Decompress(data, 1 << 20)],
  ]
  const rounds = Number(process.env["PARTITA_FUZZ_ROUNDS"] ?? 300)
  for (const [name, valid, decode] of streams) {
    for (let round = 0; round < rounds; round++) {
      const corrupt = random() < 0.3 ? valid.subarray(0, Math.floor(random() * valid.length)) : valid.slice()
      if (corrupt.length > 0 && corrupt !== valid) {
        for (let f = 0; f < 1 + Math.floor(random() * 4); f++) corrupt[Math.floor(random() * corrupt.length)] = Math.floor(random() * 256)
      }
      const error = thrown(() => decode(corrupt))
      if (error !== undefined) assert.equal((error as Error).name, "CodecError", `${name}: ${String(error)}`)
    }
  }
})
