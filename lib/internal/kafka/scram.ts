/**
 * The client side of SCRAM (RFC 5802), for SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 7677), as
 * Kafka speaks it inside SaslAuthenticate: no channel binding (`n,,`), no SASLprep (Kafka's Java
 * client sends the password's UTF-8 bytes as they are, so the broker's stored keys are made the
 * same way), and at least 4096 iterations, the minimum Kafka's Java client accepts, so a server
 * cannot talk the client down to a cheap salted password.
 *
 * Plain synchronous functions over strings: the exchange's three steps, each returning a result
 * rather than throwing, so the SASL step in the connection turns a refusal into a typed error.
 * `pbkdf2Sync` blocks for a few milliseconds, once per connection.
 */
import { Buffer } from "node:buffer"
import { createHash, createHmac, pbkdf2Sync, timingSafeEqual } from "node:crypto"

/** The hash of a SCRAM mechanism. */
export type ScramHash = "sha256" | "sha512"

/** The lowest iteration count accepted from a server (Kafka's own minimum). */
export const minIterations = 4096

/** A step that went wrong, in words that name no secret. */
export interface ScramFailure {
  readonly _tag: "ScramFailure"
  readonly reason: string
}

const failure = (reason: string): ScramFailure => ({ _tag: "ScramFailure", reason })

/** RFC 5802's `saslname`: `=` and `,` escaped. */
const saslName = (username: string): string => username.replace(/=/g, "=3D").replace(/,/g, "=2C")

/** The client-first-message, and its bare part (without the GS2 header) that the proof signs. */
export const clientFirst = (username: string, nonce: string): { readonly message: string; readonly bare: string } => {
  const bare = `n=${saslName(username)},r=${nonce}`
  return { message: `n,,${bare}`, bare }
}

/** The attributes of a SCRAM message (`k=v,k=v`); a value may itself hold `=`. */
const attributes = (message: string): ReadonlyMap<string, string> => {
  const map = new Map<string, string>()
  for (const part of message.split(",")) {
    const eq = part.indexOf("=")
    if (eq === 1) map.set(part[0]!, part.slice(2))
  }
  return map
}

/** What the server-first-message says. */
export interface ServerFirst {
  readonly nonce: string
  readonly salt: Uint8Array
  readonly iterations: number
}

/** Reads the server-first-message, checking that it extends our nonce and iterates enough. */
export const parseServerFirst = (message: string, clientNonce: string): ServerFirst | ScramFailure => {
  const map = attributes(message)
  const error = map.get("e")
  if (error !== undefined) return failure(`the server refused the first message: ${error}`)
  const nonce = map.get("r")
  const salt = map.get("s")
  const iterations = Number(map.get("i"))
  if (nonce === undefined || salt === undefined || !Number.isInteger(iterations)) {
    return failure("the server's first message is not a SCRAM server-first-message")
  }
  if (!nonce.startsWith(clientNonce) || nonce.length === clientNonce.length) {
    return failure("the server's nonce does not extend the client's")
  }
  if (iterations < minIterations) {
    return failure(`the server asks for ${iterations} iterations, fewer than the minimum ${minIterations}`)
  }
  return { nonce, salt: Buffer.from(salt, "base64"), iterations }
}

const hmac = (hash: ScramHash, key: Uint8Array, data: string | Uint8Array): Buffer =>
  createHmac(hash, key).update(data).digest()

const xor = (a: Uint8Array, b: Uint8Array): Buffer => {
  const out = Buffer.alloc(a.length)
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!
  return out
}

/** The client-final-message, and the server signature the server-final-message must carry. */
export const clientFinal = (
  hash: ScramHash,
  password: string,
  clientFirstBare: string,
  serverFirstMessage: string,
  serverFirst: ServerFirst,
): { readonly message: string; readonly serverSignature: Uint8Array } => {
  const keyLength = hash === "sha256" ? 32 : 64
  const salted = pbkdf2Sync(Buffer.from(password, "utf8"), serverFirst.salt, serverFirst.iterations, keyLength, hash)
  const clientKey = hmac(hash, salted, "Client Key")
  const storedKey = createHash(hash).update(clientKey).digest()
  // "biws" is base64 of "n,,": the GS2 header, no channel binding.
  const withoutProof = `c=biws,r=${serverFirst.nonce}`
  const authMessage = `${clientFirstBare},${serverFirstMessage},${withoutProof}`
  const clientSignature = hmac(hash, storedKey, authMessage)
  const proof = xor(clientKey, clientSignature).toString("base64")
  const serverKey = hmac(hash, salted, "Server Key")
  return { message: `${withoutProof},p=${proof}`, serverSignature: hmac(hash, serverKey, authMessage) }
}

/** Checks the server-final-message: the server proves it knows the password's keys too. */
export const verifyServerFinal = (message: string, serverSignature: Uint8Array): ScramFailure | undefined => {
  const map = attributes(message)
  const error = map.get("e")
  if (error !== undefined) return failure(`the server refused the proof: ${error}`)
  const verifier = map.get("v")
  if (verifier === undefined) return failure("the server's final message carries no signature")
  const got = Buffer.from(verifier, "base64")
  if (got.length !== serverSignature.length || !timingSafeEqual(got, serverSignature)) {
    return failure("the server's signature does not match: it does not know this user's keys")
  }
  return undefined
}

/** Whether a step failed. */
export const isFailure = (value: unknown): value is ScramFailure =>
  typeof value === "object" && value !== null && (value as { _tag?: unknown })._tag === "ScramFailure"
