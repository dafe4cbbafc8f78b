/**
 * The producer: typed records in, acknowledged metadata out, batched on the way.
 *
 * `Producer` is a service that batches every record sent through it into as few transport
 * calls as it can: while one batch is in flight, the next one gathers (up to a record and a byte
 * limit, optionally lingering a little), so under load records go out in large requests and at
 * rest a single record goes out at once. kafkajs sends one request per `send` call, so this is
 * where throughput is won. One batch is in flight at a time, which keeps every partition's
 * records in the order they were sent.
 *
 * `Producer.forTopic` gives a typed handle for one topic: its key and value go through a
 * `Codec` (an Effect Schema as JSON by default), and a value the schema rejects fails with an
 * `EncodeError` before anything is sent.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { MemoryTransport, Producer } from "partita"
 *
 * const Greeting = Schema.Struct({ to: Schema.String, text: Schema.String })
 * const greetings = Producer.forTopic({ topic: "greetings", key: Schema.String, value: Greeting })
 *
 * const program = greetings.send({ to: "emma", text: "hi" }, { key: "emma" }).pipe(
 *   Effect.provide(Producer.layer()),
 *   Effect.provide(MemoryTransport.layer({ topics: [{ topic: "greetings", partitions: 3 }] })),
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Context, Data, Deferred, Duration, Effect, Exit, Layer, Queue, Schema } from "effect"
import * as Codec from "./Codec.ts"
import * as Tracing from "./Tracing.ts"
import { type Acks, type Header, type ProducerRecord, type RecordMetadata, Transport } from "./Transport.ts"
import type { TransportError } from "./TransportError.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a batch waits for more records once the first arrived. Default 0: no waiting. */
  readonly linger?: Duration.Input | undefined
  /** The most records in one transport call. Default 1000. */
  readonly maxBatchRecords?: number | undefined
  /** The most key, value and header bytes in one transport call. Default 1 MiB. */
  readonly maxBatchBytes?: number | undefined
  /** Default `all`. */
  readonly acks?: Acks | undefined
}

/**
 * The defaults of {@link Options}.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  linger: Duration.zero,
  maxBatchRecords: 1000,
  maxBatchBytes: 1_048_576,
  acks: "all" as Acks,
}

/**
 * The batching producer service.
 *
 * @since 0.1.0
 * @category services
 */
export class Producer extends Context.Service<Producer, {
  /** Sends one record with the next batch; succeeds once the batch is acknowledged. */
  readonly send: (record: ProducerRecord) => Effect.Effect<RecordMetadata, TransportError>
  /** Sends records with the next batch, in order; succeeds once all are acknowledged. */
  readonly sendAll: (records: ReadonlyArray<ProducerRecord>) => Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError>
  /** Completes once every record handed over before it has been acknowledged or has failed. */
  readonly flush: Effect.Effect<void>
}>()("partita/Producer") {}

type Entry =
  | { readonly _tag: "Record"; readonly record: ProducerRecord; readonly size: number; readonly done: Deferred.Deferred<RecordMetadata, TransportError> }
  | { readonly _tag: "Barrier"; readonly done: Deferred.Deferred<void> }

const sizeOf = (record: ProducerRecord): number => {
  let size = (record.key?.length ?? 0) + (record.value?.length ?? 0)
  if (record.headers !== undefined) {
    for (const header of record.headers) size += header.key.length + (header.value?.length ?? 0)
  }
  return size
}

