/**
 * What the transport contract and Partita's tools ask of a cluster's administration: create,
 * delete and describe topics (with configs), add partitions, list, describe and delete groups,
 * list offsets (earliest, latest, by timestamp) and read a group's committed offsets. Small on
 * purpose; Kafka's Java `Admin` is the model for where each request goes:
 *
 * - topic changes (CreateTopics, DeleteTopics, CreatePartitions) to the controller the metadata
 *   names (a KRaft broker forwards them), NOT_CONTROLLER refetching it;
 * - ListOffsets to each partition's leader, one request per leader, a stale leader
 *   (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, ...) invalidated and only its partitions
 *   asked again;
 * - group requests to the group's coordinator, NOT_COORDINATOR and its kin forgetting it;
 * - ListGroups to every broker (each lists the groups it coordinates).
 *
 * Retriable answers are retried on the pool's kind of bounded schedule; every failure is a
 * `TransportError` naming what it was about.
 *
 * Not done (yet): describeGroups uses the classic DescribeGroups only (a KIP-848 consumer group
 * needs ConsumerGroupDescribe); no alterConfigs, deleteRecords or offset alteration; listGroups
 * takes no state or type filter.
 */
import { Duration, Effect, Schedule } from "effect"
import type { CommittedOffset, TopicDescription, TopicPartition } from "../../Transport.ts"
import * as TransportError from "../../TransportError.ts"
import * as Brokers from "./brokers.ts"
import type { Connection } from "./connection.ts"
import { CreatePartitions } from "./protocol/CreatePartitions.ts"
import { CreateTopics } from "./protocol/CreateTopics.ts"
import { DeleteGroups } from "./protocol/DeleteGroups.ts"
import { DeleteTopics } from "./protocol/DeleteTopics.ts"
import { DescribeConfigs } from "./protocol/DescribeConfigs.ts"
import { DescribeGroups } from "./protocol/DescribeGroups.ts"
import { ListGroups } from "./protocol/ListGroups.ts"
import { ListOffsets } from "./protocol/ListOffsets.ts"
import { Metadata } from "./protocol/Metadata.ts"
import { OffsetFetch } from "./protocol/OffsetFetch.ts"
import { zeroUuid } from "./protocol/wire.ts"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** How long the broker may take to apply a topic change, and how long `createTopics` waits for leaders. Default 30 seconds. */
  readonly timeout?: Duration.Input | undefined
  /** How retriable answers are retried. Default {@link Brokers.defaults}' schedule. */
  readonly retry?: Schedule.Schedule<unknown, TransportError.TransportError> | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export const defaults = {
  timeout: Duration.seconds(30),
} as const

/** A topic to create. */
export interface NewTopic {
  readonly topic: string
  readonly partitions: number
  /** Default: the cluster's `default.replication.factor`. */
  readonly replicationFactor?: number | undefined
  readonly config?: Readonly<Record<string, string>> | undefined
}

/** The resource a config belongs to. */
export type ConfigResource =
  | { readonly type: "topic"; readonly name: string }
  | { readonly type: "broker"; readonly nodeId: number }

/** One config entry as the broker describes it. */
export interface ConfigEntry {
  readonly name: string
  /** `null` for a sensitive value (the broker never sends those) or one unset. */
  readonly value: string | null
  readonly readOnly: boolean
  readonly isSensitive: boolean
  /** Where the value comes from: `topic`, `broker`, `default`, ... (Kafka's ConfigSource). */
  readonly source: ConfigSource
}

/** Kafka's DescribeConfigs config sources. */
export type ConfigSource =
  | "unknown"
  | "topic"
  | "dynamic-broker"
  | "dynamic-default-broker"
  | "static-broker"
  | "default"
  | "dynamic-broker-logger"
  | "client-metrics"
  | "group"

const configSources: ReadonlyArray<ConfigSource> = [
  "unknown",
  "topic",
  "dynamic-broker",
  "dynamic-default-broker",
  "static-broker",
  "default",
  "dynamic-broker-logger",
  "client-metrics",
  "group",
]

/** A group as ListGroups lists it. */
export interface ListedGroup {
  readonly groupId: string
  /** `consumer` for consumer groups (classic or KIP-848), empty for others. */
  readonly protocolType: string
  /** `Stable`, `Empty`, ... (ListGroups v4+), else empty. */
  readonly state: string
  /** `classic` or `consumer` (ListGroups v5+), else empty. */
  readonly type: string
}

