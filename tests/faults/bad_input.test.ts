/**
 * Bad input: twelve kinds of malformed or unusual records between good ones. Each that cannot be
 * decoded is dead-lettered exactly once with its bytes unchanged (the exact expected count), each
 * that can is handled, and the good records behind them all flow.
 *
 * What "can be decoded" means here is the value schema `{ key: string, seq: number }` as JSON:
 * - a byte-order mark is dropped by UTF-8 decoding (WHATWG TextDecoder), so that record decodes;
 * - keys are not decoded (the actor takes raw key bytes), so a null or non-UTF-8 key is no error,
 *   and header bytes are never decoded;
 * - a JSON integer beyond 2^53 is a JavaScript number, rounded: it decodes (as 2^53).
 */
import assert from "node:assert/strict"
import { uniqueName } from "../fixtures/services.ts"
import { describeReport, outOfWindow } from "./history.ts"
import { scaled } from "./runner.ts"
import { checkHistory, committedToEnd, faultTest, partitions, report } from "./scenario.ts"

const encoder = new TextEncoder()
const json = (value: string) => encoder.encode(value)
/** Kafka's default `message.max.bytes`, which the broker and every topic use here. */
const brokerMax = 1_048_588
const good = scaled(400, 5000)

interface Bad {
  readonly name: string
  readonly expect: "dead-letter" | "handled"
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly headers?: ReadonlyArray<{ readonly key: string; readonly value: Uint8Array | null }>
}

const bad: ReadonlyArray<Bad> = [
  { name: "truncated JSON", expect: "dead-letter", key: json("bad-1"), value: json('{"key":"bad-1","seq":') },
  { name: "invalid UTF-8 in key and value", expect: "dead-letter", key: new Uint8Array([0xc3, 0x28]), value: new Uint8Array([0xff, 0xfe, 0xfd]) },
  { name: "a byte-order mark", expect: "handled", key: json("bad-3"), value: new Uint8Array([0xef, 0xbb, 0xbf, ...json('{"key":"bad-3","seq":0}')]) },
  { name: "schema-invalid", expect: "dead-letter", key: json("bad-4"), value: json('{"key":"bad-4","seq":"zero"}') },
  { name: "a null key", expect: "handled", key: null, value: json('{"key":"bad-5","seq":0}') },
  { name: "a tombstone", expect: "dead-letter", key: json("bad-6"), value: null },
  { name: "an empty value", expect: "dead-letter", key: json("bad-7"), value: new Uint8Array(0) },
  {
    name: "a value just under the broker's maximum",
    expect: "dead-letter",
    key: json("bad-8"),
    // Not JSON, so it is dead-lettered; the letter's headers take it past the maximum.
    value: new Uint8Array(brokerMax - 200).fill(0x78),
  },
  {
    name: "1000 headers",
    expect: "handled",
    key: json("bad-9"),
    value: json('{"key":"bad-9","seq":0}'),
    headers: Array.from({ length: 1000 }, (_, i) => ({ key: `h${i}`, value: json(String(i)) })),
  },
  { name: "non-UTF-8 header bytes", expect: "handled", key: json("bad-10"), value: json('{"key":"bad-10","seq":0}'), headers: [{ key: "bin", value: new Uint8Array([0xff, 0xfe]) }] },
  {
    name: "a malformed traceparent",
    expect: "handled",
    key: json("bad-11"),
    value: json('{"key":"bad-11","seq":0}'),
    headers: [{ key: "traceparent", value: json("00-not-a-trace-id-zz") }],
  },
  { name: "an integer beyond 2^53", expect: "handled", key: json("bad-12"), value: json('{"key":"bad-12","seq":9007199254740993}') },
]

faultTest("Bad input is dead-lettered exactly as expected, unchanged, and the pipeline keeps flowing", async (context) => {
  const { scenario, broker } = context
  const dlq = uniqueName("faults-bad-dlq")
  await broker.createTopic(dlq, 1)
  await broker.produceMany(scenario, context.topic, good)
  const placed: Array<Bad & { readonly partition: number; readonly offset: number }> = []
  for (const [index, record] of bad.entries()) {
    // One call each: a refused record must not take others with it.
    const [landed] = await broker.sendRaw([{ topic: context.topic, partition: index % partitions, key: record.key, value: record.value, headers: record.headers }])
    placed.push({ ...record, partition: landed!.partition, offset: landed!.offset })
  }
  await broker.produceMany(scenario, context.topic, good)
  const app = scenario.start("c", { DLQ: dlq })
  const problems: Array<string> = []
  await committedToEnd(context, 20_000).catch((error) => {
    const output = (app.process.stdout() + app.process.stderr()).split("\n")
    const why = output.filter((line) => /dead-letter|failed|error/i.test(line)).slice(-2).map((line) => line.slice(0, 300))
    problems.push(`${String(error).slice(0, 400)}; the app said: ${why.join(" | ")}`)
  })
  scenario.signal(app, "SIGTERM")
  const code = await app.process.exited

  const letters = (await broker.readBack(dlq)).derived
  const result = await checkHistory(context, { deadLetterTopic: dlq })
  const handled = new Set(scenario.history().handled.map((h) => `${h.partition}@${h.offset}`))
  const expectedLetters = placed.filter((p) => p.expect === "dead-letter")
  for (const record of placed) {
    const id = `${record.partition}@${record.offset}`
    const mine = letters.filter((l) => l.sourcePartition === record.partition && l.sourceOffset === record.offset)
    if (record.expect === "handled") {
      if (!handled.has(id)) problems.push(`${record.name} (${id}) was not handled`)
      if (mine.length > 0) problems.push(`${record.name} (${id}) was dead-lettered though it decodes`)
      continue
    }
    if (mine.length !== 1) {
      problems.push(`${record.name} (${id}) has ${mine.length} dead letters, not 1`)
      continue
    }
    const letter = mine[0]!
    const unchanged = record.value === null
      ? letter.value === null
      : letter.value !== null && letter.value.length === record.value.length && letter.value.every((b, i) => b === record.value![i])
    // The too-large record's letter may carry a truncated or absent value, with the original's size.
    if (!unchanged && record.name !== "a value just under the broker's maximum") problems.push(`${record.name} (${id}): the letter's value differs from the record's`)
    if (letter.headers["partita.dlq.error.tag"] !== "DecodeError") problems.push(`${record.name}: error tag ${letter.headers["partita.dlq.error.tag"]}`)
  }
  if (letters.length !== expectedLetters.length) problems.push(`${letters.length} dead letters, expected exactly ${expectedLetters.length}`)
  report(context, "bad-input", result, { letters: letters.length, expected_letters: expectedLetters.length, exit: String(code) })

  const detail = describeReport(result)
  assert.deepEqual(result.lost, [], detail)
  assert.deepEqual(outOfWindow(result), [], detail)
  assert.deepEqual(problems, [], detail)
  assert.equal(code, 0, app.process.stderr().slice(-1000))
}, { timeoutMs: scaled(120_000, 600_000) })
