/**
 * One TLS handshake with a bootstrap broker before kafkajs connects, so that a certificate the
 * client refuses fails the layer at once, as `SSL_AUTHENTICATION_FAILED`.
 *
 * Why: kafkajs reports a refused certificate as a connection error, which it retries like a
 * broker that is down (six handshakes over 6 to 13 seconds with the default retry), and which
 * would surface as a retriable `NETWORK_EXCEPTION`. A certificate does not become trusted by
 * asking again. The handshake is made as kafkajs' socket factory makes it (`servername` is the
 * host unless that is an IP address; the caller's `ssl` options win), so it refuses exactly what
 * kafkajs would. A broker that cannot be reached is left to kafkajs and its retries.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Duration, Effect, Option } from "effect"
import * as TransportError from "../TransportError.ts"

/** Node's codes for a peer certificate that failed verification (OpenSSL's, and the name check). */
const certificateCodes = new Set([
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "ERROR_IN_CERT_NOT_BEFORE_FIELD",
  "ERROR_IN_CERT_NOT_AFTER_FIELD",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_CHAIN_TOO_LONG",
  "CERT_REVOKED",
  "INVALID_CA",
  "PATH_LENGTH_EXCEEDED",
  "INVALID_PURPOSE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
])

/** Whether a socket error's `code` says the broker's certificate was refused. */
export const isCertificateError = (code: unknown): boolean => typeof code === "string" && certificateCodes.has(code)

/** What to do about a refused certificate, by its code. */
export const certificateHint = (code: unknown): string => {
  switch (code) {
    case "ERR_TLS_CERT_ALTNAME_INVALID":
    case "HOSTNAME_MISMATCH":
      return "the broker's certificate is not for the name connected to: connect by a name it lists, or set `ssl.servername` to one"
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return "the broker's certificate is outside its validity period: renew it, or check this machine's clock"
    default:
      return "the broker's certificate is not trusted: give the CA that signed it as `ssl.ca` (or KAFKA_SSL_CA_FILE)"
  }
}

type Outcome =
  | { readonly _tag: "Verified" }
  | { readonly _tag: "Refused"; readonly code: string; readonly detail: string; readonly cause: unknown }
  | { readonly _tag: "Unreachable" }

const verified: Outcome = { _tag: "Verified" }
const unreachable: Outcome = { _tag: "Unreachable" }

const hostAndPort = (broker: string): { readonly host: string; readonly port: number } => {
  const colon = broker.lastIndexOf(":")
  const host = colon < 0 ? broker : broker.slice(0, colon)
  return { host: host.replace(/^\[(.*)\]$/, "$1"), port: colon < 0 ? 9092 : Number(broker.slice(colon + 1)) }
}

const handshake = (host: string, port: number, ssl: true | tls.ConnectionOptions) =>
  Effect.callback<Outcome>((resume) => {
    const socket = tls.connect(
      { host, port, ...(net.isIP(host) ? {} : { servername: host }), ...(ssl === true ? {} : ssl) },
      () => {
        socket.destroy()
        resume(Effect.succeed(verified))
      },
    )
    socket.once("error", (error: Error & { readonly code?: unknown }) => {
      socket.destroy()
      resume(Effect.succeed(
        isCertificateError(error.code)
          ? { _tag: "Refused", code: String(error.code), detail: error.message, cause: error }
          : unreachable,
      ))
    })
    return Effect.sync(() => socket.destroy())
  })

/**
 * Fails with `SSL_AUTHENTICATION_FAILED` when the first bootstrap broker that answers presents a
 * certificate these `ssl` options refuse; succeeds when one is verified or none answers within
 * `timeout` (kafkajs then reports what it finds).
 */
export const verifyBrokerCertificate = (
  brokers: ReadonlyArray<string>,
  ssl: true | tls.ConnectionOptions,
  timeout: Duration.Duration,
): Effect.Effect<void, TransportError.TransportError> =>
  Effect.gen(function* () {
    for (const broker of brokers) {
      const { host, port } = hostAndPort(broker)
      const outcome = yield* handshake(host, port, ssl).pipe(
        Effect.timeoutOption(timeout),
        Effect.map(Option.getOrElse(() => unreachable)),
      )
      if (outcome._tag === "Verified") return
      if (outcome._tag === "Refused") {
        return yield* Effect.fail(TransportError.make(
          "SSL_AUTHENTICATION_FAILED",
          "connect",
          `Cannot connect to Kafka at ${broker} over TLS: ${outcome.detail} (SSL_AUTHENTICATION_FAILED): ${certificateHint(outcome.code)}`,
          outcome.cause,
        ))
      }
    }
  })
