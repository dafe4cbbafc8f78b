/**
 * What every fault scenario shares: a fresh topic of 8 partitions and a group on the broker, a
 * `Scenario` whose children are always stopped, the history checked against the topics read
 * back, and one line of figures per scenario (`[faults] F1 bun lost=0 ...`) for quoting full-scale
 * runs.
 */
import process from "node:process"
import { kafkaTest, Locks, uniqueName } from "../fixtures/services.ts"
import { check, type DerivedRecord, figures, type Report } from "./history.ts"
import { PrivateBroker } from "./private_broker.ts"
import { Scenario, until } from "./runner.ts"
import { Broker } from "./workload.ts"

export const partitions = 8

export const runtimeName = (): string =>
  process.versions["bun"] !== undefined ? "bun" : "Deno" in globalThis ? "deno" : "node"

/**
 * The Kafka transports the scenarios run on: `kafka` (KafkaTransport, Partita's own client, the
 * default for real clusters) on every runtime, and `kafkajs` (KafkaJsTransport) too on Bun: the
 * kafkajs transport is the same code on every runtime, and what a runtime changes (processes,
 * signals, sockets) the `kafka` runs cover on each; all of it, both ways on three runtimes, would
 * double the suite's half of CI. `PARTITA_FAULTS_TRANSPORTS` ("kafka kafkajs") sets them. The
 * test's own producer and read-back stay on kafkajs, apart from the system under test.
 */
export const transports: ReadonlyArray<string> = (
  process.env["PARTITA_FAULTS_TRANSPORTS"] ?? (runtimeName() === "bun" ? "kafka kafkajs" : "kafka")
).split(/[\s,]+/).filter((name) => name !== "")

export interface Context {
  /** The transport the actor apps run on (`kafka` or `kafkajs`). */
  readonly transport: string
  readonly scenario: Scenario
  readonly broker: Broker
  readonly brokers: ReadonlyArray<string>
  readonly topic: string
  readonly group: string
  readonly started: number
  /** The scenario's own broker, for scenarios that kill or freeze it. */
  readonly privateBroker: PrivateBroker | undefined
}

/**
 * A fault scenario on the real broker: `body` gets a fresh topic, and every child and connection
 * is closed however it ends. With `privateBroker`, the scenario runs against a broker of its own
 * (started here, stopped in the `finally`), never the shared one; it kills or freezes that broker,
 * which under CI is one broker for every runtime (.ci/run), so it holds `Locks.faultsBroker` for
 * its whole run and no other runtime's F4 or F5 overlaps it.
 */
export const faultTest = (
  name: string,
  body: (context: Context) => Promise<void>,
  options: {
    readonly timeoutMs?: number
    readonly env?: Record<string, string>
    readonly privateBroker?: boolean
    /** Only on these of the suite's transports (a feature only one of them has). */
    readonly transports?: ReadonlyArray<string>
  } = {},
): void => {
  for (const transport of transports) {
    if (options.transports === undefined || options.transports.includes(transport)) scenarioTest(`${name} [${transport}]`, transport, body, options)
  }
}

const scenarioTest = (
  name: string,
  transport: string,
  body: (context: Context) => Promise<void>,
  options: { readonly timeoutMs?: number; readonly env?: Record<string, string>; readonly privateBroker?: boolean },
): void =>
  kafkaTest(name, async (sharedBrokers) => {
    const started = Date.now()
    const privateBroker = options.privateBroker === true ? await PrivateBroker.start() : undefined
    const brokers = privateBroker === undefined ? sharedBrokers : [privateBroker.address]
    const id = name.split(" ")[0]!.toLowerCase()
    const topic = uniqueName(`faults-${id}`)
    const group = uniqueName(`faults-${id}`)
    const scenario = new Scenario(id, { KAFKA_BROKERS: brokers.join(","), TOPIC: topic, GROUP: group, TRANSPORT: transport, ...options.env })
    const broker = new Broker(brokers)
    try {
      await broker.createTopic(topic, partitions)
      await body({ transport, scenario, broker, brokers, topic, group, started, privateBroker })
    } finally {
      await scenario.close()
      await broker.close()
      await privateBroker?.stop()
    }
  }, { timeoutMs: options.timeoutMs ?? 120_000, exclusive: options.privateBroker === true ? Locks.faultsBroker : undefined })

/** Waits until the group has committed every partition of `topic` to its end. */
export const committedToEnd = async (context: Context, timeoutMs = 60_000): Promise<void> => {
  const high = await context.broker.highWatermarks(context.topic)
  let committed = new Map<number, number>()
  const deadline = Date.now() + timeoutMs
  while (true) {
    committed = await context.broker.committed(context.group, context.topic)
    if ([...high].every(([partition, offset]) => offset === 0 || committed.get(partition) === offset)) return
    if (Date.now() > deadline) {
      throw new Error(
        `The group did not commit ${context.topic} to its end within ${timeoutMs} ms: high ${JSON.stringify([...high])}, committed ${JSON.stringify([...committed])}`,
      )
    }
    await new Promise((resolve) => setTimeout(resolve, 300))
  }
}

/**
 * Everything needed to tell why a scenario stopped making progress, as text to print when it
 * fails: which partitions the group has not committed to their end, the group as its coordinator
 * sees it, and for each member its last health report, its last claim and release of each
 * partition, and the tail of its own output (with `LOG_LEVEL=Debug` that holds kafkajs' lines and
 * the subscription's periodic line of what its consumer was last seen doing). Never throws: a part
 * that cannot be read says so.
 */
