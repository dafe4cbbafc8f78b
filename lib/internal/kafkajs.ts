/**
 * The kafkajs boundary of `KafkaJsTransport`, shared by its producer and subscription parts:
 * kafkajs errors into `TransportError`s (once, here), bytes and headers each way, consumed
 * messages into `ConsumerRecord`s, and kafkajs' log lines into Effect's logger.
 */
import { Buffer } from "node:buffer"
import kafkajs from "kafkajs"
import type { IHeaders, Kafka as KafkaClient, KafkaMessage, LogEntry } from "kafkajs"
import { type Context, type Duration, Effect, LogLevel } from "effect"
import type { defaults, Options } from "../KafkaJsTransport.ts"
import type { ConsumerRecord, Header, TopicPartition } from "../Transport.ts"
import * as TransportError from "../TransportError.ts"
import type { JoinGate } from "./joinGate.ts"
import { certificateHint, isCertificateError } from "./tlsCheck.ts"

// kafkajs is CommonJS: the default import is `module.exports` on every runtime.
const { logLevel: KafkaLogLevel } = kafkajs

// ---------------------------------------------------------------------------------------------
// Errors

export interface KafkaJSErrorShape {
  readonly name?: unknown
  readonly type?: unknown
  readonly code?: unknown
  readonly message?: unknown
  readonly cause?: unknown
  readonly errors?: unknown
  readonly retryCount?: unknown
}

export const shapeOf = (error: unknown): KafkaJSErrorShape =>
  typeof error === "object" && error !== null ? error as KafkaJSErrorShape : {}

/** The error that explains a kafkajs failure: the one inside its retry and aggregate wrappers. */
export const rootOf = (error: unknown): unknown => {
  let current = error
  for (let depth = 0; depth < 8; depth++) {
    const shape = shapeOf(current)
    if (typeof shape.code === "number") return current
    if (Array.isArray(shape.errors) && shape.errors.length > 0) current = shape.errors[0]
    else if (shape.cause !== undefined && shape.cause !== current) current = shape.cause
    else return current
  }
  return current
}

export const codeOf = (root: unknown): TransportError.KafkaErrorName => {
  const shape = shapeOf(root)
  // The broker's numeric code first: kafkajs names some codes by their pre-2.x names.
  if (typeof shape.code === "number") return TransportError.nameOf(shape.code)
  if (typeof shape.type === "string") return TransportError.nameOf(shape.type)
  switch (shape.name) {
    case "KafkaJSConnectionError":
      // kafkajs keeps the socket error's code: a refused certificate is no network trouble.
      return isCertificateError(shape.code) ? "SSL_AUTHENTICATION_FAILED" : "NETWORK_EXCEPTION"
    case "KafkaJSConnectionClosedError":
    case "KafkaJSBrokerNotFound":
    case "KafkaJSNoBrokerAvailableError":
      return "NETWORK_EXCEPTION"
    case "KafkaJSRequestTimeoutError":
    case "KafkaJSTimeout":
    case "KafkaJSLockTimeout":
      return "REQUEST_TIMED_OUT"
    case "KafkaJSGroupCoordinatorNotFound":
      return "COORDINATOR_NOT_AVAILABLE"
    case "KafkaJSMetadataNotLoaded":
    case "KafkaJSTopicMetadataNotLoaded":
      return "LEADER_NOT_AVAILABLE"
    case "KafkaJSSASLAuthenticationError":
      return "SASL_AUTHENTICATION_FAILED"
    case "KafkaJSServerDoesNotSupportApiKey":
      return "UNSUPPORTED_VERSION"
    case "KafkaJSNotImplemented":
      return /compression/i.test(String(shape.message))
        ? "UNSUPPORTED_COMPRESSION_TYPE"
        : "UNKNOWN_SERVER_ERROR"
  }
  return "UNKNOWN_SERVER_ERROR"
}

export const detailOf = (error: unknown): string => {
  const message = shapeOf(error).message
  const text = typeof message === "string" && message !== "" ? message : String(error)
  return text.replace(/\.$/, "")
}

/**
 * Turns whatever kafkajs threw into a `TransportError`: `what` says what was being done, e.g.
 * `Cannot send 3 records to "orders"`.
 */
