/**
 * One connection to one Kafka broker: a `node:net` or `node:tls` socket (the same code on Bun,
 * Deno and Node), requests pipelined over it with correlation ids, versions negotiated once with
 * ApiVersions, SASL done before it is handed out, and every failure a `TransportError`.
 *
 * The model is Kafka's own NetworkClient and franz-go's `brokerCxn`: the broker answers the
 * requests of one connection in the order they were sent, so responses are matched to the
 * oldest request in flight and a correlation id out of order is a protocol error that ends the
 * connection. For the same reason a request not answered in time ends the connection too: the
 * answers after it could no longer be told apart. Closing the connection, or the scope it was
 * opened in, fails every request in flight and every request waiting for a slot.
 *
 * Mechanics: the socket's callbacks and the frame matching are plain synchronous code (`Wire`),
 * which resumes each waiting request's fiber with its frame; the frame is decoded in that fiber,
 * so a response that does not decode fails only its own request. Timeouts run on Effect's
 * `Clock`, so tests drive them with `TestClock`.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Duration, Effect, Scope } from "effect"
import * as TransportError from "../../TransportError.ts"
import { certificateHint, isCertificateError } from "../tlsCheck.ts"
import { FrameReader, type FrameSizeError } from "./framing.ts"
import { type Api, decodeResponseHeader, encodeRequestHeader } from "./protocol/api.ts"
import { ApiVersions, type ApiVersionsResponse } from "./protocol/ApiVersions.ts"
import { SaslAuthenticate } from "./protocol/SaslAuthenticate.ts"
import { SaslHandshake } from "./protocol/SaslHandshake.ts"
import { attempt, type Attempt, type ProtocolError, Reader, Writer } from "./protocol/wire.ts"
import * as Sasl from "./sasl.ts"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** The broker, `host:port` (an IPv6 host in brackets). */
  readonly broker: string
  /** The `client.id` sent in every request header. Default `partita`. */
  readonly clientId?: string | undefined
  /**
   * TLS: `true` for the runtime's trusted CAs, or `node:tls` options (`ca` for a custom CA,
   * `servername`, `rejectUnauthorized`, a client `cert` and `key`). `servername` defaults to the
   * host unless it is an IP address. Default: plaintext.
   */
  readonly tls?: true | tls.ConnectionOptions | undefined
  /**
   * SASL credentials; authentication happens before the connection is handed out. There is no
   * re-authentication (KIP-368): a broker with `connections.max.reauth.ms` set closes the
   * connection when the session ends, which callers see as a lost connection.
   */
  readonly sasl?: Sasl.SaslCredentials | undefined
  /** How long opening the socket (and the TLS handshake) may take. Default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
  /** How long a request may wait for its answer. Default 30 seconds. */
  readonly requestTimeout?: Duration.Input | undefined
  /** The largest response accepted, in bytes; a larger one is a `PROTOCOL_ERROR`. Default {@link defaults}. */
  readonly maxResponseBytes?: number | undefined
  /**
   * How many requests may wait for their answers at once; more wait for a slot (backpressure,
   * not an error). Default unbounded.
   */
  readonly maxInFlight?: number | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export const defaults = {
  clientId: "partita",
  connectTimeout: Duration.seconds(10),
  requestTimeout: Duration.seconds(30),
  /** 100 MiB, a Fetch's largest sensible answer, and 1 MiB for its framing. */
  maxResponseBytes: 100 * 1024 * 1024 + 1024 * 1024,
  maxInFlight: Number.POSITIVE_INFINITY,
} as const

/**
 * @since 0.2.0
 * @category models
 */
export interface RequestOptions {
  /** The version to send; default the highest both sides support ({@link Connection.versionFor}). */
  readonly version?: number | undefined
  /** Overrides the connection's request timeout (a Fetch adds its `maxWaitMs`). */
  readonly timeout?: Duration.Input | undefined
}

