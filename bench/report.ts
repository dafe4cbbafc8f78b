/**
 * The end of `bench/run`: reads the results of every bench process, prints one table (a column
 * per runtime) and writes the whole run to `BENCH_LATEST` (default `.cache/bench/latest.json`).
 *
 *   bun bench/report.ts <result.json>...      (BENCH_FAILURES: a file listing failed runs)
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
import { dirname } from "node:path"
import process from "node:process"
import { type BenchResult, readResult, suiteTable } from "./common.ts"

const files = process.argv.slice(2)
const results: Array<BenchResult> = files.map(readResult)
const failuresFile = process.env["BENCH_FAILURES"]
const failures = failuresFile !== undefined && existsSync(failuresFile)
  ? readFileSync(failuresFile, "utf8").split("\n").filter((line) => line.trim() !== "")
  : []
const latest = process.env["BENCH_LATEST"] ?? ".cache/bench/latest.json"

if (results.length > 0) {
  console.log(suiteTable(results))
  console.log(
    "\nrecords/s: median over rounds (min–max); ratios: the median of per-round ratios (min–max), both sides" +
      "\nmeasured in the same round of the same process. Runtimes ran one after the other: compare across" +
      "\ncolumns with care. Per-bench details: the `per CPU-second` and `join s` columns in each bench's log.",
  )
}
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
