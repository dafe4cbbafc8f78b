/**
 * KafkaTransport against Kafka's own Java clients, through the shared broker:
 * - Kafka's console consumer reads what KafkaTransport wrote with each codec (none, gzip, snappy,
 *   lz4, zstd): keys, values and header values byte for byte (binary ones too), repeated header
 *   keys in order, null keys, values and header values, empty ones, timestamps. Kafka's
 *   DumpLogSegments shows each partition's batches really carry that codec.
 * - A KafkaTransport subscription reads what Kafka's console producer wrote with each codec
 *   (`--compression-codec`), keys and headers parsed from its input (`parse.key`, `parse.headers`).
 *
 * Each direction runs its Java tools side by side: a JVM takes seconds to start on a busy machine.
 */
import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import * as path from "node:path"
import { Effect } from "effect"
import * as KafkaTransport from "../lib/KafkaTransport.ts"
import { type Header, type ProducerRecord, Transport } from "../lib/Transport.ts"
import { startConsumer } from "./fixtures/consume.ts"
import { bytes, run, text } from "./fixtures/effect.ts"
import { brokerLogDir, runJava, runJavaBytes } from "./fixtures/kafkaTools.ts"
import { kafkaTest, uniqueName } from "./fixtures/services.ts"

const codecs: ReadonlyArray<KafkaTransport.Compression> = ["none", "gzip", "snappy", "lz4", "zstd"]

/**
 * Bytes that are no UTF-8 and hold none of the console consumer's separators (tab, newline,
 * `,` and `:` between headers), so its raw output splits unambiguously.
 */
const binary = Uint8Array.from([0x00, 0xff, 0x80, 0xc3, 0x28, 0xfe, 0x01, 0x7f, 0xa0])

/**
 * The records' timestamps: recent, as the broker's time-based retention deletes a rolled segment
 * whose newest record is older than 7 days.
 */
const baseTimestamp = Math.floor(Date.now() / 1000) * 1000 - 60_000

/** What KafkaTransport writes to partition `partition`, compressed with `codec`. */
const ourRecords = (topic: string, partition: number, codec: KafkaTransport.Compression): Array<ProducerRecord> => {
  const timestamp = baseTimestamp + partition * 1000
  return [
    {
      topic,
      partition,
      key: bytes(`${codec}-key`),
      value: bytes(`${codec} value`),
      headers: [
        { key: "repeated", value: bytes("first") },
        { key: "repeated", value: bytes("second") },
        { key: "nothing", value: null },
        { key: "repeated", value: bytes("third") },
      ],
      timestamp,
    },
    { topic, partition, key: null, value: null, timestamp: timestamp + 1 },
    { topic, partition, key: binary, value: binary, headers: [{ key: "bin", value: binary }], timestamp: timestamp + 2 },
    { topic, partition, key: new Uint8Array(0), value: new Uint8Array(0), headers: [{ key: "empty", value: new Uint8Array(0) }], timestamp: timestamp + 3 },
    // Large and repetitive, so that every codec really shrinks the batch.
    { topic, partition, key: bytes("ключ"), value: bytes("значение, ".repeat(400)), headers: [{ key: "ключ", value: bytes("значение") }], timestamp: timestamp + 4 },
  ]
}

const NULL = "NULL"

/** The line Kafka's console consumer prints for `record` (see the formatter properties below). */
const consoleLine = (record: ProducerRecord, offset: number): Buffer => {
  const or = (value: Uint8Array | null | undefined) => (value === null || value === undefined ? Buffer.from(NULL) : Buffer.from(value))
  const headers: ReadonlyArray<Header> = record.headers ?? []
  const rendered = headers.length === 0
    ? [Buffer.from("NO_HEADERS")]
    : headers.flatMap((h, i) => [Buffer.from(`${i === 0 ? "" : ","}${h.key}:`), or(h.value)])
  return Buffer.concat([
    Buffer.from(`CreateTime:${record.timestamp}\tPartition:${record.partition}\tOffset:${offset}\t`),
    ...rendered,
    Buffer.from("\t"),
    or(record.key),
    Buffer.from("\t"),
    or(record.value),
  ])
}

/** Splits raw output on newlines into lines, as latin1 text (one char per byte) for readable diffs. */
const lines = (output: Buffer): Array<string> => output.toString("latin1").split("\n").filter((line) => line !== "")