/** The versions of one API the broker supports. */
export interface VersionRange {
  readonly min: number
  readonly max: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Connection {
  /** `host:port`, as given. */
  readonly broker: string
  /** The broker's supported versions, by API key, from ApiVersions. */
  readonly brokerVersions: ReadonlyMap<number, VersionRange>
  /**
   * The cluster's finalized features (ApiVersions v3+), by name: each one's finalized max
   * version level, e.g. `transaction.version` 2 on a Kafka 4 cluster with KIP-890's transactions
   * v2. Empty on brokers that report none (Kafka before 2.7, or an epoch below 0).
   */
  readonly finalizedFeatures: ReadonlyMap<string, number>
  /**
   * The version a request of `api` goes out at: the highest both sides support. Fails with
   * `UNSUPPORTED_VERSION` naming the API when the broker lacks it or no version is shared.
   */
  readonly versionFor: (api: AnyApi) => Effect.Effect<number, TransportError.TransportError>
  /**
   * Sends a request and waits for its answer. Requests are written in the order they are made
   * and may be many in flight; the answer fails with a `TransportError`: retriable
   * `REQUEST_TIMED_OUT` after the timeout (the connection is then closed), retriable
   * `NETWORK_EXCEPTION` when the connection is lost or closed, `PROTOCOL_ERROR` when the answer
   * cannot be read. Interrupting the caller abandons the answer; the connection stays usable.
   */
  readonly request: <Req, Res>(
    api: Api<Req, Res>,
    request: Req,
    options?: RequestOptions,
  ) => Effect.Effect<Res, TransportError.TransportError>
  /**
   * Writes a request the broker does not answer (a Produce with `acks=0`); succeeds once it is
   * handed to the socket, in order with the requests around it.
   */
  readonly send: <Req, Res>(
    api: Api<Req, Res>,
    request: Req,
    options?: RequestOptions,
  ) => Effect.Effect<void, TransportError.TransportError>
  /** Requests written and not yet answered, and requests waiting for a slot. */
  readonly inFlight: () => number
  /** Whether the connection still carries requests. */
  readonly isOpen: () => boolean
  /** Waits until the connection closes, for whatever reason, with the error that closed it. */
  readonly closed: Effect.Effect<TransportError.TransportError>
  /** Closes the connection now (as closing its scope does); idempotent. */
  readonly close: Effect.Effect<void>
}

// deno-lint-ignore no-explicit-any
type AnyApi = Api<any, any>

const ourSoftware = { name: "partita", version: "0.1.0" } as const

/** A request between its call and its answer. */
interface Pending {
  readonly correlationId: number
  /** The frame as views, written in one go (see `encodeFrame`). */
  readonly frame: ReadonlyArray<Uint8Array>
  readonly expectsResponse: boolean
  state: "waiting" | "sent" | "done"
  /** Resumes the caller with the answer's frame, or an error; `undefined` once abandoned. */
  resume: ((outcome: Uint8Array | TransportError.TransportError) => void) | undefined
}

/** A FIFO queue that does not shift an array per answer. */
class Queue<A> {
  private items: Array<A | undefined> = []
  private head = 0
  get length(): number {
    return this.items.length - this.head
  }
  push(item: A): void {
    this.items.push(item)
  }
  /** Puts an item back at the front. */
  unshift(item: A): void {
    if (this.head > 0) this.items[--this.head] = item
    else this.items.unshift(item)
  }
  shift(): A | undefined {
    if (this.head === this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }
  remove(item: A): boolean {
    const at = this.items.indexOf(item, this.head)
    if (at < 0) return false
    this.items.splice(at, 1)
    return true
  }
  drain(): Array<A> {
    const rest = this.items.slice(this.head) as Array<A>
    this.items = []
    this.head = 0
    return rest
  }
}

/**
 * The socket and the requests on it, as plain synchronous state: writes in order, up to
 * `maxInFlight` unanswered and while the socket accepts more; matches each frame to the oldest
 * request sent; closes once, failing everything still waiting.
 */
class Wire {
  private readonly sent = new Queue<Pending>()
  private readonly waiting = new Queue<Pending>()
  private readonly frames: FrameReader
  private blocked = false
  private nextCorrelationId = 0
  closedWith: TransportError.TransportError | undefined = undefined
  /** Whether the connection ended by itself (the broker, the network, a protocol error), not by {@link close}. */
  lost = false
  private readonly closeWaiters: Array<(error: TransportError.TransportError) => void> = []

  private readonly socket: net.Socket
  private readonly broker: string
  private readonly maxInFlight: number

