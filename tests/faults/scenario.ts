/**
 * What every fault scenario shares: a fresh topic of 8 partitions and a group on the broker, a
 * `Scenario` whose children are always stopped, the history checked against the topics read
 * back, and one line of figures per scenario (`[faults] F1 bun lost=0 ...`) for quoting full-scale
 * runs.
 */
import process from "node:process"
import { kafkaTest, Locks, uniqueName } from "../fixtures/services.ts"
import { check, figures, type Report } from "./history.ts"
import { PrivateBroker } from "./private_broker.ts"
import { Scenario, until } from "./runner.ts"
import { Broker } from "./workload.ts"

export const partitions = 8

export const runtimeName = (): string =>
  process.versions["bun"] !== undefined ? "bun" : "Deno" in globalThis ? "deno" : "node"

export interface Context {
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
  options: { readonly timeoutMs?: number; readonly env?: Record<string, string>; readonly privateBroker?: boolean } = {},
): void =>
  kafkaTest(name, async (sharedBrokers) => {
    const started = Date.now()
    const privateBroker = options.privateBroker === true ? await PrivateBroker.start() : undefined
    const brokers = privateBroker === undefined ? sharedBrokers : [privateBroker.address]
    const id = name.split(" ")[0]!.toLowerCase()
    const topic = uniqueName(`faults-${id}`)
    const group = uniqueName(`faults-${id}`)
    const scenario = new Scenario(id, { KAFKA_BROKERS: brokers.join(","), TOPIC: topic, GROUP: group, ...options.env })
    const broker = new Broker(brokers)
    try {
      await broker.createTopic(topic, partitions)
      await body({ scenario, broker, brokers, topic, group, started, privateBroker })
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

/** Reads the topics back and checks the scenario's whole history. */
export const checkHistory = async (
  context: Context,
  options: { readonly deadLetterTopic?: string; readonly outputTopic?: string; readonly ordering?: "partition" | "key" } = {},
): Promise<Report> => {
  context.scenario.poll()
  const input = await context.broker.readBack(context.topic)
  const deadLetters = options.deadLetterTopic === undefined ? undefined : await context.broker.readBack(options.deadLetterTopic)
  const outputs = options.outputTopic === undefined ? undefined : await context.broker.readBack(options.outputTopic)
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
  console.log(`[faults] ${scenario} ${runtimeName()} ${report === undefined ? "" : figures(report) + " "}${fields.join(" ")}`)
}

/** The CPU time (ms) the members had used when they were signalled to stop, summed over members. */
export const cpuMillis = (context: Context): number => {
  context.scenario.poll()
  const last = new Map<string, number>()
  for (const line of context.scenario.lines) if (line["e"] === "cpu") last.set(line["m"], line["ms"])
  return [...last.values()].reduce((sum, cpu) => sum + cpu, 0)
}

export { until }
