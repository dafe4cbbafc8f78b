/**
 * Fetching: one fetch loop per broker, handing out lazily decoded record batches to the
 * partition claims it leads.
 *
 * The model is Java's `AbstractFetch` / `FetchCollector` and franz-go's `source.go`: a broker
 * gets at most one Fetch in flight, covering every assigned, unpaused partition it leads whose
 * claim has room. A claim has room while it holds nothing fetched that its consumer has not
 * pulled: it holds at most one fetched chunk (one partition's `records` bytes of one Fetch
 * response, bounded by `partitionMaxBytes`) ahead of its consumer, so fetching overlaps handling
 * and memory stays bounded by bytes whatever the backlog. The claim gets room again as soon as
 * its consumer pulls the last records of that chunk.
 *
 * Records stay bytes: a chunk is decoded (`decodeRecordBatches`: CRC, decompression, framing)
 * only when its consumer first pulls it, and iterating it hands out `BatchRecord` views whose
 * key, value and headers are read only when asked. The next fetch position is the offset after
 * the chunk's last whole batch, control batches and aborted records included.
 *
 * What happens on each partition error is decided in `onPartitionError`, in one place:
 * OFFSET_OUT_OF_RANGE resets with ListOffsets (earliest or latest, per options), logged once;
 * the errors that say the leader moved or metadata is stale invalidate metadata and re-route
 * (each request carries the leader epoch, as Java's does, so a stale leader refuses rather than
 * answers); other retriable errors retry after a backoff; the rest end that claim's stream with
 * a non-retriable error. A lost connection retries with backoff; claims keep their positions.
 *
 * Each broker's loop keeps a fetch session (KIP-227): after one full request, a request lists
 * only the partitions that are new or changed and those to drop, which is what keeps requests
 * small at 1024 partitions. A claim without room leaves the session until it has room again
 * (as in Java), or the broker would answer its old offset again. A lost session
 * (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH) or a failed request starts a new one.
 *
 * The loop's state is plain mutable objects owned by the loop's scope; every change to it is a
 * synchronous step between Effect yields, so there are no locks.
 *
 * Records are views into the Fetch response they came in: one claim's unpulled chunk keeps that
 * whole response alive (at most `maxBytes`), as the Transport contract allows; copy to keep.
 *
 * Not done yet (gaps, listed so nobody assumes them): no log
 * truncation detection (KIP-320: `lastFetchedEpoch` is not sent, so `divergingEpoch` never
 * comes); no follower fetching (KIP-392); no jitter in the backoff.
 */
import { Cause, Duration, Effect, Result, Scope, Stream } from "effect"
import type { ConsumerRecord, PartitionClaim, TopicPartition } from "../../Transport.ts"
import * as TransportError from "../../TransportError.ts"
import { Signal } from "../signal.ts"
import type { Brokers, Leader, LeaderHint } from "./brokers.ts"
import type { Connection } from "./connection.ts"
import { Fetch, type FetchRequest, type FetchResponse } from "./protocol/Fetch.ts"
import { ListOffsets } from "./protocol/ListOffsets.ts"
import { zeroUuid } from "./protocol/wire.ts"
import {
  type AbortedTransaction,
  type BatchRecord,
  decodeRecordBatches,
  type RecordBatch,
  RecordBatchError,
  type RecordIterator,
} from "./recordBatch.ts"

export type { Leader } from "./brokers.ts"

/**
 * What the fetch loop needs of the connection pool and metadata (brokers.ts offers all of it;
 * `fromBrokers` adapts it). Kept this narrow so the loop is tested on its own.
 */
