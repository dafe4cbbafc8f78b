/**
 * The Kafka transport: the `Transport` contract on a real cluster, through Partita's own Kafka
 * client (`internal/kafka/`, written from Kafka's protocol; `internal/kafka/DESIGN.md` explains
 * its layers).
 *
 * Why a client of our own, and not kafkajs (which `KafkaJsTransport` still offers):
 * - Fetched records stay bytes: a batch hands out records read on demand, offsets and
 *   timestamps as numbers, no object per record until a handler asks.
 * - Revocation: on the KIP-848 consumer protocol (Kafka 4's, where the broker has it) and on the
 *   classic protocol with the cooperative-sticky assignor (Kafka 3.x), a revoked partition is
 *   given up only after Partita acknowledged it, on every member, leader or not, and only the
 *   partitions that move are revoked.
 * - One fetch in flight per broker for all of its partitions, on a connection of its own.
 *
 * How the contract maps onto the client:
 * - The layer owns a connection pool (`brokers.ts`: metadata, leaders, coordinators), an admin
 *   (`admin.ts`) and one idempotent producer (`producer.ts`), all in the layer's scope; closing
 *   it flushes the producer (bounded) and closes every connection.
 * - `sendEach` hands the records to the producer's accumulator, which batches them per
 *   partition by records, bytes and linger, whoever sent them: a thousand fibers sending one
 *   record each share a few batches. Keys are placed by Kafka's murmur2, keyless records
 *   round-robin. `acks: "all"` batches are idempotent (retries never duplicate or reorder);
 *   `leader` and `none` are not, as the broker takes producer ids only with acks=all.
 * - `subscribe` is a group member and a fetch loop (`internal/kafka/subscription.ts`); each
 *   subscription has its own connections for fetching and for its coordinator.
 * - `createTopic` waits until every partition's leader answers for it; `describeTopic` lists
 *   each partition's log start offset and high watermark.
 *
 * Where it differs from `MemoryTransport`: time is real time (`features.clockDriven` is false),
 * there is no fault injection, partitions are spread by the broker (KIP-848) or by the
 * cooperative-sticky assignor (classic), not range.
 *
 * - `transactional` is one transactional producer per id (`transactions.ts`): InitProducerId on
 *   the transaction coordinator fences older producers with the id; on brokers with transactions
 *   v2 (KIP-890, Kafka 4) partitions and offsets join implicitly and every commit bumps the
 *   epoch, elsewhere AddPartitionsToTxn and AddOffsetsToTxn. `sendOffsets` for a group this
 *   transport is a member of carries the member id and generation (KIP-447), so the group fences
 *   a zombie's offsets; `commit` returns once the offsets are readable with `committed`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { KafkaTransport, Transport } from "partita"
 *
 * const program = Effect.gen(function*() {
 *   const transport = yield* Transport.Transport
 *   yield* transport.createTopic({ topic: "greetings", partitions: 3 })
 *   yield* transport.send([{ topic: "greetings", key: null, value: new TextEncoder().encode("hi") }])
 * }).pipe(Effect.provide(KafkaTransport.layerFromEnv()))
 * ```
 *
 * @since 0.2.0
 */
import type * as tls from "node:tls"
import { Config, Duration, Effect, Layer, Schedule } from "effect"
import * as Admin from "./internal/kafka/admin.ts"
import * as Brokers from "./internal/kafka/brokers.ts"
import type { Compression } from "./internal/kafka/compression.ts"
import type * as Connection from "./internal/kafka/connection.ts"
import type * as Group from "./internal/kafka/group.ts"
import * as KafkaProducer from "./internal/kafka/producer.ts"
import type { SaslCredentials } from "./internal/kafka/sasl.ts"
import * as KafkaSubscription from "./internal/kafka/subscription.ts"
import * as Transactions from "./internal/kafka/transactions.ts"
import * as KafkaEnv from "./internal/kafkaEnv.ts"
import { allWritten } from "./internal/sendOutcomes.ts"
import { type OffsetCommit, type Transaction, Transport } from "./Transport.ts"
import * as TransportError from "./TransportError.ts"

