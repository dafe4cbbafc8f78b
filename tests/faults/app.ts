/**
 * The fault suite's actor app, run as a child process by tests/faults/runner.ts on the runtime the
 * test runs on. It consumes TOPIC in GROUP with one actor and writes its history, one JSON line
 * per event (see `LogLine` in history.ts), to the append-only file LOG:
 *
 * - `claim` / `release`: each partition the group gives it and gives up, with its generation (the
 *   member's count of assignments), logged by a transport wrapper as the events pass and as the
 *   revocation is acknowledged (or the subscription closes);
 * - `handled`: each handler call that completed, with its start and end;
 * - `commit`: each commit the broker acknowledged (exactly-once: each committed transaction's offsets);
 * - `dead`: each dead letter the broker acknowledged;
 * - `output`: each record copied to OUTPUT that the broker acknowledged, with its source;
 * - `attempt`, `defect`: failed tries of poison records and injected defects;
 * - `stats`: heap, RSS and CPU every STATS_MILLIS, with the partitions' restarts.
 *
 * A line is written with one `write` before the next step starts, so a SIGKILL loses at most the
 * line being written, and a record's `handled` line exists before it can be committed.
 *
 * Configuration (environment): KAFKA_BROKERS, TOPIC, GROUP, MEMBER, LOG, and optionally
 * HANDLE_MILLIS (handler delay), POISON ("key:seq,..." fail every try), RETRIES and RETRY_MILLIS
 * (the poison's retry policy before it is dead-lettered), DLQ (dead-letter topic; DecodeError is
 * dead-lettered there), DEFECT_RATE and DEFECT_PARTITIONS (handler calls that die), HANG ("key,..."
 * whose handler never returns), DELIVERY (`exactly-once` too), TXN_PRODUCER (exactly-once's
 * `per-partition` or `per-member` producers), OUTPUT (a topic each handled record is copied to),
 * MAILBOX, SHUTDOWN_DEADLINE, DRAIN_DEADLINE, COMMIT_MILLIS, COMMIT_RECORDS, SESSION_TIMEOUT,
 * MAX_RESTARTS, RESTART_MILLIS, STATS_MILLIS, STATS_GC (1: a full collection before each heap reading),
 * TRANSPORT (`kafka`, the default: KafkaTransport; `kafkajs`: KafkaJsTransport),
 * and, to diagnose a run, LOG_LEVEL (Effect's minimum, default Info; Debug shows kafkajs' INFO lines)
 * and KAFKAJS_LOG (the least severe kafkajs lines forwarded, default warn).
 */
import * as fs from "node:fs"
import process from "node:process"
import { Data, type Duration, Effect, Exit, Layer, type LogLevel, References, Schedule, Schema, Stream } from "effect"
import * as Actor from "../../lib/Actor.ts"
import * as ActorSystem from "../../lib/ActorSystem.ts"
import * as ErrorPolicy from "../../lib/ErrorPolicy.ts"
import * as KafkaJsTransport from "../../lib/KafkaJsTransport.ts"
import * as KafkaTransport from "../../lib/KafkaTransport.ts"
import * as Main from "../../lib/Main.ts"
import { Producer } from "../../lib/Producer.ts"
import { RecordContext } from "../../lib/RecordContext.ts"
import { type GroupEvent, type OffsetCommit, type ProducerRecord, type RecordMetadata, Transport } from "../../lib/Transport.ts"

const env = (name: string, fallback?: string): string => {
  const value = process.env[name] ?? fallback
  if (value === undefined || value === "") {
    if (fallback !== undefined) return fallback
    throw new Error(`${name} is not set`)
  }
  return value
}
const list = (name: string): Set<string> => new Set(env(name, "").split(",").filter((item) => item !== ""))

const member = env("MEMBER")
const topic = env("TOPIC")
const dlq = process.env["DLQ"] || undefined
const output = process.env["OUTPUT"] || undefined
const handleMillis = Number(env("HANDLE_MILLIS", "0"))
const poison = list("POISON")
const hang = list("HANG")
const defectRate = Number(env("DEFECT_RATE", "0"))
const defectPartitions = list("DEFECT_PARTITIONS")
const retries = Number(env("RETRIES", "3"))

