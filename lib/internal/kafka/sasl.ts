/**
 * SASL authentication of a Kafka connection: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, as the
 * exchange of opaque tokens that SaslAuthenticate carries (KIP-152). The connection does the
 * SaslHandshake and hands this module one `exchange` step per token; what is said in the tokens
 * lives here.
 *
 * A refusal is a `SASL_AUTHENTICATION_FAILED` naming the mechanism and the user, never the
 * password, which stays `Redacted` until the one place a token is built from it. The server's
 * SCRAM signature is checked: a broker that does not know the user's keys is refused too.
 */
import { Buffer } from "node:buffer"
import { randomBytes } from "node:crypto"
import { Effect, Redacted } from "effect"
import * as TransportError from "../../TransportError.ts"
import * as Scram from "./scram.ts"

/**
 * Credentials for SASL: the mechanism, as Kafka's `sasl.mechanism` names it in lower case.
 *
 * @since 0.2.0
 * @category models
 */
export interface SaslCredentials {
  readonly mechanism: "plain" | "scram-sha-256" | "scram-sha-512"
  readonly username: string
  readonly password: Redacted.Redacted<string>
}

/** The mechanism's name on the wire (SaslHandshake), e.g. `SCRAM-SHA-512`. */
export const mechanismName = (mechanism: SaslCredentials["mechanism"]): string => mechanism.toUpperCase()

/** One SaslAuthenticate round trip: our token out, the server's token back. */
export type Exchange = (token: Uint8Array) => Effect.Effect<Uint8Array, TransportError.TransportError>

const utf8 = (text: string): Uint8Array => Buffer.from(text, "utf8")
const text = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("utf8")

/** The error for a refused authentication, in the words users act on. */
export const refused = (
  broker: string,
  credentials: SaslCredentials,
  reason: string,
  cause?: unknown,
): TransportError.TransportError =>
  TransportError.make(
    "SASL_AUTHENTICATION_FAILED",
    "connect",
    `Cannot authenticate to Kafka at ${broker} as user "${credentials.username}" with ${
      mechanismName(credentials.mechanism)
    }: ${reason} (SASL_AUTHENTICATION_FAILED): check the user name, the password and the mechanism the listener enables`,
    cause,
  )

const scram = (
  broker: string,
  credentials: SaslCredentials,
  hash: Scram.ScramHash,
  exchange: Exchange,
): Effect.Effect<void, TransportError.TransportError> =>
  Effect.gen(function* () {
    // 18 random bytes are 24 base64 characters, none of them the `,` SCRAM separates with.
    const nonce = randomBytes(18).toString("base64")
    const first = Scram.clientFirst(credentials.username, nonce)
    const serverFirstMessage = text(yield* exchange(utf8(first.message)))
    const serverFirst = Scram.parseServerFirst(serverFirstMessage, nonce)
    if (Scram.isFailure(serverFirst)) return yield* Effect.fail(refused(broker, credentials, serverFirst.reason))
    const final = Scram.clientFinal(hash, Redacted.value(credentials.password), first.bare, serverFirstMessage, serverFirst)
    const serverFinal = text(yield* exchange(utf8(final.message)))
    const failure = Scram.verifyServerFinal(serverFinal, final.serverSignature)
    if (failure !== undefined) return yield* Effect.fail(refused(broker, credentials, failure.reason))
  })

/**
 * Authenticates with the credentials over `exchange`, once the SaslHandshake has agreed on the
 * mechanism.
 */
export const authenticate = (
  broker: string,
  credentials: SaslCredentials,
  exchange: Exchange,
): Effect.Effect<void, TransportError.TransportError> => {
  switch (credentials.mechanism) {
    case "plain":
      // RFC 4616: authorization id (empty: the user's own), user, password, NUL separated.
      return Effect.asVoid(exchange(utf8(`\u0000${credentials.username}\u0000${Redacted.value(credentials.password)}`)))
    case "scram-sha-256":
      return scram(broker, credentials, "sha256", exchange)
    case "scram-sha-512":
      return scram(broker, credentials, "sha512", exchange)
  }
}
