/**
 * Reads JSON straight from its UTF-8 bytes, for the values records usually carry: ASCII text,
 * strings without escapes, numbers, nesting of a reasonable depth. Anything else it does not
 * read (a byte of 0x80 or more, a backslash, a syntax error, deep nesting, a `__proto__` key) and
 * says so with `unread`; the caller then decodes the text and calls `JSON.parse`, which reads
 * every JSON text and words every error. So this adds no behaviour, only speed: what it reads,
 * it reads as `JSON.parse` would (tests/internal/jsonBytes.test.ts compares the two).
 *
 * Why: a record's value is often a few dozen bytes. For those, `TextDecoder` plus `JSON.parse`
 * cost several times what Schema then costs to check the value (on Deno the text decoder alone,
 * a call into the runtime, cost more than the whole actor's loop without decoding). Bytes
 * below 0x80 are their own characters, so ASCII needs no decoder at all.
 *
 * Plain synchronous code on the hot path, as the Kafka client's codecs are: no Effect, no
 * throw (a failure is the `unread` value, returned up the recursion).
 */

/** The bytes are not what the fast path reads: decode them as text and use `JSON.parse`. */
export const unread: unique symbol = Symbol("partita/jsonBytes/unread")
export type Unread = typeof unread

/** `JSON.parse` takes any depth; past this one the fast path leaves the value to it. */
const maxDepth = 128
/**
 * Past this many bytes native code (`TextDecoder` and `JSON.parse`) is as fast or faster on Bun
 * and Node: a string costs this reader a few nanoseconds per character (measured: 57-byte records
 * about even on Bun, 160-byte ones twice as slow there; Deno's decoder, a runtime call, costs more).
 */
export const maxFastBytes = 64

const space = 0x20
const tab = 0x09
const newline = 0x0a
const carriageReturn = 0x0d
const quote = 0x22
const backslash = 0x5c
const comma = 0x2c
const colon = 0x3a
const minus = 0x2d
const plus = 0x2b
const dot = 0x2e
const zero = 0x30
const nine = 0x39
const openBrace = 0x7b
const closeBrace = 0x7d
const openBracket = 0x5b
const closeBracket = 0x5d

const keySlots = 256
const empty = new Uint8Array(0)

/**
 * A reader of JSON bytes, made once per codec and used for one record after another (never two
 * at once: a reading runs to its end synchronously). It keeps the object keys it has read, so
 * the same key in the next record is the same string, not a new one, as `JSON.parse` does with
 * its internalized keys: a slot per hash of the key's bytes, the last key seen there kept.
 */
export class Reader {
  #bytes: Uint8Array = empty
  #end = 0
  #position = 0
  readonly #keys: Array<string | undefined> = new Array(keySlots).fill(undefined)
  readonly #maxBytes: number

  /** `maxBytes`: longer values are left to the runtime's decoder (tests read more). */
  constructor(maxBytes: number = maxFastBytes) {
    this.#maxBytes = maxBytes
  }

  /**
   * The JSON value of `bytes`, exactly as `JSON.parse(new TextDecoder().decode(bytes))` would
   * give it, or `unread` when they are not ASCII JSON this reader takes (see the module's doc).
   */
  read(bytes: Uint8Array): unknown {
    if (bytes.length > this.#maxBytes) return unread
    this.#bytes = bytes
    this.#end = bytes.length
    this.#position = 0
    const value = this.#value(0)
    const done = value !== unread && this.#skipSpace() === -1
    // Not kept: the record's bytes may be a view of a whole fetched batch.
    this.#bytes = empty
    return done ? value : unread
  }

  /** The byte after any white space, -1 at the end. Never reads past the end (a slow path in V8). */
  #skipSpace(): number {
    const bytes = this.#bytes
    const end = this.#end
    let position = this.#position
    // Most JSON has no white space at all: one comparison.
    if (position < end && bytes[position]! > space) return bytes[position]!
    while (position < end) {
      const byte = bytes[position]!
      // Above the space character nothing is white space: the common case, one comparison.
      if (byte > space || (byte !== space && byte !== newline && byte !== carriageReturn && byte !== tab)) {
        this.#position = position
        return byte
      }
      position++
    }
    this.#position = position
    return -1
  }