export const fromKafkaJS = (operation: string, what: string) => (error: unknown): TransportError.TransportError => {
  if (error instanceof TransportError.TransportError) return error
  const root = rootOf(error)
  const code = codeOf(root)
  const outer = shapeOf(error)
  const retries = outer.name === "KafkaJSNumberOfRetriesExceeded" && typeof outer.retryCount === "number"
    ? `, gave up after ${outer.retryCount} ${outer.retryCount === 1 ? "retry" : "retries"}`
    : ""
  return TransportError.make(code, operation, `${what}: ${detailOf(root)} (${code}${retries})${hintOf(code, root)}`, error)
}

/** What to do, for the conditions a caller cannot act on from the broker's words alone. */
const hintOf = (code: TransportError.KafkaErrorName, root: unknown): string => {
  switch (code) {
    case "SASL_AUTHENTICATION_FAILED":
      return ": check the SASL mechanism, username and password (KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
    case "SSL_AUTHENTICATION_FAILED":
      return `: ${certificateHint(shapeOf(root).code)}`
    default:
      return ""
  }
}

/** (Not `{ ...error }`: an error's `message` is not an own enumerable property, a spread drops it.) */
export const nonRetriable = (error: TransportError.TransportError): TransportError.TransportError =>
  error.retriable
    ? new TransportError.TransportError({
      code: error.code,
      retriable: false,
      message: error.message,
      operation: error.operation,
      topic: error.topic,
      partition: error.partition,
      ...(error.cause === undefined ? {} : { cause: error.cause }),
    })
    : error

/** A kafkajs promise as an Effect, its rejection mapped to a `TransportError`. */
export const attempt = <A>(operation: string, what: string, evaluate: () => Promise<A>) =>
  Effect.tryPromise({ try: evaluate, catch: fromKafkaJS(operation, what) })

/** A synchronous kafkajs call (pause, resume, seek) as an Effect. */
export const attemptSync = <A>(operation: string, what: string, evaluate: () => A) =>
  Effect.try({ try: evaluate, catch: fromKafkaJS(operation, what) })

/** Thrown by our partitioner; `retriable: false` keeps kafkajs from retrying what cannot change. */
export class PartitionNotFound extends Error {
  readonly type = "UNKNOWN_TOPIC_OR_PARTITION"
  readonly retriable = false
}

// ---------------------------------------------------------------------------------------------
// Bytes and headers

export const encoder = new TextEncoder()

/** A view, not a copy: kafkajs encodes it before the send completes. */
export const toBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)


/**
 * A view with Uint8Array's own prototype over kafkajs' bytes, not a copy: a copy per key and
 * value cost more than the rest of the hand-off together. The view keeps the fetch response it
 * came from alive while the record is, which a mailbox bounds; `slice()` it to keep it longer.
 * (Not the Buffer itself: a Buffer's `slice` is a view, where a Uint8Array's is a copy.)
 */
export const viewOf = (value: Buffer): Uint8Array => new Uint8Array(value.buffer, value.byteOffset, value.byteLength)

/** Header values: views as well (kafkajs may hand a string, which is encoded). */
export const toBytes = (value: Buffer | string): Uint8Array => typeof value === "string" ? encoder.encode(value) : viewOf(value)

/** Repeated keys become arrays; different keys keep their first-appearance order. */
export const toHeaders = (headers: ReadonlyArray<Header> | undefined): IHeaders | undefined => {
  if (headers === undefined || headers.length === 0) return undefined
  // No prototype: a header named `__proto__` is a header like any other.
  const result: Record<string, Buffer | Array<Buffer>> = Object.create(null)
  for (const { key, value } of headers) {
    const bytes = toBuffer(value ?? new Uint8Array(0))
    const existing = result[key]
    result[key] = existing === undefined
      ? bytes
      : Array.isArray(existing)
      ? [...existing, bytes]
      : [existing, bytes]
  }
  return result
}

export const noHeaders: ReadonlyArray<Header> = Object.freeze([])