export type { Compression } from "./internal/kafka/compression.ts"
export type { SaslCredentials } from "./internal/kafka/sasl.ts"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** Bootstrap brokers as `host:port`. Default `127.0.0.1:9092`. */
  readonly brokers?: ReadonlyArray<string> | undefined
  /** The client id brokers see; a subscription's own `clientId` overrides it. Default `partita`. */
  readonly clientId?: string | undefined
  /**
   * `true` for TLS with the runtime's trusted CAs, or `node:tls` options (`ca` for a private CA,
   * `servername`, a client `cert` and `key`).
   */
  readonly ssl?: boolean | tls.ConnectionOptions | undefined
  /** SASL PLAIN or SCRAM-SHA-256/512 credentials; the password is `Redacted`. */
  readonly sasl?: SaslCredentials | undefined
  /** How produced batches are compressed: every codec works on Bun, Deno and Node. Default `none`. */
  readonly compression?: Compression | undefined
  /** How long connecting to a broker (TLS and SASL included) may take. Default 10 seconds. */
  readonly connectionTimeout?: Duration.Input | undefined
  /** How long a request may wait for its answer. Default 30 seconds. */
  readonly requestTimeout?: Duration.Input | undefined
  /** Idempotent `acks: "all"` sends. Default true. */
  readonly idempotent?: boolean | undefined
  /**
   * How long a partition's batch waits for more records. Default 0: records go out at once, and
   * batches form while a request is in flight (what `Producer` sends is already a batch). A
   * linger only delays a handler that waits for its send, at every record: 5 ms (Kafka's Java
   * default) held a forwarding actor to about 500 records/s over 3 partitions, 0 to about 8k.
   */
  readonly linger?: Duration.Input | undefined
  /** How long a fetch waits for records before it returns empty. Default 500 ms, as Kafka's Java client. */
  readonly fetchMaxWait?: Duration.Input | undefined
  /** The most bytes one fetch returns per partition. Default 1 MiB. */
  readonly maxBytesPerPartition?: number | undefined
  /** The most bytes one fetch returns. Default 50 MiB. */
  readonly maxBytes?: number | undefined
  /** How long a transaction may stay open before the broker aborts it. Default 60 seconds. */
  readonly transactionTimeout?: Duration.Input | undefined
  /**
   * The consumer group protocol: `consumer` (KIP-848, server-side assignment) or `classic`
   * (JoinGroup/SyncGroup with the cooperative-sticky assignor). Default: `consumer` where the
   * group's coordinator supports it, else `classic`.
   */
  readonly groupProtocol?: Group.Protocol | undefined
  /**
   * Static membership (`group.instance.id`): a member that restarts with the same id within the
   * session timeout gets its partitions back without a rebalance. Must be unique among the
   * group's members (a host name, a pod name); every subscription of this transport uses it.
   */
  readonly groupInstanceId?: string | undefined
}

/**
 * @since 0.2.0
 * @category defaults
 */
export const defaults = {
  brokers: ["127.0.0.1:9092"] as ReadonlyArray<string>,
  clientId: "partita",
} as const

const hostAndPort = (broker: string): { readonly host: string; readonly port: number } => {
  const at = broker.lastIndexOf(":")
  const host = broker.slice(0, at).replace(/^\[(.*)\]$/, "$1")
  return { host, port: Number(broker.slice(at + 1)) }
}

