/**
 * LZ4 in the frame format (lz4_Frame_format.md v1.6), as Kafka uses it for record batch v2:
 * Java's `Lz4BlockOutputStream` writes a frame with independent 64 KiB blocks, no block or
 * content checksums, no content size (FLG 0x60, BD 0x40) and checks the header checksum on read.
 * This decoder takes any frame a conforming writer produces (dependent blocks, block and content
 * checksums, content size, uncompressed blocks); skippable frames are not part of Kafka's use.
 *
 * Written here rather than taken from npm: the pure-JS `lz4js` is unmaintained since 2017,
 * `lz4-wasm` speaks the block format with a size prefix rather than frames, and `lz4-napi` is
 * native. The block format is a token, literals, a 2-byte offset and a match length; the encoder
 * is the reference's single-probe hash matcher (LZ4_compress_fast, acceleration 1).
 */
import { CodecError } from "./codecError.ts"

const MAGIC = 0x184d2204
const BLOCK = 64 * 1024
const HASH_BITS = 12
const MIN_MATCH = 4
/** The format's end-of-block rules: the last match starts 12 bytes before the end, 5 literals end it. */
const MF_LIMIT = 12
const LAST_LITERALS = 5

const P1 = 0x9e3779b1
const P2 = 0x85ebca77
const P3 = 0xc2b2ae3d
const P4 = 0x27d4eb2f
const P5 = 0x165667b1