export interface Routing {
  /** The leader of a partition, refreshing metadata when it is unknown or invalidated. */
  readonly leaderFor: (partition: TopicPartition) => Effect.Effect<Leader, TransportError.TransportError>
  /** The connection to broker `nodeId`, opened on first use and reopened after it closed. */
  readonly connection: (nodeId: number) => Effect.Effect<Connection, TransportError.TransportError>
  /** The topic's id (Fetch v13+ names topics by id); `zeroUuid` when metadata has none. */
  readonly topicId: (topic: string) => Effect.Effect<string, TransportError.TransportError>
  /**
   * Marks what is known about the topic stale: the next `leaderFor` refetches it, unless the
   * hint (KIP-951 `currentLeader` of the error response) names a newer leader.
   */
  readonly invalidate: (topic: string, hint?: LeaderHint) => Effect.Effect<void>
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** `read-committed` (the default) hides records of open and aborted transactions. */
  readonly isolation?: "read-committed" | "read-uncommitted" | undefined
  /** Where a partition whose position is out of range restarts. Default `earliest`. */
  readonly reset?: "earliest" | "latest" | undefined
  /** The most records a claim's stream emits at once. Default 500. */
  readonly maxBatchSize?: number | undefined
  /** How long a broker may hold a Fetch waiting for `minBytes`. Default 500 ms (Java's). */
  readonly maxWait?: Duration.Input | undefined
  /** Default 1 byte: answer as soon as anything is there. */
  readonly minBytes?: number | undefined
  /** The most bytes one Fetch response may carry (KIP-74: at least one batch). Default 50 MiB. */
  readonly maxBytes?: number | undefined
  /** The most bytes one partition contributes to a response. Default 1 MiB. */
  readonly partitionMaxBytes?: number | undefined
  /** How long a Fetch may take beyond `maxWait` before the connection is given up. Default 30 s. */
  readonly requestTimeout?: Duration.Input | undefined
  /** The first retry's backoff; each next one doubles, up to `retryBackoffMax`. Default 100 ms. */
  readonly retryBackoff?: Duration.Input | undefined
  /** Default 1 second (Java's `retry.backoff.max.ms`). */
  readonly retryBackoffMax?: Duration.Input | undefined
  /** Fetch sessions (KIP-227): incremental requests that list only what changed. Default true. */
  readonly sessions?: boolean | undefined
  /** Sent as the Fetch's `rackId`. Default empty. */
  readonly rack?: string | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export const defaults = {
  isolation: "read-committed",
  reset: "earliest",
  maxBatchSize: 500,
  maxWait: Duration.millis(500),
  minBytes: 1,
  maxBytes: 50 * 1024 * 1024,
  partitionMaxBytes: 1024 * 1024,
  requestTimeout: Duration.seconds(30),
  retryBackoff: Duration.millis(100),
  retryBackoffMax: Duration.seconds(1),
  sessions: true,
} as const

/** A partition to fetch and where its first batch starts. */
export interface Assignment extends TopicPartition {
  readonly offset: number
}

/**
 * The fetch loops of one consumer, alive while the scope that made them is open; closing it
 * ends every claim's stream.
 */
export interface FetchLoop {
  /** Starts fetching these partitions; each claim's `records` is its only way out. */
  readonly assign: (partitions: ReadonlyArray<Assignment>) => Effect.Effect<ReadonlyArray<PartitionClaim>>
  /** Ends these partitions' streams; what was fetched for them and not pulled is dropped. */
  readonly revoke: (partitions: ReadonlyArray<TopicPartition>) => Effect.Effect<void>
  /** Stops fetching these partitions; what was already fetched can still be pulled. */
  readonly pause: (partitions: ReadonlyArray<TopicPartition>) => Effect.Effect<void>
  readonly resume: (partitions: ReadonlyArray<TopicPartition>) => Effect.Effect<void>
  /** The next batch of this partition starts at `offset`; what was fetched before is dropped. */
  readonly seek: (partition: TopicPartition, offset: number) => Effect.Effect<void>
  /** The offset the next fetch of this partition starts at (undefined when not assigned). */
  readonly position: (partition: TopicPartition) => number | undefined
}

/** The errors that say this broker is no longer the partition's leader, or metadata is stale. */
const rerouting: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "NOT_LEADER_OR_FOLLOWER",
  "FENCED_LEADER_EPOCH",
  "UNKNOWN_LEADER_EPOCH",
  "UNKNOWN_TOPIC_OR_PARTITION",
  "UNKNOWN_TOPIC_ID",
  "INCONSISTENT_TOPIC_ID",
  "FETCH_SESSION_TOPIC_ID_ERROR",
  "LEADER_NOT_AVAILABLE",
  "REPLICA_NOT_AVAILABLE",
  "KAFKA_STORAGE_ERROR",
  "OFFSET_NOT_AVAILABLE",
])

const keyOf = (topic: string, partition: number): string => `${topic}\u0000${partition}`

/**
 * One partition's fetched `records` bytes, decoded when first pulled and then handed out in
 * pieces of at most `maxBatchSize` records. Plain synchronous mechanics: the hot path.
 */