  constructor(socket: net.Socket, broker: string, maxInFlight: number, maxResponseBytes: number) {
    this.socket = socket
    this.broker = broker
    this.maxInFlight = maxInFlight
    this.frames = new FrameReader(maxResponseBytes, (frame) => this.onFrame(frame))
    socket.on("data", (chunk: Uint8Array) => {
      const error = this.frames.push(chunk)
      if (error !== undefined) this.lose(this.frameSizeError(error))
    })
    socket.on("drain", () => {
      this.blocked = false
      this.pump()
    })
    socket.on("error", (error: Error & { readonly code?: unknown }) => this.lose(lostError(broker, error)))
    socket.on("close", () =>
      this.lose(TransportError.make(
        "NETWORK_EXCEPTION",
        "request",
        `The connection to Kafka at ${broker} was closed by the broker: retry on a new connection`,
      ))
    )
  }

  get inFlight(): number {
    return this.sent.length + this.waiting.length
  }

  nextId(): number {
    const id = this.nextCorrelationId
    this.nextCorrelationId = (id + 1) & 0x7fffffff
    return id
  }

  /** Queues a request; it is written as soon as a slot and the socket allow. */
  enqueue(pending: Pending): void {
    if (this.closedWith !== undefined) return pending.resume?.(this.closedWith)
    this.waiting.push(pending)
    this.pump()
  }

  /** The caller stopped waiting: a request not yet written is dropped, a written one's answer ignored. */
  abandon(pending: Pending): void {
    pending.resume = undefined
    if (pending.state === "waiting" && this.waiting.remove(pending)) pending.state = "done"
  }

  private pump(): void {
    while (!this.blocked && this.closedWith === undefined && this.sent.length < this.maxInFlight) {
      const pending = this.waiting.shift()
      if (pending === undefined) return
      if (pending.expectsResponse) {
        pending.state = "sent"
        this.sent.push(pending)
      } else {
        pending.state = "done"
      }
      // A `false` from write means the socket's buffer is full: hold further writes until it drains.
      if (!this.write(pending.frame)) this.blocked = true
      if (!pending.expectsResponse) {
        const resume = pending.resume
        pending.resume = undefined
        resume?.(written)
      }
    }
  }

  /**
   * Writes a frame's views: corked, so Node hands them to one `writev` (the record batches of a
   * Produce request go to the kernel from where they were encoded, never concatenated here).
   */
  private write(frame: ReadonlyArray<Uint8Array>): boolean {
    if (frame.length === 1) return this.socket.write(frame[0]!)
    this.socket.cork()
    let accepted = true
    for (let i = 0; i < frame.length; i++) accepted = this.socket.write(frame[i]!)
    this.socket.uncork()
    return accepted
  }

  private onFrame(frame: Uint8Array): void {
    // The rest of a chunk after a protocol error is not read.
    if (this.closedWith !== undefined) return
    const pending = this.sent.shift()
    const correlationId = frame.length >= 4
      ? ((frame[0]! << 24) | (frame[1]! << 16) | (frame[2]! << 8) | frame[3]!)
      : undefined
    if (pending === undefined || correlationId !== pending.correlationId) {
      if (pending !== undefined) this.sent.unshift(pending)
      return this.lose(TransportError.make(
        "PROTOCOL_ERROR",
        "request",
        pending === undefined
          ? `Kafka at ${this.broker} answered a request that was not sent (correlation id ${correlationId}): the connection is closed`
          : `Kafka at ${this.broker} answered correlation id ${correlationId} where ${pending.correlationId} was next: the connection is closed`,
      ))
    }
    pending.state = "done"
    const resume = pending.resume
    pending.resume = undefined
    resume?.(frame)
    this.pump()
  }

  private frameSizeError(error: FrameSizeError): TransportError.TransportError {
    // 0x15030x00 is a TLS alert record: a plaintext client talking to a TLS listener reads it as a size.
    const looksLikeTls = (error.size >>> 16) === 0x1503
    return TransportError.make(
      "PROTOCOL_ERROR",
      "request",
      `Kafka at ${this.broker} sent a response of ${error.size} bytes, above the limit of ${error.maximum}: ${
        looksLikeTls
          ? "the listener speaks TLS, so connect with TLS enabled"
          : "raise `maxResponseBytes` if the broker's answers are legitimately this large"
      }`,
    )
  }

  /** Closes the socket and fails everything waiting, once; the first error wins. */
  close(error: TransportError.TransportError): boolean {
    if (this.closedWith !== undefined) return false
    this.closedWith = error
    this.socket.destroy()
    for (const pending of [...this.sent.drain(), ...this.waiting.drain()]) {
      pending.state = "done"
      const resume = pending.resume
      pending.resume = undefined
      resume?.(error)
    }
    for (const waiter of this.closeWaiters.splice(0)) waiter(error)
    return true
  }