export const fromHeaders = (headers: IHeaders | undefined): ReadonlyArray<Header> => {
  if (headers === undefined) return noHeaders
  let result: Array<Header> | undefined
  for (const key in headers) {
    result ??= []
    const value = headers[key]
    for (const one of Array.isArray(value) ? value : [value]) {
      result.push({ key, value: one === undefined || one === null ? null : toBytes(one) })
    }
  }
  return result ?? noHeaders
}

export const toConsumerRecord = (topic: string, partition: number) => (message: KafkaMessage): ConsumerRecord => ({
  topic,
  partition,
  offset: Number(message.offset),
  key: message.key === null ? null : viewOf(message.key),
  value: message.value === null ? null : viewOf(message.value),
  headers: fromHeaders(message.headers),
  timestamp: Number(message.timestamp),
})

export const keyOf = (tp: TopicPartition): string => `${tp.topic}/${tp.partition}`

/** kafkajs' `[{ topic, partitions }]` shape, topics in first-appearance order. */
export const byTopic = (
  partitions: ReadonlyArray<TopicPartition>,
): Array<{ topic: string; partitions: Array<number> }> => {
  const grouped = new Map<string, Array<number>>()
  for (const { topic, partition } of partitions) {
    grouped.set(topic, [...(grouped.get(topic) ?? []), partition])
  }
  return [...grouped].map(([topic, partitions]) => ({ topic, partitions }))
}

// ---------------------------------------------------------------------------------------------
// Logging

export const kafkaLogLevels = {
  nothing: KafkaLogLevel.NOTHING,
  error: KafkaLogLevel.ERROR,
  warn: KafkaLogLevel.WARN,
  info: KafkaLogLevel.INFO,
  debug: KafkaLogLevel.DEBUG,
} as const

/**
 * kafkajs lines that repeat what the caller learns anyway, as a `TransportError`, a `GroupEvent`
 * or another kafkajs line: a failed connection is reported by whoever was connecting (the seed
 * broker retry below, a consumer's crash, a request's final error), so the socket's own line is
 * an echo.
 */
export const isEcho = ({ namespace, log }: LogEntry): boolean =>
  (namespace === "Connection" && (log.message.startsWith("Response ") || log.message.startsWith("Connection "))) ||
  (namespace === "Producer" &&
    (log["retryCount"] !== undefined || log.message.startsWith("Limiting retries"))) ||
  (namespace === "Runner" && log.message.startsWith("The group is rebalancing"))

/** A seed broker kafkajs could not reach, and will try again: a condition to watch, not yet an error. */
const isSeedRetry = ({ namespace, log }: LogEntry): boolean =>
  namespace === "BrokerPool" && log.message.startsWith("Failed to connect to seed broker")

export const severityOf = (entry: LogEntry): LogLevel.Severity => {
  switch (entry.level) {
    case KafkaLogLevel.ERROR:
      return isEcho(entry) ? "Debug" : isSeedRetry(entry) ? "Warn" : "Error"
    case KafkaLogLevel.WARN:
      return isEcho(entry) ? "Debug" : "Warn"
    case KafkaLogLevel.INFO:
      return "Debug"
    default:
      return "Trace"
  }
}

