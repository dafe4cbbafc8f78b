import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import { test } from "node:test"
import { crc32c, crc32cCombine, crc32cUpdate } from "../../../lib/internal/kafka/crc32c.ts"

/** The definition, one bit at a time: what the table-driven code must agree with. */
const bitwise = (bytes: Uint8Array): number => {
  let c = 0xffffffff
  for (const byte of bytes) {
    c ^= byte
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
  }
  return (c ^ 0xffffffff) >>> 0
}

test("crc32c gives the published check value and RFC 3720's iSCSI vectors", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283)
  assert.equal(crc32c(new Uint8Array(0)), 0)
  // RFC 3720 appendix B.4 (the CRC bytes are printed there least significant first).
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa)
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43)
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e)
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c)
  const iscsiRead = Uint8Array.from([
    0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  ])
  assert.equal(crc32c(iscsiRead), 0xd9963a56)
})

test("crc32c agrees with the bitwise definition at every length and alignment around its 16-byte word steps", () => {
  const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 167 + 13) & 0xff)
  for (let start = 0; start < 17; start++) {
    for (const length of [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 66, 67, 79, 80, 81, 1000, 4000]) {
      const slice = bytes.subarray(start, start + length)
      assert.equal(crc32c(bytes, start, start + length), bitwise(slice), `start ${start}, length ${length}`)
      assert.equal(crc32c(slice), bitwise(slice))
    }
  }
  // A view whose buffer starts unaligned, and one over a Node Buffer's shared pool.
  const odd = new Uint8Array(new ArrayBuffer(1003), 3, 1000)
  odd.set(bytes.subarray(0, 1000))
  assert.equal(crc32c(odd), bitwise(bytes.subarray(0, 1000)))
  const pooled = Buffer.from(bytes.subarray(5, 205))
  assert.equal(crc32c(pooled), bitwise(bytes.subarray(5, 205)))
})

test("crc32cUpdate continues a checksum across pieces", () => {
  const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31) & 0xff)
  for (const cut of [0, 1, 5, 8, 333, 999, 1000]) {
    assert.equal(crc32cUpdate(crc32c(bytes, 0, cut), bytes, cut), crc32c(bytes))
  }
})

test("crc32cCombine gives the CRC of two parts joined from theirs and the second's length", () => {
  const bytes = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 131 + 7) & 0xff)
  for (const [a, b] of [[0, 0], [0, 5], [5, 0], [40, 1], [40, 1000], [1, 65_536], [3, 69_997], [40, 20_000]] as const) {
    const whole = crc32c(bytes, 0, a + b)
    assert.equal(crc32cCombine(crc32c(bytes, 0, a), crc32c(bytes, a, a + b), b), whole, `${a} + ${b}`)
  }
  // A second part built record by record, as a record batch's records are.
  let records = 0
  for (let at = 40; at < 10_040; at += 100) records = crc32cUpdate(records, bytes, at, at + 100)
  assert.equal(crc32cCombine(crc32c(bytes, 0, 40), records, 10_000), crc32c(bytes, 0, 10_040))
})
