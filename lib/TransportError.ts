/**
 * The one error type of the transport seam, and the table that turns Kafka's error codes into it.
 *
 * Every transport maps what went wrong to a `TransportError` exactly once, at its edge, so callers
 * decide on `retriable` and `code` alone and never on a client library's exception classes. The
 * codes and their retriable flags are Kafka's protocol error codes, as the Java client classifies
 * them; franz-go's `kerr` package is the model. Conditions outside Kafka's protocol (a refused
 * connection, a client-side timeout) use the nearest Kafka code, and the one with none near, a
 * TLS handshake the client refuses, has a name of its own from {@link clientErrors}.
 *
 * @since 0.1.0
 */
import { Data } from "effect"

/**
 * A failed transport operation.
 *
 * `retriable` says whether the same call may succeed if made again (a leader election, a
 * coordinator moving); callers retry those on a schedule and surface the rest.
 *
 * @since 0.1.0
 * @category errors
 */
export class TransportError extends Data.TaggedError("TransportError")<{
  /** Kafka's name for the condition, e.g. `NOT_LEADER_OR_FOLLOWER`. */
  readonly code: KafkaErrorName
  readonly retriable: boolean
  /** What was being done, to what, and why it failed. */
  readonly message: string
  /** The operation that failed: `send`, `commit`, `createTopic`, ... */
  readonly operation: string
  /** The topic a failed record was for (set by `Transport.sendEach`). */
  readonly topic?: string | undefined
  /** The partition a failed record was placed in, when it was placed (set by `Transport.sendEach`). */
  readonly partition?: number | undefined
  readonly cause?: unknown
}> {}

/**
 * Kafka's protocol error codes: `[code, name, retriable]`.
 *
 * @since 0.1.0
 * @category models
 */
