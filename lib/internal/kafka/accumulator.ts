/**
 * The producer's record accumulator: records waiting to be sent, gathered per partition into
 * record batches, and the rules that say when a partition's first batch is ready to go. Plain
 * synchronous state, driven by the producer's sender fiber (`producer.ts`), which passes the
 * time in from Effect's `Clock`, so `TestClock` drives linger and delivery timeouts.
 *
 * The model is Kafka's Java `RecordAccumulator`: a batch closes when it holds `maxRecords`
 * records or `maxBytes` bytes (a record larger than that goes alone in its own batch, for the
 * broker to refuse or accept); a partition is ready when its first batch is closed, has lingered
 * `linger`, or the producer flushes; once one partition makes a broker ready, every partition
 * that broker leads gives its first batch to the same request, lingered or not.
 *
 * One batch per partition is in flight at a time (Java allows five with idempotence, at the
 * price of its sequence-adjusting machinery): a partition's batches are then written in order
 * whatever is retried, a retried batch keeps its sequence numbers, and a batch the broker
 * refused gives its sequence numbers back (nothing after it has any yet). While a batch is in
 * flight the next one gathers, so under load batches grow to fill the round trip.
 */
import type { Exit } from "effect"
import type { Acks, Header, RecordMetadata } from "../../Transport.ts"
import type { TransportError } from "../../TransportError.ts"
import type { Compression } from "./compression.ts"
import { BatchBuilder, type RecordInput } from "./recordBatch.ts"

/** Bytes of a record batch v2 header, before its first record. */
export const batchOverhead = 61

/** The encoded size of one record, close enough to cut batches on (varints at their widest). */
export const recordSize = (key: Uint8Array | null, value: Uint8Array | null, headers: ReadonlyArray<Header> | undefined): number => {
  let size = 21 + (key?.length ?? 0) + (value?.length ?? 0)
  if (headers !== undefined) {
    for (const header of headers) size += 10 + header.key.length * 3 + (header.value?.length ?? 0)
  }
  return size
}

/** One record's outcome, handed to whoever waits for it. */
export type Complete = (exit: Exit.Exit<RecordMetadata, TransportError>) => void

/**
 * A record batch on its way: its records, encoded into the batch's bytes as they are appended
 * (`BatchBuilder`), then, once first drained, the producer id, epoch and sequence it goes out
 * with, kept for every retry.
 */
export class Batch {
  /** The records, encoded in order. */
  readonly builder: BatchBuilder
  /** Each record's timestamp, for its result. */
  readonly timestamps: Array<number> = []
  readonly completes: Array<Complete> = []
  bytes = batchOverhead
  closed = false
  /** -1 until drained, or for a producer without idempotence. */
  baseSequence = -1
  producerId = -1
  producerEpoch = -1
  /** The encoded batch, kept while its sequence stands. */
  encoded: Uint8Array | undefined = undefined
  attempts = 0
  /** Not before this time (ms) again: the retry backoff. */
  retryAt = 0
  /**
   * A request carrying it ended with no answer (a lost connection, a timeout): the broker may
   * have written it, so only the same producer id, epoch and sequence may carry it again.
   */
  uncertain = false
  lastError: TransportError | undefined = undefined
  /** Its records have their outcomes; a late answer finds nothing to do. */
  done = false

  readonly queue: PartitionQueue
  readonly createdAt: number
  /** When its records fail with a timeout instead of being retried (delivery timeout). */
  readonly deadline: number

  constructor(queue: PartitionQueue, createdAt: number, deadline: number, capacity: number, compression: Compression, buffer?: Uint8Array) {
    this.queue = queue
    this.createdAt = createdAt
    this.deadline = deadline
    this.builder = new BatchBuilder(capacity, compression, buffer)
  }

  get count(): number {
    return this.builder.count
  }

  /** Drops the sequence it was given (after the producer's epoch changed, or it was refused). */
  forgetSequence(): void {
    this.baseSequence = -1
    this.producerId = -1
    this.producerEpoch = -1
    this.encoded = undefined
  }
}