/**
 * Connects to the cluster in the current scope and builds the transport.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const bootstrap = options.brokers ?? defaults.brokers
  const clientId = options.clientId ?? defaults.clientId
  const connection: Omit<Connection.Options, "broker"> = {
    clientId,
    ...(options.ssl === undefined || options.ssl === false ? {} : { tls: options.ssl }),
    ...(options.sasl === undefined ? {} : { sasl: options.sasl }),
    ...(options.connectionTimeout === undefined ? {} : { connectTimeout: options.connectionTimeout }),
    ...(options.requestTimeout === undefined ? {} : { requestTimeout: options.requestTimeout }),
  }
  const brokers = yield* Brokers.make({ ...connection, bootstrap })
  // The pool connects on first use; connect now, so that a refused certificate or password (or
  // no reachable broker) fails building the layer, once, rather than the first send later.
  yield* brokers.any
  const admin = Admin.make(brokers)
  const producer = yield* KafkaProducer.make(KafkaProducer.fromBrokers(brokers), {
    idempotent: options.idempotent,
    compression: options.compression,
    linger: options.linger ?? Duration.zero,
  })
  const first = hostAndPort(bootstrap[0]!)

  /** This transport's live members by group: KIP-447 offsets in a transaction carry their generation. */
  const members = new Map<string, KafkaSubscription.Joined>()

  /**
   * A transaction whose offsets carry the group member's generation when this transport is a
   * member of the group (KIP-447: a zombie is fenced by the group), and whose `commit` returns
   * once those offsets are readable: Kafka applies them to the group a moment after the commit
   * (waited for at most 5 seconds, as `KafkaJsTransport` does).
   */
  const visibleOffsets = (transaction: Transactions.Transaction): Transaction => {
    const sent = new Map<string, Array<OffsetCommit>>()
    return {
      send: transaction.send,
      sendOffsets: (group, offsets) =>
        Effect.suspend(() => {
          const member = members.get(group)
          return Effect.tap(
            transaction.sendOffsets(
              group,
              offsets,
              member === undefined ? undefined : { memberId: member.memberId, generationId: member.generation() },
            ),
            () => Effect.sync(() => sent.set(group, [...(sent.get(group) ?? []), ...offsets])),
          )
        }),
      commit: Effect.andThen(
        transaction.commit,
        Effect.forEach([...sent], ([group, offsets]) =>
          admin.committedOffsets(group, offsets).pipe(
            Effect.flatMap((committed) =>
              offsets.every((offset) =>
                  committed.some((c) => c.topic === offset.topic && c.partition === offset.partition && c.offset >= offset.offset)
                )
                ? Effect.void
                : Effect.fail("not yet" as const)
            ),
            // Usually visible within a few milliseconds: look again soon, then less often.
            Effect.retry(Schedule.min([Schedule.exponential("2 millis"), Schedule.spaced("50 millis")])),
            Effect.timeoutOption("5 seconds"),
            Effect.ignore,
          ), { discard: true }),
      ),
      abort: transaction.abort,
    }
  }
  const fetch = {
    ...(options.fetchMaxWait === undefined ? {} : { maxWait: options.fetchMaxWait }),
    ...(options.maxBytesPerPartition === undefined ? {} : { partitionMaxBytes: options.maxBytesPerPartition }),
    ...(options.maxBytes === undefined ? {} : { maxBytes: options.maxBytes }),
  }

  return Transport.of({
    name: "kafka",
    features: { transactions: true, faultInjection: false, clockDriven: false, groupFencedTransactions: true },
    telemetry: { "server.address": first.host, "server.port": first.port, "messaging.client.id": clientId },
    sendEach: producer.sendEach,
    send: (records, sendOptions) => Effect.flatMap(producer.sendEach(records, sendOptions), allWritten),
    subscribe: (subscribeOptions) =>
      Effect.tap(
        KafkaSubscription.subscribe(brokers, admin, {
          ...subscribeOptions,
          connection,
          fetch,
          protocol: options.groupProtocol,
          instanceId: options.groupInstanceId,
        }),
        (joined) =>
          Effect.acquireRelease(
            Effect.sync(() => members.set(joined.group, joined)),
            () => Effect.sync(() => members.get(joined.group) === joined && members.delete(joined.group)),
          ),
      ),
    transactional: (transactionalId) =>
      Effect.map(
        Transactions.make(brokers, {
          transactionalId,
          transactionTimeout: options.transactionTimeout,
          producer: { compression: options.compression, linger: options.linger ?? Duration.zero },
        }),
        (producer) => ({
          transactionalId,
          begin: Effect.map(producer.begin, (transaction) => visibleOffsets(transaction)),
        }),
      ),
    createTopic: (spec) =>
      admin.createTopics([{ topic: spec.topic, partitions: spec.partitions, config: spec.config }]),
    describeTopic: admin.describeTopic,
    listTopics: admin.listTopics,
    listOffsets: (queries) =>
      Effect.map(
        admin.listOffsets(queries.map(({ topic, partition, at }) => ({ topic, partition, spec: at }))),
        (listed) =>
          listed.map(({ topic, partition, offset, timestamp }) => ({
            topic,
            partition,
            offset: offset ?? undefined,
            timestamp: offset !== null && timestamp >= 0 ? timestamp : undefined,
          })),
      ),
    committedOffsets: (group, topics) =>
      Effect.map(admin.committedOffsets(group), (committed) =>
        committed
          .filter((offset) => topics === undefined || topics.includes(offset.topic))
          .sort((a, b) => a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.partition - b.partition)),
  })
})

/**
 * The Kafka transport. Building it connects to the cluster, and fails with a `TransportError`
 * when it cannot.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Transport, TransportError.TransportError> =>
  Layer.effect(Transport, make(options))

/**
 * The options the environment gives: `KAFKA_BROKERS` (comma separated, required),
 * `KAFKA_CLIENT_ID`, `KAFKA_SSL` (a boolean), `KAFKA_SSL_CA_FILE` (a PEM file of the CA
 * certificates to trust instead of the runtime's; it turns TLS on, and contradicts
 * `KAFKA_SSL=false`), and SASL as `KAFKA_SASL_MECHANISM` (`plain`, `scram-sha-256` or
 * `scram-sha-512`) with `KAFKA_SASL_USERNAME` and `KAFKA_SASL_PASSWORD` (read as `Redacted`,
 * required once a mechanism is set). The same variables as `KafkaJsTransport`'s.
 *
 * @since 0.2.0
 * @category configuration
 */
export const config: Config.Config<Options> = KafkaEnv.config

/**
 * The Kafka transport with its options read from a `Config`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options>,
): Layer.Layer<Transport, TransportError.TransportError | Config.ConfigError> =>
  Layer.unwrap(Effect.map(options, layer))

/**
 * The Kafka transport configured by the environment (see {@link config}); `options` supplies
 * what the environment cannot say (client certificates, compression, the group protocol). What
 * the environment sets wins, except that `KAFKA_SSL=true` keeps TLS options given here, and
 * `KAFKA_SSL_CA_FILE` adds its CA to them.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerFromEnv = (
  options: Options = {},
): Layer.Layer<Transport, TransportError.TransportError | Config.ConfigError> =>
  layerConfig(Config.map(KafkaEnv.config, (fromEnv) => KafkaEnv.withEnv(options, fromEnv)))
