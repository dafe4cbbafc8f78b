/**
 * The record batch codecs, by Kafka's attribute number (bits 0-2 of a batch's attributes):
 * 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
 *
 * gzip and zstd come from `node:zlib`, which has both on Bun, Deno and Node 22.15+ (zstd is
 * checked at first use, so an older Node fails with a message saying so, not at import).
 * snappy and lz4 are in no runtime; they are implemented in `snappy.ts` and `lz4.ts`, in the
 * formats Kafka's Java client writes (xerial-framed snappy, LZ4 frames).
 *
 * Everything here is synchronous: a batch is at most a few MiB, and the consumer handles its
 * records right after, as Java's fetcher does on its own thread.
 */
import * as zlib from "node:zlib"
import { CodecError } from "./codecError.ts"
import { lz4Compress, lz4Decompress } from "./lz4.ts"
import { snappyCompress, snappyDecompress } from "./snappy.ts"

/**
 * A record batch's compression codec.
 */
export type Compression = "none" | "gzip" | "snappy" | "lz4" | "zstd"

/** Codec names by attribute number. */
export const compressionByCode: ReadonlyArray<Compression> = ["none", "gzip", "snappy", "lz4", "zstd"]

/** Attribute numbers by codec name. */
export const compressionCode: Readonly<Record<Compression, number>> = { none: 0, gzip: 1, snappy: 2, lz4: 3, zstd: 4 }

type ZlibCodec = (input: Uint8Array, options?: zlib.ZlibOptions) => Buffer

const zstd = (name: "zstdCompressSync" | "zstdDecompressSync"): ZlibCodec => {
  const codec = (zlib as unknown as Record<string, ZlibCodec | undefined>)[name]
  if (codec === undefined) {
    throw new CodecError("zstd", "this runtime's node:zlib has no zstd (Node needs 22.15 or later; Bun and Deno have it)")
  }
  return codec
}

const view = (buffer: Buffer): Uint8Array => new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)

const zlibDecompress = (codec: string, run: () => Buffer, maxLength: number): Uint8Array => {
  try {
    return view(run())
  } catch (cause) {
    const code = (cause as { code?: unknown }).code
    if (code === "ERR_BUFFER_TOO_LARGE") throw new CodecError(codec, `decompresses to more than the ${maxLength} bytes allowed`)
    throw new CodecError(codec, cause instanceof Error ? cause.message : String(cause))
  }
}

/**
 * The pure-JS decoders check every length before using it; this is the net under that promise,
 * so a bug there still surfaces as the typed error, never as a RangeError from a typed array.
 */
const guarded = (codec: string, run: () => Uint8Array): Uint8Array => {
  try {
    return run()
  } catch (cause) {
    if (cause instanceof CodecError) throw cause
    throw new CodecError(codec, `malformed input (${cause instanceof Error ? cause.message : String(cause)})`)
  }
}

/** Compresses a batch's records section with `codec` (not `none`). */
export const compress = (codec: Exclude<Compression, "none">, input: Uint8Array): Uint8Array => {
  switch (codec) {
    case "gzip":
      return view(zlib.gzipSync(input))
    case "snappy":
      return snappyCompress(input)
    case "lz4":
      return lz4Compress(input)
    case "zstd":
      return view(zstd("zstdCompressSync")(input))
  }
}

/**
 * Decompresses a batch's records section. `maxLength` bounds the output: corrupt or hostile
 * input fails with a `CodecError` instead of allocating without limit. Throws only `CodecError`.
 */
export const decompress = (codec: Exclude<Compression, "none">, input: Uint8Array, maxLength: number): Uint8Array => {
  switch (codec) {
    case "gzip":
      return zlibDecompress("gzip", () => zlib.gunzipSync(input, { maxOutputLength: maxLength }), maxLength)
    case "snappy":
      return guarded("snappy", () => snappyDecompress(input, maxLength))
    case "lz4":
      return guarded("lz4", () => lz4Decompress(input, maxLength))
    case "zstd": {
      const codec = zstd("zstdDecompressSync")
      return zlibDecompress("zstd", () => codec(input, { maxOutputLength: maxLength }), maxLength)
    }
  }
}
