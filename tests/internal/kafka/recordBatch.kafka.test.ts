/**
 * The record batch codec against Kafka's own code, without a network client of ours:
 * - Java's console producer writes records (every codec, idempotent as Java's producer is by
 *   default) through the shared broker; we decode the partition's log segment file.
 * - kafkajs writes an aborted and a committed transaction; the broker writes the markers and
 *   its aborted-transaction index, and read-committed decoding of the segment drops the aborted one.
 * - We write a log segment of batches we encoded (every codec, idempotent and transactional, a
 *   commit marker); Kafka's DumpLogSegments and Kafka's client classes decode and validate it,
 *   and report a CRC problem once a byte is corrupted.
 */
import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Kafka, logLevel } from "kafkajs"
import { test } from "node:test"
import {
  type Compression,
  encodeControlBatch,
  encodeRecordBatch,
  readRecordBatches,
  type RecordInput,
} from "../../../lib/internal/kafka/recordBatch.ts"
import { snappyDecompress } from "../../../lib/internal/kafka/snappy.ts"
import { lz4FrameInput } from "../../fixtures/lz4Frames.ts"
import { brokerLogDir, kafkaLibs, runJava } from "../../fixtures/kafkaTools.ts"
import { kafkaTest, uniqueName } from "../../fixtures/services.ts"

const codecs: ReadonlyArray<Compression> = ["none", "gzip", "snappy", "lz4", "zstd"]
const javaRecords = new URL("../../fixtures/KafkaRecords.java", import.meta.url).pathname
const hex = (bytes: Uint8Array | null) => (bytes === null ? "null" : Buffer.from(bytes).toString("hex"))
const utf8 = (text: string) => new TextEncoder().encode(text)

/** What the console producer is given, per codec: headers, key and value, `NULL` for null. */
const consoleLines = (codec: Compression) => [
  { headers: [["h1", "v1"], ["h2", null]], key: `${codec}-key-0`, value: `${codec} value zero` },
  { headers: [["trace", "abc"]], key: null, value: null },
  { headers: [["empty", ""]], key: `${codec}-key-2`, value: "" },
  { headers: [["ключ", "значение"]], key: `${codec}-ключ`, value: "x".repeat(3000) },
] as const

kafkaTest("records Java's console producer wrote through the broker decode from the log segment, every codec", async (brokers) => {
  const kafka = new Kafka({ brokers: [...brokers], clientId: "record-batch-interop", logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  const topics = codecs.map((codec) => uniqueName(`records-java-${codec}`))
  try {
    await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true })
    const logDir = brokerLogDir(brokers, topics[0]!)
    await Promise.all(
      codecs.map((codec, i) =>
        runJava(
          [
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            brokers.join(","),
            "--topic",
            topics[i]!,
            "--compression-codec",
            codec,
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "parse.headers=true",
            "--reader-property",
            "null.marker=NULL",
          ],
          consoleLines(codec)
            .map((line) => `${line.headers.map(([k, v]) => `${k}:${v ?? "NULL"}`).join(",")}\t${line.key ?? "NULL"}\t${line.value ?? "NULL"}\n`)
            .join(""),
        )
      ),
    )
    const dir = await logDir
    for (const [i, codec] of codecs.entries()) {
      const segment = new Uint8Array(fs.readFileSync(path.join(dir, `${topics[i]}-0`, "00000000000000000000.log")))
      const decoded = readRecordBatches(segment, { topic: topics[i]!, partition: 0 })
      assert.equal(decoded.truncatedBytes, 0)
      assert.ok(decoded.batches.length >= 1, codec)
      for (const batch of decoded.batches) {
        assert.equal(batch.compression, codec)
        // Java's producer is idempotent by default: a producer id and sequence numbers.
        assert.ok(batch.producerId >= 0, `${codec}: producer id ${batch.producerId}`)
        assert.equal(batch.producerEpoch, 0)
        assert.equal(batch.baseSequence, batch.baseOffset)
      }
      const records = decoded.batches.flatMap((batch) => [...batch])
      assert.deepEqual(
        records.map((r) => ({
          offset: r.offset,
          key: r.key === null ? null : Buffer.from(r.key).toString(),
          value: r.value === null ? null : Buffer.from(r.value).toString(),
          headers: r.headers.map((h) => [h.key, h.value === null ? null : Buffer.from(h.value).toString()]),
        })),
        consoleLines(codec).map((line, offset) => ({ offset, key: line.key, value: line.value, headers: line.headers })),
        codec,
      )
      for (const record of records) {
        assert.ok(Math.abs(record.timestamp - Date.now()) < 10 * 60_000, `${codec}: timestamp ${record.timestamp} is now`)
      }
      assert.equal(decoded.nextOffset, 4)
    }
  } finally {
    await admin.deleteTopics({ topics }).catch(() => undefined)
    await admin.disconnect()
  }
}, { timeoutMs: 90_000 })

