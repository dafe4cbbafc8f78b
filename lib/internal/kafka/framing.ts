/**
 * Kafka's framing: every request and response is an int32 size followed by that many bytes.
 * The reassembler turns a socket's chunks back into whole frames.
 *
 * Why this shape: a frame wholly inside one chunk is handed out as a view of that chunk (no
 * copy); a frame that spans chunks is copied once, into a buffer of exactly its size allocated
 * when its size is known, so a 100 MB response arriving in 64 KB chunks is copied once, never
 * re-concatenated per chunk. The size is checked against a maximum before anything is
 * allocated: a corrupt size, or the first bytes of a TLS alert read by a plaintext client, must
 * not allocate gigabytes. Plain synchronous code: it runs in the socket's data callback.
 */

/** The one error the reassembler signals: a frame whose size is negative or above the maximum. */
export class FrameSizeError {
  readonly _tag = "FrameSizeError"
  readonly size: number
  readonly maximum: number
  constructor(size: number, maximum: number) {
    this.size = size
    this.maximum = maximum
  }
}

/**
 * Reassembles frames from chunks. `push` calls `onFrame` with each complete frame's body (the
 * bytes after the size), in order, and returns a `FrameSizeError` (after which it must not be
 * used again) or `undefined`.
 */
export class FrameReader {
  /** The size prefix read so far, when it straddles chunks. */
  private readonly header = new Uint8Array(4)
  private headerFilled = 0
  /** The frame being filled from several chunks, and how much of it is filled. */
  private body: Uint8Array | undefined = undefined
  private bodyFilled = 0

  private readonly maximum: number
  private readonly onFrame: (frame: Uint8Array) => void

  constructor(maximum: number, onFrame: (frame: Uint8Array) => void) {
    this.maximum = maximum
    this.onFrame = onFrame
  }

  /** Bytes of a partly received frame held now (its size prefix included); 0 between frames. */
  get buffered(): number {
    return this.body === undefined ? this.headerFilled : 4 + this.bodyFilled
  }

  push(chunk: Uint8Array): FrameSizeError | undefined {
    let at = 0
    const end = chunk.length
    while (at < end) {
      if (this.body !== undefined) {
        const take = Math.min(this.body.length - this.bodyFilled, end - at)
        this.body.set(chunk.subarray(at, at + take), this.bodyFilled)
        this.bodyFilled += take
        at += take
        if (this.bodyFilled === this.body.length) {
          const frame = this.body
          this.body = undefined
          this.bodyFilled = 0
          this.onFrame(frame)
        }
        continue
      }
      let size: number
      if (this.headerFilled === 0 && end - at >= 4) {
        size = ((chunk[at]! << 24) | (chunk[at + 1]! << 16) | (chunk[at + 2]! << 8) | chunk[at + 3]!)
        at += 4
      } else {
        const take = Math.min(4 - this.headerFilled, end - at)
        this.header.set(chunk.subarray(at, at + take), this.headerFilled)
        this.headerFilled += take
        at += take
        if (this.headerFilled < 4) return undefined
        const h = this.header
        size = (h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!
        this.headerFilled = 0
      }
      if (size < 0 || size > this.maximum) return new FrameSizeError(size, this.maximum)
      if (end - at >= size) {
        // Wholly inside this chunk: a view, no copy.
        const frame = chunk.subarray(at, at + size)
        at += size
        this.onFrame(frame)
      } else {
        this.body = new Uint8Array(size)
        this.bodyFilled = 0
      }
    }
    return undefined
  }
}
