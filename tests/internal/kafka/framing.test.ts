import assert from "node:assert/strict"
import { test } from "node:test"
import process from "node:process"
import { FrameReader, FrameSizeError } from "../../../lib/internal/kafka/framing.ts"

const framed = (...bodies: ReadonlyArray<Uint8Array>): Uint8Array => {
  const total = bodies.reduce((n, body) => n + 4 + body.length, 0)
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  let at = 0
  for (const body of bodies) {
    view.setInt32(at, body.length)
    out.set(body, at + 4)
    at += 4 + body.length
  }
  return out
}

const body = (length: number, seed: number): Uint8Array => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff)

test("FrameReader reassembles frames from chunks split at every byte boundary", () => {
  const bodies = [body(0, 1), body(1, 2), body(7, 3), body(300, 4)]
  const stream = framed(...bodies)
  for (let cut = 1; cut <= stream.length; cut++) {
    const frames: Array<Uint8Array> = []
    const reader = new FrameReader(1_000, (frame) => frames.push(Uint8Array.from(frame)))
    for (let at = 0; at < stream.length; at += cut) assert.equal(reader.push(stream.subarray(at, at + cut)), undefined)
    assert.deepEqual(frames, bodies, `chunks of ${cut} bytes`)
    assert.equal(reader.buffered, 0)
  }
})

test("FrameReader hands out a frame inside one chunk as a view of it, not a copy", () => {
  const stream = framed(body(10, 1), body(20, 2))
  const frames: Array<Uint8Array> = []
  new FrameReader(1_000, (frame) => frames.push(frame)).push(stream)
  assert.equal(frames.length, 2)
  for (const frame of frames) assert.equal(frame.buffer, stream.buffer)
})

test("FrameReader copies a large frame arriving in 64 KiB chunks once, into one buffer of its size", () => {
  const size = Number(process.env["PARTITA_FRAME_TEST_BYTES"] ?? 8 * 1024 * 1024)
  const stream = framed(body(size, 9))
  const frames: Array<Uint8Array> = []
  const reader = new FrameReader(size, (frame) => frames.push(frame))
  const chunk = 64 * 1024
  const started = performance.now()
  for (let at = 0; at < stream.length; at += chunk) reader.push(stream.subarray(at, at + chunk))
  const elapsed = performance.now() - started
  assert.equal(frames.length, 1)
  assert.equal(frames[0]!.length, size)
  assert.equal(frames[0]!.buffer.byteLength, size, "one buffer of exactly the frame's size")
  assert.deepEqual(frames[0]!.subarray(size - 5), stream.subarray(stream.length - 5))
  // A quadratic reassembly of 8 MiB in 64 KiB chunks copies ~512 MiB; one copy takes milliseconds.
  assert.ok(elapsed < 2_000, `took ${elapsed} ms`)
})

test("FrameReader refuses a size above the maximum, or negative, before allocating", () => {
  const reader = new FrameReader(100, () => assert.fail("no frame"))
  const error = reader.push(Uint8Array.of(0x15, 0x03, 0x03, 0x00, 0x02)) // a TLS alert read as a size
  assert.ok(error instanceof FrameSizeError)
  assert.equal(error.size, 0x15030300)
  const negative = new FrameReader(100, () => {}).push(Uint8Array.of(0xff, 0xff, 0xff, 0xff))
  assert.ok(negative instanceof FrameSizeError && negative.size === -1)
})
