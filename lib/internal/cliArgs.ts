/**
 * The `partita` command line's arguments: what each command takes, parsed into a typed command
 * or a `UsageError` that says what is wrong and where the help is, and the help texts.
 *
 * Hand-written rather than Effect's `effect/cli`: that module runs on the platform services
 * (FileSystem, Path, Terminal, Stdio, ChildProcessSpawner) of a `@effect/platform-*` package,
 * which Partita does not depend on, and these few commands need none of them.
 */
import { Data, Duration } from "effect"
import type { Filter } from "../DeadLetterReplay.ts"

/** What the arguments ask for. */
export type Command =
  | { readonly _tag: "Help"; readonly text: string }
  | {
    readonly _tag: "DlqReplay"
    readonly from: string
    readonly to?: string | undefined
    readonly where: Filter
    readonly since?: Date | Duration.Duration | undefined
    readonly group?: string | undefined
    readonly batchSize?: number | undefined
    readonly sessionTimeout?: Duration.Duration | undefined
  }
  | { readonly _tag: "DlqList"; readonly from: string; readonly limit: number }
  | { readonly _tag: "Topics" }
  | { readonly _tag: "GroupsDescribe"; readonly group: string }

/** The arguments do not make a command; `help` names the help that does. */
export class UsageError extends Data.TaggedError("UsageError")<{
  readonly problem: string
  readonly help: string
}> {
  override get message(): string {
    return `${this.problem} (see \`${this.help}\`)`
  }
}

const environment = `Environment (as Partita's apps read it):
  KAFKA_BROKERS         host:port,... of the cluster (required)
  KAFKA_CLIENT          "kafkajs" for KafkaJsTransport; Partita's own client otherwise
  KAFKA_CLIENT_ID, KAFKA_SSL, KAFKA_SSL_CA_FILE,
  KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD
The embedded broker (MemoryTransport) lives inside the process that runs it, so no command
line can reach it: from that process, call DeadLetterReplay.replay and DeadLetterReplay.list.

Exit codes: 0 done, 1 the transport or broker failed, 2 bad arguments or environment,
3 (dlq replay) done, but some letters could not be moved (listed; they stay in the topic).`

const help = {
  main: `partita: Partita's command line for dead letters, topics and consumer groups

Usage:
  partita dlq replay --from <topic> [--to <topic>] [--where <key>=<value>]... [--since <when>]
                     [--group <group>] [--batch-size <n>] [--session-timeout <duration>]
  partita dlq list --from <topic> [--limit <n>]
  partita topics
  partita groups describe <group>

Run \`partita <command> --help\` for a command's options.

${environment}`,
  replay: `partita dlq replay: send the letters of a dead-letter topic back to their source topics

Each letter goes to the topic and partition it came from (its partita.dlq.source.* headers),
or to --to, without its partita.dlq.* headers and with partita.replayed-from
(<dead-letter topic>/<partition>@<offset>). The replay reads up to the end of the topic as it
is when it starts, moves each batch in one transaction with its consumer group's offsets, and
stops: run it again after a crash and it moves each letter exactly once.

Options:
  --from <topic>               the dead-letter topic (required)
  --to <topic>                 send every letter here instead, placed by its key
  --where <key>=<value>        only letters with this error tag (error=DecodeError), actor
                               (actor=billing) or source topic (source=orders); repeat a key for
                               any of its values, give several keys for all of them
  --since <when>               only letters written since: a time (2026-12-01T10:00:00Z,
                               epoch milliseconds) or a duration back from now (2h, 30m, 1d)
  --group <group>              the consumer group holding the replay's progress
                               (default partita-replay-<from>); letters a filter skipped or that
                               could not be moved are passed for it too: replay those with a
                               group of their own
  --batch-size <n>             letters per transaction, at most (default 500)
  --session-timeout <duration> how long a killed replay holds its partitions from the next one
                               (default 30s; Kafka's KIP-848 groups use the broker's setting)

${environment}`,
  list: `partita dlq list: print the oldest letters of a dead-letter topic, moving nothing

Options:
  --from <topic>   the dead-letter topic (required)
  --limit <n>      at most this many letters (default 20)

Columns: the letter's partition and offset, when it was written, where it came from
(topic/partition@offset), the actor, the error tag and its message.

${environment}`,
  topics: `partita topics: print every topic with its partitions and messages

Messages are what the partitions hold: high watermark minus log start offset, summed (a
transactional topic's markers count too). Kafka's internal topics are left out.

${environment}`,
  groups: `partita groups describe <group>: print a consumer group's committed offset, the high
watermark and the lag of each partition it has committed

${environment}`,
} as const

