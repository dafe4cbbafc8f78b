/**
 * The end of `bench/run`: reads the results of every bench process, prints the benchmark table
 * as markdown (bench/table.ts: a column per runtime) and writes the whole run to `BENCH_LATEST`
 * (default `.cache/bench/latest.json`).
 *
 * With `BENCH_BASELINE=1` (full scale only) it also writes `bench/BASELINE.md` (the table with
 * the machine it ran on) and its chart `bench/baseline.svg`. Under `BENCH_SCALE=ci` it fails
 * when a target's figure is missing from a runtime's results: the CI check that every row runs.
 *
 *   bun bench/report.ts <result.json>...      (BENCH_FAILURES: a file listing failed runs)
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
import { dirname } from "node:path"
import process from "node:process"
import { type BenchResult, config, readResult } from "./common.ts"
import { chart } from "./chart.ts"
import { machine, markdown, missingFigures } from "./table.ts"

const files = process.argv.slice(2)
const results: Array<BenchResult> = files.map(readResult)
const failuresFile = process.env["BENCH_FAILURES"]
const failures = failuresFile !== undefined && existsSync(failuresFile)
  ? readFileSync(failuresFile, "utf8").split("\n").filter((line) => line.trim() !== "")
  : []
const latest = process.env["BENCH_LATEST"] ?? ".cache/bench/latest.json"

const legend = "Each cell: the median over rounds (min–max). A ratio is the median of per-round ratios, both sides" +
  "\nmeasured in the same round of the same process; runtimes ran one after the other, so compare across columns" +
  "\nwith care. Per-bench details (per CPU-second, join times): each bench's log."
const table = markdown(results)
if (results.length > 0) console.log(`\n${table}\n\n${legend}`)
const missed = results.flatMap((result) => [
  ...result.ratios.filter((ratio) => ratio.met === false).map((ratio) =>
    `${result.bench} on ${result.runtime}: ${ratio.name} = ${
      ratio.value.median.toFixed(2)
    }, target ≥ ${ratio.target}`
  ),
  ...result.targets.filter((target) => !target.met).map((target) =>
    `${result.bench} on ${result.runtime}: ${target.measure} = ${
      Math.round(target.median)
    } records/s, target ≥ ${target.atLeast}`
  ),
  ...(result.readings ?? []).filter((reading) => reading.met === false).map((reading) =>
    `${result.bench} on ${result.runtime}: ${reading.name} = ${Math.round(reading.value.median)} ${reading.unit}, target ≤ ${reading.atMost}`
  ),
])
if (missed.length > 0) console.log(`\nmissed targets:\n${missed.map((line) => `  ${line}`).join("\n")}`)
if (failures.length > 0) console.log(`\nfailed:\n${failures.map((line) => `  ${line}`).join("\n")}`)

const missing = config.scale === "ci" ? missingFigures(results) : []
if (missing.length > 0) console.log(`\nfigures missing (BENCH_SCALE=ci checks that every row emits its figure):\n${missing.map((line) => `  ${line}`).join("\n")}`)

if (process.env["BENCH_BASELINE"] === "1") {
  if (config.scale !== "full") {
    console.log("\nBENCH_BASELINE=1 writes the baseline at full scale only: not written")
  } else {
    // BENCH_COMMIT: the commit the figures were measured at, when the report is written later.
    const commit = process.env["BENCH_COMMIT"] ?? (() => {
      try {
        return readFileSync(".git/HEAD", "utf8").startsWith("ref:")
          ? readFileSync(`.git/${readFileSync(".git/HEAD", "utf8").slice(5).trim()}`, "utf8").trim().slice(0, 12)
          : readFileSync(".git/HEAD", "utf8").trim().slice(0, 12)
      } catch {
        return "unknown"
      }
    })()
    const settings = Object.entries(process.env).filter(([key]) => key.startsWith("BENCH_") && !["BENCH_OUT", "BENCH_LATEST", "BENCH_FAILURES", "BENCH_STAMP", "BENCH_BASELINE", "BENCH_COMMIT"].includes(key))
    writeFileSync(
      "bench/BASELINE.md",
      [
        "# Benchmark baseline",
        "",
        `Written by \`BENCH_BASELINE=1 npm run bench\` (bench/report.ts) on ${new Date().toISOString().slice(0, 10)}, commit ${commit}; run ${process.env["BENCH_STAMP"] ?? ""}.`,
        "Do not edit by hand: run it again. The chart: [baseline.svg](baseline.svg).",
        "",
        ...machine(results).map((line) => `- ${line}`),
        `- Kafka: ${process.env["KAFKA_BROKERS"] ?? "127.0.0.1:9092"}, the broker of scripts/kafka${settings.length === 0 ? "" : `; settings: ${settings.map(([key, value]) => `${key}=${value}`).join(" ")}`}`,
        ...(failures.length === 0 ? [] : [`- benches that failed in this run: ${failures.join("; ")}`]),
        "",
        legend.replaceAll("\n", " "),
        "",
        table,
        "",
      ].join("\n"),
    )
    writeFileSync("bench/baseline.svg", chart(results))
    console.log("\nwritten: bench/BASELINE.md, bench/baseline.svg")
  }
}

mkdirSync(dirname(latest), { recursive: true })
writeFileSync(
  latest,
  JSON.stringify(
    {
      run: process.env["BENCH_STAMP"],
      writtenAt: new Date().toISOString(),
      machine: { cpus: cpus().length, loadavg: loadavg() },
      kafkaBrokers: process.env["KAFKA_BROKERS"],
      // The settings the run was given (not bench/run's own plumbing).
      environment: Object.fromEntries(
        Object.entries(process.env).filter(([key]) =>
          key.startsWith("BENCH_") &&
          !["BENCH_OUT", "BENCH_LATEST", "BENCH_FAILURES", "BENCH_STAMP"].includes(key)
        ),
      ),
      results,
      missedTargets: missed,
      failures,
    },
    null,
    2,
  ) + "\n",
)
console.log(`\nwritten: ${latest}`)
if (missing.length > 0) process.exit(1)
