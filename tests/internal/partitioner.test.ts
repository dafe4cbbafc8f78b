import assert from "node:assert/strict"
import { test } from "node:test"
import { murmur2, partitionForKey } from "../../lib/internal/partitioner.ts"

const bytes = (text: string) => new TextEncoder().encode(text)

test("murmur2 matches Kafka's own test vectors", () => {
  // From Apache Kafka's UtilsTest.testMurmur2.
  const vectors: ReadonlyArray<readonly [string, number]> = [
    ["21", -973932308],
    ["foobar", -790332482],
    ["a-little-bit-long-string", -985981536],
    ["a-little-bit-longer-string", -1486304829],
    ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
    ["abc", 479470107],
  ]
  for (const [input, expected] of vectors) assert.equal(murmur2(bytes(input)), expected, input)
})

test("partitionForKey takes the hash's positive bits modulo the partition count", () => {
  // -973932308 & 0x7fffffff = 1173551340
  assert.equal(partitionForKey(bytes("21"), 7), 1173551340 % 7)
  assert.equal(partitionForKey(bytes("21"), 1), 0)
  assert.equal(partitionForKey(new Uint8Array(0), 3), (murmur2(new Uint8Array(0)) & 0x7fffffff) % 3)
})
