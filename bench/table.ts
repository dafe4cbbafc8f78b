/**
 * The benchmark table (issue 14): every figure of the table benches, a column per runtime, as
 * markdown; the issue's targets first, each with its figure and whether it is met; and the
 * machine it ran on. `bench/report.ts` prints it at the end of `bench/run` and, with
 * `BENCH_BASELINE=1`, writes it to `bench/BASELINE.md`.
 *
 * The rows are the benches' own measures, ratios and readings, by name: a bench that renames
 * one changes its row here too (`targetRows` names them), and `missingFigures` says which
 * expected figure a run did not emit (CI runs the table at `BENCH_SCALE=ci` and fails on it).
 */
import { spawnSync } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { cpus, loadavg, release, totalmem } from "node:os"
import process from "node:process"
import {
  type BenchResult,
  boundLabel,
  decodeTargets,
  formatRate,
  formatRatio,
  formatReading,
  type RatioResult,
  ratioCell,
  rateCell,
  type Reading,
  readingCell,
} from "./common.ts"

/** The benches of the table, in the order of the issue's rows. */
export const tableBenches = ["consume", "produce", "latency", "memory", "tracing_peers", "tracing", "exactly_once"] as const

/** What a section of the table is about, by bench. */
const sectionTitles: Readonly<Record<string, string>> = {
  consume: "Consume (no-op handler, at-least-once) and peers, with Kafka's ConsumerPerformance",
  produce: "Produce (acks=all), with Kafka's ProducerPerformance",
  latency: "End-to-end latency (open loop), with Kafka's EndToEndLatency",
  memory: "Memory and CPU of idle partition actors",
  tracing_peers: "Tracing: Partita beside kafkajs instrumented with OpenTelemetry",
  tracing: "Tracing: Partita traced and untraced",
  exactly_once: "Exactly-once ÷ at-least-once",
}

/** One of the issue's targets: which figure of which bench, and the bound. */
export interface TargetRow {
  readonly target: string
  readonly bench: string
  readonly kind: "measure" | "ratio" | "reading"
  readonly name: string
  readonly atLeast?: number | undefined
  readonly atMost?: number | undefined
  /** The runtimes the bound is set for (default every one); the others' cells say it is not theirs. */
  readonly runtimes?: ReadonlyArray<string> | undefined
}

/** Whether `row` bounds a figure of `runtime`. */
const appliesTo = (row: TargetRow, runtime: string): boolean => row.runtimes === undefined || row.runtimes.includes(runtime)

/**
 * The issue's targets, reported, never asserted. Filled with the names the benches emit; a
 * target whose bench did not run shows an empty cell.
 */
export const targetRows: ReadonlyArray<TargetRow> = [
  ...[1, 16, 128].flatMap((partitions): Array<TargetRow> => {
    const at = partitions === 1 ? "1 partition" : `${partitions} partitions`
    return [
      {
        target: `consume, ${at}: Partita actor (KafkaTransport) ÷ raw kafkajs`,
        bench: "consume",
        kind: "ratio",
        name: `Partita actor, KafkaTransport, ${at} / raw kafkajs eachBatch A, ${at}`,
        atLeast: 1.2,
      },
      {
        target: `consume, ${at}: Partita actor (KafkaTransport) ÷ raw @platformatic/kafka`,
        bench: "consume",
        kind: "ratio",
        name: `Partita actor, KafkaTransport, ${at} / raw @platformatic/kafka, ${at}`,
        atLeast: 1.2,
      },
    ]
  }),
  {
    target: "produce, 12 B: Partita's Producer (1000 fibers, one record each) ÷ ProducerPerformance",
    bench: "produce",
    kind: "ratio",
    name: "Partita Producer, 1000 fibers × 1 record, 12 B, idempotent / ProducerPerformance (Limit), 12 B, idempotent",
    atLeast: 0.8,
  },
  // At its default 16 KiB batches Java's tool sends 1 KiB records 16 at a time, far below what
  // the broker takes: the limit for 1 KiB is the tool given Partita's 1 MiB batches.
  {
    target: "produce, 1 KiB: Partita's Producer (1000 fibers, one record each) ÷ ProducerPerformance with 1 MiB batches",
    bench: "produce",
    kind: "ratio",
    name: "Partita Producer, 1000 fibers × 1 record, 1 KiB, idempotent / ProducerPerformance, 1 KiB, idempotent, batch.size 1 MiB (diagnostic)",
    atLeast: 0.8,
  },
  ...["KafkaTransport", "KafkaJsTransport"].flatMap((transport) =>
    ["1k records/s", "10k records/s"].flatMap((rate) =>
      (["p50", "p99"] as const).map((quantile): TargetRow => ({
        target: `latency, ${rate}: Partita's added ${quantile} (${transport}), ms`,
        bench: "latency",
        kind: "reading",
        name: `Partita added latency, ${transport}, ${rate}, ${quantile}`,
        atMost: quantile === "p50" ? 1 : 5,
      }))
    )
  ),
  ...["KafkaTransport", "KafkaJsTransport"].map((transport): TargetRow => ({
    target: `partition scaling: Partita actor (${transport}), 128 ÷ 16 partitions`,
    bench: "consume",
    kind: "ratio",
    name: `Partita actor, ${transport}, 128 partitions / Partita actor, ${transport}, 16 partitions`,
    atLeast: 0.9,
  })),
  ...["KafkaTransport", "KafkaJsTransport"].map((transport): TargetRow => ({
    target: `memory: heap per idle partition actor (${transport}, 1024 of them), KiB`,
    bench: "memory",
    kind: "reading",
    name: `heap per actor, ${transport}, 1024 idle partition actors`,
    atMost: 16,
  })),
  ...["KafkaTransport", "KafkaJsTransport"].flatMap((transport): Array<TargetRow> => [
    {
      target: `tracing: Partita traced (${transport}) ÷ kafkajs with OpenTelemetry's instrumentation`,
      bench: "tracing_peers",
      kind: "ratio",
      name: `Partita actor, ${transport}, traced / raw kafkajs eachMessage, OpenTelemetry-instrumented`,
      atLeast: 2,
    },
    {
      target: `tracing: Partita traced ÷ untraced, 10 µs handler (${transport})`,
      bench: "tracing_peers",
      kind: "ratio",
      name: `Partita actor, ${transport}, 10 µs handler, traced / Partita actor, ${transport}, 10 µs handler, untraced`,
      atLeast: 0.8,
    },
  ]),
  // Issue 15: a schema's decoding on a record's path costs a fraction of the record, not several
  // times it. The bounds differ by runtime (Deno's own record path costs more, so the same
  // decoding weighs less there); the bench itself sets the same per runtime (actors_memory.ts).
  ...decodeTargets.map(({ runtime, atLeast }): TargetRow => ({
    target: `decoding: actor with a JSON schema ÷ the same actor reading bytes (embedded broker), ${runtime}`,
    bench: "actors_memory",
    kind: "ratio",
    name: "actor, JSON schema / actor, raw bytes",
    atLeast,
    runtimes: [runtime],
  })),
]

const mdTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const escape = (cell: string) => cell.replaceAll("|", "\\|")
  return [
    `| ${header.map(escape).join(" | ")} |`,
    `| ${header.map((_, index) => (index === 0 ? "---" : "---:")).join(" | ")} |`,
    ...rows.map((row) => `| ${row.map(escape).join(" | ")} |`),
  ].join("\n")
}

const runtimesOf = (results: ReadonlyArray<BenchResult>): ReadonlyArray<string> => {
  const order = ["bun", "deno", "node"]
  return [...new Set(results.map((result) => result.runtime))].sort((a, b) => order.indexOf(a) - order.indexOf(b))
}

const find = (results: ReadonlyArray<BenchResult>, bench: string, runtime: string) =>
  results.find((result) => result.bench === bench && result.runtime === runtime)

const unavailableCell = (result: BenchResult | undefined, name: string): string | undefined => {
  const missing = result?.unavailable?.find((entry) => entry.measure === name)
  if (missing === undefined) return undefined
  const why = missing.why.replaceAll("\n", " ")
  return `n/a: ${why.length > 100 ? `${why.slice(0, 97)}…` : why}`
}

/** The figure a target row points at, as a number (the median), or undefined. */
const figure = (result: BenchResult | undefined, row: TargetRow): number | undefined => {
  if (result === undefined) return undefined
  if (row.kind === "measure") return result.measures.find((m) => m.name === row.name)?.rate.median
  if (row.kind === "ratio") return result.ratios.find((r) => r.name === row.name)?.value.median
  return result.readings?.find((r) => r.name === row.name)?.value.median
}

const targetCell = (result: BenchResult | undefined, row: TargetRow, runtime: string): string => {
  if (!appliesTo(row, runtime)) return "—"
  const value = figure(result, row)
  if (value === undefined) return unavailableCell(result, row.name) ?? ""
  const shown = row.kind === "measure"
    ? `${formatRate(value)}/s`
    : row.kind === "ratio"
    ? formatRatio(value)
    : formatReading(value)
  const met = (row.atLeast === undefined || value >= row.atLeast) && (row.atMost === undefined || value <= row.atMost)
  return `${shown} ${met ? "met" : "**MISSED**"}`
}

const boundText = (row: TargetRow): string =>
  [row.atLeast === undefined ? "" : `≥ ${row.atLeast}`, row.atMost === undefined ? "" : `≤ ${row.atMost}`]
    .filter((text) => text !== "").join(", ")

/** The issue's targets, one row each, a column per runtime. */
export const targetsTable = (results: ReadonlyArray<BenchResult>): string => {
  const runtimes = runtimesOf(results)
  return mdTable(
    ["target", "bound", ...runtimes],
    targetRows.map((row) => [row.target, boundText(row), ...runtimes.map((runtime) => targetCell(find(results, row.bench, runtime), row, runtime))]),
  )
}