const fd = fs.openSync(env("LOG"), "a")
const log = (line: Record<string, unknown>): void => {
  fs.writeSync(fd, JSON.stringify(line) + "\n")
}

/** The generation in which this member holds each partition now. */
const generations = new Map<number, number>()
let generation = 0
const text = new TextDecoder()
const headerText = (headers: ReadonlyArray<{ readonly key: string; readonly value: Uint8Array | null }>, key: string) => {
  const value = headers.find((header) => header.key === key)?.value
  return value === undefined || value === null ? undefined : text.decode(value)
}

/** Logs each acknowledged output record and dead letter (`undefined` metadata: not acknowledged). */
const logSent = (records: ReadonlyArray<ProducerRecord>, metadata: ReadonlyArray<RecordMetadata | undefined>) => {
  const t = Date.now()
  records.forEach((record, index) => {
    const written = metadata[index]
    if (written === undefined) return
    if (record.topic === output && record.value !== null) {
      const source = JSON.parse(text.decode(record.value)) as { sp: number; so: number }
      log({ e: "output", m: member, p: source.sp, o: source.so, op: written.partition, oo: written.offset, t })
      return
    }
    if (record.topic !== dlq) return
    log({
      e: "dead",
      m: member,
      p: Number(headerText(record.headers ?? [], "partita.dlq.source.partition")),
      o: Number(headerText(record.headers ?? [], "partita.dlq.source.offset")),
      dp: written.partition,
      do: written.offset,
      t,
    })
  })
}

/** The Kafka transport, with every claim, release, acknowledged commit and dead letter logged. */
const logging = Layer.effect(
  Transport,
  Effect.gen(function*() {
    const inner = yield* Transport
    return Transport.of({
      ...inner,
      // Both ways of sending are logged: `Producer` uses `sendEach` (an outcome per record).
      send: (records, options) =>
        Effect.tap(inner.send(records, options), (metadata) => Effect.sync(() => logSent(records, metadata))),
      sendEach: (records, options) =>
        Effect.tap(inner.sendEach(records, options), (outcomes) =>
          Effect.sync(() => logSent(records, outcomes.map((outcome) => Exit.isSuccess(outcome) ? outcome.value : undefined)))),
      subscribe: (options) =>
        Effect.gen(function*() {
          const subscription = yield* inner.subscribe(options)
          // Registered after the subscription's own, so it runs first: after the system stopped
          // its partition actors, before the group is left.
          yield* Effect.addFinalizer(() =>
            Effect.sync(() => {
              const t = Date.now()
              for (const [p, g] of generations) log({ e: "release", m: member, g, p, t })
              generations.clear()
            })
          )
          const events = subscription.events.pipe(Stream.map((event): GroupEvent => {
            if (event._tag === "Assigned") {
              generation++
              const t = Date.now()
              for (const claim of event.claims) {
                generations.set(claim.partition, generation)
                log({ e: "claim", m: member, g: generation, p: claim.partition, o: claim.startOffset, t })
              }
              process.stdout.write(`claimed ${event.claims.map((claim) => claim.partition).join(",")}\n`)
              return event
            }
            return {
              ...event,
              acknowledge: Effect.andThen(
                Effect.sync(() => {
                  const t = Date.now()
                  for (const tp of event.partitions) {
                    const g = generations.get(tp.partition)
                    if (g === undefined) continue
                    log({ e: "release", m: member, g, p: tp.partition, t })
                    generations.delete(tp.partition)
                  }
                }),
                event.acknowledge,
              ),
            }
          }))
          return {
            ...subscription,
            events,
            commit: (offsets) =>
              Effect.tap(subscription.commit(offsets), () =>
                Effect.sync(() => {
                  const t = Date.now()
                  for (const offset of offsets) {
                    log({ e: "commit", m: member, g: generations.get(offset.partition) ?? generation, p: offset.partition, o: offset.offset, t })
                  }
                })),
          }
        }),
      // Exactly-once commits offsets in transactions: logged once a transaction commits.
      transactional: (transactionalId) =>
        Effect.map(inner.transactional(transactionalId), (producer) => ({
          transactionalId: producer.transactionalId,
          begin: Effect.map(producer.begin, (transaction) => {
            const offsets: Array<OffsetCommit> = []
            return {
              ...transaction,
              sendOffsets: (group: string, commits: ReadonlyArray<OffsetCommit>) =>
                Effect.tap(transaction.sendOffsets(group, commits), () => Effect.sync(() => void offsets.push(...commits))),
              commit: Effect.tap(transaction.commit, () =>
                Effect.sync(() => {
                  const t = Date.now()
                  for (const offset of offsets) {
                    log({ e: "commit", m: member, g: generations.get(offset.partition) ?? generation, p: offset.partition, o: offset.offset, t })
                  }
                })),
              abort: Effect.tap(transaction.abort, () => Effect.sync(() => log({ e: "abort", m: member, t: Date.now() }))),
            }
          }),
        })),
    })
  }),
)

