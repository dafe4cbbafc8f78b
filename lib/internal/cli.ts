/**
 * The `partita` command line's commands: each runs on the transport the environment names (as
 * Partita's apps pick theirs: `KAFKA_BROKERS` and the rest of `kafkaEnv.ts`, `KAFKA_CLIENT=kafkajs`
 * for kafkajs) and prints a table on stdout; what went wrong goes to stderr, with the exit code
 * `run` returns. `bin/partita.ts` is the process around it.
 */
import { Cause, Config, Console, Data, Effect, type Layer, Option, References } from "effect"
import * as DeadLetterReplay from "../DeadLetterReplay.ts"
import * as KafkaJsTransport from "../KafkaJsTransport.ts"
import * as KafkaTransport from "../KafkaTransport.ts"
import { Transport } from "../Transport.ts"
import { type Command, parse, UsageError } from "./cliArgs.ts"

/** Exit codes, as `partita --help` lists them. */
export const exitCodes = { ok: 0, failed: 1, usage: 2, lettersLeft: 3 } as const

/** No cluster configured: why the command line cannot use the embedded broker. */
class NoCluster extends Data.TaggedError("NoCluster")<{}> {
  override readonly message: string =
    "No Kafka cluster to talk to: set KAFKA_BROKERS (host:port,...). The embedded broker (MemoryTransport) lives inside the process that runs it, so a command line cannot reach it: from that process, call DeadLetterReplay.replay or DeadLetterReplay.list"
}

/** The transport the environment names. */
const transportFromEnv: Effect.Effect<Layer.Layer<Transport, unknown>, Config.ConfigError | NoCluster> = Effect.gen(function*() {
  const { brokers, client } = yield* Config.all({
    brokers: Config.option(Config.String("KAFKA_BROKERS")),
    client: Config.Literals(["own", "kafkajs"], "KAFKA_CLIENT").pipe(Config.withDefault("own" as const)),
  })
  if (Option.isNone(brokers) || brokers.value.trim() === "") return yield* new NoCluster()
  return client === "kafkajs"
    ? KafkaJsTransport.layerFromEnv({ logLevel: "error", clientId: "partita-cli" })
    : KafkaTransport.layerFromEnv({ clientId: "partita-cli" })
})