/** The segment we write for Kafka to read, with what each batch must show. */
const ourSegment = () => {
  const batches: Array<Uint8Array> = []
  const expected: Array<{ offset: number; record: RecordInput }> = []
  let offset = 0
  for (const [i, compression] of codecs.entries()) {
    const records: Array<RecordInput> = [
      { key: utf8(`${compression}-k0`), value: utf8(`${compression} v0`), headers: [{ key: "h", value: utf8("hv") }, { key: "n", value: null }], timestamp: 1_700_000_000_000 + i },
      { key: null, value: null, headers: [], timestamp: 1_700_000_000_100 + i },
      { key: new Uint8Array(0), value: utf8("y".repeat(5000)), headers: [{ key: "ключ", value: new Uint8Array(0) }], timestamp: 1_699_999_999_000 },
    ]
    // Idempotent: producer id 1000 + i, sequence numbers = offsets.
    batches.push(encodeRecordBatch(records, { compression, baseOffset: offset, producerId: 1000 + i, producerEpoch: 2, baseSequence: 10 * i, partitionLeaderEpoch: 0 }))
    records.forEach((record, k) => expected.push({ offset: offset + k, record }))
    offset += records.length
  }
  const txn: RecordInput = { key: utf8("txn-key"), value: utf8("in a transaction"), timestamp: 1_700_000_001_000 }
  batches.push(encodeRecordBatch([txn], { compression: "zstd", baseOffset: offset, producerId: 2000, producerEpoch: 1, baseSequence: 0, transactional: true }))
  expected.push({ offset, record: txn })
  offset++
  batches.push(encodeControlBatch("commit", { baseOffset: offset, producerId: 2000, producerEpoch: 1, timestamp: 1_700_000_001_001, coordinatorEpoch: 7 }))
  return { bytes: new Uint8Array(Buffer.concat(batches)), expected, markerOffset: offset }
}