class Poison extends Data.TaggedError("Poison")<{ readonly key: string; readonly seq: number }> {}

const Value = Schema.Struct({ key: Schema.String, seq: Schema.Number })
const encoder = new TextEncoder()

const actor = Actor.make({
  name: "faults",
  group: env("GROUP"),
  topics: [topic],
  value: Value,
  handle: (value: typeof Value.Type) =>
    Effect.gen(function*() {
      const record = yield* RecordContext
      const start = Date.now()
      if (hang.has(value.key)) {
        log({ e: "hang", m: member, p: record.partition, o: record.offset, t: start })
        return yield* Effect.never
      }
      if (poison.has(`${value.key}:${value.seq}`)) {
        log({ e: "attempt", m: member, p: record.partition, o: record.offset, attempt: record.attempt, t: start })
        return yield* Effect.fail(new Poison({ key: value.key, seq: value.seq }))
      }
      if (defectRate > 0 && (defectPartitions.size === 0 || defectPartitions.has(String(record.partition))) && Math.random() < defectRate) {
        log({ e: "defect", m: member, p: record.partition, o: record.offset, t: start })
        return yield* Effect.die(new Error(`injected defect at ${record.partition}@${record.offset}`))
      }
      if (handleMillis > 0) yield* Effect.sleep(handleMillis)
      if (output !== undefined) {
        const producer = yield* Producer
        yield* producer.send({
          topic: output,
          key: record.key,
          value: encoder.encode(JSON.stringify({ key: value.key, seq: value.seq, sp: record.partition, so: record.offset })),
        })
      }
      log({
        e: "handled",
        m: member,
        g: generations.get(record.partition) ?? -1,
        p: record.partition,
        o: record.offset,
        key: value.key,
        seq: value.seq,
        st: start,
        en: Date.now(),
      })
    }),
  onError: {
    Poison: dlq === undefined
      ? ErrorPolicy.halt
      : ErrorPolicy.retry(Schedule.spaced(Number(env("RETRY_MILLIS", "100"))), { times: retries, then: "dead-letter" }),
    DecodeError: dlq === undefined ? ErrorPolicy.halt : ErrorPolicy.deadLetter,
    HandlerTimeout: ErrorPolicy.halt,
    default: ErrorPolicy.halt,
  },
  deadLetter: dlq === undefined ? undefined : { topic: dlq, retry: Schedule.spaced("500 millis") },
  delivery: env("DELIVERY", "at-least-once") as "at-least-once" | "at-most-once" | "exactly-once",
  transaction: { producer: env("TXN_PRODUCER", "per-partition") as "per-partition" | "per-member" },
  commit: { interval: `${Number(env("COMMIT_MILLIS", "200"))} millis`, records: Number(env("COMMIT_RECORDS", "100")) },
  mailbox: { capacity: Number(env("MAILBOX", "1000")) },
  drainDeadline: env("DRAIN_DEADLINE", "5 seconds") as Duration.Input,
  supervision: {
    maxRestarts: Number(env("MAX_RESTARTS", "5")),
    schedule: Schedule.spaced(`${Number(env("RESTART_MILLIS", "100"))} millis`),
  },
  consumer: {
    sessionTimeout: `${Number(env("SESSION_TIMEOUT", "6000"))} millis`,
    heartbeatInterval: "500 millis",
    rebalanceTimeout: "10 seconds",
  },
})

