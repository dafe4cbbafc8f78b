import assert from "node:assert/strict"
import { createHash } from "node:crypto"
import { test } from "node:test"
import { sha256Hex } from "../../lib/internal/sha256.ts"

const reference = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

test("sha256Hex gives FIPS 180-4's answers for its examples", () => {
  const ascii = (text: string) => new TextEncoder().encode(text)
  assert.equal(sha256Hex(ascii("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  assert.equal(sha256Hex(ascii("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  assert.equal(
    sha256Hex(ascii("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  )
})

test("sha256Hex agrees with node:crypto at every padding boundary and on a megabyte", () => {
  const bytes = Uint8Array.from({ length: 1_048_700 }, (_, i) => (i * 31 + 7) % 256)
  for (const length of [1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 1_048_576, 1_048_700]) {
    const slice = bytes.subarray(0, length)
    assert.equal(sha256Hex(slice), reference(slice), `${length} bytes`)
  }
  // A view into a larger buffer hashes only its own bytes.
  const view = bytes.subarray(10, 90_010)
  assert.equal(sha256Hex(view), reference(view))
})