kafkaTest(
  "Kafka's console consumer reads what KafkaTransport wrote with every codec: keys, values, repeated, binary and null headers, byte for byte",
  async (brokers) => {
    // Not awaited here: the other test's Java producers start now, beside this test's Java tools.
    void javaProduced(brokers).catch(() => undefined)
    const topic = uniqueName("interop-ours")
    const written = codecs.flatMap((codec, partition) => ourRecords(topic, partition, codec))
    await run(
      Effect.gen(function*() {
        yield* (yield* Transport).createTopic({ topic, partitions: codecs.length })
      }),
      KafkaTransport.layer({ brokers }),
    )
    // One transport per codec, each writing its own partition.
    for (const [partition, codec] of codecs.entries()) {
      await run(
        Effect.gen(function*() {
          yield* (yield* Transport).send(ourRecords(topic, partition, codec))
        }),
        KafkaTransport.layer({ brokers, compression: codec }),
      )
    }

    const consumed = runJavaBytes([
      "org.apache.kafka.tools.consumer.ConsoleConsumer",
      "--bootstrap-server",
      brokers.join(","),
      "--topic",
      topic,
      "--from-beginning",
      "--max-messages",
      String(written.length),
      "--timeout-ms",
      "40000",
      ...["print.timestamp", "print.partition", "print.offset", "print.headers", "print.key", "print.value"].flatMap((p) => [
        "--formatter-property",
        `${p}=true`,
      ]),
      "--formatter-property",
      `null.literal=${NULL}`,
    ])
    const dumped = brokerLogDir(brokers, topic).then((dir) =>
      runJava([
        "org.apache.kafka.tools.DumpLogSegments",
        "--files",
        codecs.map((_, partition) => path.join(dir, `${topic}-${partition}`, "00000000000000000000.log")).join(","),
      ])
    )
    const [output, dump] = await Promise.all([consumed, dumped])

    const order = (line: string) => {
      const match = /\tPartition:(\d+)\tOffset:(\d+)\t/.exec(line)
      assert.ok(match !== null, `a line of the console consumer without partition and offset: ${line}`)
      return Number(match[1]) * 1000 + Number(match[2])
    }
    const printed = lines(output).filter((line) => line.startsWith("CreateTime:")).sort((a, b) => order(a) - order(b))
    const expected = codecs.flatMap((codec, partition) =>
      ourRecords(topic, partition, codec).map((record, offset) => consoleLine(record, offset).toString("latin1"))
    )
    assert.deepEqual(printed, expected)

    // DumpLogSegments prints one "Dumping <file>" section per partition, with each batch's codec.
    const sections = dump.split(/^Dumping /m).slice(1)
    assert.equal(sections.length, codecs.length)
    for (const [partition, codec] of codecs.entries()) {
      const section = sections.find((s) => s.split("\n")[0]!.includes(`/${topic}-${partition}/`))
      assert.ok(section !== undefined, `DumpLogSegments dumped partition ${partition}`)
      const batches = section.split("\n").filter((line) => line.startsWith("baseOffset:"))
      assert.ok(batches.length >= 1, `partition ${partition} holds a batch`)
      for (const batch of batches) {
        assert.match(batch, new RegExp(`compresscodec: ${codec} `), `partition ${partition}: ${batch}`)
        assert.match(batch, /isvalid: true$/)
        // acks=all is idempotent by default: a producer id, sequences from 0.
        assert.match(batch, /producerId: \d+ producerEpoch: 0 /)
      }
    }
  },
  { timeoutMs: 90_000 },
)

/** What the console producer is given per codec: headers, key, value, tab-separated, `NULL` for null. */
const consoleInput = (codec: KafkaTransport.Compression) => [
  { headers: [["repeated", "a"], ["repeated", "b"], ["nothing", null]], key: `${codec}-key`, value: `${codec} value` },
  { headers: [["only", "x"]], key: null, value: null },
  { headers: [["ключ", "значение"]], key: `${codec}-ключ`, value: "значение, ".repeat(400) },
  { headers: [["empty", ""]], key: `${codec}-empty`, value: "" },
] as const

/**
 * The console producers' runs, started once by whichever test comes first: the first test starts
 * them so that their JVMs start while it runs its own (the file stays within its time budget on
 * a busy machine), the second awaits them.
 */
let javaRuns: Promise<{ readonly topics: ReadonlyArray<string>; readonly started: number }> | undefined
const javaProduced = (brokers: ReadonlyArray<string>) => {
  javaRuns ??= (async () => {
    const started = Date.now()
    const topics = codecs.map((codec) => uniqueName(`interop-java-${codec}`))
    await run(
      Effect.gen(function*() {
        const transport = yield* Transport
        yield* Effect.forEach(topics, (topic) => transport.createTopic({ topic, partitions: 1 }), { discard: true })
      }),
      KafkaTransport.layer({ brokers }),
    )
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
            `null.marker=${NULL}`,
          ],
          consoleInput(codec)
            .map((line) => `${line.headers.map(([k, v]) => `${k}:${v ?? NULL}`).join(",")}\t${line.key ?? NULL}\t${line.value ?? NULL}\n`)
            .join(""),
        )
      ),
    )
    return { topics, started }
  })()
  return javaRuns
}

kafkaTest(
  "a KafkaTransport subscription reads what Kafka's console producer wrote with every codec, keys and headers included",
  async (brokers) => {
    const { topics, started } = await javaProduced(brokers)
    const received = await run(
      Effect.gen(function*() {
        const consumer = yield* startConsumer(yield* Transport, { group: uniqueName("interop-java"), topics })
        yield* consumer.receivedAtLeast(codecs.length * consoleInput("none").length).pipe(
          Effect.timeoutOrElse({
            duration: "30 seconds",
            orElse: () => Effect.die(new Error(`Only ${consumer.received.length} records arrived in 30 s`)),
          }),
        )
        return [...consumer.received]
      }),
      KafkaTransport.layer({ brokers }),
    )
    for (const [i, codec] of codecs.entries()) {
      const records = received.filter((record) => record.topic === topics[i]).sort((a, b) => a.offset - b.offset)
      assert.deepEqual(
        records.map((r) => ({
          offset: r.offset,
          key: text(r.key),
          value: text(r.value),
          headers: r.headers.map((h) => [h.key, text(h.value)]),
        })),
        consoleInput(codec).map((line, offset) => ({ offset, key: line.key, value: line.value, headers: line.headers })),
        codec,
      )
      for (const record of records) {
        assert.ok(Math.abs(record.timestamp - started) < 10 * 60_000, `${codec}: timestamp ${record.timestamp} is about now`)
      }
    }
  },
  { timeoutMs: 90_000 },
)