test("Kafka's DumpLogSegments and client classes read a segment we encoded, and see a corrupted byte", { timeout: 90_000 }, async () => {
  kafkaLibs()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "partita-records-"))
  try {
    const { bytes, expected, markerOffset } = ourSegment()
    const good = path.join(dir, "good-0", "00000000000000000000.log")
    const bad = path.join(dir, "bad-0", "00000000000000000000.log")
    fs.mkdirSync(path.dirname(good))
    fs.mkdirSync(path.dirname(bad))
    fs.writeFileSync(good, bytes)
    const corrupt = bytes.slice()
    corrupt[200]! ^= 0x01 // inside the first batch's records
    fs.writeFileSync(bad, corrupt)
    const snappyInput = path.join(dir, "snappy-input")
    fs.writeFileSync(snappyInput, lz4FrameInput())

    const [dump, clientView] = await Promise.all([
      runJava(["org.apache.kafka.tools.DumpLogSegments", "--files", `${good},${bad}`, "--print-data-log", "--deep-iteration"]),
      runJava([javaRecords, good, snappyInput, dir]),
    ])
    const [goodDump, badDump] = dump.split(`Dumping ${bad}`)

    // DumpLogSegments: batch flags, producer fields, offsets, keys, values, header keys.
    const batchLines = goodDump!.split("\n").filter((line) => line.startsWith("baseOffset:"))
    assert.equal(batchLines.length, codecs.length + 2)
    for (const [i, codec] of codecs.entries()) {
      const line = batchLines[i]!
      assert.match(line, new RegExp(`^baseOffset: ${3 * i} lastOffset: ${3 * i + 2} count: 3 baseSequence: ${10 * i} lastSequence: ${10 * i + 2} producerId: ${1000 + i} producerEpoch: 2 partitionLeaderEpoch: 0 isTransactional: false isControl: false`))
      assert.match(line, new RegExp(`compresscodec: ${codec} crc: \\d+ isvalid: true$`))
    }
    assert.match(batchLines[codecs.length]!, /producerId: 2000 producerEpoch: 1 .*isTransactional: true isControl: false.*compresscodec: zstd .*isvalid: true/)
    assert.match(batchLines[codecs.length + 1]!, new RegExp(`^baseOffset: ${markerOffset} .*isTransactional: true isControl: true.*isvalid: true`))
    assert.match(goodDump!, new RegExp(`\\| offset: ${markerOffset} .* endTxnMarker: COMMIT coordinatorEpoch: 7`))
    for (const { offset, record } of expected) {
      const line = goodDump!.split("\n").find((l) => l.startsWith(`| offset: ${offset} `))
      assert.ok(line !== undefined, `offset ${offset} in DumpLogSegments' output`)
      assert.ok(line.includes(` CreateTime: ${record.timestamp} `), line)
      assert.ok(line.includes(` keySize: ${record.key?.length ?? -1} valueSize: ${record.value?.length ?? -1} `), line)
      assert.ok(line.includes(` headerKeys: [${(record.headers ?? []).map((h) => h.key).join(",")}]`), line)
      if (record.key !== null && record.key.length > 0) assert.ok(line.includes(` key: ${Buffer.from(record.key).toString()} `), line)
      if (record.value !== null) assert.ok(line.includes(` payload: ${Buffer.from(record.value).toString()}`), line)
    }
    // The corrupted copy: the first batch is reported invalid, the others still valid.
    const badBatches = badDump!.split("\n").filter((line) => line.startsWith("baseOffset:"))
    assert.match(badBatches[0]!, /isvalid: false$/)
    assert.ok(badBatches.slice(1).every((line) => line.endsWith("isvalid: true")))

    // Kafka's client classes (MemoryRecords, ensureValid): the same records, header values included.
    const lines = clientView.trim().split("\n")
    const recordLines = lines.filter((line) => line.startsWith("record "))
    const expectedLines = expected.map(({ offset, record }) =>
      [`record ${offset} ${record.timestamp} ${hex(record.key)} ${hex(record.value)}`, ...(record.headers ?? []).map((h) => `${hex(utf8(h.key))}=${hex(h.value)}`)].join(" ")
    )
    assert.deepEqual(recordLines.filter((line) => !line.startsWith(`record ${markerOffset} `)), expectedLines)
    assert.ok(lines.includes(`batch ${markerOffset} ${markerOffset} none producerId=2000 epoch=1 sequence=-1 transactional=true control=true`))

    // snappy-java's raw blocks and framed streams (what Kafka's producer writes) decode here.
    for (const file of ["raw.snappy", "framed.snappy"]) {
      const compressed = new Uint8Array(fs.readFileSync(path.join(dir, file)))
      assert.deepEqual(snappyDecompress(compressed, 1 << 30), lz4FrameInput(), file)
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

/** A partition's aborted transactions as the broker indexes them (`.txnindex`: 34-byte entries). */
const readTxnIndex = (file: string): Array<{ producerId: number; firstOffset: number }> => {
  const bytes = fs.readFileSync(file)
  const entries: Array<{ producerId: number; firstOffset: number }> = []
  for (let at = 0; at + 34 <= bytes.length; at += 34) {
    entries.push({ producerId: Number(bytes.readBigInt64BE(at + 2)), firstOffset: Number(bytes.readBigInt64BE(at + 10)) })
  }
  return entries
}

kafkaTest("read-committed drops a transaction the broker aborted, by its own markers and aborted-transaction index", async (brokers) => {
  const kafka = new Kafka({ brokers: [...brokers], clientId: "record-batch-txn", logLevel: logLevel.NOTHING })
  const admin = kafka.admin()
  await admin.connect()
  const topic = uniqueName("records-txn")
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true })
    const logDir = brokerLogDir(brokers, topic)
    const producer = kafka.producer({ transactionalId: topic, idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const aborted = await producer.transaction()
    await aborted.send({ topic, messages: [{ value: "aborted 0" }, { value: "aborted 1" }] })
    await aborted.abort()
    const committed = await producer.transaction()
    await committed.send({ topic, messages: [{ value: "committed 3" }] })
    await committed.commit()
    await producer.disconnect()
    const plain = kafka.producer()
    await plain.connect()
    await plain.send({ topic, messages: [{ value: "plain 5" }] })
    await plain.disconnect()

    const partitionDir = path.join(await logDir, `${topic}-0`)
    const segment = new Uint8Array(fs.readFileSync(path.join(partitionDir, "00000000000000000000.log")))
    const abortedTransactions = readTxnIndex(path.join(partitionDir, "00000000000000000000.txnindex"))
    assert.equal(abortedTransactions.length, 1)
    assert.equal(abortedTransactions[0]!.firstOffset, 0)
    const values = (isolation: "read-committed" | "read-uncommitted") => {
      const decoded = readRecordBatches(segment, { topic, partition: 0, isolation, abortedTransactions })
      assert.equal(decoded.nextOffset, 6, "offsets 2 and 4 are the broker's abort and commit markers")
      return decoded.batches.flatMap((batch) => [...batch].map((r) => `${r.offset}:${Buffer.from(r.value!).toString()}`))
    }
    assert.deepEqual(values("read-committed"), ["3:committed 3", "5:plain 5"])
    assert.deepEqual(values("read-uncommitted"), ["0:aborted 0", "1:aborted 1", "3:committed 3", "5:plain 5"])
  } finally {
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined)
    await admin.disconnect()
  }
}, { timeoutMs: 90_000 })