/** A field's value as it reads on a log line: text as it is, anything else as JSON. */
const fieldText = (value: unknown): string => {
  if (typeof value === "string") return value
  if (typeof value === "number" || typeof value === "boolean" || value === null || value === undefined) return String(value)
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * One kafkajs log entry as one line: kafkajs' message, reworded where it misleads, with its
 * fields inline (`broker=…, retryCount=…`) rather than as annotations, which console loggers
 * print as a block of lines. Stacks are left out: they locate kafkajs' code, not the problem.
 */
export const lineOf = (entry: LogEntry): string => {
  const { timestamp: _timestamp, logger: _logger, message, stack: _stack, ...fields } = entry.log
  let text = message
  if (isSeedRetry(entry)) {
    // kafkajs says "trying another broker from the list" even when the list has one broker.
    const reason = message.replace(/^Failed to connect to seed broker, trying another broker from the list: /, "")
    // It logs before deciding whether to retry, so the line names the attempt, not a next one.
    const { retryCount, retryTime: _retryTime, ...rest } = fields
    text = typeof retryCount === "number"
      ? `Cannot connect to a seed broker (attempt ${retryCount + 1}): ${reason}`
      : `Cannot connect to a seed broker: ${reason}`
    return oneLine(`kafkajs ${entry.namespace}: ${text}`, rest)
  }
  return oneLine(`kafkajs ${entry.namespace}: ${text}`, fields)
}

const oneLine = (text: string, fields: Readonly<Record<string, unknown>>): string => {
  const pairs = Object.entries(fields).filter(([, value]) => value !== undefined)
  const line = pairs.length === 0 ? text : `${text} (${pairs.map(([key, value]) => `${key}=${fieldText(value)}`).join(", ")})`
  return line.replace(/\s*[\r\n]+\s*/g, " ")
}

/**
 * A kafkajs `logCreator` writing to Effect's logger, one line per entry (see `lineOf`). kafkajs
 * logs outside any fiber, so each line runs on the context captured when the layer was built.
 */
export const logCreatorFor = (context: Context.Context<never>, minimum: LogLevel.LogLevel) => {
  const run = Effect.runForkWith(context)
  return () => (entry: LogEntry): void => {
    const severity = severityOf(entry)
    if (LogLevel.isLessThan(severity, minimum)) return
    run(Effect.logWithLevel(severity)(lineOf(entry)))
  }
}

/** What a transport's parts share: its clients, options and their defaults. */
export interface Environment {
  /** The layer's client, or a new one for `clientId` whose JoinGroup requests pass `gate`. */
  readonly kafka: (clientId?: string, gate?: JoinGate) => KafkaClient
  readonly admin: ReturnType<KafkaClient["admin"]>
  /** The admin's calls: every admin request goes through them, for its disconnect (see `Calls`). */
  readonly adminCalls: Calls
  readonly options: Options
  readonly defaults: typeof defaults
  readonly requestTimeout: number
}

/**
 * The calls of one kafkajs client still running. kafkajs cannot recall a call: one whose Effect
 * was interrupted (a timeout, a closing scope) goes on in the background, retries included, and
 * if it goes on past its client's `disconnect`, its next request connects again, on a socket
 * nobody would close (it holds a Node process until the broker drops it,
 * `connections.max.idle.ms`, 10 minutes by default). {@link disconnect} closes those too.
 */
export class Calls {
  readonly #running = new Set<Promise<unknown>>()

  /** {@link attempt}, counted as running until kafkajs' promise settles, interrupted or not. */
  attempt<A>(operation: string, what: string, evaluate: () => Promise<A>) {
    return attempt(operation, what, () => {
      const call = evaluate()
      this.#running.add(call)
      const ended = () => void this.#running.delete(call)
      call.then(ended, ended)
      return call
    })
  }

  /** Whether no call is running. */
  get idle(): boolean {
    return this.#running.size === 0
  }

  /** Completes once no call is running (calls started meanwhile included), or after `within`. */
  settled(within: Duration.Input): Effect.Effect<void> {
    const running = this.#running
    return Effect.suspend(function wait(): Effect.Effect<void> {
      if (running.size === 0) return Effect.void
      return Effect.andThen(Effect.promise(() => Promise.allSettled([...running])), Effect.suspend(wait))
    }).pipe(Effect.timeoutOption(within), Effect.asVoid)
  }
}

const disconnectOnce = (client: { readonly disconnect: () => Promise<void> }, what: string) =>
  attempt("disconnect", `Cannot disconnect the ${what}`, () => client.disconnect()).pipe(
    Effect.catch((error) => Effect.logWarning(error.message)),
  )

/**
 * Disconnects a kafkajs client, logging (not failing) when it cannot. Calls of it still running
 * are not waited for (a shutdown stays within its deadline, however long kafkajs retries): the
 * client is disconnected again once they have ended (or after `within`), in the background,
 * closing what they connected meanwhile.
 */
export const disconnect = (
  client: { readonly disconnect: () => Promise<void> },
  what: string,
  calls: Calls,
  within: Duration.Input,
) =>
  Effect.andThen(
    disconnectOnce(client, what),
    Effect.suspend(() =>
      calls.idle ? Effect.void : Effect.asVoid(Effect.forkDetach(Effect.andThen(calls.settled(within), disconnectOnce(client, what))))
    ),
  )
