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
 * Each record's result is its own: a batch goes out with `Transport.sendEach`, and a record too
 * large or invalid for the broker fails alone while the records sent with it are written once.
 * Kafka refuses a partition's whole record batch for one such record; nothing of it was
 * written, so the producer sends the refused records again in halves until the one at fault is
 * alone (see `sendBatch` below).
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
import { errorOf } from "./internal/sendOutcomes.ts"
import { refusesBatch, type TransportError } from "./TransportError.ts"

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
  /** Sends one record with the next batch; succeeds once it is acknowledged, fails with its own error. */
  readonly send: (record: ProducerRecord) => Effect.Effect<RecordMetadata, TransportError>
  /**
   * Sends records with the next batch, in order; succeeds once all are acknowledged, fails with
   * the first one's error that failed (the others may have been written).
   */
  readonly sendAll: (records: ReadonlyArray<ProducerRecord>) => Effect.Effect<ReadonlyArray<RecordMetadata>, TransportError>
  /** Completes once every record handed over before it has been acknowledged or has failed. */
  readonly flush: Effect.Effect<void>
}>()("partita/Producer") {}

type RecordEntry = {
  readonly _tag: "Record"
  readonly record: ProducerRecord
  readonly size: number
  readonly done: Deferred.Deferred<RecordMetadata, TransportError>
}

type Entry = RecordEntry | { readonly _tag: "Barrier"; readonly done: Deferred.Deferred<void> }

/** A record of a batch its partition refused, with that outcome. */
interface Refused {
  readonly entry: RecordEntry
  readonly outcome: Exit.Exit<RecordMetadata, TransportError>
  readonly partition: number
}

const halves = <A>(items: ReadonlyArray<A>): Array<ReadonlyArray<A>> => {
  const middle = Math.ceil(items.length / 2)
  return [items.slice(0, middle), items.slice(middle)]
}

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

  /**
   * Sends a batch and completes each record with its own outcome. A partition's records in one
   * transport call are one Kafka record batch, refused whole when one record is at fault (too
   * large, invalid): those records were not written, so they go again, in halves, until the
   * record at fault is alone (and fails alone) and the rest are written. Halving also gets a
   * batch that is too large only as a whole written, as Kafka's Java producer splits one. A
   * partition's pieces go one after another, so its records keep their order; pieces of
   * different partitions share transport calls.
   */
  const sendBatch = (batch: ReadonlyArray<RecordEntry>) =>
    Effect.flatMap(transport.sendEach(batch.map((entry) => entry.record), { acks }), (outcomes) => {
      let refused: Array<Refused> | undefined
      for (let index = 0; index < batch.length; index++) {
        const outcome = outcomes[index]!
        if (outcome._tag === "Failure" && batch.length > 1) {
          const error = errorOf(outcome)
          if (error !== undefined && error.partition !== undefined && refusesBatch(error)) {
            ;(refused ??= []).push({ entry: batch[index]!, outcome, partition: error.partition })
            continue
          }
        }
        Deferred.doneUnsafe(batch[index]!.done, outcome)
      }
      return refused === undefined ? Effect.void : isolate(refused)
    })

  const isolate = (refused: ReadonlyArray<Refused>) =>
    Effect.gen(function*() {
      // Per partition, the pieces still to send, first piece first.
      const groups = new Map<string, Array<Refused>>()
      for (const item of refused) {
        const key = `${item.entry.record.topic}/${item.partition}`
        const group = groups.get(key)
        if (group === undefined) groups.set(key, [item])
        else group.push(item)
      }
      const queues = new Map<string, Array<ReadonlyArray<Refused>>>()
      for (const [key, group] of groups) {
        if (group.length > 1) queues.set(key, halves(group))
        else Deferred.doneUnsafe(group[0]!.entry.done, group[0]!.outcome)
      }
      while (queues.size > 0) {
        const pieces = [...queues.values()].map((queue) => queue[0]!)
        const items = pieces.flat()
        // Pinned to the partition that refused them: a keyless record must not move on.
        const records = items.map(({ entry, partition }) =>
          entry.record.partition === partition ? entry.record : { ...entry.record, partition }
        )
        const outcomes = yield* transport.sendEach(records, { acks })
        let position = 0
        for (const [key, queue] of queues) {
          const piece = queue.shift()!
          const again: Array<Refused> = []
          for (const item of piece) {
            const outcome = outcomes[position++]!
            const error = outcome._tag === "Failure" ? errorOf(outcome) : undefined
            if (error !== undefined && piece.length > 1 && error.partition === item.partition && refusesBatch(error)) {
              again.push({ ...item, outcome })
            } else {
              Deferred.doneUnsafe(item.entry.done, outcome)
            }
          }
          if (again.length > 1) queue.unshift(...halves(again))
          else if (again.length === 1) queue.unshift(again)
          if (queue.length === 0) queues.delete(key)
        }
      }
    })

  /** Sends the entries in order, cutting at byte limits and at barriers. */
  const drain = (entries: ReadonlyArray<Entry>) =>
    Effect.gen(function*() {
      let batch: Array<RecordEntry> = []
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
