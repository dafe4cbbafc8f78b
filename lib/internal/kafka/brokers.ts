/**
 * The brokers of one cluster as the rest of the client sees them: a connection per broker,
 * opened on first use and reopened after it closed; the cluster's metadata, cached per topic
 * with leader epochs; the leader of each partition and the coordinator of each group or
 * transactional id; and the rules for when what is known goes stale.
 *
 * The model is Kafka's Java client (`Metadata`, `NetworkClient`'s bootstrap) and franz-go's
 * `kgo` broker map. Metadata is asked for by topic, at the highest version both sides speak,
 * never creating topics (`allowAutoTopicCreation` false). A partition's entry is replaced only by
 * an answer whose leader epoch is not older than the cached one, as Java's `Metadata` keeps it:
 * a broker that has not yet heard of an election must not undo what a newer answer said. An
 * error that says the cache is wrong (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION,
 * FENCED_LEADER_EPOCH, ...) is reported by the caller through {@link Brokers.invalidate}; a lost
 * connection marks everything stale by itself. Retriable failures of metadata and coordinator
 * lookups are retried on a bounded `Schedule` (so `TestClock` drives them in tests); what is
 * left after it is the caller's, as a retriable `TransportError`.
 *
 * Every connection and fiber lives in the scope `make` runs in: closing it closes them all.
 * State is plain maps in that closure, changed only between effects (one fiber at a time runs),
 * with a permit per broker and one for metadata so concurrent callers share one request.
 *
 * Not done (yet): idle connections are not closed (Java's `connections.max.idle.ms`); metadata
 * is refreshed on demand only, never in the background; one permit serializes every metadata
 * refresh, so callers for different topics wait for each other's request; topics are asked
 * for by name, not by id.
 */
import { Clock, Deferred, Duration, Effect, Exit, Schedule, Scope, Semaphore } from "effect"
import * as TransportError from "../../TransportError.ts"
import type { TopicPartition } from "../../Transport.ts"
import * as Connection from "./connection.ts"
import { FindCoordinator } from "./protocol/FindCoordinator.ts"
import { Metadata, type MetadataResponse } from "./protocol/Metadata.ts"

/** What a failed connection advises (connection.ts), said once when every broker failed. */
const connectAdvice = /: check that the broker runs and the address is right(, and that the listener speaks TLS)?$/

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** `host:port` of brokers to learn the cluster from; tried in order until one answers. */
  readonly bootstrap: ReadonlyArray<string>
  /** The `client.id` of every request. Default `partita`. */
  readonly clientId?: string | undefined
  /** TLS, as {@link Connection.Options.tls}. */
  readonly tls?: Connection.Options["tls"]
  /** SASL credentials, as {@link Connection.Options.sasl}. */
  readonly sasl?: Connection.Options["sasl"]
  readonly connectTimeout?: Duration.Input | undefined
  readonly requestTimeout?: Duration.Input | undefined
  /** Cached metadata older than this is fetched again when asked for. Default 5 minutes, as Java's `metadata.max.age.ms`. */
  readonly metadataMaxAge?: Duration.Input | undefined
  /**
   * How retriable failures of metadata and coordinator lookups are retried: a bounded schedule,
   * fed the error. Default {@link defaults}: 100 ms doubling to at most 1 s, 10 retries (~7.5 s).
   */
  readonly retry?: Schedule.Schedule<unknown, TransportError.TransportError> | undefined
  /** Passed to every connection ({@link Connection.Options.maxResponseBytes}). */
  readonly maxResponseBytes?: number | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export const defaults = {
  metadataMaxAge: Duration.minutes(5),
  retry: Schedule.exponential("100 millis", 2).pipe(
    Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(1)))),
    Schedule.upTo({ times: 10 }),
  ) as Schedule.Schedule<unknown, TransportError.TransportError>,
} as const

/**
 * How long a topic or partition the metadata does not know is asked for again before that is the
 * answer: one just created (or added) reaches the brokers' metadata a moment after CreateTopics
 * (CreatePartitions) returns, and a producer sending to it then should not fail for it. About
 * 0.75 s: 50 ms, doubling, four times. Kafka's Java producer waits up to `max.block.ms` (60 s);
 * an unknown topic here is far more often a typo than a topic on its way.
 */