class Chunk {
  private readonly bytes: Uint8Array
  private readonly aborted: ReadonlyArray<AbortedTransaction> | null
  private readonly fromOffset: number
  private batches: ReadonlyArray<RecordBatch> | undefined = undefined
  private batchIndex = 0
  private iterator: RecordIterator | undefined = undefined
  /** A record read ahead to learn whether anything is left (the iterator cannot peek). */
  private lookahead: BatchRecord | undefined = undefined
  /** Where the next fetch starts, once decoded: after the last whole batch, skipped ones too. */
  nextOffset: number | undefined = undefined
  /** The bad batch decoding stopped at: the claim fails once what came before it is pulled. */
  error: RecordBatchError | undefined = undefined

  constructor(bytes: Uint8Array, aborted: ReadonlyArray<AbortedTransaction> | null, fromOffset: number) {
    this.bytes = bytes
    this.aborted = aborted
    this.fromOffset = fromOffset
  }

  /** Up to `max` records (possibly none); `exhausted` tells whether any are left. */
  take(topic: string, partition: number, isolation: "read-committed" | "read-uncommitted", max: number): Array<ConsumerRecord> {
    if (this.batches === undefined) {
      const decoded = decodeRecordBatches(this.bytes, {
        topic,
        partition,
        isolation,
        abortedTransactions: this.aborted,
        fromOffset: this.fromOffset,
      })
      this.batches = decoded.batches
      this.nextOffset = decoded.nextOffset
      this.error = decoded.error
      if (decoded.error !== undefined && decoded.error.offset !== undefined) this.nextOffset = decoded.error.offset
    }
    const out: Array<ConsumerRecord> = []
    if (this.lookahead !== undefined) {
      out.push(this.lookahead)
      this.lookahead = undefined
    }
    while (out.length < max) {
      const record = this.next()
      if (record === undefined) return out
      out.push(record)
    }
    this.lookahead = this.next()
    return out
  }

  get exhausted(): boolean {
    return this.batches !== undefined && this.lookahead === undefined && this.iterator === undefined &&
      this.batchIndex >= this.batches.length
  }

  private next(): BatchRecord | undefined {
    const batches = this.batches!
    for (;;) {
      if (this.iterator === undefined) {
        if (this.batchIndex >= batches.length) return undefined
        this.iterator = batches[this.batchIndex++]![Symbol.iterator]()
      }
      let result: IteratorResult<BatchRecord>
      try {
        result = this.iterator.next()
      } catch (error) {
        // A record whose deltas do not read: stop at its batch, as at a bad CRC.
        if (!(error instanceof RecordBatchError)) throw error
        this.error = error
        this.nextOffset = error.offset
        this.iterator = undefined
        this.batchIndex = batches.length
        return undefined
      }
      if (!result.done) return result.value
      this.iterator = undefined
    }
  }
}

/** One assigned partition's state, owned by the loop. */
class Claim {
  readonly topic: string
  readonly partition: number
  readonly key: string
  position: number
  leader: Leader | undefined = undefined
  resolving = false
  resetting = false
  paused = false
  ended = false
  /** Part of a Fetch in flight. */
  fetching = false
  /** Bumped by `seek`: data fetched before it is dropped. */
  generation = 0
  /** Consecutive failures, for the backoff of the next leader lookup. */
  failures = 0
  chunk: Chunk | undefined = undefined
  failure: TransportError.TransportError | undefined = undefined
  /** Wakes the claim's consumer when data, a failure or the end arrives. */
  readonly changed = new Signal()
  constructor(topic: string, partition: number, position: number) {
    this.topic = topic
    this.partition = partition
    this.key = keyOf(topic, partition)
    this.position = position
  }
  get hasRoom(): boolean {
    return this.chunk === undefined
  }
  get fetchable(): boolean {
    return !this.ended && !this.paused && !this.fetching && !this.resetting && this.failure === undefined &&
      this.leader !== undefined && this.chunk === undefined
  }
}

/** A broker's fetch loop state: at most one Fetch in flight. */
interface Node {
  busy: boolean
  failures: number
  /** The broker's fetch session (KIP-227): 0 for none yet. */
  sessionId: number
  /** The epoch the next incremental request carries. */
  sessionEpoch: number
  /** The Fetch version the session was made at; another version starts a new session. */
  sessionVersion: number
  /** The partitions the broker's session holds, as last sent. */
  readonly session: Map<string, SessionPartition>
}