const units: Record<string, Duration.Unit> = {
  ms: "millis",
  s: "seconds",
  m: "minutes",
  h: "hours",
  d: "days",
  w: "weeks",
}

/** `2h`, `30m`, `500ms`, `2 hours`, `1.5 days`: a duration, or undefined. */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/i.exec(text.trim())
  if (match === null) return undefined
  const unit = units[match[2]!.toLowerCase()] ?? match[2]!.toLowerCase()
  const duration = Duration.fromInput(`${Number(match[1])} ${unit}` as Duration.Input)
  return duration._tag === "Some" ? duration.value : undefined
}

/** A time (ISO 8601, or epoch milliseconds) or a duration back from now. */
const parseSince = (text: string): Date | Duration.Duration | undefined => {
  if (/^\d+$/.test(text)) return new Date(Number(text))
  const duration = parseDuration(text)
  if (duration !== undefined) return duration
  const time = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : NaN
  return Number.isNaN(time) ? undefined : new Date(time)
}

interface Spec {
  readonly help: string
  readonly helpCommand: string
  /** Flags, each taking a value; `repeatable` ones collect every value. */
  readonly values: ReadonlyArray<string>
  readonly repeatable?: ReadonlyArray<string>
  /** How many positional arguments. */
  readonly positionals: number
}

interface Parsed {
  readonly values: Map<string, Array<string>>
  readonly positionals: Array<string>
}

const parseFlags = (args: ReadonlyArray<string>, spec: Spec): Parsed | UsageError | "help" => {
  const fail = (problem: string) => new UsageError({ problem, help: spec.helpCommand })
  const values = new Map<string, Array<string>>()
  const positionals: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--help" || arg === "-h") return "help"
    if (!arg.startsWith("--")) {
      positionals.push(arg)
      continue
    }
    const equals = arg.indexOf("=")
    const name = equals === -1 ? arg.slice(2) : arg.slice(2, equals)
    if (!spec.values.includes(name)) return fail(`Unknown option --${name}`)
    const value = equals === -1 ? args[++i] : arg.slice(equals + 1)
    if (value === undefined || value === "" || (equals === -1 && value.startsWith("--"))) return fail(`--${name} needs a value`)
    const seen = values.get(name)
    if (seen !== undefined && !spec.repeatable?.includes(name)) return fail(`--${name} is given twice`)
    values.set(name, [...(seen ?? []), value])
  }
  if (positionals.length > spec.positionals) {
    return fail(`Unexpected argument "${positionals[spec.positionals]}"`)
  }
  return { values, positionals }
}

const positiveInteger = (text: string | undefined): number | undefined => {
  if (text === undefined || !/^\d+$/.test(text)) return undefined
  const value = Number(text)
  return Number.isSafeInteger(value) && value > 0 ? value : undefined
}

const whereKeys = { error: "error", actor: "actor", source: "sourceTopic" } as const