const newTopicGrace = Schedule.exponential("50 millis", 2).pipe(Schedule.upTo({ times: 4 }))

/**
 * `effect`, asked again within `newTopicGrace` while it fails with UNKNOWN_TOPIC_OR_PARTITION
 * (the cache keeps no unknown topic and marks a short one stale, so each try refetches).
 *
 * @since 0.2.0
 * @category combinators
 */
export const untilKnown = <A>(effect: Effect.Effect<A, TransportError.TransportError>): Effect.Effect<A, TransportError.TransportError> =>
  Effect.retry(effect, { schedule: newTopicGrace, while: (error) => error.code === "UNKNOWN_TOPIC_OR_PARTITION" })

/** A broker as the cluster's metadata lists it. */
export interface BrokerNode {
  readonly nodeId: number
  readonly host: string
  readonly port: number
  readonly rack: string | null
}

/** One partition as the cluster's metadata describes it. */
export interface PartitionMetadata {
  readonly partition: number
  /** The broker leading it; -1 while an election runs. */
  readonly leaderId: number
  /** -1 when the broker does not say (Metadata before v7). */
  readonly leaderEpoch: number
  readonly replicas: ReadonlyArray<number>
  readonly isr: ReadonlyArray<number>
  readonly offlineReplicas: ReadonlyArray<number>
  /** The partition's error in the answer (LEADER_NOT_AVAILABLE while an election runs), or 0. */
  readonly errorCode: number
}

/** One topic as the cluster's metadata describes it; partitions by index, in order. */
export interface TopicMetadata {
  readonly name: string
  /** Kafka's topic id (22-char base64url); the zero id before Metadata v10. */
  readonly topicId: string
  readonly isInternal: boolean
  readonly partitions: ReadonlyArray<PartitionMetadata>
}

/** The leader of a partition. */
export interface Leader {
  readonly nodeId: number
  readonly leaderEpoch: number
}

/**
 * What an error response may say about a partition's new leader (KIP-951 `currentLeader`, with
 * the endpoints a Produce or Fetch response lists).
 */
export interface LeaderHint {
  readonly partition: number
  readonly leaderId: number
  readonly leaderEpoch: number
  readonly endpoints?: ReadonlyArray<BrokerNode> | undefined
}