export const kafkaErrors = [
  [-1, "UNKNOWN_SERVER_ERROR", false],
  [1, "OFFSET_OUT_OF_RANGE", false],
  [2, "CORRUPT_MESSAGE", true],
  [3, "UNKNOWN_TOPIC_OR_PARTITION", true],
  [4, "INVALID_FETCH_SIZE", false],
  [5, "LEADER_NOT_AVAILABLE", true],
  [6, "NOT_LEADER_OR_FOLLOWER", true],
  [7, "REQUEST_TIMED_OUT", true],
  [8, "BROKER_NOT_AVAILABLE", false],
  [9, "REPLICA_NOT_AVAILABLE", true],
  [10, "MESSAGE_TOO_LARGE", false],
  [11, "STALE_CONTROLLER_EPOCH", false],
  [12, "OFFSET_METADATA_TOO_LARGE", false],
  [13, "NETWORK_EXCEPTION", true],
  [14, "COORDINATOR_LOAD_IN_PROGRESS", true],
  [15, "COORDINATOR_NOT_AVAILABLE", true],
  [16, "NOT_COORDINATOR", true],
  [17, "INVALID_TOPIC_EXCEPTION", false],
  [18, "RECORD_LIST_TOO_LARGE", false],
  [19, "NOT_ENOUGH_REPLICAS", true],
  [20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", true],
  [21, "INVALID_REQUIRED_ACKS", false],
  [22, "ILLEGAL_GENERATION", false],
  [23, "INCONSISTENT_GROUP_PROTOCOL", false],
  [24, "INVALID_GROUP_ID", false],
  [25, "UNKNOWN_MEMBER_ID", false],
  [26, "INVALID_SESSION_TIMEOUT", false],
  [27, "REBALANCE_IN_PROGRESS", false],
  [28, "INVALID_COMMIT_OFFSET_SIZE", false],
  [29, "TOPIC_AUTHORIZATION_FAILED", false],
  [30, "GROUP_AUTHORIZATION_FAILED", false],
  [31, "CLUSTER_AUTHORIZATION_FAILED", false],
  [32, "INVALID_TIMESTAMP", false],
  [33, "UNSUPPORTED_SASL_MECHANISM", false],
  [34, "ILLEGAL_SASL_STATE", false],
  [35, "UNSUPPORTED_VERSION", false],
  [36, "TOPIC_ALREADY_EXISTS", false],
  [37, "INVALID_PARTITIONS", false],
  [38, "INVALID_REPLICATION_FACTOR", false],
  [39, "INVALID_REPLICA_ASSIGNMENT", false],
  [40, "INVALID_CONFIG", false],
  [41, "NOT_CONTROLLER", true],
  [42, "INVALID_REQUEST", false],
  [43, "UNSUPPORTED_FOR_MESSAGE_FORMAT", false],
  [44, "POLICY_VIOLATION", false],
  [45, "OUT_OF_ORDER_SEQUENCE_NUMBER", false],
  [46, "DUPLICATE_SEQUENCE_NUMBER", false],
  [47, "INVALID_PRODUCER_EPOCH", false],
  [48, "INVALID_TXN_STATE", false],
  [49, "INVALID_PRODUCER_ID_MAPPING", false],
  [50, "INVALID_TRANSACTION_TIMEOUT", false],
  [51, "CONCURRENT_TRANSACTIONS", true],
  [52, "TRANSACTION_COORDINATOR_FENCED", false],
  [53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", false],
  [54, "SECURITY_DISABLED", false],
  [55, "OPERATION_NOT_ATTEMPTED", false],
  [56, "KAFKA_STORAGE_ERROR", true],
  [57, "LOG_DIR_NOT_FOUND", false],
  [58, "SASL_AUTHENTICATION_FAILED", false],
  [59, "UNKNOWN_PRODUCER_ID", false],
  [60, "REASSIGNMENT_IN_PROGRESS", false],
  [61, "DELEGATION_TOKEN_AUTH_DISABLED", false],
  [62, "DELEGATION_TOKEN_NOT_FOUND", false],
  [63, "DELEGATION_TOKEN_OWNER_MISMATCH", false],
  [64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", false],
  [65, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", false],
  [66, "DELEGATION_TOKEN_EXPIRED", false],
  [67, "INVALID_PRINCIPAL_TYPE", false],
  [68, "NON_EMPTY_GROUP", false],
  [69, "GROUP_ID_NOT_FOUND", false],
  [70, "FETCH_SESSION_ID_NOT_FOUND", true],
  [71, "INVALID_FETCH_SESSION_EPOCH", true],
  [72, "LISTENER_NOT_FOUND", true],
  [73, "TOPIC_DELETION_DISABLED", false],
  [74, "FENCED_LEADER_EPOCH", true],
  [75, "UNKNOWN_LEADER_EPOCH", true],
  [76, "UNSUPPORTED_COMPRESSION_TYPE", false],
  [77, "STALE_BROKER_EPOCH", false],
  [78, "OFFSET_NOT_AVAILABLE", true],
  [79, "MEMBER_ID_REQUIRED", false],
  [80, "PREFERRED_LEADER_NOT_AVAILABLE", true],
  [81, "GROUP_MAX_SIZE_REACHED", false],
  [82, "FENCED_INSTANCE_ID", false],
  [83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", true],
  [84, "ELECTION_NOT_NEEDED", true],
  [85, "NO_REASSIGNMENT_IN_PROGRESS", false],
  [86, "GROUP_SUBSCRIBED_TO_TOPIC", false],
  [87, "INVALID_RECORD", false],
  [88, "UNSTABLE_OFFSET_COMMIT", true],
  [89, "THROTTLING_QUOTA_EXCEEDED", true],
  [90, "PRODUCER_FENCED", false],
  [91, "RESOURCE_NOT_FOUND", false],
  [92, "DUPLICATE_RESOURCE", false],
  [93, "UNACCEPTABLE_CREDENTIAL", false],
  [94, "INCONSISTENT_VOTER_SET", false],
  [95, "INVALID_UPDATE_VERSION", false],
  [96, "FEATURE_UPDATE_FAILED", false],
  [97, "PRINCIPAL_DESERIALIZATION_FAILURE", false],
  [98, "SNAPSHOT_NOT_FOUND", false],
  [99, "POSITION_OUT_OF_RANGE", false],
  [100, "UNKNOWN_TOPIC_ID", true],
  [101, "DUPLICATE_BROKER_REGISTRATION", false],
  [102, "BROKER_ID_NOT_REGISTERED", false],
  [103, "INCONSISTENT_TOPIC_ID", true],
  [104, "INCONSISTENT_CLUSTER_ID", false],
  [105, "TRANSACTIONAL_ID_NOT_FOUND", false],
  [106, "FETCH_SESSION_TOPIC_ID_ERROR", true],
  [107, "INELIGIBLE_REPLICA", false],
  [108, "NEW_LEADER_ELECTED", false],
  [109, "OFFSET_MOVED_TO_TIERED_STORAGE", false],
  [110, "FENCED_MEMBER_EPOCH", false],
  [111, "UNRELEASED_INSTANCE_ID", false],
  [112, "UNSUPPORTED_ASSIGNOR", false],
  [113, "STALE_MEMBER_EPOCH", false],
  [114, "MISMATCHED_ENDPOINT_TYPE", false],
  [115, "UNSUPPORTED_ENDPOINT_TYPE", false],
  [116, "UNKNOWN_CONTROLLER_ID", false],
  [117, "UNKNOWN_SUBSCRIPTION_ID", false],
  [118, "TELEMETRY_TOO_LARGE", false],
  [119, "INVALID_REGISTRATION", false],
  [120, "TRANSACTION_ABORTABLE", false],
] as const

/**
 * Conditions a client finds before the broker could answer, which Kafka's protocol has no code
 * for: `[name, retriable]`. `SSL_AUTHENTICATION_FAILED` is a TLS handshake the client refused (the
 * broker's certificate is not trusted, or not for the name connected to), as Kafka's Java client
 * names it (`SslAuthenticationException`); it does not heal by retrying. `PROTOCOL_ERROR` is a
 * broker's answer the client cannot read (bytes that do not decode as the response asked for, a
 * correlation id out of order, a frame over the size limit, as a plaintext client reading a TLS
 * listener's alert sees): the same broker would answer the same way again.
 *
 * @since 0.1.0
 * @category models
 */
export const clientErrors = [
  ["SSL_AUTHENTICATION_FAILED", false],
  ["PROTOCOL_ERROR", false],
] as const

/**
 * The name of a Kafka protocol error, or of a client-side condition from {@link clientErrors}.
 *
 * @since 0.1.0
 * @category models
 */
export type KafkaErrorName = (typeof kafkaErrors)[number][1] | (typeof clientErrors)[number][0]

const byCode = new Map<number, readonly [number, KafkaErrorName, boolean]>(
  kafkaErrors.map((entry) => [entry[0], entry]),
)
const byName = new Map<string, readonly [number, KafkaErrorName, boolean]>([
  ...kafkaErrors.map((entry) => [entry[1], entry] as const),
  ...clientErrors.map(([name, retriable]) => [name, [-1, name, retriable] as const] as const),
])

/**
 * Whether Kafka considers the named condition retriable.
 *
 * @since 0.1.0
 * @category constructors
 */
export const isRetriable = (code: KafkaErrorName): boolean => byName.get(code)?.[2] ?? false

/**
 * The name for a numeric Kafka error code; an unknown code is `UNKNOWN_SERVER_ERROR`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const nameOfCode = (code: number): KafkaErrorName => byCode.get(code)?.[1] ?? "UNKNOWN_SERVER_ERROR"

/**
 * The name for a Kafka error as a client reports it: by name (kafkajs' `type`) or by number.
 *
 * @since 0.1.0
 * @category constructors
 */
export const nameOf = (codeOrName: number | string): KafkaErrorName => {
  if (typeof codeOrName === "number") return nameOfCode(codeOrName)
  // kafkajs still calls code 6 by its pre-2.5 name.
  const name = codeOrName === "NOT_LEADER_FOR_PARTITION" ? "NOT_LEADER_OR_FOLLOWER" : codeOrName
  return byName.get(name)?.[1] ?? "UNKNOWN_SERVER_ERROR"
}

/**
 * A `TransportError` for a Kafka condition, with `retriable` taken from the table.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  code: KafkaErrorName,
  operation: string,
  message: string,
  cause?: unknown,
): TransportError =>
  new TransportError({
    code,
    retriable: isRetriable(code),
    operation,
    message,
    ...(cause === undefined ? {} : { cause }),
  })

/**
 * The conditions under which a broker refuses a partition's record batch for what its records
 * are, not for the state of the cluster: a record over `max.message.bytes` or a batch over it
 * (`MESSAGE_TOO_LARGE`, `RECORD_LIST_TOO_LARGE`), a record the topic's rules reject
 * (`INVALID_RECORD`: a keyless record on a compacted topic; `INVALID_TIMESTAMP`), a batch whose
 * checksum fails (`CORRUPT_MESSAGE`). Nothing of a refused batch was written, so its records may
 * be sent again without duplicating anything, and a smaller batch without the record at fault
 * may be written.
 *
 * @since 0.1.0
 * @category models
 */
export const batchRefusals: ReadonlySet<KafkaErrorName> = new Set<KafkaErrorName>([
  "MESSAGE_TOO_LARGE",
  "RECORD_LIST_TOO_LARGE",
  "INVALID_RECORD",
  "INVALID_TIMESTAMP",
  "CORRUPT_MESSAGE",
])

/**
 * Whether the error is a batch refusal (see {@link batchRefusals}): nothing was written.
 *
 * @since 0.1.0
 * @category constructors
 */
export const refusesBatch = (error: TransportError): boolean => batchRefusals.has(error.code)

/**
 * The error as one record's outcome: the same condition, naming the record's topic and the
 * partition it was placed in.
 *
 * @since 0.1.0
 * @category constructors
 */
export const forRecord = (error: TransportError, topic: string, partition: number | undefined): TransportError =>
  error.topic === topic && error.partition === partition
    ? error
    : new TransportError({
      code: error.code,
      retriable: error.retriable,
      message: error.message,
      operation: error.operation,
      topic,
      partition,
      ...(error.cause === undefined ? {} : { cause: error.cause }),
    })
