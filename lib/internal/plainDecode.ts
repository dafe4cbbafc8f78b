/**
 * A codec's decode as a plain function: the value, or `declined`. The codecs `Codec.fromSchema`
 * builds register one beside their `decode`; the partition actor's record path uses it when it
 * is there, and the codec's own `decode` (an `Exit` or an `Effect`) only when it declines, for
 * the error (or for a schema that must run as an Effect).
 *
 * Why: a no-op handler's record costs a few hundred nanoseconds, so each object made per record
 * shows. An `Exit` per decoded value, with the layers of Schema's `Exit` adapter around its
 * compiled parser, was a fifth of what decoding added to a record of a few bytes.
 *
 * Keyed weakly by the `decode` function, as the processor keys its attempts by actor: a codec no
 * longer used takes its entry with it.
 */

/** A plain decode could not answer: the codec's `decode` says why (or runs what it must). */
export const declined: unique symbol = Symbol("partita/plainDecode/declined")
export type Declined = typeof declined

/** Decodes `bytes` to their value, or declines; never throws. */
export type PlainDecode = (bytes: Uint8Array | null) => unknown

const byDecode = new WeakMap<object, PlainDecode>()

/** Registers `plain` as the plain form of `decode`: they must agree on every value `plain` gives. */
export const register = (decode: object, plain: PlainDecode): void => {
  byDecode.set(decode, plain)
}

/** The plain form of `decode`, when its codec registered one. */
export const of = (decode: object): PlainDecode | undefined => byDecode.get(decode)