const stats = Effect.gen(function*() {
  const system = yield* ActorSystem.System
  const every = Number(env("STATS_MILLIS", "500"))
  // STATS_GC=1 collects garbage before each reading, so `heap` is what is live, not what the
  // collector has yet to visit (V8 lets the heap grow by hundreds of MB between major GCs).
  const collect = env("STATS_GC", "0") === "1" ? garbageCollector() : undefined
  while (true) {
    yield* Effect.sleep(every)
    const health = yield* system.health
    collect?.()
    const memory = process.memoryUsage()
    const cpu = process.cpuUsage()
    log({
      e: "stats",
      m: member,
      t: Date.now(),
      heap: memory.heapUsed,
      rss: memory.rss,
      cpu: (cpu.user + cpu.system) / 1000,
      healthy: health.healthy,
      ready: health.ready,
      partitions: health.partitions.map((p) => ({
        p: p.partition,
        restarts: p.restarts,
        processed: p.processed,
        mailbox: p.mailbox,
        state: p.state,
        // What a stalled run's report needs (see `diagnose` in scenario.ts).
        committed: p.committed,
        position: p.position,
        paused: p.paused,
        stalled: p.stalled,
        lastProgress: p.lastProgress,
        lastError: p.lastError,
      })),
      members: health.members.map((m) => ({ member: m.member, since: m.since, rejoins: m.rejoins, lastError: m.lastError })),
      broker: { reachable: health.broker.reachable, lastAnswer: health.broker.lastAnswer, lastError: health.broker.lastError },
    })
  }
})

/** A full, synchronous collection: `gc()` where V8 exposes it (`--expose-gc`), `Bun.gc(true)`. */
const garbageCollector = (): () => void => {
  const global = globalThis as { readonly gc?: () => void; readonly Bun?: { readonly gc: (force: boolean) => void } }
  if (global.Bun !== undefined) return () => global.Bun!.gc(true)
  if (global.gc !== undefined) return global.gc
  throw new Error("STATS_GC=1 needs gc() exposed: run with --expose-gc (Node) or --v8-flags=--expose-gc (Deno)")
}

const program = Effect.scoped(Effect.gen(function*() {
  const system = yield* ActorSystem.start([actor], {
    shutdownDeadline: env("SHUTDOWN_DEADLINE", "10 seconds") as Duration.Input,
    // How soon health notices a broker that stopped answering (F4 shortens them).
    lagInterval: env("LAG_INTERVAL", "10 seconds") as Duration.Input,
    brokerTimeout: env("BROKER_TIMEOUT", "5 seconds") as Duration.Input,
    brokerWindow: env("BROKER_WINDOW", "30 seconds") as Duration.Input,
  })
  yield* Effect.forkScoped(Effect.provideService(stats, ActorSystem.System, system))
  process.stdout.write("started\n")
  return yield* system.failure
})).pipe(
  Effect.provide(logging.pipe(
    Layer.provide(
      env("TRANSPORT", "kafka") === "kafkajs"
        ? KafkaJsTransport.layer({
          brokers: env("KAFKA_BROKERS").split(","),
          clientId: member,
          logLevel: env("KAFKAJS_LOG", "warn") as "warn",
        })
        : KafkaTransport.layer({
          brokers: env("KAFKA_BROKERS").split(","),
          clientId: member,
          // One producer per member: a transaction a killed member left open blocks readers this long.
          ...(env("TXN_PRODUCER", "per-partition") === "per-member" ? { transactionTimeout: "10 seconds" } : {}),
        }),
    ),
  )),
  // Outside the transport's layer, so kafkajs' log lines are filtered by it too.
  Effect.provideService(References.MinimumLogLevel, env("LOG_LEVEL", "Info") as LogLevel.LogLevel),
)

Main.runMain(program)