/** Columns padded to their widest cell, two spaces apart. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]?.length ?? 0)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, column) => column === cells.length - 1 ? cell : cell.padEnd(widths[column]!)).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

const oneLine = (text: string, max: number): string => {
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`
}

const decoder = new TextDecoder()

const replay = (command: Extract<Command, { _tag: "DlqReplay" }>) =>
  Effect.gen(function*() {
    const report = yield* DeadLetterReplay.replay({
      from: command.from,
      to: command.to,
      where: command.where,
      since: command.since,
      group: command.group,
      batchSize: command.batchSize,
      sessionTimeout: command.sessionTimeout,
    })
    const where = command.to === undefined ? "their source topics" : `"${command.to}"`
    yield* Console.log(
      `Replayed "${report.from}" to ${where} (group ${report.group}): ${report.moved} moved, ${report.skipped} skipped by the filter, ${report.failed.length} not moved`,
    )
    const tags = Object.entries(report.byError).sort(([a], [b]) => a.localeCompare(b))
    if (tags.length > 0) {
      yield* Console.log(table(
        ["ERROR", "MOVED", "SKIPPED", "NOT MOVED"],
        tags.map(([tag, counts]) => [tag, String(counts.moved), String(counts.skipped), String(counts.failed)]),
      ))
    }
    if (report.failed.length === 0) return exitCodes.ok
    yield* Console.log(`Not moved (they stay in "${report.from}"):`)
    yield* Console.log(table(["LETTER", "REASON", "MESSAGE"], report.failed.map((error) => [error.letter, error._tag, error.message])))
    return exitCodes.lettersLeft
  })

const list = (command: Extract<Command, { _tag: "DlqList" }>) =>
  Effect.gen(function*() {
    const letters = yield* DeadLetterReplay.list({ from: command.from, limit: command.limit })
    if (letters.length === 0) {
      yield* Console.log(`No letters in "${command.from}"`)
      return exitCodes.ok
    }
    yield* Console.log(table(
      ["PARTITION", "OFFSET", "TIME", "SOURCE", "ACTOR", "ERROR", "MESSAGE"],
      letters.map((letter) => [
        String(letter.partition),
        String(letter.offset),
        new Date(letter.timestamp).toISOString(),
        letter.source === undefined ? "-" : `${letter.source.topic}/${letter.source.partition}@${letter.source.offset}`,
        letter.actor ?? "-",
        letter.error?.tag ?? "-",
        letter.error === undefined ? oneLine(letter.value === null ? "" : decoder.decode(letter.value), 60) : oneLine(letter.error.message, 80),
      ]),
    ))
    return exitCodes.ok
  })

const topics = Effect.gen(function*() {
    const transport = yield* Transport
    const names = yield* transport.listTopics
    // One topic that cannot be described (being deleted, leaderless) does not hide the others:
    // its row says "-" and stderr says why. One at a time: kafkajs' admin fails some of many
    // concurrent topic descriptions (seen on a broker of a thousand topics).
    const described = yield* Effect.forEach(names, (topic) =>
      transport.describeTopic(topic).pipe(
        Effect.map((description) => [
          topic,
          String(description.partitions.length),
          String(description.partitions.reduce((sum, p) => sum + p.highWatermark - p.logStartOffset, 0)),
        ]),
        Effect.catch((error) => Effect.as(Console.error(`partita: ${error.message}`), [topic, "-", "-"])),
      ))
    yield* Console.log(table(["TOPIC", "PARTITIONS", "MESSAGES"], described))
    return exitCodes.ok
  })

const describeGroup = (command: Extract<Command, { _tag: "GroupsDescribe" }>) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const committed = yield* transport.committedOffsets(command.group)
    if (committed.length === 0) {
      yield* Console.log(`Group "${command.group}" has no committed offsets (it does not exist, or has not committed yet)`)
      return exitCodes.ok
    }
    const topicNames = [...new Set(committed.map((offset) => offset.topic))].sort()
    const described = yield* Effect.forEach(topicNames, transport.describeTopic)
    const ends = new Map(described.flatMap((topic) => topic.partitions.map((p) => [`${topic.topic}/${p.partition}`, p.highWatermark] as const)))
    const rows = [...committed]
      .sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition)
      .map((offset) => {
        const end = ends.get(`${offset.topic}/${offset.partition}`)
        return [
          offset.topic,
          String(offset.partition),
          String(offset.offset),
          end === undefined ? "-" : String(end),
          end === undefined ? "-" : String(Math.max(0, end - offset.offset)),
        ]
      })
    yield* Console.log(table(["TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG"], rows))
    return exitCodes.ok
  })

const execute = (command: Exclude<Command, { _tag: "Help" }>) => {
  switch (command._tag) {
    case "DlqReplay":
      return replay(command)
    case "DlqList":
      return list(command)
    case "Topics":
      return topics
    case "GroupsDescribe":
      return describeGroup(command)
  }
}

/**
 * Runs the command `args` name and returns its exit code; never fails. Logs go to stderr, from
 * warnings up, so stdout holds only the command's output.
 */
export const run = (args: ReadonlyArray<string>): Effect.Effect<number> => {
  const command = parse(args)
  const program: Effect.Effect<number, unknown> = command instanceof UsageError
    ? Effect.fail(command)
    : command._tag === "Help"
    ? Effect.as(Console.log(command.text), exitCodes.ok)
    : Effect.flatMap(transportFromEnv, (layer) => Effect.provide(execute(command), layer))
  return program.pipe(
    Effect.catchCause((cause) => {
      const error = Cause.squash(cause)
      const usage = error instanceof UsageError || error instanceof NoCluster || error instanceof Config.ConfigError
      const message = error instanceof Config.ConfigError
        ? `the environment is not valid: ${error.cause.message.replace(/\s+/g, " ")}`
        : error instanceof Error
        ? error.message
        : String(error)
      return Effect.as(Console.error(`partita: ${message}`), usage ? exitCodes.usage : exitCodes.failed)
    }),
    Effect.provideService(References.LogToStderr, true),
    Effect.provideService(References.MinimumLogLevel, "Warn"),
  )
}