  private lose(error: TransportError.TransportError): void {
    if (this.closedWith === undefined) this.lost = true
    this.close(error)
  }

  whenClosed(waiter: (error: TransportError.TransportError) => void): () => void {
    if (this.closedWith !== undefined) {
      waiter(this.closedWith)
      return () => {}
    }
    this.closeWaiters.push(waiter)
    return () => {
      const at = this.closeWaiters.indexOf(waiter)
      if (at >= 0) this.closeWaiters.splice(at, 1)
    }
  }
}

const lostError = (broker: string, error: Error & { readonly code?: unknown }): TransportError.TransportError =>
  isCertificateError(error.code)
    ? TransportError.make(
      "SSL_AUTHENTICATION_FAILED",
      "connect",
      `Cannot connect to Kafka at ${broker} over TLS: ${error.message} (SSL_AUTHENTICATION_FAILED): ${certificateHint(error.code)}`,
      error,
    )
    : TransportError.make(
      "NETWORK_EXCEPTION",
      "connect",
      `Lost the connection to Kafka at ${broker}: ${error.message}${
        typeof error.code === "string" && !error.message.includes(error.code) ? ` (${error.code})` : ""
      }`,
      error,
    )

const hostAndPort = (broker: string): { readonly host: string; readonly port: number } => {
  const colon = broker.lastIndexOf(":")
  const host = colon < 0 ? broker : broker.slice(0, colon)
  return { host: host.replace(/^\[(.*)\]$/, "$1"), port: colon < 0 ? 9092 : Number(broker.slice(colon + 1)) }
}

/**
 * Opens the socket (the TLS handshake, when asked for, is part of it) and puts a Wire on it in
 * the same callback, so no error or close event falls between the two unheard.
 */
const openWire = (
  options: Options,
  timeout: Duration.Duration,
  attach: (socket: net.Socket) => Wire,
): Effect.Effect<Wire, TransportError.TransportError> => {
  const { host, port } = hostAndPort(options.broker)
  const open = Effect.callback<Wire, TransportError.TransportError>((resume) => {
    const useTls = options.tls
    const socket = useTls === undefined
      ? net.connect({ host, port })
      : tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...(useTls === true ? {} : useTls) })
    const onError = (error: Error & { readonly code?: unknown }) => {
      socket.destroy()
      resume(Effect.fail(
        isCertificateError(error.code)
          ? lostError(options.broker, error)
          : TransportError.make(
            "NETWORK_EXCEPTION",
            "connect",
            `Cannot connect to Kafka at ${options.broker}${useTls === undefined ? "" : " over TLS"}: ${error.message}: check that the broker runs and the address is right${
              useTls === undefined ? "" : ", and that the listener speaks TLS"
            }`,
            error,
          ),
      ))
    }
    socket.once("error", onError)
    socket.once(useTls === undefined ? "connect" : "secureConnect", () => {
      socket.off("error", onError)
      socket.setNoDelay(true)
      socket.setKeepAlive(true)
      resume(Effect.succeed(attach(socket)))
    })
    return Effect.sync(() => socket.destroy())
  })
  return Effect.timeoutOrElse(open, {
    duration: timeout,
    orElse: () =>
      Effect.fail(TransportError.make(
        "NETWORK_EXCEPTION",
        "connect",
        `Cannot connect to Kafka at ${options.broker} within ${Duration.format(timeout)}: check that the broker runs and the address is right`,
      )),
  })
}

const protocolError = (broker: string, apiName: string, version: number, error: ProtocolError): TransportError.TransportError =>
  TransportError.make(
    "PROTOCOL_ERROR",
    "request",
    `Cannot read the ${apiName} v${version} response of Kafka at ${broker}: ${error.message}`,
    error,
  )

/** Reads a frame (correlation id first) as `api`'s response at `version`, its body at `bodyVersion`. */
// deno-lint-ignore no-explicit-any
const decodeFrame = <Res>(frame: Uint8Array, api: Api<any, Res>, version: number, bodyVersion: number): Attempt<Res> =>
  attempt(() => {
    const reader = new Reader(frame)
    decodeResponseHeader(reader, api.responseHeaderVersion(version))
    return api.decodeResponse(reader, bodyVersion)
  })