/**
 * Builds a producer in the current scope. Closing the scope sends what is pending first.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const transport = yield* Transport
  const linger = Duration.fromInputUnsafe(options.linger ?? defaults.linger)
  const maxRecords = Math.max(1, options.maxBatchRecords ?? defaults.maxBatchRecords)
  const maxBytes = options.maxBatchBytes ?? defaults.maxBatchBytes
  const acks = options.acks ?? defaults.acks
  const queue = yield* Queue.unbounded<Entry>()

  const sendBatch = (batch: ReadonlyArray<Entry & { readonly _tag: "Record" }>) =>
    Effect.map(Effect.exit(transport.send(batch.map((entry) => entry.record), { acks })), (exit) => {
      if (Exit.isSuccess(exit)) batch.forEach((entry, index) => Deferred.doneUnsafe(entry.done, Exit.succeed(exit.value[index]!)))
      else for (const entry of batch) Deferred.doneUnsafe(entry.done, Exit.failCause(exit.cause))
    })

  /** Sends the entries in order, cutting at byte limits and at barriers. */
  const drain = (entries: ReadonlyArray<Entry>) =>
    Effect.gen(function*() {
      let batch: Array<Entry & { readonly _tag: "Record" }> = []
      let bytes = 0
      for (const entry of entries) {
        if (entry._tag === "Barrier") {
          if (batch.length > 0) yield* sendBatch(batch)
          batch = []
          bytes = 0
          Deferred.doneUnsafe(entry.done, Exit.void)
          continue
        }
        if (batch.length > 0 && bytes + entry.size > maxBytes) {
          yield* sendBatch(batch)
          batch = []
          bytes = 0
        }
        batch.push(entry)
        bytes += entry.size
      }
      if (batch.length > 0) yield* sendBatch(batch)
    })

  const worker = Effect.gen(function*() {
    const first = yield* Queue.takeBetween(queue, 1, maxRecords)
    // A flush (barrier) sends at once: lingering would only delay what the caller waits for.
    if (Duration.isZero(linger) || first.length >= maxRecords || first.some((entry) => entry._tag === "Barrier")) {
      return yield* drain(first)
    }
    yield* Effect.sleep(linger)
    // takeBetween with a minimum of 0 takes nothing, so only ask when something is there.
    const more = Queue.sizeUnsafe(queue) > 0 ? yield* Queue.takeBetween(queue, 1, maxRecords - first.length) : []
    yield* drain([...first, ...more])
  }).pipe(Effect.forever)

  const enqueue = (record: ProducerRecord) => {
    const done = Deferred.makeUnsafe<RecordMetadata, TransportError>()
    Queue.offerUnsafe(queue, { _tag: "Record", record, size: sizeOf(record), done })
    return done
  }

  const flush = Effect.suspend(() => {
    const done = Deferred.makeUnsafe<void>()
    Queue.offerUnsafe(queue, { _tag: "Barrier", done })
    return Deferred.await(done)
  })

  yield* Effect.forkScoped(worker)
  // Runs before the worker is interrupted (finalizers run in reverse), so nothing accepted is dropped.
  yield* Effect.addFinalizer(() => flush)

  const sendAll = (records: ReadonlyArray<ProducerRecord>) =>
    Effect.suspend(() => {
      const pending = records.map(enqueue)
      return Effect.forEach(pending, Deferred.await)
    })

  return Producer.of({
    send: (record) =>
      Effect.flatMap(Tracing.Settings, (settings) =>
        settings.enabled && settings.producerSpans
          ? Effect.map(traceSend([record], transport.telemetry, settings.propagator, sendAll), (metadata) => metadata[0]!)
          : Effect.suspend(() => Deferred.await(enqueue(record)))),
    sendAll: (records) =>
      Effect.flatMap(Tracing.Settings, (settings) =>
        settings.enabled && settings.producerSpans && records.length > 0
          ? traceSend(records, transport.telemetry, settings.propagator, sendAll)
          : sendAll(records)),
    flush,
  })
})

const keyText = new TextDecoder()

/**
 * A `send {topic}` span (PRODUCER) around a send, its context written into each record's
 * headers (unless one is there already), as the OpenTelemetry messaging conventions describe.
 */