/** The key of a coordinator. */
export interface CoordinatorKey {
  readonly type: "group" | "transaction"
  readonly id: string
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Brokers {
  /**
   * The connection to broker `nodeId`, opened on first use, reopened after it closed. Fails
   * with a retriable `NETWORK_EXCEPTION` when the broker cannot be reached or is not in the
   * cluster's metadata (ask for the leader again).
   */
  readonly connection: (nodeId: number) => Effect.Effect<Connection.Connection, TransportError.TransportError>
  /** Any live broker (known or bootstrap), for requests any broker answers (Metadata, ...). */
  readonly any: Effect.Effect<Connection.Connection, TransportError.TransportError>
  /**
   * Cached metadata of these topics, fetched when unknown, invalidated or older than
   * `metadataMaxAge`. A topic the cluster does not have fails the call with
   * `UNKNOWN_TOPIC_OR_PARTITION` naming it (not retried here: it is an answer, not a blip).
   */
  readonly topics: (
    topics: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyMap<string, TopicMetadata>, TransportError.TransportError>
  /**
   * The leader of a partition, refreshing metadata as needed; while an election runs it retries
   * on the schedule and then fails with a retriable `LEADER_NOT_AVAILABLE`. A partition beyond
   * the cached count is asked for once more (partitions may have been added), then fails with
   * `UNKNOWN_TOPIC_OR_PARTITION` naming it.
   */
  readonly leaderFor: (tp: TopicPartition) => Effect.Effect<Leader, TransportError.TransportError>
  /**
   * Marks what is known about a topic stale after an error that says so; the next `topics` or
   * `leaderFor` refetches. With a hint (KIP-951) newer than the cache, the partition's leader is
   * taken from it instead and nothing is refetched.
   */
  readonly invalidate: (topic: string, hint?: LeaderHint) => Effect.Effect<void>
  /**
   * The coordinator of a group or transactional id (FindCoordinator, cached; concurrent lookups
   * share one request on brokers with FindCoordinator v4+). COORDINATOR_NOT_AVAILABLE and
   * COORDINATOR_LOAD_IN_PROGRESS are retried on the schedule.
   */
  readonly coordinatorFor: (key: CoordinatorKey) => Effect.Effect<Connection.Connection, TransportError.TransportError>
  /** Forgets a coordinator after NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS. */
  readonly invalidateCoordinator: (key: CoordinatorKey) => Effect.Effect<void>
  /** The brokers of the last metadata answer, by node id. */
  readonly nodes: () => ReadonlyMap<number, BrokerNode>
  /** The controller of the last metadata answer (-1 if unknown). */
  readonly controllerId: () => number
}

/** A cached topic: when it was fetched and whether an error since said it is wrong. */
interface TopicEntry {
  metadata: TopicMetadata
  fetchedAt: number
  stale: boolean
}

/** An open connection and the scope it lives in (closed when it is replaced or the pool closes). */
interface Open {
  readonly connection: Connection.Connection
  readonly scope: Scope.Closeable
}

const address = (node: { readonly host: string; readonly port: number }): string =>
  node.host.includes(":") ? `[${node.host}]:${node.port}` : `${node.host}:${node.port}`

const keyName = (key: CoordinatorKey): string => `${key.type}:${key.id}`

const describeKey = (key: CoordinatorKey): string =>
  key.type === "group" ? `group "${key.id}"` : `transactional id "${key.id}"`

/** A TransportError for a code Kafka answered, naming the topic when there is one. */
const kafkaError = (
  code: TransportError.KafkaErrorName,
  operation: string,
  message: string,
  topic?: string,
): TransportError.TransportError =>
  new TransportError.TransportError({
    code,
    retriable: TransportError.isRetriable(code),
    operation,
    message,
    ...(topic === undefined ? {} : { topic }),
  })

/** Errors after which a cached partition or topic is known to be wrong. */
export const staleMetadataErrors: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "NOT_LEADER_OR_FOLLOWER",
  "UNKNOWN_TOPIC_OR_PARTITION",
  "LEADER_NOT_AVAILABLE",
  "FENCED_LEADER_EPOCH",
  "UNKNOWN_LEADER_EPOCH",
  "UNKNOWN_TOPIC_ID",
  "INCONSISTENT_TOPIC_ID",
  "KAFKA_STORAGE_ERROR",
  "NETWORK_EXCEPTION",
  "REPLICA_NOT_AVAILABLE",
])

/** Errors after which a cached coordinator is known to be wrong. */
export const staleCoordinatorErrors: ReadonlySet<TransportError.KafkaErrorName> = new Set<TransportError.KafkaErrorName>([
  "NOT_COORDINATOR",
  "COORDINATOR_NOT_AVAILABLE",
  "COORDINATOR_LOAD_IN_PROGRESS",
  "NETWORK_EXCEPTION",
  "REQUEST_TIMED_OUT",
])

