/**
 * Snappy, as Kafka uses it: raw Snappy blocks (Google's format), and xerial snappy-java's framed
 * stream, which Kafka's Java producer writes (`SnappyOutputStream`: a 16-byte header, then
 * chunks of `[int32 BE compressed length][raw block]`). Decoding accepts both, as Kafka's and
 * franz-go's readers do; encoding writes the xerial frame so every Java consumer (and every
 * broker that recompresses) reads it.
 *
 * Written here rather than taken from npm: the only pure-JS package (snappyjs) does raw blocks
 * only and has not changed in years, the fast ones are native (napi) and do not load on all three
 * runtimes. The format is small (a varint length, literals and three copy kinds) and the encoder
 * is the reference's greedy hash matcher (snappy.cc `CompressFragment`), without its skipping
 * heuristics' fine tuning.
 */
import { CodecError } from "./codecError.ts"

const XERIAL_MAGIC = [0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00] as const
const XERIAL_HEADER = 16
/** snappy-java's default block size; offsets in a chunk then always fit a 2-byte copy. */
const CHUNK = 32 * 1024
const HASH_BITS = 14
/**
 * No Snappy element expands more than 64 bytes out of 3 in (a 2-byte-offset copy), so a length
 * announced beyond 22× the compressed bytes is corrupt: checked before allocating.
 */
const MAX_RATIO = 22

/** Whether `bytes` start with xerial snappy-java's stream header. */
export const isXerialFramed = (bytes: Uint8Array): boolean => {
  if (bytes.length < XERIAL_HEADER) return false
  for (let i = 0; i < 8; i++) if (bytes[i] !== XERIAL_MAGIC[i]) return false
  return true
}

/** The uncompressed length a raw block announces, and where its elements start. */
const readPreamble = (input: Uint8Array, start: number, end: number): { length: number; at: number } => {
  let length = 0
  let shift = 0
  let at = start
  for (;;) {
    if (at >= end) throw new CodecError("snappy", "block ends inside its length")
    const b = input[at++]!
    length += (b & 0x7f) * 2 ** shift
    if (b < 0x80) break
    shift += 7
    if (shift > 28) throw new CodecError("snappy", "block length varint is longer than 5 bytes")
  }
  return { length, at }
}

/**
 * Decodes one raw block `input[start, end)` into `output` at `out`, which must have room for the
 * announced length (the caller checked it). Returns the end of the written bytes.
 */
const decodeBlockInto = (input: Uint8Array, start: number, end: number, output: Uint8Array, out: number, length: number): number => {
  const outStart = out
  const outEnd = out + length
  let i = start
  while (i < end) {
    const tag = input[i++]!
    const kind = tag & 3
    if (kind === 0) {
      let n = tag >>> 2
      if (n >= 60) {
        const extra = n - 59
        if (i + extra > end) throw new CodecError("snappy", "literal length runs past the block")
        n = 0
        for (let k = 0; k < extra; k++) n += input[i + k]! * 2 ** (8 * k)
        i += extra
      }
      n += 1
      if (i + n > end || out + n > outEnd) throw new CodecError("snappy", "literal runs past the block or its announced length")
      if (n < 32) {
        for (let k = 0; k < n; k++) output[out + k] = input[i + k]!
      } else {
        output.set(input.subarray(i, i + n), out)
      }
      i += n
      out += n
      continue
    }
    let n: number
    let offset: number
    if (kind === 1) {
      if (i >= end) throw new CodecError("snappy", "copy runs past the block")
      n = ((tag >>> 2) & 7) + 4
      offset = ((tag >>> 5) << 8) | input[i++]!
    } else if (kind === 2) {
      if (i + 2 > end) throw new CodecError("snappy", "copy runs past the block")
      n = (tag >>> 2) + 1
      offset = input[i]! | (input[i + 1]! << 8)
      i += 2
    } else {
      if (i + 4 > end) throw new CodecError("snappy", "copy runs past the block")
      n = (tag >>> 2) + 1
      offset = (input[i]! | (input[i + 1]! << 8) | (input[i + 2]! << 16) | (input[i + 3]! << 24)) >>> 0
      i += 4
    }
    if (offset === 0 || offset > out - outStart) throw new CodecError("snappy", `copy offset ${offset} points before the block`)
    if (out + n > outEnd) throw new CodecError("snappy", "copy runs past the announced length")
    let from = out - offset
    if (offset >= n && n >= 32) {
      output.copyWithin(out, from, from + n)
      out += n
    } else {
      // Short, or overlapping (a repeated pattern): byte by byte, as the format defines it.
      for (let k = 0; k < n; k++) output[out++] = output[from++]!
    }
  }
  if (out !== outEnd) throw new CodecError("snappy", `block decodes to ${out - outStart} bytes, announced ${length}`)
  return out
}

/**
 * Decompresses a raw Snappy block or a xerial-framed stream. `maxLength` bounds what a (corrupt)
 * announced length may make us allocate.
 */