const traceSend = <E>(
  records: ReadonlyArray<ProducerRecord>,
  telemetry: Readonly<Record<string, string | number>>,
  propagator: Tracing.Propagator,
  send: (records: ReadonlyArray<ProducerRecord>) => Effect.Effect<ReadonlyArray<RecordMetadata>, E>,
) => {
  const topic = records[0]!.topic
  const single = records.length === 1 ? records[0] : undefined
  const attributes: Record<string, unknown> = {
    ...telemetry,
    "messaging.system": "kafka",
    "messaging.operation.name": "send",
    "messaging.operation.type": "send",
    "messaging.destination.name": topic,
  }
  if (single !== undefined) {
    if (single.key !== null) attributes["messaging.kafka.message.key"] = keyText.decode(single.key)
    if (single.value === null) attributes["messaging.kafka.message.tombstone"] = true
    if (single.partition !== undefined) attributes["messaging.destination.partition.id"] = String(single.partition)
  } else {
    attributes["messaging.batch.message_count"] = records.length
  }
  return Effect.useSpan(`send ${topic}`, { kind: "producer", attributes }, (span) =>
    send(records.map((record) => ({ ...record, headers: propagator.inject(record.headers, span) }))).pipe(
      Effect.tap((metadata) =>
        Effect.sync(() => {
          if (single !== undefined && metadata[0] !== undefined) {
            span.attribute("messaging.destination.partition.id", String(metadata[0].partition))
            span.attribute("messaging.kafka.offset", metadata[0].offset)
          }
        })
      ),
      Effect.tapError((error) =>
        Effect.sync(() =>
          span.attribute("error.type", (error as { readonly code?: string; readonly _tag?: string }).code ?? (error as { readonly _tag?: string })._tag ?? "_OTHER")
        )
      ),
    ))
}

/**
 * The producer as a layer over the current `Transport`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Producer, never, Transport> =>
  Layer.effect(Producer, make(options))

/**
 * A key or value the codec rejected; nothing was sent.
 *
 * @since 0.1.0
 * @category errors
 */
export class EncodeError extends Data.TaggedError("EncodeError")<{
  readonly topic: string
  readonly part: "key" | "value"
  readonly cause: Codec.CodecError
}> {
  override get message(): string {
    return `Cannot encode the ${this.part} of a record for "${this.topic}": ${this.cause.message}`
  }
}

/**
 * A codec, or a schema to use as JSON.
 *
 * @since 0.1.0
 * @category models
 */
export type CodecOrSchema<A> = Codec.Codec<A> | Schema.Codec<A, any>

/** Accepts a schema where a codec is expected (see `Codec.fromSchema`). */
export const toCodec = <A>(codec: CodecOrSchema<A>): Codec.Codec<A> =>
  Schema.isSchema(codec) ? Codec.fromSchema(codec as Schema.Codec<A, unknown>) : codec

/**
 * @since 0.1.0
 * @category models
 */
export interface SendOptions<K> {
  readonly key?: K | undefined
  readonly headers?: ReadonlyArray<Header> | undefined
  readonly partition?: number | undefined
  readonly timestamp?: number | undefined
}

/**
 * A typed producer for one topic.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopicProducer<K, V> {
  readonly topic: string
  /** Encodes and sends one record; succeeds with its metadata once acknowledged. */
  readonly send: (value: V, options?: SendOptions<K>) => Effect.Effect<RecordMetadata, EncodeError | TransportError, Producer>
}

/**
 * A typed producer for `topic`. Without a key codec, keys are absent (`null`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const forTopic = <V, K = never>(options: {
  readonly topic: string
  readonly value: CodecOrSchema<V>
  readonly key?: CodecOrSchema<K> | undefined
}): TopicProducer<K, V> => {
  const { topic } = options
  const value = toCodec(options.value)
  const key = options.key === undefined ? undefined : toCodec(options.key)
  const encode = <A>(codec: Codec.Codec<A>, part: "key" | "value", input: A) =>
    Effect.mapError(codec.encode(input), (cause) => new EncodeError({ topic, part, cause }))
  return {
    topic,
    send: (input, sendOptions) =>
      Effect.gen(function*() {
        const producer = yield* Producer
        const encodedValue = yield* encode(value, "value", input)
        const encodedKey = key === undefined || sendOptions?.key === undefined
          ? null
          : yield* encode(key, "key", sendOptions.key)
        return yield* producer.send({
          topic,
          key: encodedKey,
          value: encodedValue,
          headers: sendOptions?.headers,
          partition: sendOptions?.partition,
          timestamp: sendOptions?.timestamp,
        })
      }),
  }
}