/** One partition's batches for one `acks` setting (a Produce request carries one `acks`). */
export class PartitionQueue {
  readonly batches: Array<Batch> = []
  inFlight: Batch | undefined = undefined
  /** The broker leading the partition, once known; `undefined` sends the sender to look it up. */
  leader: number | undefined = undefined
  lookingUp = false
  /** The sequence number of the next record drained with idempotence. */
  nextSequence = 0
  /** The encoded size of its last closed batch: the next one's first buffer (few regrow under steady load). */
  lastBatchBytes = 0

  readonly topic: string
  readonly partition: number
  readonly acks: Acks

  constructor(topic: string, partition: number, acks: Acks) {
    this.topic = topic
    this.partition = partition
    this.acks = acks
  }
}

/** Batching limits, as the producer's options give them. */
export interface Limits {
  readonly maxRecords: number
  readonly maxBytes: number
  readonly lingerMs: number
  readonly deliveryTimeoutMs: number
  /** The codec batches are built for. Default `none`. */
  readonly compression?: Compression | undefined
}

/** A new batch's first buffer: room for a little more than the partition's last batch took. */
const firstCapacity = (queue: PartitionQueue, maxBytes: number): number =>
  Math.min(Math.max(4096, queue.lastBatchBytes + (queue.lastBatchBytes >>> 3) + 1024), maxBytes + 1024)

/** Spare buffers kept at most (a few per partition sending under load). */
const maxSpare = 8

/** Kafka's sequence numbers are int32 and wrap to 0 (as Java's `DefaultRecordBatch.incrementSequence`). */
export const addSequence = (sequence: number, count: number): number => {
  const next = sequence + count
  return next > 0x7fffffff ? next - 0x80000000 : next
}

/** The records waiting, by partition. */
export class Accumulator {
  readonly queues = new Map<string, PartitionQueue>()
  /** Records appended and not yet completed. */
  pending = 0

  readonly limits: Limits

  constructor(limits: Limits) {
    this.limits = limits
  }

  /**
   * The buffers of batches the broker has answered for, which new batches take instead of
   * allocating: under load every round trip would otherwise allocate (and zero, and later
   * collect) about a Produce request's size in fresh buffers, and external memory that grows
   * that fast makes V8 collect garbage more often.
   */
  readonly #spare: Array<Uint8Array> = []

  /**
   * Gives a batch's buffer to later batches. Only for a batch the broker answered: its request
   * has been written in full, so nothing reads its bytes any more (after a lost connection a
   * write may still be queued on the closing socket, and an `acks: "none"` batch's answer is the
   * write itself). The batch's encoded bytes are gone with it.
   */
  recycle(batch: Batch): void {
    batch.encoded = undefined
    const buffer = batch.builder.release()
    if (this.#spare.length < maxSpare && buffer.length > 0) this.#spare.push(buffer)
  }

  /** A spare buffer with room for a batch like the partition's last one (`firstCapacity` less its headroom). */
  #spareFor(queue: PartitionQueue): Uint8Array | undefined {
    const needed = Math.max(4096, queue.lastBatchBytes + 1024)
    for (let i = 0; i < this.#spare.length; i++) {
      const buffer = this.#spare[i]!
      if (buffer.length >= needed) {
        this.#spare[i] = this.#spare[this.#spare.length - 1]!
        this.#spare.pop()
        return buffer
      }
    }
    return undefined
  }