/** A partition as a fetch session holds it: what an incremental request leaves out when unchanged. */
interface SessionPartition {
  readonly topic: string
  readonly topicId: string
  readonly partition: number
  readonly offset: number
  readonly leaderEpoch: number
}

const nextSessionEpoch = (epoch: number): number => (epoch >= 0x7fffffff ? 1 : epoch + 1)

/**
 * The `Routing` of a brokers.ts pool (topic ids from its metadata cache).
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromBrokers = (brokers: Brokers): Routing => ({
  leaderFor: brokers.leaderFor,
  connection: brokers.connection,
  topicId: (topic) => Effect.map(brokers.topics([topic]), (known) => known.get(topic)?.topicId ?? zeroUuid),
  invalidate: brokers.invalidate,
})

/**
 * Starts the fetch loops of one consumer in the current scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (routing: Routing, options: Options = {}): Effect.Effect<FetchLoop, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const isolation = options.isolation ?? defaults.isolation
    const reset = options.reset ?? defaults.reset
    const maxBatchSize = Math.max(1, options.maxBatchSize ?? defaults.maxBatchSize)
    const maxWaitMs = Duration.toMillis(Duration.fromInputUnsafe(options.maxWait ?? defaults.maxWait))
    const minBytes = options.minBytes ?? defaults.minBytes
    const maxBytes = options.maxBytes ?? defaults.maxBytes
    const partitionMaxBytes = options.partitionMaxBytes ?? defaults.partitionMaxBytes
    const fetchTimeout = Duration.sum(
      Duration.fromInputUnsafe(options.requestTimeout ?? defaults.requestTimeout),
      Duration.millis(maxWaitMs),
    )
    const backoffBase = Duration.toMillis(Duration.fromInputUnsafe(options.retryBackoff ?? defaults.retryBackoff))
    const backoffMax = Duration.toMillis(Duration.fromInputUnsafe(options.retryBackoffMax ?? defaults.retryBackoffMax))
    const backoff = (failures: number): Duration.Duration =>
      Duration.millis(Math.min(backoffMax, backoffBase * 2 ** Math.max(0, failures - 1)))
    const isolationLevel = isolation === "read-committed" ? 1 : 0
    const sessions = options.sessions ?? defaults.sessions

    const claims = new Map<string, Claim>()
    const nodes = new Map<number, Node>()
    const wake = new Signal()
    const nodeOf = (nodeId: number): Node => {
      let node = nodes.get(nodeId)
      if (node === undefined) {
        nodes.set(nodeId, node = { busy: false, failures: 0, sessionId: 0, sessionEpoch: 0, sessionVersion: -1, session: new Map() })
      }
      return node
    }
    const current = (claim: Claim, generation: number): boolean =>
      !claim.ended && claims.get(claim.key) === claim && claim.generation === generation

    const fail = (claim: Claim, error: TransportError.TransportError): void => {
      claim.failure = error
      claim.changed.notify()
    }

    // --- leader lookup -------------------------------------------------------------------

    /**
     * Looks up the leaders of these claims together and sets them at once, so that the Fetch
     * that follows covers them all (partitions assigned together are fetched together).
     */
    const resolve = (batch: ReadonlyArray<Claim>): Effect.Effect<void> => {
      const generations = batch.map((claim) => claim.generation)
      const failures = Math.max(...batch.map((claim) => claim.failures))
      return Effect.gen(function*() {
        if (failures > 0) yield* Effect.sleep(backoff(failures))
        const found = yield* Effect.forEach(batch, (claim) => Effect.result(routing.leaderFor(claim)), {
          concurrency: "unbounded",
        })
        batch.forEach((claim, i) => {
          if (!current(claim, generations[i]!)) return
          const result = found[i]!
          if (Result.isSuccess(result)) claim.leader = result.success
          else if (result.failure.retriable) claim.failures++
          else fail(claim, result.failure)
        })
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          for (const claim of batch) claim.resolving = false
          wake.notify()
        })),
      )
    }

    // --- OFFSET_OUT_OF_RANGE -------------------------------------------------------------

    const resetPosition = (claim: Claim, outOfRange: number): Effect.Effect<void> => {
      const generation = claim.generation
      const timestamp = reset === "latest" ? -1 : -2
      const attempt = Effect.gen(function*() {
        const leader = claim.leader ?? (yield* routing.leaderFor(claim))
        const connection = yield* routing.connection(leader.nodeId)
        const answer = yield* connection.request(ListOffsets, {
          replicaId: -1,
          isolationLevel,
          topics: [{
            name: claim.topic,
            partitions: [{ partitionIndex: claim.partition, currentLeaderEpoch: leader.leaderEpoch, timestamp }],
          }],
        })
        const found = answer.topics.find((t) => t.name === claim.topic)?.partitions.find((p) =>
          p.partitionIndex === claim.partition
        )
        if (found === undefined) {
          return yield* Effect.fail(
            TransportError.make(
              "UNKNOWN_TOPIC_OR_PARTITION",
              "fetch",
              `ListOffsets answered without ${claim.topic}/${claim.partition}`,
            ),
          )
        }
        if (found.errorCode !== 0) {
          const code = TransportError.nameOfCode(found.errorCode)
          if (rerouting.has(code)) {
            claim.leader = undefined
            yield* routing.invalidate(claim.topic)
          }
          return yield* Effect.fail(
            TransportError.make(code, "fetch", `Cannot reset the position of ${claim.topic}/${claim.partition}: ListOffsets says ${code}`),
          )
        }
        return found.offset
      })
      return Effect.gen(function*() {
        let tries = 0
        const retried: Effect.Effect<number, TransportError.TransportError> = Effect.catch(
          attempt,
          (error: TransportError.TransportError) =>
            error.retriable && current(claim, generation)
              ? Effect.andThen(Effect.sleep(backoff(++tries)), retried)
              : Effect.fail(error),
        )
        const offset = yield* retried
        if (!current(claim, generation)) return
        yield* Effect.logWarning(
          `Offset ${outOfRange} of ${claim.topic}/${claim.partition} is out of range; the partition restarts at its ${reset} offset, ${offset}`,
        )
        claim.position = offset
        claim.failures = 0
      }).pipe(
        Effect.catch((error: TransportError.TransportError) =>
          Effect.sync(() => {
            if (current(claim, generation)) fail(claim, nonRetriable(error))
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          claim.resetting = false
          wake.notify()
        })),
      )
    }

    // --- one Fetch -----------------------------------------------------------------------

    /** What a partition's error means for its claim: the one place that decides it. */
    const onPartitionError = (
      claim: Claim,
      code: TransportError.KafkaErrorName,
      fetchOffset: number,
      hint: LeaderHint | undefined,
      stale: Map<string, Array<LeaderHint | undefined>>,
      forks: Array<Effect.Effect<void>>,
    ): void => {
      if (code === "OFFSET_OUT_OF_RANGE") {
        claim.resetting = true
        forks.push(resetPosition(claim, fetchOffset))
        return
      }
      if (rerouting.has(code)) {
        claim.leader = undefined
        claim.failures++
        let hints = stale.get(claim.topic)
        if (hints === undefined) stale.set(claim.topic, hints = [])
        hints.push(hint)
        return
      }
      if (TransportError.isRetriable(code)) {
        // Retried after a backoff, through a fresh leader lookup.
        claim.leader = undefined
        claim.failures++
        return
      }
      fail(
        claim,
        TransportError.make(code, "fetch", `Cannot fetch ${claim.topic}/${claim.partition} at offset ${fetchOffset}: the broker says ${code}`),
      )
    }

    const handleResponse = (
      response: FetchResponse,
      version: number,
      sent: ReadonlyArray<{ readonly claim: Claim; readonly generation: number; readonly offset: number }>,
      names: ReadonlyMap<string, string>,
    ): { stale: Map<string, Array<LeaderHint | undefined>>; forks: Array<Effect.Effect<void>> } => {
      const stale = new Map<string, Array<LeaderHint | undefined>>()
      const forks: Array<Effect.Effect<void>> = []
      const endpoints = response.nodeEndpoints?.map((node) => ({ nodeId: node.nodeId, host: node.host, port: node.port, rack: node.rack }))
      const inRequest = new Map<string, (typeof sent)[number]>()
      for (const entry of sent) inRequest.set(entry.claim.key, entry)
      for (const topicResponse of response.responses) {
        const topic = version >= 13 ? names.get(topicResponse.topicId ?? zeroUuid) : topicResponse.topic
        if (topic === undefined) continue
        for (const data of topicResponse.partitions) {
          const entry = inRequest.get(keyOf(topic, data.partitionIndex))
          if (entry === undefined) continue
          const { claim, generation, offset } = entry
          // Revoked, reassigned or sought since the request went out: its answer is dropped.
          if (!current(claim, generation)) continue
          if (data.errorCode !== 0) {
            const leader = data.currentLeader
            const hint = leader !== undefined && leader.leaderId >= 0
              ? { partition: data.partitionIndex, leaderId: leader.leaderId, leaderEpoch: leader.leaderEpoch, endpoints }
              : undefined
            onPartitionError(claim, TransportError.nameOfCode(data.errorCode), offset, hint, stale, forks)
            continue
          }
          claim.failures = 0
          const records = data.records
          if (records !== null && records.length > 0) {
            claim.chunk = new Chunk(records, isolationLevel === 1 ? data.abortedTransactions : null, offset)
            claim.changed.notify()
          }
        }
      }
      return { stale, forks }
    }

    const fetchFrom = (nodeId: number, node: Node, batch: ReadonlyArray<Claim>): Effect.Effect<void> => {
      const sent = batch.map((claim) => ({ claim, generation: claim.generation, offset: claim.position }))
      const request = Effect.gen(function*() {
        const connection = yield* routing.connection(nodeId)
        let version = yield* connection.versionFor(Fetch)
        const topicNames = [...new Set(batch.map((claim) => claim.topic))]
        const ids = new Map<string, string>()
        const names = new Map<string, string>()
        if (version >= 13) {
          for (const topic of topicNames) {
            const id = yield* routing.topicId(topic)
            ids.set(topic, id)
            names.set(id, topic)
          }
          // A topic without an id in metadata can only be fetched by name.
          if ([...ids.values()].includes(zeroUuid)) version = Math.min(version, 12)
        }
        // A fetch session (KIP-227, v7+): after the first full request, only what changed is
        // sent (new partitions, moved offsets, new leader epochs) and the partitions to drop; a
        // claim without room is dropped from it, or the broker would answer its offset again.
        const useSession = sessions && version >= 7
        const incremental = useSession && node.sessionId !== 0 && node.sessionVersion === version
        const leaderEpochOf = (claim: Claim) => claim.leader?.leaderEpoch ?? -1
        const listed = incremental
          ? sent.filter(({ claim, offset }) => {
            const held = node.session.get(claim.key)
            return held === undefined || held.offset !== offset || held.leaderEpoch !== leaderEpochOf(claim)
          })
          : sent
        const wanted = new Set(sent.map(({ claim }) => claim.key))
        const forgotten = incremental ? [...node.session.entries()].filter(([key]) => !wanted.has(key)) : []
        const byTopic = new Map<string, Array<FetchRequest["topics"][number]["partitions"][number]>>()
        for (const { claim, offset } of listed) {
          let partitions = byTopic.get(claim.topic)
          if (partitions === undefined) byTopic.set(claim.topic, partitions = [])
          partitions.push({
            partition: claim.partition,
            currentLeaderEpoch: claim.leader?.leaderEpoch ?? -1,
            fetchOffset: offset,
            partitionMaxBytes,
          })
        }
        const body: FetchRequest = {
          maxWaitMs,
          minBytes,
          maxBytes,
          isolationLevel,
          // Epoch 0 asks for a new session (closing the one named, if any); -1 for none at all.
          sessionId: useSession ? node.sessionId : 0,
          sessionEpoch: !useSession ? -1 : incremental ? node.sessionEpoch : 0,
          topics: [...byTopic].map(([topic, partitions]) =>
            version >= 13 ? { topicId: ids.get(topic)!, partitions } : { topic, partitions }
          ),
          forgottenTopicsData: forgottenByTopic(forgotten.map(([, held]) => held), version),
          rackId: options.rack ?? "",
        }
        const response = yield* connection.request(Fetch, body, { version, timeout: fetchTimeout })
        const top = response.errorCode ?? 0
        if (top !== 0) {
          const code = TransportError.nameOfCode(top)
          if (code === "FETCH_SESSION_ID_NOT_FOUND" || code === "INVALID_FETCH_SESSION_EPOCH") {
            // The broker forgot the session (evicted, restarted): the next request is a full one.
            yield* Effect.logDebug(`Fetch session ${node.sessionId} of broker ${nodeId} is gone (${code}); starting a new one`)
            node.sessionId = 0
            node.session.clear()
            return { stale: new Map<string, Array<LeaderHint | undefined>>(), forks: [] }
          }
          return yield* Effect.fail(TransportError.make(code, "fetch", `Fetch from broker ${nodeId} failed: ${code}`))
        }
        if (useSession) {
          if ((response.sessionId ?? 0) === 0) {
            node.sessionId = 0
            node.session.clear()
          } else {
            if (!incremental) node.session.clear()
            for (const [key] of forgotten) node.session.delete(key)
            for (const { claim, offset } of listed) {
              node.session.set(claim.key, {
                topic: claim.topic,
                topicId: ids.get(claim.topic) ?? zeroUuid,
                partition: claim.partition,
                offset,
                leaderEpoch: leaderEpochOf(claim),
              })
            }
            node.sessionId = response.sessionId!
            node.sessionVersion = version
            node.sessionEpoch = incremental ? nextSessionEpoch(node.sessionEpoch) : 1
          }
        }
        return handleResponse(response, version, sent, names)
      })
      return request.pipe(
        Effect.flatMap(({ stale, forks }) =>
          Effect.gen(function*() {
            node.failures = 0
            for (const [topic, hints] of stale) {
              // With hints for every stale partition of the topic, the cache takes the new
              // leaders from them; without, metadata is fetched again.
              if (hints.includes(undefined)) yield* routing.invalidate(topic)
              else for (const hint of hints) yield* routing.invalidate(topic, hint)
            }
            for (const fork of forks) yield* Effect.forkIn(fork, scope)
          })
        ),
        Effect.catch((error: TransportError.TransportError) =>
          Effect.gen(function*() {
            // Whether the broker saw this epoch is unknown: the next request starts a new session.
            node.sessionVersion = -1
            if (!error.retriable) {
              for (const { claim, generation } of sent) if (current(claim, generation)) fail(claim, nonRetriable(error))
              return
            }
            // A lost connection or a timeout: the partitions keep their positions, and their
            // leaders are looked up again (the broker may be gone for good), after a backoff.
            node.failures++
            yield* Effect.logDebug(`Fetch from broker ${nodeId} failed (${error.code}); retrying: ${error.message}`)
            const topics = new Set<string>()
            for (const { claim, generation } of sent) {
              if (!current(claim, generation)) continue
              claim.leader = undefined
              topics.add(claim.topic)
            }
            for (const topic of topics) yield* routing.invalidate(topic)
            yield* Effect.sleep(backoff(node.failures))
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          node.busy = false
          for (const { claim } of sent) claim.fetching = false
          wake.notify()
        })),
      )
    }

    // --- the loop ------------------------------------------------------------------------

    /** Starts what the current state allows: leader lookups, and one Fetch per idle broker. */
    const schedule = (): Array<Effect.Effect<void>> => {
      const work: Array<Effect.Effect<void>> = []
      const ready = new Map<number, Array<Claim>>()
      const leaderless: Array<Claim> = []
      for (const claim of claims.values()) {
        if (claim.ended || claim.failure !== undefined) continue
        if (claim.leader === undefined) {
          if (!claim.resolving && !claim.resetting) {
            claim.resolving = true
            leaderless.push(claim)
          }
          continue
        }
        if (!claim.fetchable) continue
        const nodeId = claim.leader.nodeId
        if (nodeOf(nodeId).busy) continue
        let list = ready.get(nodeId)
        if (list === undefined) ready.set(nodeId, list = [])
        list.push(claim)
      }
      if (leaderless.length > 0) work.push(resolve(leaderless))
      for (const [nodeId, batch] of ready) {
        const node = nodeOf(nodeId)
        node.busy = true
        for (const claim of batch) claim.fetching = true
        work.push(fetchFrom(nodeId, node, batch))
      }
      return work
    }

    yield* Effect.forkIn(
      Effect.forever(Effect.suspend(() => {
        const woken = wake.wait
        const work = schedule()
        return Effect.andThen(Effect.forEach(work, (effect) => Effect.forkIn(effect, scope), { discard: true }), woken)
      })),
      scope,
    )

    yield* Scope.addFinalizer(
      scope,
      Effect.sync(() => {
        for (const claim of claims.values()) end(claim)
        claims.clear()
      }),
    )

    const end = (claim: Claim): void => {
      claim.ended = true
      claim.chunk = undefined
      claim.changed.notify()
    }

    // --- claims --------------------------------------------------------------------------

    const recordsOf = (claim: Claim): Stream.Stream<ReadonlyArray<ConsumerRecord>, TransportError.TransportError> => {
      const pull: Effect.Effect<readonly [ReadonlyArray<ConsumerRecord>], TransportError.TransportError | Cause.Done> =
        Effect.suspend(() => {
          if (claim.ended) return Cause.done()
          const chunk = claim.chunk
          if (chunk !== undefined) {
            const records = chunk.take(claim.topic, claim.partition, isolation, maxBatchSize)
            if (chunk.exhausted) {
              // Room again: the next fetch overlaps the handling of these records.
              if (chunk.nextOffset !== undefined && chunk.nextOffset > claim.position) claim.position = chunk.nextOffset
              claim.chunk = undefined
              if (chunk.error !== undefined) claim.failure = corrupt(chunk.error)
              else wake.notify()
            }
            if (records.length > 0) return Effect.succeed([records] as const)
          }
          if (claim.failure !== undefined) return Effect.fail(claim.failure)
          return Effect.andThen(claim.changed.wait, pull)
        })
      return Stream.fromPull(Effect.succeed(pull))
    }

    const find = (tp: TopicPartition): Claim | undefined => claims.get(keyOf(tp.topic, tp.partition))

    const each = (partitions: ReadonlyArray<TopicPartition>, f: (claim: Claim) => void) =>
      Effect.sync(() => {
        for (const tp of partitions) {
          const claim = find(tp)
          if (claim !== undefined) f(claim)
        }
        wake.notify()
      })

    return {
      assign: (partitions) =>
        Effect.sync(() => {
          const out: Array<PartitionClaim> = []
          for (const { topic, partition, offset } of partitions) {
            const previous = claims.get(keyOf(topic, partition))
            if (previous !== undefined) end(previous)
            const claim = new Claim(topic, partition, offset)
            claims.set(claim.key, claim)
            out.push({ topic, partition, startOffset: offset, records: recordsOf(claim) })
          }
          wake.notify()
          return out
        }),
      revoke: (partitions) =>
        each(partitions, (claim) => {
          claims.delete(claim.key)
          end(claim)
        }),
      pause: (partitions) => each(partitions, (claim) => void (claim.paused = true)),
      resume: (partitions) => each(partitions, (claim) => void (claim.paused = false)),
      seek: (tp, offset) =>
        each([tp], (claim) => {
          claim.generation++
          claim.position = offset
          claim.chunk = undefined
          claim.failure = undefined
          claim.failures = 0
          claim.changed.notify()
        }),
      position: (tp) => find(tp)?.position,
    } satisfies FetchLoop
  })