export const snappyDecompress = (input: Uint8Array, maxLength: number): Uint8Array => {
  if (!isXerialFramed(input)) {
    const { length, at } = readPreamble(input, 0, input.length)
    if (length > maxLength) throw new CodecError("snappy", `block announces ${length} bytes, more than the ${maxLength} bytes allowed`)
    if (length > (input.length - at) * MAX_RATIO) throw new CodecError("snappy", `block announces ${length} bytes from only ${input.length} compressed`)
    const output = new Uint8Array(length)
    decodeBlockInto(input, at, input.length, output, 0, length)
    return output
  }
  // First pass: chunk boundaries and their lengths, so the output is allocated once.
  let total = 0
  let i = XERIAL_HEADER
  while (i < input.length) {
    if (i + 4 > input.length) throw new CodecError("snappy", "xerial chunk length is cut short")
    const size = ((input[i]! << 24) | (input[i + 1]! << 16) | (input[i + 2]! << 8) | input[i + 3]!) >>> 0
    i += 4
    if (size > input.length - i) throw new CodecError("snappy", `xerial chunk of ${size} bytes runs past the ${input.length - i} left`)
    const { length, at } = readPreamble(input, i, i + size)
    if (length > (i + size - at) * MAX_RATIO) throw new CodecError("snappy", `chunk announces ${length} bytes from only ${size} compressed`)
    total += length
    if (total > maxLength) throw new CodecError("snappy", `stream decodes to more than the ${maxLength} bytes allowed`)
    i += size
  }
  const output = new Uint8Array(total)
  let out = 0
  i = XERIAL_HEADER
  while (i < input.length) {
    const size = ((input[i]! << 24) | (input[i + 1]! << 16) | (input[i + 2]! << 8) | input[i + 3]!) >>> 0
    i += 4
    const { length, at } = readPreamble(input, i, i + size)
    out = decodeBlockInto(input, at, i + size, output, out, length)
    i += size
  }
  return output
}

const maxCompressedChunk = (n: number): number => 32 + n + Math.ceil(n / 6)

const writeLiteral = (input: Uint8Array, from: number, to: number, output: Uint8Array, out: number): number => {
  const n = to - from - 1
  if (n < 60) output[out++] = n << 2
  else if (n < 0x100) {
    output[out++] = 60 << 2
    output[out++] = n
  } else if (n < 0x10000) {
    output[out++] = 61 << 2
    output[out++] = n & 0xff
    output[out++] = n >>> 8
  } else {
    output[out++] = 62 << 2
    output[out++] = n & 0xff
    output[out++] = (n >>> 8) & 0xff
    output[out++] = n >>> 16
  }
  output.set(input.subarray(from, to), out)
  return out + (to - from)
}

const writeCopy = (offset: number, length: number, output: Uint8Array, out: number): number => {
  while (length >= 68) {
    output[out++] = (63 << 2) | 2
    output[out++] = offset & 0xff
    output[out++] = offset >>> 8
    length -= 64
  }
  if (length > 64) {
    output[out++] = (59 << 2) | 2
    output[out++] = offset & 0xff
    output[out++] = offset >>> 8
    length -= 60
  }
  if (length >= 12 || offset >= 2048) {
    output[out++] = ((length - 1) << 2) | 2
    output[out++] = offset & 0xff
    output[out++] = offset >>> 8
  } else {
    output[out++] = ((offset >>> 8) << 5) | ((length - 4) << 2) | 1
    output[out++] = offset & 0xff
  }
  return out
}

/** Compresses `input[start, end)` as one raw block (with its length preamble) into `output` at `out`. */
const compressBlock = (input: Uint8Array, start: number, end: number, output: Uint8Array, out: number, table: Int32Array): number => {
  let n = end - start
  while (n >= 0x80) {
    output[out++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  output[out++] = n
  table.fill(-1)
  let literal = start
  let i = start
  const limit = end - 4
  while (i < limit) {
    const word = input[i]! | (input[i + 1]! << 8) | (input[i + 2]! << 16) | (input[i + 3]! << 24)
    const h = Math.imul(word, 0x1e35a7bd) >>> (32 - HASH_BITS)
    const candidate = table[h]!
    table[h] = i
    if (
      candidate >= 0 &&
      i - candidate < 0x10000 &&
      input[candidate] === input[i] &&
      input[candidate + 1] === input[i + 1] &&
      input[candidate + 2] === input[i + 2] &&
      input[candidate + 3] === input[i + 3]
    ) {
      if (literal < i) out = writeLiteral(input, literal, i, output, out)
      let length = 4
      while (i + length < end && input[candidate + length] === input[i + length]) length++
      out = writeCopy(i - candidate, length, output, out)
      i += length
      literal = i
    } else {
      i++
    }
  }
  if (literal < end) out = writeLiteral(input, literal, end, output, out)
  return out
}

/** Compresses into xerial snappy-java's framed stream, as Kafka's Java producer writes it. */
export const snappyCompress = (input: Uint8Array): Uint8Array => {
  const chunks = Math.max(1, Math.ceil(input.length / CHUNK))
  const output = new Uint8Array(XERIAL_HEADER + chunks * (4 + maxCompressedChunk(CHUNK)))
  output.set(XERIAL_MAGIC, 0)
  output[11] = 1 // version 1
  output[15] = 1 // compatible version 1
  const table = new Int32Array(1 << HASH_BITS)
  let out = XERIAL_HEADER
  for (let start = 0; start < input.length; start += CHUNK) {
    const end = Math.min(input.length, start + CHUNK)
    const sizeAt = out
    out = compressBlock(input, start, end, output, out + 4, table)
    const size = out - sizeAt - 4
    output[sizeAt] = size >>> 24
    output[sizeAt + 1] = (size >>> 16) & 0xff
    output[sizeAt + 2] = (size >>> 8) & 0xff
    output[sizeAt + 3] = size & 0xff
  }
  return output.subarray(0, out)
}

/** Compresses `input` as one raw Snappy block (what librdkafka and franz-go write). */
export const snappyCompressRaw = (input: Uint8Array): Uint8Array => {
  const output = new Uint8Array(maxCompressedChunk(input.length) + 8)
  return output.subarray(0, compressBlock(input, 0, input.length, output, 0, new Int32Array(1 << HASH_BITS)))
}