/**
 * Opens the pool in the current scope. Nothing is connected yet: the first call that needs a
 * broker connects.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Brokers, TransportError.TransportError, Scope.Scope> =>
  Effect.gen(function* () {
    if (options.bootstrap.length === 0) {
      return yield* Effect.fail(TransportError.make(
        "INVALID_REQUEST",
        "connect",
        "Cannot connect to Kafka: no bootstrap broker was given; pass at least one `host:port`",
      ))
    }
    const scope = yield* Effect.scope
    const metadataMaxAge = Duration.toMillis(Duration.fromInputUnsafe(options.metadataMaxAge ?? defaults.metadataMaxAge))
    const retrySchedule = options.retry ?? defaults.retry

    const nodes = new Map<number, BrokerNode>()
    let controllerId = -1
    const topicCache = new Map<string, TopicEntry>()
    /** Connections by node id, and to bootstrap addresses no node has (yet) been matched to. */
    const byNode = new Map<number, Open>()
    const byAddress = new Map<string, Open>()
    const permits = new Map<string, Semaphore.Semaphore>()
    const permit = (name: string): Semaphore.Semaphore => {
      let semaphore = permits.get(name)
      if (semaphore === undefined) {
        semaphore = Semaphore.makeUnsafe(1)
        permits.set(name, semaphore)
      }
      return semaphore
    }
    const metadataPermit = Semaphore.makeUnsafe(1)
    /** When the broker list was last answered; -Infinity: never, or suspect since. */
    let nodesFetchedAt = Number.NEGATIVE_INFINITY
    const markAllStale = () => {
      nodesFetchedAt = Number.NEGATIVE_INFINITY
      for (const entry of topicCache.values()) entry.stale = true
    }

    const retrying = <A>(
      effect: Effect.Effect<A, TransportError.TransportError>,
      retriable: (error: TransportError.TransportError) => boolean = (error) => error.retriable,
    ) => Effect.retry(effect, { schedule: retrySchedule, while: retriable })

    /** Opens a connection in a scope of its own, closed when the connection closes or the pool does. */
    const open = (broker: string): Effect.Effect<Open, TransportError.TransportError> =>
      Effect.gen(function* () {
        const child = yield* Scope.fork(scope)
        const exit = yield* Effect.exit(Connection.make({
          broker,
          clientId: options.clientId,
          tls: options.tls,
          sasl: options.sasl,
          connectTimeout: options.connectTimeout,
          requestTimeout: options.requestTimeout,
          maxResponseBytes: options.maxResponseBytes,
        }).pipe(Scope.provide(child)))
        if (Exit.isFailure(exit)) {
          yield* Scope.close(child, exit)
          // What the cache says about this broker's partitions may be why it cannot be reached.
          markAllStale()
          return yield* Effect.failCause(exit.cause)
        }
        const connection = exit.value
        // A connection lost by itself releases its scope and makes the cache suspect.
        yield* Effect.forkIn(
          Effect.andThen(connection.closed, Effect.andThen(Effect.sync(markAllStale), Scope.close(child, Exit.void))),
          scope,
        )
        return { connection, scope: child }
      })

    const nodeAddress = (nodeId: number): Effect.Effect<string, TransportError.TransportError> =>
      Effect.suspend(() => {
        const known = nodes.get(nodeId)
        if (known !== undefined) return Effect.succeed(address(known))
        // Unknown node: perhaps it joined since the last answer.
        return Effect.flatMap(refreshMetadata([]), () => {
          const node = nodes.get(nodeId)
          return node !== undefined ? Effect.succeed(address(node)) : Effect.fail(TransportError.make(
            "NETWORK_EXCEPTION",
            "connect",
            `Cannot connect to Kafka broker ${nodeId}: the cluster's metadata does not list it (it may be down); ask for the partition's leader again`,
          ))
        })
      })

    const connection = (nodeId: number): Effect.Effect<Connection.Connection, TransportError.TransportError> =>
      Effect.suspend(() => {
        const cached = byNode.get(nodeId)
        if (cached !== undefined && cached.connection.isOpen()) return Effect.succeed(cached.connection)
        return Semaphore.withPermit(permit(`node:${nodeId}`), Effect.gen(function* () {
          const again = byNode.get(nodeId)
          if (again !== undefined && again.connection.isOpen()) return again.connection
          if (again !== undefined) {
            byNode.delete(nodeId)
            yield* Scope.close(again.scope, Exit.void)
          }
          const opened = yield* open(yield* nodeAddress(nodeId))
          byNode.set(nodeId, opened)
          return opened.connection
        }))
      })

    /** Connects to a bootstrap address (or reuses the node connection at it). */
    const bootstrapConnection = (broker: string): Effect.Effect<Connection.Connection, TransportError.TransportError> =>
      Semaphore.withPermit(permit(`address:${broker}`), Effect.gen(function* () {
        const cached = byAddress.get(broker)
        if (cached !== undefined && cached.connection.isOpen()) return cached.connection
        if (cached !== undefined) {
          byAddress.delete(broker)
          yield* Scope.close(cached.scope, Exit.void)
        }
        const opened = yield* open(broker)
        byAddress.set(broker, opened)
        return opened.connection
      }))

    const any: Effect.Effect<Connection.Connection, TransportError.TransportError> = Effect.suspend(() => {
      for (const open of [...byNode.values(), ...byAddress.values()]) {
        if (open.connection.isOpen()) return Effect.succeed(open.connection)
      }
      // Known brokers first (the bootstrap list may be a load balancer or stale), then bootstrap.
      const candidates: Array<{ readonly broker: string; readonly connect: Effect.Effect<Connection.Connection, TransportError.TransportError> }> = [
        ...[...nodes.values()].map((node) => ({ broker: address(node), connect: connection(node.nodeId) })),
        ...options.bootstrap
          .filter((broker) => ![...nodes.values()].some((node) => address(node) === broker))
          .map((broker) => ({ broker, connect: bootstrapConnection(broker) })),
      ]
      const failures: Array<string> = []
      const attempt = (i: number): Effect.Effect<Connection.Connection, TransportError.TransportError> =>
        i >= candidates.length
          ? Effect.fail(TransportError.make(
            "NETWORK_EXCEPTION",
            "connect",
            `Cannot reach any Kafka broker (tried ${candidates.map((c) => c.broker).join(", ")}): ${failures.join("; ")}; check that the brokers run and the addresses are right${
              failures.some((failure) => failure.includes(" over TLS")) ? ", and that the listeners speak TLS" : ""
            }`,
          ))
          : Effect.catch(candidates[i]!.connect, (error) => {
            // Each connection's own advice is said once, for all of them, at the end.
            failures.push(error.message.replace(connectAdvice, ""))
            // A TLS or SASL refusal is the same at every broker: say it now.
            return error.retriable ? attempt(i + 1) : Effect.fail(error)
          })
      return attempt(0)
    })

    /** Puts a Metadata answer into the cache (partition by partition, leader epochs permitting). */
    /** Puts the answer into the cache; returns a line for each partition whose leader moved. */
    const absorb = (response: MetadataResponse, now: number): Array<string> => {
      const moves: Array<string> = []
      if (response.brokers.length > 0) {
        nodesFetchedAt = now
        nodes.clear()
        for (const broker of response.brokers) {
          nodes.set(broker.nodeId, { nodeId: broker.nodeId, host: broker.host, port: broker.port, rack: broker.rack ?? null })
        }
        // A bootstrap connection at a node's address becomes that node's connection.
        for (const node of nodes.values()) {
          const open = byAddress.get(address(node))
          if (open !== undefined && open.connection.isOpen() && !byNode.has(node.nodeId)) {
            byAddress.delete(address(node))
            byNode.set(node.nodeId, open)
          }
        }
      }
      controllerId = response.controllerId ?? -1
      for (const topic of response.topics) {
        if (topic.errorCode !== 0 || topic.name === null) continue
        const cachedTopic = topicCache.get(topic.name)?.metadata
        // A topic deleted and created again under the same name starts its epochs over.
        const previous = cachedTopic !== undefined && cachedTopic.topicId === (topic.topicId ?? "") ? cachedTopic : undefined
        const partitions = [...topic.partitions]
          .sort((a, b) => a.partitionIndex - b.partitionIndex)
          .map((p): PartitionMetadata => {
            const fresh: PartitionMetadata = {
              partition: p.partitionIndex,
              leaderId: p.leaderId,
              leaderEpoch: p.leaderEpoch ?? -1,
              replicas: p.replicaNodes,
              isr: p.isrNodes,
              offlineReplicas: p.offlineReplicas ?? [],
              errorCode: p.errorCode,
            }
            const cached = previous?.partitions[p.partitionIndex]
            // An answer from a broker behind on an election must not undo a newer one.
            if (cached !== undefined && fresh.leaderEpoch >= 0 && cached.leaderEpoch > fresh.leaderEpoch) return cached
            if (cached !== undefined && cached.leaderId !== fresh.leaderId) {
              moves.push(
                `Partition ${topic.name}/${fresh.partition} is led by broker ${fresh.leaderId} now (epoch ${fresh.leaderEpoch}), was ${cached.leaderId} (epoch ${cached.leaderEpoch})`,
              )
            }
            return fresh
          })
        topicCache.set(topic.name, {
          metadata: { name: topic.name, topicId: topic.topicId ?? "", isInternal: topic.isInternal ?? false, partitions },
          fetchedAt: now,
          stale: false,
        })
      }
      return moves
    }

    /** One Metadata request for these topics (none: only the brokers), into the cache. */
    const refreshMetadata = (topics: ReadonlyArray<string>): Effect.Effect<MetadataResponse, TransportError.TransportError> =>
      Effect.gen(function* () {
        const broker = yield* any
        const version = yield* broker.versionFor(Metadata)
        const response = yield* broker.request(Metadata, {
          topics: topics.map((name) => ({ name })),
          ...(version >= 4 ? { allowAutoTopicCreation: false } : {}),
        }, { version })
        if ((response.errorCode ?? 0) !== 0) {
          const code = TransportError.nameOfCode(response.errorCode!)
          return yield* Effect.fail(kafkaError(code, "metadata", `Kafka at ${broker.broker} refused a Metadata request (${code})`))
        }
        const moves = absorb(response, yield* Clock.currentTimeMillis)
        for (const line of moves) yield* Effect.logDebug(line).pipe(Effect.annotateLogs({ broker: broker.broker }))
        for (const topic of response.topics) {
          if (topic.errorCode !== 0 && topic.name !== null) topicCache.delete(topic.name)
        }
        return response
      })

    const needsFetch = (topic: string, now: number): boolean => {
      const entry = topicCache.get(topic)
      return entry === undefined || entry.stale || now - entry.fetchedAt >= metadataMaxAge
    }

    /** The cached metadata of `topics`, fetching those that need it in one request. */
    const topicsOnce = (
      topics: ReadonlyArray<string>,
    ): Effect.Effect<ReadonlyMap<string, TopicMetadata>, TransportError.TransportError> =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        if (now - nodesFetchedAt >= metadataMaxAge || topics.some((topic) => needsFetch(topic, now))) {
          yield* Semaphore.withPermit(metadataPermit, Effect.gen(function* () {
            // Another fiber may have fetched them while this one waited for the permit.
            const after = yield* Clock.currentTimeMillis
            const missing = [...new Set(topics)].filter((topic) => needsFetch(topic, after))
            if (missing.length === 0 && after - nodesFetchedAt < metadataMaxAge) return
            const response = yield* refreshMetadata(missing)
            for (const topic of response.topics) {
              if (topic.errorCode === 0) continue
              const code = TransportError.nameOfCode(topic.errorCode)
              const name = topic.name ?? topic.topicId ?? "?"
              return yield* Effect.fail(kafkaError(
                code,
                "metadata",
                code === "UNKNOWN_TOPIC_OR_PARTITION"
                  ? `Topic "${name}" does not exist in the Kafka cluster (UNKNOWN_TOPIC_OR_PARTITION): create it first`
                  : `Cannot get the metadata of topic "${name}" (${code})${code === "LEADER_NOT_AVAILABLE" ? ": a leader is being elected, retry" : ""}`,
                name,
              ))
            }
          }))
        }
        const result = new Map<string, TopicMetadata>()
        for (const topic of topics) {
          const entry = topicCache.get(topic)
          if (entry === undefined) {
            return yield* Effect.fail(kafkaError(
              "UNKNOWN_TOPIC_OR_PARTITION",
              "metadata",
              `Topic "${topic}" is not in the Kafka cluster's metadata (UNKNOWN_TOPIC_OR_PARTITION): create it first`,
              topic,
            ))
          }
          result.set(topic, entry.metadata)
        }
        return result
      })

    const topicsRetrying = (topics: ReadonlyArray<string>) =>
      retrying(topicsOnce(topics), (error) => error.retriable && error.code !== "UNKNOWN_TOPIC_OR_PARTITION")

    const leaderOnce = (tp: TopicPartition, refetched = false): Effect.Effect<Leader, TransportError.TransportError> =>
      Effect.gen(function* () {
        const topic = (yield* topicsOnce([tp.topic])).get(tp.topic)!
        const partition = topic.partitions[tp.partition]
        if (partition === undefined || partition.partition !== tp.partition) {
          // Partitions may have been added since the answer cached: ask once more, then it is an
          // answer (which `leaderFor` gives a moment to change: see `newTopicGrace`).
          topicCache.get(tp.topic)!.stale = true
          if (!refetched) return yield* leaderOnce(tp, true)
          return yield* Effect.fail(new TransportError.TransportError({
            code: "UNKNOWN_TOPIC_OR_PARTITION",
            retriable: true,
            operation: "metadata",
            message: `Partition ${tp.topic}/${tp.partition} does not exist: the topic has ${topic.partitions.length} partitions`,
            topic: tp.topic,
            partition: tp.partition,
          }))
        }
        if (partition.leaderId < 0 || !nodes.has(partition.leaderId)) {
          topicCache.get(tp.topic)!.stale = true
          return yield* Effect.fail(new TransportError.TransportError({
            code: "LEADER_NOT_AVAILABLE",
            retriable: true,
            operation: "metadata",
            message: `Partition ${tp.topic}/${tp.partition} has no leader now (${
              partition.errorCode === 0 ? "LEADER_NOT_AVAILABLE" : TransportError.nameOfCode(partition.errorCode)
            }): an election is running, retry`,
            topic: tp.topic,
            partition: tp.partition,
          }))
        }
        return { nodeId: partition.leaderId, leaderEpoch: partition.leaderEpoch }
      })

    const leaderFor = (tp: TopicPartition) =>
      untilKnown(retrying(leaderOnce(tp), (error) => error.retriable && error.code !== "UNKNOWN_TOPIC_OR_PARTITION"))

    const invalidate = (topic: string, hint?: LeaderHint): Effect.Effect<void> =>
      Effect.sync(() => {
        const entry = topicCache.get(topic)
        if (entry === undefined) return
        const cached = entry.metadata.partitions[hint?.partition ?? -1]
        if (hint !== undefined && cached !== undefined && hint.leaderId >= 0 && hint.leaderEpoch > cached.leaderEpoch) {
          for (const node of hint.endpoints ?? []) nodes.set(node.nodeId, node)
          if (nodes.has(hint.leaderId)) {
            const partitions = [...entry.metadata.partitions]
            partitions[hint.partition] = { ...cached, leaderId: hint.leaderId, leaderEpoch: hint.leaderEpoch, errorCode: 0 }
            entry.metadata = { ...entry.metadata, partitions }
            return
          }
        }
        entry.stale = true
      })

    // Coordinators: node ids by key; lookups waiting to be sent, by key type.
    const coordinators = new Map<string, number>()
    const queued = new Map<number, Map<string, Deferred.Deferred<BrokerNode, TransportError.TransportError>>>()

    const coordinatorError = (key: CoordinatorKey, code: number, message: string | null, broker: string) => {
      const name = TransportError.nameOfCode(code)
      return kafkaError(
        name,
        "findCoordinator",
        `Kafka at ${broker} found no coordinator for ${describeKey(key)} (${name}${message === null || message === "" ? "" : `: ${message}`})${
          TransportError.isRetriable(name) ? ": retry" : ""
        }`,
      )
    }

    /** Sends one FindCoordinator for every key of this type queued since the last one. */
    const flush = (keyType: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        const waiting = queued.get(keyType)
        queued.delete(keyType)
        if (waiting === undefined || waiting.size === 0) return
        const type = keyType === 0 ? "group" : "transaction"
        const settle = (id: string, outcome: Effect.Effect<BrokerNode, TransportError.TransportError>) => {
          const deferred = waiting.get(id)
          if (deferred !== undefined) Deferred.doneUnsafe(deferred, outcome)
        }
        const exit = yield* Effect.exit(Effect.gen(function* () {
          const broker = yield* any
          const version = yield* broker.versionFor(FindCoordinator)
          if (version >= 4) {
            const response = yield* broker.request(FindCoordinator, { keyType, coordinatorKeys: [...waiting.keys()] }, { version })
            for (const found of response.coordinators ?? []) {
              settle(
                found.key,
                found.errorCode === 0
                  ? Effect.succeed({ nodeId: found.nodeId, host: found.host, port: found.port, rack: null })
                  : Effect.fail(coordinatorError({ type, id: found.key }, found.errorCode, found.errorMessage, broker.broker)),
              )
            }
          } else {
            if (keyType !== 0 && version < 1) {
              return yield* Effect.fail(TransportError.make(
                "UNSUPPORTED_VERSION",
                "findCoordinator",
                `Kafka at ${broker.broker} cannot look up transaction coordinators (FindCoordinator v0 only): upgrade the broker`,
              ))
            }
            // Older brokers take one key a request.
            yield* Effect.forEach([...waiting.keys()], (id) =>
              Effect.flatMap(
                broker.request(FindCoordinator, { key: id, ...(version >= 1 ? { keyType } : {}) }, { version }),
                (response) =>
                  Effect.sync(() =>
                    settle(
                      id,
                      (response.errorCode ?? 0) === 0
                        ? Effect.succeed({ nodeId: response.nodeId ?? -1, host: response.host ?? "", port: response.port ?? -1, rack: null })
                        : Effect.fail(coordinatorError({ type, id }, response.errorCode ?? 0, response.errorMessage ?? null, broker.broker)),
                    )
                  ),
              ), { concurrency: "unbounded", discard: true })
          }
        }))
        for (const [id, deferred] of waiting) {
          Deferred.doneUnsafe(
            deferred,
            Exit.isFailure(exit)
              ? Effect.failCause(exit.cause)
              : Effect.fail(TransportError.make(
                "COORDINATOR_NOT_AVAILABLE",
                "findCoordinator",
                `Kafka did not answer for the coordinator of ${describeKey({ type, id })}: retry`,
              )),
          )
        }
      })

    const lookUp = (key: CoordinatorKey): Effect.Effect<BrokerNode, TransportError.TransportError> =>
      Effect.suspend(() => {
        const keyType = key.type === "group" ? 0 : 1
        let waiting = queued.get(keyType)
        const first = waiting === undefined
        if (waiting === undefined) {
          waiting = new Map()
          queued.set(keyType, waiting)
        }
        let deferred = waiting.get(key.id)
        if (deferred === undefined) {
          deferred = Deferred.makeUnsafe<BrokerNode, TransportError.TransportError>()
          waiting.set(key.id, deferred)
        }
        // The first lookup sends, after letting the fibers running now queue theirs.
        const send = first ? Effect.forkIn(Effect.andThen(Effect.yieldNow, flush(keyType)), scope) : Effect.void
        return Effect.andThen(send, Deferred.await(deferred))
      })

    const coordinatorOnce = (key: CoordinatorKey): Effect.Effect<Connection.Connection, TransportError.TransportError> =>
      Effect.gen(function* () {
        const name = keyName(key)
        let nodeId = coordinators.get(name)
        if (nodeId === undefined) {
          const node = yield* lookUp(key)
          if (!nodes.has(node.nodeId)) nodes.set(node.nodeId, node)
          coordinators.set(name, node.nodeId)
          nodeId = node.nodeId
        }
        return yield* Effect.tapError(connection(nodeId), () => Effect.sync(() => coordinators.delete(name)))
      })

    const coordinatorFor = (key: CoordinatorKey) => retrying(coordinatorOnce(key))

    const invalidateCoordinator = (key: CoordinatorKey): Effect.Effect<void> =>
      Effect.sync(() => void coordinators.delete(keyName(key)))

    return {
      connection,
      any,
      topics: topicsRetrying,
      leaderFor,
      invalidate,
      coordinatorFor,
      invalidateCoordinator,
      nodes: () => nodes,
      controllerId: () => controllerId,
    } satisfies Brokers
  })