/** A session's partitions to drop, by topic, as the request names topics at `version`. */
const forgottenByTopic = (held: ReadonlyArray<SessionPartition>, version: number): FetchRequest["forgottenTopicsData"] => {
  const byTopic = new Map<string, { topicId: string; partitions: Array<number> }>()
  for (const p of held) {
    let entry = byTopic.get(p.topic)
    if (entry === undefined) byTopic.set(p.topic, entry = { topicId: p.topicId, partitions: [] })
    entry.partitions.push(p.partition)
  }
  return [...byTopic].map(([topic, { topicId, partitions }]) =>
    version >= 13 ? { topicId, partitions } : { topic, partitions }
  )
}

/**
 * A corrupt batch as the claim's stream fails with. Not retriable though CORRUPT_MESSAGE is in
 * the table: a claim's stream ends only with errors its consumer cannot wait out, and the bytes
 * are handed out up to the bad batch; a `seek` past it (or to it, to fetch again) recovers.
 */
const corrupt = (error: RecordBatchError): TransportError.TransportError =>
  new TransportError.TransportError({
    code: "CORRUPT_MESSAGE",
    retriable: false,
    operation: "fetch",
    message: `Cannot read ${error.topic}/${error.partition}@${error.offset ?? "?"}: ${error.detail}`,
    topic: error.topic,
    partition: error.partition,
    cause: error,
  })

/** The same error, as a claim's stream ends with: it retried what it could. */
const nonRetriable = (error: TransportError.TransportError): TransportError.TransportError =>
  error.retriable
    ? new TransportError.TransportError({
      code: error.code,
      retriable: false,
      operation: error.operation,
      message: error.message,
      ...(error.cause === undefined ? {} : { cause: error.cause }),
    })
    : error