  /** Per `acks`, per topic, the queues by partition: no key string built per record. */
  readonly #byTopic: Record<Acks, Map<string, Array<PartitionQueue | undefined>>> = {
    all: new Map(),
    leader: new Map(),
    none: new Map(),
  }

  queue(topic: string, partition: number, acks: Acks): PartitionQueue {
    let partitions = this.#byTopic[acks].get(topic)
    if (partitions === undefined) this.#byTopic[acks].set(topic, partitions = [])
    let queue = partitions[partition]
    if (queue === undefined) {
      queue = new PartitionQueue(topic, partition, acks)
      partitions[partition] = queue
      this.queues.set(`${acks}\u0000${partition}\u0000${topic}`, queue)
    }
    return queue
  }

  /** Adds a record to its partition's last open batch, opening one when it is full. */
  append(queue: PartitionQueue, record: RecordInput, size: number, now: number, complete: Complete): Batch {
    let batch = queue.batches[queue.batches.length - 1]
    if (
      batch === undefined || batch.closed || batch.count >= this.limits.maxRecords ||
      (batch.count > 0 && batch.bytes + size > this.limits.maxBytes)
    ) {
      if (batch !== undefined) this.close(batch)
      batch = new Batch(
        queue,
        now,
        now + this.limits.deliveryTimeoutMs,
        firstCapacity(queue, this.limits.maxBytes),
        this.limits.compression ?? "none",
        this.#spareFor(queue),
      )
      queue.batches.push(batch)
    }
    batch.builder.append(record.key, record.value, record.headers, record.timestamp)
    batch.timestamps.push(record.timestamp)
    batch.completes.push(complete)
    batch.bytes += size
    if (batch.count >= this.limits.maxRecords || batch.bytes >= this.limits.maxBytes) this.close(batch)
    this.pending++
    return batch
  }

  /** Whether the partition's first batch may go out now, on its own account. */
  isReady(queue: PartitionQueue, now: number, flushing: boolean): boolean {
    const head = queue.batches[0]
    if (head === undefined || queue.inFlight !== undefined || head.retryAt > now) return false
    return flushing || head.closed || queue.batches.length > 1 || head.attempts > 0 ||
      now >= head.createdAt + this.limits.lingerMs
  }

  /** Whether the partition's first batch may join a request that goes to its broker anyway. */
  isSendable(queue: PartitionQueue, now: number): boolean {
    const head = queue.batches[0]
    return head !== undefined && queue.inFlight === undefined && head.retryAt <= now
  }

  /** The earliest time something changes on its own: a linger ends, a backoff ends, a batch expires. */
  nextDeadline(now: number): number {
    let next = Number.POSITIVE_INFINITY
    for (const queue of this.queues.values()) {
      const head = queue.batches[0]
      if (head === undefined) continue
      if (queue.inFlight === undefined) {
        const at = head.attempts > 0 ? head.retryAt : Math.max(head.retryAt, head.createdAt + this.limits.lingerMs)
        if (at > now && at < next) next = at
      }
      for (const batch of queue.batches) if (batch.deadline < next) next = batch.deadline
    }
    return next
  }

  /** No more records go into the batch; its size tells the partition's next batch how much room to take. */
  private close(batch: Batch): void {
    if (batch.closed) return
    batch.closed = true
    batch.queue.lastBatchBytes = batch.builder.size
  }

  /** Takes the partition's first batch out to send it; it stays the partition's batch in flight. */
  take(queue: PartitionQueue): Batch {
    const batch = queue.batches.shift()!
    this.close(batch)
    queue.inFlight = batch
    return batch
  }

  /** Puts a batch back at the front of its partition, to be retried after `retryAt`. */
  requeue(batch: Batch, retryAt: number): void {
    const queue = batch.queue
    if (queue.inFlight === batch) queue.inFlight = undefined
    batch.retryAt = retryAt
    queue.batches.unshift(batch)
  }

  /** Completes every record of a batch that is done (written or failed) and lets its partition go on. */
  finish(batch: Batch, outcome: (index: number) => Exit.Exit<RecordMetadata, TransportError>): void {
    if (batch.done) return
    batch.done = true
    const queue = batch.queue
    if (queue.inFlight === batch) queue.inFlight = undefined
    else {
      const at = queue.batches.indexOf(batch)
      if (at >= 0) queue.batches.splice(at, 1)
    }
    this.pending -= batch.count
    for (let i = 0; i < batch.completes.length; i++) batch.completes[i]!(outcome(i))
  }

  /** The batches that waited past their delivery timeout and are not in flight. */
  expired(now: number): Array<Batch> {
    const out: Array<Batch> = []
    for (const queue of this.queues.values()) {
      for (const batch of queue.batches) if (batch.deadline <= now) out.push(batch)
    }
    return out
  }

  /** Whether nothing waits and nothing is in flight. */
  get isEmpty(): boolean {
    return this.pending === 0
  }
}