const parseReplay = (args: ReadonlyArray<string>): Command | UsageError => {
  const spec: Spec = {
    help: help.replay,
    helpCommand: "partita dlq replay --help",
    values: ["from", "to", "where", "since", "group", "batch-size", "session-timeout"],
    repeatable: ["where"],
    positionals: 0,
  }
  const fail = (problem: string) => new UsageError({ problem, help: spec.helpCommand })
  const parsed = parseFlags(args, spec)
  if (parsed === "help") return { _tag: "Help", text: spec.help }
  if (parsed instanceof UsageError) return parsed
  const one = (name: string) => parsed.values.get(name)?.[0]
  const from = one("from")
  if (from === undefined) return fail("dlq replay needs --from <dead-letter topic>")
  const where: Record<string, Array<string>> = {}
  for (const clause of parsed.values.get("where") ?? []) {
    const equals = clause.indexOf("=")
    const key = equals === -1 ? clause : clause.slice(0, equals)
    const field = whereKeys[key as keyof typeof whereKeys]
    const value = clause.slice(equals + 1)
    if (equals === -1 || field === undefined || value === "") {
      return fail(`--where "${clause}" is not <key>=<value> with key error, actor or source`)
    }
    ;(where[field] ??= []).push(value)
  }
  const sinceText = one("since")
  const since = sinceText === undefined ? undefined : parseSince(sinceText)
  if (sinceText !== undefined && since === undefined) {
    return fail(`--since "${sinceText}" is neither a time (2026-12-01T10:00:00Z, epoch milliseconds) nor a duration (2h, 30m, 1d)`)
  }
  const batchText = one("batch-size")
  const batchSize = positiveInteger(batchText)
  if (batchText !== undefined && batchSize === undefined) return fail(`--batch-size "${batchText}" is not a positive integer`)
  const sessionText = one("session-timeout")
  const sessionTimeout = sessionText === undefined ? undefined : parseDuration(sessionText)
  if (sessionText !== undefined && sessionTimeout === undefined) {
    return fail(`--session-timeout "${sessionText}" is not a duration (10s, 1m)`)
  }
  return { _tag: "DlqReplay", from, to: one("to"), where, since, group: one("group"), batchSize, sessionTimeout }
}

const parseList = (args: ReadonlyArray<string>): Command | UsageError => {
  const spec: Spec = { help: help.list, helpCommand: "partita dlq list --help", values: ["from", "limit"], positionals: 0 }
  const parsed = parseFlags(args, spec)
  if (parsed === "help") return { _tag: "Help", text: spec.help }
  if (parsed instanceof UsageError) return parsed
  const from = parsed.values.get("from")?.[0]
  if (from === undefined) return new UsageError({ problem: "dlq list needs --from <dead-letter topic>", help: spec.helpCommand })
  const limitText = parsed.values.get("limit")?.[0]
  const limit = limitText === undefined ? 20 : positiveInteger(limitText)
  if (limit === undefined) return new UsageError({ problem: `--limit "${limitText}" is not a positive integer`, help: spec.helpCommand })
  return { _tag: "DlqList", from, limit }
}

/** The command `args` (the arguments after the program's name) ask for. */
export const parse = (args: ReadonlyArray<string>): Command | UsageError => {
  const [first, second, ...rest] = args
  const mainHelp = "partita --help"
  if (first === undefined || first === "--help" || first === "-h" || first === "help") return { _tag: "Help", text: help.main }
  switch (first) {
    case "dlq":
      if (second === "replay") return parseReplay(rest)
      if (second === "list") return parseList(rest)
      if (second === undefined || second === "--help" || second === "-h") return { _tag: "Help", text: help.main }
      return new UsageError({ problem: `Unknown command "dlq ${second}": dlq has replay and list`, help: mainHelp })
    case "topics": {
      const spec: Spec = { help: help.topics, helpCommand: "partita topics --help", values: [], positionals: 0 }
      const parsed = parseFlags(args.slice(1), spec)
      if (parsed === "help") return { _tag: "Help", text: spec.help }
      if (parsed instanceof UsageError) return parsed
      return { _tag: "Topics" }
    }
    case "groups": {
      const spec: Spec = { help: help.groups, helpCommand: "partita groups describe --help", values: [], positionals: 1 }
      if (second === undefined || second === "--help" || second === "-h") return { _tag: "Help", text: spec.help }
      if (second !== "describe") {
        return new UsageError({ problem: `Unknown command "groups ${second}": groups has describe`, help: mainHelp })
      }
      const parsed = parseFlags(rest, spec)
      if (parsed === "help") return { _tag: "Help", text: spec.help }
      if (parsed instanceof UsageError) return parsed
      const group = parsed.positionals[0]
      if (group === undefined) return new UsageError({ problem: "groups describe needs a group name", help: spec.helpCommand })
      return { _tag: "GroupsDescribe", group }
    }
    default:
      return new UsageError({ problem: `Unknown command "${first}"`, help: mainHelp })
  }
}