/** Every figure of one bench, a column per runtime. */
export const sectionTable = (results: ReadonlyArray<BenchResult>, bench: string): string | undefined => {
  const mine = results.filter((result) => result.bench === bench)
  if (mine.length === 0) return undefined
  const runtimes = runtimesOf(results)
  const cell = <A>(runtime: string, name: string, pick: (result: BenchResult) => A | undefined, show: (value: A) => string) => {
    const result = find(mine, bench, runtime)
    const value = result === undefined ? undefined : pick(result)
    return value === undefined ? unavailableCell(result, name) ?? "" : show(value)
  }
  const names = (pick: (result: BenchResult) => ReadonlyArray<{ readonly name: string }>) => [...new Set(mine.flatMap((r) => pick(r).map((x) => x.name)))]
  const measureNames = [...new Set([...names((r) => r.measures), ...mine.flatMap((r) => (r.unavailable ?? []).map((u) => ({ name: u.measure }))).map((x) => x.name)])]
    .filter((name) => !mine.some((r) => (r.readings ?? []).some((reading) => reading.name === name)))
  const rows: Array<Array<string>> = [
    ...measureNames.map((name) => [
      `${name}, records/s`,
      ...runtimes.map((runtime) => cell(runtime, name, (r) => r.measures.find((m) => m.name === name)?.rate, rateCell)),
    ]),
    ...names((r) => r.ratios).map((name) => {
      const first = mine.flatMap((r) => r.ratios).find((r) => r.name === name)!
      return [
        first.target === undefined ? name : `${name} (target ≥ ${first.target})`,
        ...runtimes.map((runtime) =>
          cell(runtime, name, (r) => r.ratios.find((x) => x.name === name), (ratio: RatioResult) => ratioCell({ ...ratio, target: undefined }) + metText(ratio))
        ),
      ]
    }),
    ...names((r) => r.readings ?? []).map((name) => {
      const first = mine.flatMap((r) => r.readings ?? []).find((r) => r.name === name)!
      return [
        `${name}, ${first.unit}${boundLabel(first)}`,
        ...runtimes.map((runtime) => cell(runtime, name, (r) => r.readings?.find((x) => x.name === name), (reading: Reading) => readingCell(reading))),
      ]
    }),
  ]
  return mdTable(["figure", ...runtimes], rows)
}

const metText = (ratio: RatioResult): string =>
  (ratio.met === undefined ? "" : ratio.met ? " met" : " **MISSED**") + (ratio.noisy === true ? " **NOISY**" : "")

/** The machine and software a run was on: the baseline's header, a line each. */
export const machine = (results: ReadonlyArray<BenchResult>): ReadonlyArray<string> => {
  const cpu = cpus()[0]?.model ?? "unknown CPU"
  const os = existsSync("/etc/os-release")
    ? /PRETTY_NAME="?([^"\n]*)"?/.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "Linux"
    : process.platform
  // `java -version` writes to stderr.
  const java = spawnSync("java", ["-version"], { encoding: "utf8" }).stderr?.split("\n")[0]?.trim() || "no java"
  const runtimes = runtimesOf(results).map((runtime) =>
    `${runtime} ${results.find((result) => result.runtime === runtime)!.runtimeVersion}`
  )
  return [
    `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB memory, ${os} (Linux ${release()})`,
    `runtimes: ${runtimes.join(", ")}; Kafka's tools on ${java}`,
    `load average at the end: ${loadavg().map((value) => value.toFixed(2)).join(" / ")} (1 / 5 / 15 min)`,
  ]
}

/** The whole table: targets, then every section, in the issue's order; benches outside it after. */
export const markdown = (results: ReadonlyArray<BenchResult>): string => {
  const parts: Array<string> = []
  if (targetRows.length > 0) parts.push("### Targets (reported, never asserted)\n\n" + targetsTable(results))
  const benches = [
    ...tableBenches.filter((bench) => results.some((result) => result.bench === bench)),
    ...[...new Set(results.map((result) => result.bench))].filter((bench) => !(tableBenches as ReadonlyArray<string>).includes(bench)),
  ]
  for (const bench of benches) {
    const table = sectionTable(results, bench)
    if (table === undefined) continue
    const first = results.find((result) => result.bench === bench)!
    const notes = first.notes.length === 0 ? "" : `\n\n${first.notes.map((note) => `- ${note}`).join("\n")}`
    parts.push(`### ${sectionTitles[bench] ?? first.title} (\`${bench}\`)${notes}\n\n${table}`)
  }
  return parts.join("\n\n")
}

/**
 * Expected figures (the targets' own) a run did not emit on a runtime, neither as a value nor as
 * unavailable, for the benches the run has results of (a bench left out by BENCH_ONLY is not
 * missing; one that crashed is a failure of bench/run already).
 */
export const missingFigures = (results: ReadonlyArray<BenchResult>): ReadonlyArray<string> =>
  runtimesOf(results).flatMap((runtime) =>
    targetRows.filter((row) => {
      if (!appliesTo(row, runtime) || !results.some((result) => result.bench === row.bench)) return false
      const result = find(results, row.bench, runtime)
      return figure(result, row) === undefined && unavailableCell(result, row.name) === undefined
    }).map((row) => `${row.bench} on ${runtime}: no figure for "${row.name}" (${row.target})`)
  )