const rotl = (x: number, r: number): number => (x << r) | (x >>> (32 - r))
const u32 = (b: Uint8Array, i: number): number => (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0

/** xxHash32 of `bytes[start, end)` with seed 0: the frame's header, block and content checksums. */
export const xxhash32 = (bytes: Uint8Array, start = 0, end = bytes.length): number => {
  let i = start
  let h: number
  if (end - start >= 16) {
    let v1 = (P1 + P2) | 0
    let v2 = P2
    let v3 = 0
    let v4 = -P1 | 0
    while (i <= end - 16) {
      v1 = Math.imul(rotl((v1 + Math.imul(u32(bytes, i), P2)) | 0, 13), P1)
      v2 = Math.imul(rotl((v2 + Math.imul(u32(bytes, i + 4), P2)) | 0, 13), P1)
      v3 = Math.imul(rotl((v3 + Math.imul(u32(bytes, i + 8), P2)) | 0, 13), P1)
      v4 = Math.imul(rotl((v4 + Math.imul(u32(bytes, i + 12), P2)) | 0, 13), P1)
      i += 16
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0
  } else {
    h = P5
  }
  h = (h + (end - start)) | 0
  while (i <= end - 4) {
    h = Math.imul(rotl((h + Math.imul(u32(bytes, i), P3)) | 0, 17), P4)
    i += 4
  }
  while (i < end) {
    h = Math.imul(rotl((h + Math.imul(bytes[i]!, P5)) | 0, 11), P1)
    i++
  }
  h = Math.imul(h ^ (h >>> 15), P2)
  h = Math.imul(h ^ (h >>> 13), P3)
  return (h ^ (h >>> 16)) >>> 0
}

/** Decodes one block `input[start, end)` into `output` from `out` (back-references may reach earlier blocks). */
const decodeBlock = (
  input: Uint8Array,
  start: number,
  end: number,
  output: Uint8Array,
  out: number,
  outEnd: number,
  overflow: string,
): number => {
  let i = start
  for (;;) {
    if (i >= end) throw new CodecError("lz4", "block ends before its last sequence")
    const token = input[i++]!
    let literals = token >>> 4
    if (literals === 15) {
      let b: number
      do {
        if (i >= end) throw new CodecError("lz4", "literal length runs past the block")
        b = input[i++]!
        literals += b
      } while (b === 255)
    }
    if (i + literals > end) throw new CodecError("lz4", "literals run past the block")
    if (out + literals > outEnd) throw new CodecError("lz4", overflow)
    if (literals < 32) {
      // Short runs: a loop beats creating a subarray for set().
      for (let k = 0; k < literals; k++) output[out + k] = input[i + k]!
    } else {
      output.set(input.subarray(i, i + literals), out)
    }
    i += literals
    out += literals
    if (i === end) return out // the last sequence has literals only
    if (i + 2 > end) throw new CodecError("lz4", "match offset runs past the block")
    const offset = input[i]! | (input[i + 1]! << 8)
    i += 2
    if (offset === 0 || offset > out) throw new CodecError("lz4", `match offset ${offset} points before the frame`)
    let length = token & 15
    if (length === 15) {
      let b: number
      do {
        if (i >= end) throw new CodecError("lz4", "match length runs past the block")
        b = input[i++]!
        length += b
      } while (b === 255)
    }
    length += MIN_MATCH
    if (out + length > outEnd) throw new CodecError("lz4", overflow)
    let from = out - offset
    if (offset >= length && length >= 32) {
      output.copyWithin(out, from, from + length)
      out += length
    } else {
      // Short or overlapping (a repeated pattern): byte by byte, as the format defines it.
      for (let k = 0; k < length; k++) output[out++] = output[from++]!
    }
  }
}

const BLOCK_SIZES: Record<number, number> = { 4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024 }

/**
 * Decompresses one LZ4 frame. `maxLength` bounds the output (and so what a corrupt frame can make
 * us allocate); the output grows by doubling, so memory follows the bytes actually decoded.
 */
export const lz4Decompress = (input: Uint8Array, maxLength: number): Uint8Array => {
  if (input.length < 7) throw new CodecError("lz4", `frame of ${input.length} bytes is shorter than its header`)
  if (u32(input, 0) !== MAGIC) throw new CodecError("lz4", "frame does not start with LZ4's magic number")
  const flg = input[4]!
  const bd = input[5]!
  if (flg >>> 6 !== 1) throw new CodecError("lz4", `frame version ${flg >>> 6} is not 1`)
  const blockChecksum = (flg & 0x10) !== 0
  const hasContentSize = (flg & 0x08) !== 0
  const contentChecksum = (flg & 0x04) !== 0
  if ((flg & 0x01) !== 0) throw new CodecError("lz4", "frames with a dictionary are not supported")
  const blockMax = BLOCK_SIZES[(bd >>> 4) & 7]
  if (blockMax === undefined) throw new CodecError("lz4", `block size code ${(bd >>> 4) & 7} is invalid`)
  let i = 6
  let contentSize = -1
  if (hasContentSize) {
    if (input.length < 15) throw new CodecError("lz4", "frame header is cut short")
    contentSize = u32(input, 6) + u32(input, 10) * 2 ** 32
    if (contentSize > maxLength) throw new CodecError("lz4", `frame announces ${contentSize} bytes, more than the ${maxLength} allowed`)
    i = 14
  }
  const headerChecksum = (xxhash32(input, 4, i) >>> 8) & 0xff
  if (input[i] !== headerChecksum) throw new CodecError("lz4", "frame header checksum does not match")
  i++
  let output = new Uint8Array(Math.min(maxLength, contentSize >= 0 ? contentSize : Math.max(1024, input.length * 4)))
  let out = 0
  for (;;) {
    if (i + 4 > input.length) throw new CodecError("lz4", "frame ends without an end mark")
    const word = u32(input, i)
    i += 4
    if (word === 0) break
    const size = word & 0x7fffffff
    if (size > blockMax) throw new CodecError("lz4", `block of ${size} bytes exceeds the frame's ${blockMax}`)
    if (i + size + (blockChecksum ? 4 : 0) > input.length) throw new CodecError("lz4", "block runs past the frame")
    if (blockChecksum && xxhash32(input, i, i + size) !== u32(input, i + size)) throw new CodecError("lz4", "block checksum does not match")
    const room = Math.min(maxLength, out + blockMax)
    const overflow =
      room === maxLength ? `frame decodes to more than the ${maxLength} bytes allowed` : `a block decodes to more than the frame's ${blockMax}`
    if (output.length < room) {
      const grown = new Uint8Array(Math.min(maxLength, Math.max(room, output.length * 2)))
      grown.set(output.subarray(0, out))
      output = grown
    }
    if (word & 0x80000000) {
      if (out + size > room) throw new CodecError("lz4", overflow)
      output.set(input.subarray(i, i + size), out)
      out += size
    } else {
      out = decodeBlock(input, i, i + size, output, out, room, overflow)
    }
    i += size + (blockChecksum ? 4 : 0)
  }
  if (contentChecksum) {
    if (i + 4 > input.length) throw new CodecError("lz4", "content checksum is cut short")
    if (xxhash32(output, 0, out) !== u32(input, i)) throw new CodecError("lz4", "content checksum does not match")
  }
  if (contentSize >= 0 && out !== contentSize) throw new CodecError("lz4", `frame decodes to ${out} bytes, announced ${contentSize}`)
  return output.subarray(0, out)
}

const writeLength = (output: Uint8Array, out: number, n: number): number => {
  while (n >= 255) {
    output[out++] = 255
    n -= 255
  }
  output[out++] = n
  return out
}

/** Compresses `input[start, end)` as one block into `output` at `out`; returns the end. */
const compressBlock = (input: Uint8Array, start: number, end: number, output: Uint8Array, out: number, table: Int32Array): number => {
  table.fill(-1)
  let anchor = start
  let i = start
  const matchLimit = end - LAST_LITERALS
  const limit = end - MF_LIMIT
  while (i < limit) {
    const word = input[i]! | (input[i + 1]! << 8) | (input[i + 2]! << 16) | (input[i + 3]! << 24)
    const h = Math.imul(word, 0x9e3779b1) >>> (32 - HASH_BITS)
    const candidate = table[h]!
    table[h] = i
    if (
      candidate < 0 ||
      i - candidate > 0xffff ||
      input[candidate] !== input[i] ||
      input[candidate + 1] !== input[i + 1] ||
      input[candidate + 2] !== input[i + 2] ||
      input[candidate + 3] !== input[i + 3]
    ) {
      i++
      continue
    }
    let length = MIN_MATCH
    while (i + length < matchLimit && input[candidate + length] === input[i + length]) length++
    const literals = i - anchor
    const tokenAt = out++
    if (literals >= 15) out = writeLength(output, out, literals - 15)
    output.set(input.subarray(anchor, i), out)
    out += literals
    const offset = i - candidate
    output[out++] = offset & 0xff
    output[out++] = offset >>> 8
    const extra = length - MIN_MATCH
    if (extra >= 15) out = writeLength(output, out, extra - 15)
    output[tokenAt] = (Math.min(literals, 15) << 4) | Math.min(extra, 15)
    i += length
    anchor = i
  }
  const literals = end - anchor
  output[out++] = Math.min(literals, 15) << 4
  if (literals >= 15) out = writeLength(output, out, literals - 15)
  output.set(input.subarray(anchor, end), out)
  return out + literals
}

/** Compresses into one LZ4 frame as Kafka's Java producer writes it: independent 64 KiB blocks, no checksums. */
export const lz4Compress = (input: Uint8Array): Uint8Array => {
  const blocks = Math.max(1, Math.ceil(input.length / BLOCK))
  const output = new Uint8Array(7 + blocks * (4 + BLOCK + Math.ceil(BLOCK / 255) + 16) + 4)
  output[0] = 0x04
  output[1] = 0x22
  output[2] = 0x4d
  output[3] = 0x18
  output[4] = 0x60 // version 1, independent blocks
  output[5] = 0x40 // 64 KiB blocks
  output[6] = (xxhash32(output, 4, 6) >>> 8) & 0xff
  const table = new Int32Array(1 << HASH_BITS)
  let out = 7
  for (let start = 0; start < input.length; start += BLOCK) {
    const end = Math.min(input.length, start + BLOCK)
    const sizeAt = out
    out = compressBlock(input, start, end, output, out + 4, table)
    let size = out - sizeAt - 4
    let stored = 0
    if (size >= end - start) {
      // Incompressible: the block goes as is, and the high bit of its size says so.
      output.set(input.subarray(start, end), sizeAt + 4)
      size = end - start
      out = sizeAt + 4 + size
      stored = 0x80
    }
    output[sizeAt] = size & 0xff
    output[sizeAt + 1] = (size >>> 8) & 0xff
    output[sizeAt + 2] = (size >>> 16) & 0xff
    output[sizeAt + 3] = stored | (size >>> 24)
  }
  // The end mark: four zero bytes (written: a larger discarded block may have left bytes here).
  output.fill(0, out, out + 4)
  out += 4
  return output.subarray(0, out)
}