  /** The byte at `position`, -1 past the end. */
  #at(position: number): number {
    return position < this.#end ? this.#bytes[position]! : -1
  }

  #value(depth: number): unknown {
    const byte = this.#skipSpace()
    switch (byte) {
      case openBrace:
        return depth >= maxDepth ? unread : this.#object(depth + 1)
      case openBracket:
        return depth >= maxDepth ? unread : this.#array(depth + 1)
      case quote: {
        const end = this.#stringEnd()
        if (end < 0) return unread
        const start = this.#position + 1
        this.#position = end + 1
        return latin1(this.#bytes, start, end)
      }
      case 0x74: // t
        return this.#word(0x72, 0x75, 0x65, -1, true) // r u e
      case 0x66: // f
        return this.#word(0x61, 0x6c, 0x73, 0x65, false) // a l s e
      case 0x6e: // n
        return this.#word(0x75, 0x6c, 0x6c, -1, null) // u l l
      default:
        return byte === minus || (byte >= zero && byte <= nine) ? this.#number() : unread
    }
  }

  /** The rest of `true`, `false` or `null` after its first letter (-1: no fourth letter). */
  #word(b1: number, b2: number, b3: number, b4: number, value: boolean | null): unknown {
    const position = this.#position
    if (this.#at(position + 1) !== b1 || this.#at(position + 2) !== b2 || this.#at(position + 3) !== b3) return unread
    if (b4 === -1) {
      this.#position = position + 4
      return value
    }
    if (this.#at(position + 4) !== b4) return unread
    this.#position = position + 5
    return value
  }

  /** JSON's number grammar, checked here: `Number` would also take `0x1`, `.5` or `1.`. */
  #number(): unknown {
    const bytes = this.#bytes
    const end = this.#end
    const start = this.#position
    let position = start
    const negative = bytes[position] === minus
    if (negative) position++
    // -1 past the end: never a digit, and no read out of bounds.
    let byte = position < end ? bytes[position]! : -1
    let integer = 0
    if (byte === zero) {
      byte = ++position < end ? bytes[position]! : -1
    } else if (byte > zero && byte <= nine) {
      do {
        integer = integer * 10 + (byte - zero)
        byte = ++position < end ? bytes[position]! : -1
      } while (byte >= zero && byte <= nine)
    } else {
      return unread
    }
    if (byte !== dot && byte !== 0x65 && byte !== 0x45) { // e E
      this.#position = position
      // Up to 15 digits an integer is exact in a double, so the sum above is the number itself
      // (and -0 stays -0). Past that, or with a fraction or an exponent, the text is read the
      // way JSON.parse reads it: correctly rounded.
      if (position - start - (negative ? 1 : 0) <= 15) return negative ? -integer : integer
      return Number(latin1(bytes, start, position))
    }
    if (byte === dot) {
      byte = ++position < end ? bytes[position]! : -1
      if (byte < zero || byte > nine) return unread
      do byte = ++position < end ? bytes[position]! : -1; while (byte >= zero && byte <= nine)
    }
    if (byte === 0x65 || byte === 0x45) {
      byte = ++position < end ? bytes[position]! : -1
      if (byte === plus || byte === minus) byte = ++position < end ? bytes[position]! : -1
      if (byte < zero || byte > nine) return unread
      do byte = ++position < end ? bytes[position]! : -1; while (byte >= zero && byte <= nine)
    }
    this.#position = position
    return Number(latin1(bytes, start, position))
  }

  /**
   * Where the string opening at the position closes, or -1 when it is not one this reader
   * takes: below 0x20 is not allowed unescaped, 0x80 and up is UTF-8 to decode, a backslash an
   * escape.
   */
  #stringEnd(): number {
    const bytes = this.#bytes
    const end = this.#end
    for (let position = this.#position + 1; position < end; position++) {
      const byte = bytes[position]!
      if (byte === quote) return position
      if (byte < space || byte >= 0x80 || byte === backslash) return -1
    }
    return -1
  }

  /** The key of bytes `start` to `end`, the same string as last time when it was seen before. */
  #key(start: number, end: number): string {
    const bytes = this.#bytes
    const length = end - start
    let hash = length
    for (let index = start; index < end; index++) hash = (Math.imul(hash, 31) + bytes[index]!) | 0
    const slot = hash & (keySlots - 1)
    const cached = this.#keys[slot]
    if (cached !== undefined && cached.length === length) {
      let index = 0
      while (index < length && cached.charCodeAt(index) === bytes[start + index]) index++
      if (index === length) return cached
    }
    const key = internalize(latin1(bytes, start, end))
    this.#keys[slot] = key
    return key
  }

  #array(depth: number): unknown {
    this.#position++
    const items: Array<unknown> = []
    if (this.#skipSpace() === closeBracket) {
      this.#position++
      return items
    }
    for (;;) {
      const item = this.#value(depth)
      if (item === unread) return unread
      items.push(item)
      const byte = this.#skipSpace()
      this.#position++
      if (byte === closeBracket) return items
      if (byte !== comma) return unread
    }
  }

  #object(depth: number): unknown {
    this.#position++
    const object: Record<string, unknown> = {}
    let byte = this.#skipSpace()
    if (byte === closeBrace) {
      this.#position++
      return object
    }
    for (;;) {
      if (byte !== quote) return unread
      const end = this.#stringEnd()
      if (end < 0) return unread
      const key = this.#key(this.#position + 1, end)
      // JSON.parse makes `__proto__` an own property; an assignment would set the prototype.
      if (key === "__proto__") return unread
      this.#position = end + 1
      if (this.#skipSpace() !== colon) return unread
      this.#position++
      const value = this.#value(depth)
      if (value === unread) return unread
      object[key] = value
      byte = this.#skipSpace()
      this.#position++
      if (byte === closeBrace) return object
      if (byte !== comma) return unread
      byte = this.#skipSpace()
    }
  }
}

/**
 * The engine's own copy of `key`, the one property names use. A key made of characters is a new
 * string; stored as a property name it is looked up in the engine's string table on every store
 * (V8 and JavaScriptCore alike), which cost more than reading the record. A property name read
 * back from an object is that table's copy, so a key is looked up once, when first seen.
 */
const internalize = (key: string): string => Object.keys({ [key]: 0 })[0]!

/** ASCII bytes as a string: each byte is its own character. */
const latin1 = (bytes: Uint8Array, start: number, end: number): string => {
  if (end - start <= 24) {
    let text = ""
    for (let index = start; index < end; index++) text += String.fromCharCode(bytes[index]!)
    return text
  }
  return String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as Array<number>)
}

/**
 * `bytes` as text when every byte is ASCII (a string in a record's key, mostly), or `unread`:
 * then `TextDecoder` decodes it (and rejects what is not UTF-8).
 */
export const ascii = (bytes: Uint8Array): string | Unread => {
  const length = bytes.length
  if (length > maxFastBytes) return unread
  for (let index = 0; index < length; index++) {
    if (bytes[index]! >= 0x80) return unread
  }
  return latin1(bytes, 0, length)
}
