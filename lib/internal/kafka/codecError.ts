/**
 * The one error the compression codecs (snappy, lz4) throw on bad input; the record batch
 * decoder turns it into a `RecordBatchError` naming the topic-partition and offset.
 */
export class CodecError extends Error {
  readonly _tag = "CodecError"
  readonly codec: string
  readonly detail: string
  constructor(codec: string, detail: string) {
    super(`Cannot decompress ${codec}: ${detail}`)
    this.codec = codec
    this.detail = detail
    this.name = "CodecError"
  }
}