export const diagnose = async (context: Context): Promise<string> => {
  const { scenario, broker } = context
  scenario.poll()
  const now = Date.now()
  const ago = (t: unknown) => typeof t === "number" ? `${((now - t) / 1000).toFixed(1)} s ago` : "never"
  const parts: Array<string> = [`Diagnosis at ${new Date(now).toISOString()}:`]
  try {
    const [high, committed] = await Promise.all([broker.highWatermarks(context.topic), broker.committed(context.group, context.topic)])
    const behind = [...high].filter(([partition, offset]) => offset > 0 && (committed.get(partition) ?? 0) < offset).sort(([a], [b]) => a - b)
    parts.push(`- partitions not committed to their end: ${
      behind.length === 0 ? "none" : behind.map(([p, offset]) => `${p} (committed ${committed.get(p) ?? "nothing"} of ${offset})`).join(", ")
    }`)
  } catch (error) {
    parts.push(`- offsets unreadable: ${String(error)}`)
  }
  try {
    parts.push(`- group as the coordinator sees it: ${await broker.describeGroup(context.group)}`)
  } catch (error) {
    parts.push(`- group unreadable: ${String(error)}`)
  }
  for (const member of scenario.all()) {
    const lines = scenario.lines.filter((line) => line["m"] === member.id)
    parts.push(`- member ${member.id} (pid ${member.process.pid}, ${member.process.hasExited() ? "exited" : "running"}):`)
    const stats = lines.filter((line) => line["e"] === "stats").at(-1)
    if (stats === undefined) parts.push("  no health report")
    else {
      parts.push(`  last health report ${ago(stats["t"])}: healthy=${stats["healthy"]} ready=${stats["ready"]} members=${JSON.stringify(stats["members"])} broker=${JSON.stringify(stats["broker"])}`)
      for (const p of stats["partitions"] ?? []) {
        parts.push(`  partition ${p.p}: ${p.state}${p.paused ? " paused" : ""}${p.stalled ? " stalled" : ""}, processed ${p.processed}, mailbox ${p.mailbox}, position ${p.position}, committed ${p.committed}, last progress ${ago(p.lastProgress)}, restarts ${p.restarts}${p.lastError ? `, last error: ${p.lastError}` : ""}`)
      }
    }
    const group = lines.filter((line) => line["e"] === "claim" || line["e"] === "release")
    const last = new Map<number, Record<string, any>>()
    for (const line of group) last.set(line["p"], line)
    parts.push(`  last group event per partition: ${
      last.size === 0 ? "none" : [...last].sort(([a], [b]) => a - b).map(([p, line]) => `${p} ${line["e"]} g${line["g"]} ${ago(line["t"])}`).join(", ")
    }`)
    const handled = lines.filter((line) => line["e"] === "handled").at(-1)
    const commit = lines.filter((line) => line["e"] === "commit").at(-1)
    parts.push(`  last handled ${ago(handled?.["en"])}, last commit acknowledged ${ago(commit?.["t"])}`)
    const output = member.process.stdout().split("\n")
    const sighting = output.filter((line) => line.includes("Kafka consumer of group")).at(-1)
    if (sighting !== undefined) parts.push(`  consumer last seen: ${sighting}`)
    parts.push(`  output, last 40 lines:`, ...output.slice(-40).map((line) => `    ${line}`))
    const errors = member.process.stderr().split("\n").slice(-10).filter((line) => line !== "")
    if (errors.length > 0) parts.push(`  stderr, last lines:`, ...errors.map((line) => `    ${line}`))
  }
  return parts.join("\n")
}

/** Reads the topics back and checks the scenario's whole history. */
export const checkHistory = async (
  context: Context,
  options: {
    readonly deadLetterTopic?: string
    readonly outputTopic?: string
    /** The output as read already (a transactional topic's committed records: see `startCommittedReader`). */
    readonly output?: ReadonlyArray<DerivedRecord>
    readonly ordering?: "partition" | "key"
  } = {},
): Promise<Report> => {
  context.scenario.poll()
  const input = await context.broker.readBack(context.topic)
  const deadLetters = options.deadLetterTopic === undefined ? undefined : await context.broker.readBack(options.deadLetterTopic)
  const outputs = options.output !== undefined
    ? { derived: options.output }
    : options.outputTopic === undefined
    ? undefined
    : await context.broker.readBack(options.outputTopic)
  const finalCommitted = await context.broker.committed(context.group, context.topic)
  return check({
    ...context.scenario.history(),
    topic: input.records,
    deadLetterTopic: deadLetters?.derived,
    outputTopic: outputs?.derived,
    finalCommitted,
    ordering: options.ordering,
  })
}

/** Prints the scenario's one line of figures. */
export const report = (context: Context, scenario: string, report: Report | undefined, extra: Record<string, string | number> = {}): void => {
  const fields = Object.entries({ ...extra, cpu_ms: cpuMillis(context), seconds: ((Date.now() - context.started) / 1000).toFixed(1) })
    .map(([k, v]) => `${k}=${v}`)
  console.log(`[faults] ${scenario} ${runtimeName()} ${context.transport} ${report === undefined ? "" : figures(report) + " "}${fields.join(" ")}`)
}

/** The CPU time (ms) the members had used when they were signalled to stop, summed over members. */
export const cpuMillis = (context: Context): number => {
  context.scenario.poll()
  const last = new Map<string, number>()
  for (const line of context.scenario.lines) if (line["e"] === "cpu") last.set(line["m"], line["ms"])
  return [...last.values()].reduce((sum, cpu) => sum + cpu, 0)
}

export { until }