/** What a request the broker does not answer resumes its caller with: it was written. */
const written = new Uint8Array(0)

/**
 * Byte fields from this size on (record batches) are not copied into a request's frame but
 * written from where they are (`Writer`'s splicing); smaller ones are copied, fewer views to write.
 */
const spliceFrom = 4096

/** The request's frame, as views in order: size, header, body. */
const encodeFrame = <Req>(
  api: Api<Req, unknown>,
  version: number,
  correlationId: number,
  clientId: string,
  request: Req,
): Attempt<ReadonlyArray<Uint8Array>> =>
  attempt(() => {
    const writer = new Writer(256, spliceFrom)
    const size = writer.reserveInt32()
    encodeRequestHeader(writer, api.requestHeaderVersion(version), { apiKey: api.key, apiVersion: version, correlationId, clientId })
    api.encodeRequest(writer, version, request)
    writer.patchInt32(size, writer.size - size - 4)
    return writer.finishSegments()
  })

/** UNSUPPORTED_VERSION: ApiVersions' only answer whose body is always at version 0. */
const unsupportedVersion = 35

/**
 * Opens a connection in the current scope: the socket, ApiVersions, then SASL when credentials
 * are given. Closing the scope closes the socket and fails every request still in flight.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Connection, TransportError.TransportError, Scope.Scope> =>
  Effect.gen(function* () {
    const broker = options.broker
    const clientId = options.clientId ?? defaults.clientId
    const requestTimeout = Duration.fromInputUnsafe(options.requestTimeout ?? defaults.requestTimeout)
    const closing = () =>
      TransportError.make(
        "NETWORK_EXCEPTION",
        "request",
        `The connection to Kafka at ${broker} was closed while the request was in flight: retry on a new connection`,
      )
    const wire = yield* Effect.acquireRelease(
      openWire(
        options,
        Duration.fromInputUnsafe(options.connectTimeout ?? defaults.connectTimeout),
        (socket) =>
          new Wire(socket, broker, options.maxInFlight ?? defaults.maxInFlight, options.maxResponseBytes ?? defaults.maxResponseBytes),
      ),
      (wire) => Effect.sync(() => wire.close(closing())),
    )
    // Closing says so in the log (the release above only makes sure the socket is closed).
    const shutdown = Effect.suspend(() =>
      wire.close(closing())
        ? Effect.logDebug(`Closed the connection to Kafka at ${broker}`).pipe(Effect.annotateLogs({ broker }))
        : Effect.void
    )
    yield* Effect.addFinalizer(() => shutdown)
    const whenClosed = Effect.callback<TransportError.TransportError>((resume) => {
      const cancel = wire.whenClosed((error) => resume(Effect.succeed(error)))
      return Effect.sync(cancel)
    })

    /** One request and its raw frame, with the timeout that ends the connection. */
    const exchange = (
      api: AnyApi,
      version: number,
      request: unknown,
      expectsResponse: boolean,
      timeout: Duration.Duration,
    ): Effect.Effect<Uint8Array, TransportError.TransportError> =>
      Effect.suspend(() => {
        if (wire.closedWith !== undefined) return Effect.fail(wire.closedWith)
        const correlationId = wire.nextId()
        const encoded = encodeFrame(api, version, correlationId, clientId, request)
        if (!encoded.ok) {
          // A request this version cannot carry (a field it lacks): a newer broker is needed.
          return Effect.fail(TransportError.make("UNSUPPORTED_VERSION", "request", `${encoded.error.message} (Kafka at ${broker})`, encoded.error))
        }
        const frame = encoded.value
        const pending: Pending = { correlationId, frame, expectsResponse, state: "waiting", resume: undefined }
        const answer = Effect.callback<Uint8Array, TransportError.TransportError>((resume) => {
          pending.resume = (outcome) => resume(outcome instanceof Uint8Array ? Effect.succeed(outcome) : Effect.fail(outcome))
          wire.enqueue(pending)
          return Effect.sync(() => wire.abandon(pending))
        })
        if (!Duration.isFinite(timeout)) return answer
        return Effect.timeoutOrElse(answer, {
          duration: timeout,
          orElse: () =>
            Effect.suspend(() => {
              const what = `${api.name} v${version} to Kafka at ${broker} was not answered within ${Duration.format(timeout)}`
              if (pending.state !== "sent") {
                // Never written (it waited for a slot): the connection's order is intact.
                return Effect.fail(TransportError.make("REQUEST_TIMED_OUT", "request", `${what}: it waited for a slot among the requests in flight`))
              }
              // Later answers would be matched to the wrong requests: this connection is done.
              wire.close(TransportError.make(
                "NETWORK_EXCEPTION",
                "request",
                `The connection to Kafka at ${broker} was closed because an earlier request timed out: ${what}`,
              ))
              return Effect.fail(TransportError.make("REQUEST_TIMED_OUT", "request", `${what}: the connection is closed, retry on a new one`))
            }),
        })
      })

    // deno-lint-ignore no-explicit-any
    const decodeAs = <Res>(api: Api<any, Res>, version: number, frame: Uint8Array, bodyVersion = version) => {
      const decoded = decodeFrame(frame, api, version, bodyVersion)
      return decoded.ok ? Effect.succeed(decoded.value) : Effect.fail(protocolError(broker, api.name, version, decoded.error))
    }

    // ApiVersions: our highest version first; a broker that does not know it answers at v0 with
    // UNSUPPORTED_VERSION and its own range, and the request is made again in that range.
    const negotiate = (version: number, attempt: number): Effect.Effect<ApiVersionsResponse, TransportError.TransportError> =>
      Effect.gen(function* () {
        const frame = yield* exchange(
          ApiVersions,
          version,
          { clientSoftwareName: ourSoftware.name, clientSoftwareVersion: ourSoftware.version },
          true,
          requestTimeout,
        )
        const errorCode = frame.length >= 6 ? (frame[4]! << 24 >> 16) | frame[5]! : 0
        const response = yield* decodeAs(ApiVersions, version, frame, errorCode === unsupportedVersion ? 0 : version)
        if (response.errorCode === unsupportedVersion && attempt === 0) {
          const theirs = response.apiKeys.find((entry) => entry.apiKey === ApiVersions.key)
          const retry = Math.min(theirs?.maxVersion ?? 0, ApiVersions.maxVersion)
          if (retry < version) return yield* negotiate(retry, 1)
        }
        if (response.errorCode !== 0) {
          return yield* Effect.fail(TransportError.make(
            TransportError.nameOfCode(response.errorCode),
            "connect",
            `Kafka at ${broker} refused ApiVersions v${version} (${TransportError.nameOfCode(response.errorCode)})`,
          ))
        }
        return response
      })

    // A connection that fails to open is closed at once, not when its scope closes; what went
    // wrong is make's error, so the loss is not logged as well.
    const closeOnError = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      Effect.onError(effect, () =>
        Effect.sync(() => {
          wire.close(TransportError.make("NETWORK_EXCEPTION", "connect", `The connection to Kafka at ${broker} failed to open`))
        }))
    const versions = yield* closeOnError(negotiate(ApiVersions.maxVersion, 0))
    const brokerVersions = new Map<number, VersionRange>(
      versions.apiKeys.map((entry) => [entry.apiKey, { min: entry.minVersion, max: entry.maxVersion }]),
    )
    const finalizedFeatures = new Map<string, number>(
      (versions.finalizedFeaturesEpoch ?? -1) < 0
        ? []
        : (versions.finalizedFeatures ?? []).map((feature) => [feature.name, feature.maxVersionLevel]),
    )
    const negotiated = new Map<AnyApi, number | TransportError.TransportError>()
    const versionOf = (api: AnyApi): number | TransportError.TransportError => {
      const known = negotiated.get(api)
      if (known !== undefined) return known
      const theirs = brokerVersions.get(api.key)
      const version = theirs === undefined ? undefined : Math.min(theirs.max, api.maxVersion)
      const outcome = theirs === undefined
        ? TransportError.make(
          "UNSUPPORTED_VERSION",
          "request",
          `Kafka at ${broker} does not support the ${api.name} API (key ${api.key}): it needs a newer broker`,
        )
        : version === undefined || version < Math.max(theirs.min, api.minVersion)
        ? TransportError.make(
          "UNSUPPORTED_VERSION",
          "request",
          `Kafka at ${broker} supports ${api.name} v${theirs.min}-${theirs.max} and this client v${api.minVersion}-${api.maxVersion}: no version is shared`,
        )
        : version
      negotiated.set(api, outcome)
      return outcome
    }
    const versionFor = (api: AnyApi): Effect.Effect<number, TransportError.TransportError> =>
      Effect.suspend(() => {
        const version = versionOf(api)
        return typeof version === "number" ? Effect.succeed(version) : Effect.fail(version)
      })

    const call = <Req, Res>(api: Api<Req, Res>, request: Req, options: RequestOptions | undefined, expectsResponse: boolean) =>
      Effect.flatMap(
        options?.version === undefined ? versionFor(api) : Effect.succeed(options.version),
        (version) =>
          Effect.flatMap(
            exchange(
              api,
              version,
              request,
              expectsResponse,
              options?.timeout === undefined ? requestTimeout : Duration.fromInputUnsafe(options.timeout),
            ),
            (frame) => expectsResponse ? decodeAs(api, version, frame) : Effect.succeed(undefined as Res),
          ),
      )

    const request = <Req, Res>(api: Api<Req, Res>, body: Req, options?: RequestOptions) => call(api, body, options, true)
    const send = <Req, Res>(api: Api<Req, Res>, body: Req, options?: RequestOptions) =>
      Effect.asVoid(call(api, body, options, false))

    if (options.sasl !== undefined) {
      const credentials = options.sasl
      yield* closeOnError(authenticate(broker, credentials, request))
    }
    yield* Effect.logDebug(
      `Connected to Kafka at ${broker}${options.tls === undefined ? "" : " over TLS"}${
        options.sasl === undefined ? "" : ` as user "${options.sasl.username}" (${Sasl.mechanismName(options.sasl.mechanism)})`
      }`,
    ).pipe(Effect.annotateLogs({ broker }))
    // From here a connection that ends by itself says so, once: when it happens, or at the
    // latest when the scope closes (which may interrupt the watcher before it logs).
    let lossLogged = false
    const logLoss = Effect.suspend(() => {
      const error = wire.closedWith
      if (!wire.lost || lossLogged || error === undefined) return Effect.void
      lossLogged = true
      // The error's message names the broker and what happened: it is the line.
      return Effect.logWarning(error.message).pipe(
        Effect.annotateLogs({ broker, code: error.code }),
      )
    })
    yield* Effect.addFinalizer(() => logLoss)
    yield* Effect.forkScoped(Effect.andThen(whenClosed, logLoss))

    const connection: Connection = {
      broker,
      brokerVersions,
      finalizedFeatures,
      versionFor,
      request,
      send,
      inFlight: () => wire.inFlight,
      isOpen: () => wire.closedWith === undefined,
      closed: whenClosed,
      close: shutdown,
    }
    return connection
  })