/** A group as DescribeGroups describes it. */
export interface GroupDescription {
  readonly groupId: string
  readonly state: string
  readonly protocolType: string
  /** The assignor (or other protocol) the group chose. */
  readonly protocol: string
  readonly members: ReadonlyArray<GroupMember>
}

export interface GroupMember {
  readonly memberId: string
  readonly groupInstanceId: string | null
  readonly clientId: string
  readonly clientHost: string
  /** The member's protocol metadata (a consumer's subscription), as sent. */
  readonly metadata: Uint8Array
  /** The member's assignment, as the leader sent it. */
  readonly assignment: Uint8Array
}

/** Which offset of a partition to list. */
export type OffsetSpec = "earliest" | "latest" | { readonly timestamp: number }

export interface OffsetQuery extends TopicPartition {
  readonly spec: OffsetSpec
}

export interface ListedOffset extends TopicPartition {
  /** `null` when no record has a timestamp at or after the one asked for. */
  readonly offset: number | null
  /** The record's timestamp for a timestamp query; -1 otherwise. */
  readonly timestamp: number
  readonly leaderEpoch: number
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Admin {
  /**
   * Creates topics and waits until every partition has a leader that answers for it (as
   * kafkajs' `waitForLeaders`). An existing topic fails with a non-retriable
   * `TOPIC_ALREADY_EXISTS` naming it.
   */
  readonly createTopics: (topics: ReadonlyArray<NewTopic>) => Effect.Effect<void, TransportError.TransportError>
  /** Deletes topics; a missing one fails with `UNKNOWN_TOPIC_OR_PARTITION` naming it. */
  readonly deleteTopics: (topics: ReadonlyArray<string>) => Effect.Effect<void, TransportError.TransportError>
  /** Raises a topic's partition count to `count`. */
  readonly createPartitions: (topic: string, count: number) => Effect.Effect<void, TransportError.TransportError>
  /** Every partition's log start offset and high watermark (ListOffsets earliest and latest). */
  readonly describeTopic: (topic: string) => Effect.Effect<TopicDescription, TransportError.TransportError>
  /** The configs of a topic or a broker, by name; `keys` narrows them. */
  readonly describeConfigs: (
    resource: ConfigResource,
    keys?: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyMap<string, ConfigEntry>, TransportError.TransportError>
  /** Every topic's name, sorted, internal topics left out (one Metadata request for all topics). */
  readonly listTopics: Effect.Effect<ReadonlyArray<string>, TransportError.TransportError>
  /** The groups of every broker of the cluster. */
  readonly listGroups: Effect.Effect<ReadonlyArray<ListedGroup>, TransportError.TransportError>
  readonly describeGroups: (
    groups: ReadonlyArray<string>,
  ) => Effect.Effect<ReadonlyArray<GroupDescription>, TransportError.TransportError>
  /** Deletes empty groups; a group with members fails with `NON_EMPTY_GROUP` naming it. */
  readonly deleteGroups: (groups: ReadonlyArray<string>) => Effect.Effect<void, TransportError.TransportError>
  /**
   * The offsets asked for, one ListOffsets per leader. `readCommitted` lists `latest` as the last
   * stable offset (below any open transaction) instead of the high watermark.
   */
  readonly listOffsets: (
    queries: ReadonlyArray<OffsetQuery>,
    options?: { readonly readCommitted?: boolean | undefined },
  ) => Effect.Effect<ReadonlyArray<ListedOffset>, TransportError.TransportError>
  /**
   * A group's committed offsets for these partitions (every partition it committed, if none are
   * given); a partition never committed is absent. Waits for offsets a transaction is committing
   * (`requireStable`).
   */
  readonly committedOffsets: (
    group: string,
    partitions?: ReadonlyArray<TopicPartition>,
  ) => Effect.Effect<ReadonlyArray<CommittedOffset>, TransportError.TransportError>
}

const fail = (
  code: number,
  operation: string,
  message: string,
  about: { readonly topic?: string | undefined; readonly partition?: number | undefined } = {},
): TransportError.TransportError => {
  const name = TransportError.nameOfCode(code)
  return new TransportError.TransportError({
    code: name,
    retriable: TransportError.isRetriable(name),
    operation,
    message,
    ...(about.topic === undefined ? {} : { topic: about.topic }),
    ...(about.partition === undefined ? {} : { partition: about.partition }),
  })
}

const detail = (code: number, message: string | null | undefined): string => {
  const name = TransportError.nameOfCode(code)
  return message === null || message === undefined || message === "" ? name : `${name}: ${message}`
}

const byTopic = <A extends TopicPartition>(items: ReadonlyArray<A>): Map<string, Array<A>> => {
  const topics = new Map<string, Array<A>>()
  for (const item of items) {
    const list = topics.get(item.topic)
    if (list === undefined) topics.set(item.topic, [item])
    else list.push(item)
  }
  return topics
}

const tpKey = (tp: TopicPartition): string => `${tp.topic}\u0000${tp.partition}`

/** A query in a ListOffsets request: its place in the call and the leader epoch it was routed by. */
interface Asked extends OffsetQuery {
  readonly index: number
  readonly leaderEpoch: number
}

/**
 * The admin of the pool's cluster.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (brokers: Brokers.Brokers, options: Options = {}): Admin => {
  const timeout = Duration.fromInputUnsafe(options.timeout ?? defaults.timeout)
  const timeoutMs = Duration.toMillis(timeout)
  const schedule = options.retry ?? Brokers.defaults.retry
  const retrying = <A>(effect: Effect.Effect<A, TransportError.TransportError>) =>
    Effect.retry(effect, { schedule, while: (error) => error.retriable })
  /** For requests naming topics: a topic the cluster does not have is an answer, not a blip. */
  const retryingAbsent = <A>(effect: Effect.Effect<A, TransportError.TransportError>) =>
    Effect.retry(effect, { schedule, while: (error) => error.retriable && error.code !== "UNKNOWN_TOPIC_OR_PARTITION" })

  /** The controller the metadata names, or any broker when it names none. */
  const controller: Effect.Effect<Connection, TransportError.TransportError> = Effect.flatMap(
    brokers.topics([]),
    () => brokers.controllerId() >= 0 ? brokers.connection(brokers.controllerId()) : brokers.any,
  )

  const createTopicsOnce = (topics: ReadonlyArray<NewTopic>) =>
    Effect.gen(function* () {
      const connection = yield* controller
      const answer = yield* connection.request(CreateTopics, {
        topics: topics.map((t) => ({
          name: t.topic,
          numPartitions: t.partitions,
          replicationFactor: t.replicationFactor ?? -1,
          assignments: [],
          configs: Object.entries(t.config ?? {}).map(([name, value]) => ({ name, value })),
        })),
        timeoutMs,
        validateOnly: false,
      })
      for (const result of answer.topics) {
        if (result.errorCode === 0) continue
        const code = TransportError.nameOfCode(result.errorCode)
        return yield* Effect.fail(fail(
          result.errorCode,
          "createTopic",
          code === "TOPIC_ALREADY_EXISTS"
            ? `Topic "${result.name}" already exists (TOPIC_ALREADY_EXISTS): use it, or delete it first`
            : `Cannot create topic "${result.name}" (${detail(result.errorCode, result.errorMessage)})`,
          { topic: result.name },
        ))
      }
    })

  /** Until every partition of the topic has a leader in the metadata that answers ListOffsets for it. */
  const leadersAnswer = (topic: NewTopic) =>
    Effect.gen(function* () {
      yield* brokers.invalidate(topic.topic)
      const meta = (yield* brokers.topics([topic.topic])).get(topic.topic)!
      if (meta.partitions.length !== topic.partitions || meta.partitions.some((p) => p.leaderId < 0)) {
        return yield* Effect.fail(TransportError.make(
          "LEADER_NOT_AVAILABLE",
          "createTopic",
          `Topic "${topic.topic}" was created; its partitions have no leaders yet`,
        ))
      }
      yield* listOffsetsOnce(
        meta.partitions.map((p) => ({ topic: topic.topic, partition: p.partition, spec: "latest" as const })),
        false,
        new Map(),
      )
    }).pipe(
      // A topic just created is not yet known to every broker: UNKNOWN_TOPIC_OR_PARTITION means "not yet" here.
      Effect.retry({ schedule: Schedule.spaced("50 millis"), while: (error) => error.retriable }),
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () =>
          Effect.fail(TransportError.make(
            "LEADER_NOT_AVAILABLE",
            "createTopic",
            `Topic "${topic.topic}" was created, but its ${topic.partitions} partitions had no leaders within ${timeoutMs} ms`,
          )),
      }),
    )

  const createTopics = (topics: ReadonlyArray<NewTopic>) =>
    Effect.gen(function* () {
      for (const t of topics) {
        if (!Number.isInteger(t.partitions) || t.partitions < 1) {
          return yield* Effect.fail(TransportError.make(
            "INVALID_PARTITIONS",
            "createTopic",
            `Topic "${t.topic}" needs a whole number of partitions of at least 1, got ${t.partitions}`,
          ))
        }
      }
      yield* retrying(createTopicsOnce(topics))
      yield* Effect.forEach(topics, leadersAnswer, { concurrency: "unbounded", discard: true })
    })

  const deleteTopics = (topics: ReadonlyArray<string>) =>
    retryingAbsent(Effect.gen(function* () {
      const connection = yield* controller
      const answer = yield* connection.request(DeleteTopics, {
        topics: topics.map((name) => ({ name, topicId: zeroUuid })),
        topicNames: topics,
        timeoutMs,
      })
      for (const result of answer.responses) {
        if (result.errorCode === 0) continue
        return yield* Effect.fail(fail(
          result.errorCode,
          "deleteTopic",
          `Cannot delete topic "${result.name}" (${detail(result.errorCode, result.errorMessage)})`,
          { topic: result.name ?? undefined },
        ))
      }
      for (const topic of topics) yield* brokers.invalidate(topic)
    }))

  const createPartitions = (topic: string, count: number) =>
    retryingAbsent(Effect.gen(function* () {
      const connection = yield* controller
      const answer = yield* connection.request(CreatePartitions, {
        topics: [{ name: topic, count, assignments: null }],
        timeoutMs,
        validateOnly: false,
      })
      for (const result of answer.results) {
        if (result.errorCode === 0) continue
        return yield* Effect.fail(fail(
          result.errorCode,
          "createPartitions",
          `Cannot raise topic "${topic}" to ${count} partitions (${detail(result.errorCode, result.errorMessage)})`,
          { topic },
        ))
      }
      yield* brokers.invalidate(topic)
    }))

  /**
   * One round of ListOffsets for the queries not yet answered (`done` keeps the answered ones
   * across rounds): one request per leader, all at once. Fails with the first retriable error
   * once every leader answered, so a retry asks again only for what is left.
   */
  const listOffsetsOnce = (
    queries: ReadonlyArray<OffsetQuery>,
    readCommitted: boolean,
    done: Map<number, ListedOffset>,
  ): Effect.Effect<ReadonlyArray<ListedOffset>, TransportError.TransportError> =>
    Effect.gen(function* () {
      // One request per leader; a partition asked twice (two specs) goes in a second request,
      // as Kafka refuses a partition twice in one (INVALID_REQUEST).
      const requests = new Map<string, { readonly nodeId: number; readonly asked: Array<Asked> }>()
      const rounds = new Map<string, number>()
      for (let index = 0; index < queries.length; index++) {
        if (done.has(index)) continue
        const query = queries[index]!
        const leader = yield* brokers.leaderFor(query)
        const round = rounds.get(tpKey(query)) ?? 0
        rounds.set(tpKey(query), round + 1)
        const key = `${leader.nodeId}:${round}`
        const request = requests.get(key) ?? { nodeId: leader.nodeId, asked: [] }
        request.asked.push({ ...query, index, leaderEpoch: leader.leaderEpoch })
        requests.set(key, request)
      }
      let retry: TransportError.TransportError | undefined
      yield* Effect.forEach(requests.values(), ({ nodeId, asked }) =>
        Effect.catch(
          Effect.gen(function* () {
            const connection = yield* brokers.connection(nodeId)
            const version = yield* connection.versionFor(ListOffsets)
            const answer = yield* connection.request(ListOffsets, {
              replicaId: -1,
              isolationLevel: readCommitted ? 1 : 0,
              topics: [...byTopic(asked)].map(([name, partitions]) => ({
                name,
                partitions: partitions.map((p) => ({
                  partitionIndex: p.partition,
                  currentLeaderEpoch: p.leaderEpoch,
                  timestamp: p.spec === "earliest" ? -2 : p.spec === "latest" ? -1 : p.spec.timestamp,
                })),
              })),
              timeoutMs,
            }, { version })
            for (const topic of answer.topics) {
              for (const p of topic.partitions) {
                if (p.errorCode !== 0) {
                  const error = fail(
                    p.errorCode,
                    "listOffsets",
                    `Cannot list the offsets of ${topic.name}/${p.partitionIndex} at broker ${nodeId} (${detail(p.errorCode, null)})`,
                    { topic: topic.name, partition: p.partitionIndex },
                  )
                  if (!error.retriable) return yield* Effect.fail(error)
                  if (Brokers.staleMetadataErrors.has(error.code)) yield* brokers.invalidate(topic.name)
                  retry ??= error
                  continue
                }
                const query = asked.find((q) => q.topic === topic.name && q.partition === p.partitionIndex)
                if (query === undefined) continue
                done.set(query.index, {
                  topic: topic.name,
                  partition: p.partitionIndex,
                  offset: p.offset < 0 ? null : p.offset,
                  timestamp: typeof query.spec === "object" ? p.timestamp : -1,
                  leaderEpoch: p.leaderEpoch ?? -1,
                })
              }
            }
          }),
          (error) => {
            if (!error.retriable) return Effect.fail(error)
            retry ??= error
            // The leader may have moved or gone: ask the metadata again.
            return Effect.forEach(asked, (q) => brokers.invalidate(q.topic), { discard: true })
          },
        ), { concurrency: "unbounded", discard: true })
      const missing = queries.find((_, index) => !done.has(index))
      if (missing !== undefined) {
        return yield* Effect.fail(retry ?? TransportError.make(
          "UNKNOWN_TOPIC_OR_PARTITION",
          "listOffsets",
          `The leader of ${missing.topic}/${missing.partition} did not list its offset`,
        ))
      }
      return queries.map((_, index) => done.get(index)!)
    })

  const listOffsets = (queries: ReadonlyArray<OffsetQuery>, listOptions?: { readonly readCommitted?: boolean | undefined }) =>
    Effect.suspend(() => {
      const done = new Map<number, ListedOffset>()
      return retrying(listOffsetsOnce(queries, listOptions?.readCommitted ?? false, done))
    })

  const listTopics = retrying(Effect.gen(function* () {
    const connection = yield* brokers.any
    const version = yield* connection.versionFor(Metadata)
    const answer = yield* connection.request(Metadata, {
      topics: null,
      ...(version >= 4 ? { allowAutoTopicCreation: false } : {}),
    }, { version })
    const failed = answer.topics.find((topic) => topic.errorCode !== 0)
    if (failed !== undefined) {
      return yield* Effect.fail(fail(failed.errorCode, "listTopics", `Cannot list the topics (${detail(failed.errorCode, null)} for "${failed.name ?? "?"}")`))
    }
    return answer.topics
      .filter((topic) => topic.isInternal !== true && topic.name !== null)
      .map((topic) => topic.name!)
      .sort()
  }))

  const describeTopic = (topic: string) =>
    Effect.gen(function* () {
      // Metadata first: it fails at once for a missing topic.
      const meta = (yield* brokers.topics([topic])).get(topic)!
      const partitions = meta.partitions.map((p) => p.partition)
      const [earliest, latest] = yield* Effect.all([
        listOffsets(partitions.map((partition) => ({ topic, partition, spec: "earliest" as const }))),
        listOffsets(partitions.map((partition) => ({ topic, partition, spec: "latest" as const }))),
      ], { concurrency: 2 })
      return {
        topic,
        partitions: partitions.map((partition, i) => ({
          partition,
          logStartOffset: earliest[i]!.offset ?? 0,
          highWatermark: latest[i]!.offset ?? 0,
        })),
      } satisfies TopicDescription
    })

  const describeConfigs = (resource: ConfigResource, keys?: ReadonlyArray<string>) =>
    retryingAbsent(Effect.gen(function* () {
      const connection = resource.type === "broker" ? yield* brokers.connection(resource.nodeId) : yield* brokers.any
      const name = resource.type === "broker" ? String(resource.nodeId) : resource.name
      const what = resource.type === "broker" ? `broker ${resource.nodeId}` : `topic "${resource.name}"`
      const answer = yield* connection.request(DescribeConfigs, {
        // Kafka's ConfigResource.Type: TOPIC 2, BROKER 4.
        resources: [{ resourceType: resource.type === "topic" ? 2 : 4, resourceName: name, configurationKeys: keys ?? null }],
        includeSynonyms: false,
        includeDocumentation: false,
      })
      const result = answer.results[0]
      if (result === undefined || result.errorCode !== 0) {
        return yield* Effect.fail(fail(
          result?.errorCode ?? -1,
          "describeConfigs",
          `Cannot describe the configs of ${what} (${detail(result?.errorCode ?? -1, result?.errorMessage)})`,
          resource.type === "topic" ? { topic: resource.name } : {},
        ))
      }
      return new Map(result.configs.map((c) => [c.name, {
        name: c.name,
        value: c.value,
        readOnly: c.readOnly,
        isSensitive: c.isSensitive,
        source: configSources[c.configSource] ?? "unknown",
      } satisfies ConfigEntry]))
    }))

  const listGroups = retrying(Effect.gen(function* () {
    yield* brokers.topics([])
    const lists = yield* Effect.forEach([...brokers.nodes().keys()], (nodeId) =>
      Effect.gen(function* () {
        const connection = yield* brokers.connection(nodeId)
        const answer = yield* connection.request(ListGroups, {})
        if (answer.errorCode !== 0) {
          return yield* Effect.fail(fail(answer.errorCode, "listGroups", `Broker ${nodeId} cannot list its groups (${detail(answer.errorCode, null)})`))
        }
        return answer.groups.map((g): ListedGroup => ({
          groupId: g.groupId,
          protocolType: g.protocolType,
          state: g.groupState ?? "",
          type: g.groupType ?? "",
        }))
      }), { concurrency: "unbounded" })
    const seen = new Map<string, ListedGroup>()
    for (const group of lists.flat()) seen.set(group.groupId, group)
    return [...seen.values()]
  }))

  /** Runs `request` against a group's coordinator, forgetting the coordinator when an answer says it moved. */
  const atCoordinator = <A>(
    group: string,
    request: (connection: Connection) => Effect.Effect<A, TransportError.TransportError>,
  ) =>
    retrying(Effect.flatMap(brokers.coordinatorFor({ type: "group", id: group }), (connection) =>
      Effect.tapError(request(connection), (error) =>
        Brokers.staleCoordinatorErrors.has(error.code)
          ? brokers.invalidateCoordinator({ type: "group", id: group })
          : Effect.void)))

  const describeGroups = (groups: ReadonlyArray<string>) =>
    Effect.forEach(groups, (group) =>
      atCoordinator(group, (connection) =>
        Effect.gen(function* () {
          const answer = yield* connection.request(DescribeGroups, { groups: [group], includeAuthorizedOperations: false })
          const found = answer.groups[0]
          if (found === undefined || found.errorCode !== 0) {
            return yield* Effect.fail(fail(
              found?.errorCode ?? -1,
              "describeGroups",
              `Cannot describe group "${group}" (${detail(found?.errorCode ?? -1, found?.errorMessage)})`,
            ))
          }
          return {
            groupId: found.groupId,
            state: found.groupState,
            protocolType: found.protocolType,
            protocol: found.protocolData,
            members: found.members.map((m): GroupMember => ({
              memberId: m.memberId,
              groupInstanceId: m.groupInstanceId ?? null,
              clientId: m.clientId,
              clientHost: m.clientHost,
              metadata: m.memberMetadata,
              assignment: m.memberAssignment,
            })),
          } satisfies GroupDescription
        })), { concurrency: "unbounded" })

  const deleteGroups = (groups: ReadonlyArray<string>) =>
    Effect.forEach(groups, (group) =>
      atCoordinator(group, (connection) =>
        Effect.gen(function* () {
          const answer = yield* connection.request(DeleteGroups, { groupsNames: [group] })
          const result = answer.results[0]
          if (result === undefined || result.errorCode !== 0) {
            const code = result?.errorCode ?? -1
            return yield* Effect.fail(fail(
              code,
              "deleteGroups",
              TransportError.nameOfCode(code) === "NON_EMPTY_GROUP"
                ? `Cannot delete group "${group}": it has members (NON_EMPTY_GROUP); stop them first`
                : `Cannot delete group "${group}" (${detail(code, result?.errorMessage)})`,
            ))
          }
        })), { concurrency: "unbounded", discard: true })

  const committedOffsets = (group: string, partitions?: ReadonlyArray<TopicPartition>) =>
    atCoordinator(group, (connection) =>
      Effect.gen(function* () {
        const version = yield* connection.versionFor(OffsetFetch)
        const asked = partitions === undefined ? undefined : [...byTopic(partitions)]
        // v10 names topics by id (KIP-848); the metadata has them.
        const ids = new Map<string, string>()
        if (version >= 10 && asked !== undefined && asked.length > 0) {
          const meta = yield* brokers.topics(asked.map(([topic]) => topic))
          for (const [name, topic] of meta) ids.set(topic.topicId, name)
        }
        const nameOf = (topic: { readonly name?: string | undefined; readonly topicId?: string | undefined }) =>
          version >= 10 ? ids.get(topic.topicId ?? "") ?? topic.name ?? "" : topic.name ?? ""
        const idOf = new Map([...ids].map(([id, name]) => [name, id]))
        const answered: Array<{
          readonly topic: string
          readonly partitions: ReadonlyArray<{ readonly partitionIndex: number; readonly committedOffset: number; readonly metadata: string | null; readonly errorCode: number }>
        }> = []
        if (version >= 8) {
          const answer = yield* connection.request(OffsetFetch, {
            groups: [{
              groupId: group,
              topics: asked === undefined ? null : asked.map(([topic, tps]) => ({
                ...(version >= 10 ? { topicId: idOf.get(topic)! } : { name: topic }),
                partitionIndexes: tps.map((tp) => tp.partition),
              })),
            }],
            requireStable: true,
          }, { version })
          const found = answer.groups?.[0]
          if (found !== undefined && found.errorCode !== 0) {
            return yield* Effect.fail(fail(found.errorCode, "committed", `Cannot read the committed offsets of group "${group}" (${detail(found.errorCode, null)})`))
          }
          if (version >= 10 && asked === undefined) {
            // Every committed topic, named by id: the metadata names them.
            const unnamed = (found?.topics ?? []).filter((t) => !ids.has(t.topicId ?? ""))
            if (unnamed.length > 0) {
              const any = yield* brokers.any
              const meta = yield* any.request(Metadata, { topics: unnamed.map((t) => ({ topicId: t.topicId!, name: null })) })
              for (const t of meta.topics) if (t.name !== null) ids.set(t.topicId ?? "", t.name)
            }
          }
          for (const t of found?.topics ?? []) answered.push({ topic: nameOf(t), partitions: t.partitions })
        } else {
          const answer = yield* connection.request(OffsetFetch, {
            groupId: group,
            topics: asked === undefined ? null : asked.map(([topic, tps]) => ({ name: topic, partitionIndexes: tps.map((tp) => tp.partition) })),
            ...(version >= 7 ? { requireStable: true } : {}),
          }, { version })
          if ((answer.errorCode ?? 0) !== 0) {
            return yield* Effect.fail(fail(answer.errorCode!, "committed", `Cannot read the committed offsets of group "${group}" (${detail(answer.errorCode!, null)})`))
          }
          for (const t of answer.topics ?? []) answered.push({ topic: t.name, partitions: t.partitions })
        }
        const committed: Array<CommittedOffset> = []
        for (const topic of answered) {
          for (const p of topic.partitions) {
            if (p.errorCode !== 0) {
              return yield* Effect.fail(fail(
                p.errorCode,
                "committed",
                `Cannot read the committed offset of group "${group}" for ${topic.topic}/${p.partitionIndex} (${detail(p.errorCode, null)})`,
                { topic: topic.topic, partition: p.partitionIndex },
              ))
            }
            if (p.committedOffset >= 0) {
              committed.push({ topic: topic.topic, partition: p.partitionIndex, offset: p.committedOffset, metadata: p.metadata ?? "" })
            }
          }
        }
        return committed
      }))

  return {
    createTopics,
    deleteTopics,
    createPartitions,
    describeTopic,
    describeConfigs,
    listTopics,
    listGroups,
    describeGroups,
    deleteGroups,
    listOffsets,
    committedOffsets,
  }
}