/** SaslHandshake v1 for the mechanism, then SaslAuthenticate for each token of the exchange. */
const authenticate = (
  broker: string,
  credentials: Sasl.SaslCredentials,
  request: <Req, Res>(api: Api<Req, Res>, body: Req, options?: RequestOptions) => Effect.Effect<Res, TransportError.TransportError>,
): Effect.Effect<void, TransportError.TransportError> =>
  Effect.gen(function* () {
    const mechanism = Sasl.mechanismName(credentials.mechanism)
    // v1: the tokens then travel in SaslAuthenticate requests, not as raw bytes on the socket.
    const handshake = yield* request(SaslHandshake, { mechanism }, { version: 1 })
    if (handshake.errorCode !== 0) {
      const code = TransportError.nameOfCode(handshake.errorCode)
      return yield* Effect.fail(
        code === "UNSUPPORTED_SASL_MECHANISM"
          ? Sasl.refused(broker, credentials, `the listener enables ${handshake.mechanisms.join(", ") || "no mechanism"}, not ${mechanism}`)
          : Sasl.refused(broker, credentials, `the SaslHandshake failed (${code})`),
      )
    }
    yield* Sasl.authenticate(broker, credentials, (token) =>
      Effect.flatMap(request(SaslAuthenticate, { authBytes: token }), (answer) =>
        answer.errorCode === 0
          ? Effect.succeed(answer.authBytes)
          : Effect.fail(Sasl.refused(
            broker,
            credentials,
            `the broker says "${answer.errorMessage ?? TransportError.nameOfCode(answer.errorCode)}"`,
          ))))
    yield* Effect.logDebug(`Authenticated to Kafka at ${broker} as user "${credentials.username}" with ${mechanism}`).pipe(
      Effect.annotateLogs({ broker }),
    )
  })
