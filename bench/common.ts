/**
 * What every benchmark shares: configuration from the environment, the interleaved-rounds
 * harness, medians and ratios, the tables, the JSON results `bench/run` collects, and the Kafka
 * and Effect plumbing the Partita cases need (a broker to reach, names nobody else uses, a
 * `Transport` that reports its group's joins and commits, cleanup of what a run created).
 *
 * A benchmark is a list of cases measured in the same process, in rounds: every round runs
 * every case once, in an order rotated by one each round, so drift on a shared, noisy machine
 * (another process, the broker's page cache, GC debt) spreads over all cases instead of landing
 * on one. Ratios are taken within a round, then the median over rounds is reported: the noise a
 * round shares cancels in the ratio. Nothing here asserts a speed: targets are reported as met or
 * missed, never thrown.
 *
 * Environment: `BENCH_RECORDS` (records per case, overrides each bench's default),
 * `BENCH_ROUNDS` (counted rounds, overrides each bench's default), `BENCH_WARMUP` (uncounted
 * rounds first, default 1), `BENCH_OUT` (where the JSON result goes; `bench/run` sets it),
 * `KAFKA_BROKERS` (default `127.0.0.1:9092`), `BENCH_ROUND_TIMEOUT` (seconds one case may take
 * before the bench fails, default 120), `BENCH_CASES` (only the cases named, separated by `|`:
 * to profile one), `BENCH_PROFILE` (on Node and Deno, a directory for a CPU profile of the counted rounds
 * only; read it with `bench/profile.ts`).
 */
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname } from "node:path"
import { Buffer } from "node:buffer"
import process from "node:process"
import kafkajs from "kafkajs"
import type { Admin, Kafka as KafkaClient, LogEntry } from "kafkajs"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Logger, ManagedRuntime, Metric, References, type Scope, Stream } from "effect"
import { Actor, ActorSystem, Codec, ErrorPolicy, KafkaJsTransport, KafkaTransport, MemoryTransport, type Producer, Transport } from "../mod.ts"

// kafkajs is CommonJS: its default import is `module.exports` on every runtime.
const { Kafka, logLevel: KafkaLogLevel } = kafkajs

// ---------------------------------------------------------------------------------------------
// Configuration and runtime

const integer = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return fallback
  const value = Number(raw.replaceAll("_", ""))
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be a whole number, got "${raw}"`)
  return value
}

/** The runtime running this process, detected here and nowhere else. */
export const runtime: { readonly name: "bun" | "deno" | "node"; readonly version: string } = (() => {
  const global = globalThis as { Bun?: { version: string }; Deno?: { version: { deno: string } } }
  if (global.Bun !== undefined) return { name: "bun", version: global.Bun.version }
  if (global.Deno !== undefined) return { name: "deno", version: global.Deno.version.deno }
  return { name: "node", version: process.versions.node }
})()

/** Records per case: `BENCH_RECORDS`, else the bench's own default (its CI-scale one under `BENCH_SCALE=ci`). */
export const records = (fallback: number, ciFallback = Math.min(fallback, 2_000)): number =>
  Math.max(1, integer("BENCH_RECORDS", scaled(ciFallback, fallback)))

/**
 * `BENCH_SCALE=ci`: every bench at the smallest size that still runs each case and emits each
 * figure (CI runs it to prove the table works, never to read speed); default `full`.
 */
const scale: "ci" | "full" = (() => {
  const raw = process.env["BENCH_SCALE"] ?? "full"
  if (raw !== "ci" && raw !== "full") throw new Error(`BENCH_SCALE must be "ci" or "full", got "${raw}"`)
  return raw
})()

/** `ci` under `BENCH_SCALE=ci`, else `full`: sizes (records, partitions, rates) for each scale. */
export const scaled = <A>(ci: A, full: A): A => scale === "ci" ? ci : full

export const config = {
  scale,
  warmup: integer("BENCH_WARMUP", scaled(0, 1)),
  roundTimeoutMs: Math.max(1, integer("BENCH_ROUND_TIMEOUT", 120)) * 1000,
  out: process.env["BENCH_OUT"] === "" ? undefined : process.env["BENCH_OUT"],
  /** On Node: a directory to write a CPU profile of the counted rounds to (warm-up and setup left out). */
  profile: process.env["BENCH_PROFILE"] === "" ? undefined : process.env["BENCH_PROFILE"],
  /** Only the cases named here (separated by `|`), e.g. to profile one. */
  cases: (process.env["BENCH_CASES"] ?? "").split("|").map((name) => name.trim()).filter((name) =>
    name !== ""
  ),
  brokers: (process.env["KAFKA_BROKERS"] ?? "127.0.0.1:9092").split(",").map((broker) => broker.trim())
    .filter((broker) => broker !== ""),
}

/**
 * Profiles the counted rounds through the inspector (Node only): unlike `--cpu-prof`, the
 * profile holds neither the setup (producing the data) nor the warm-up. Returns the stop.
 */
const startProfile = async (name: string): Promise<() => Promise<void>> => {
  const directory = config.profile
  if (directory === undefined) return async () => {}
  // Deno's node:inspector polyfill runs the profiler too; Bun has none.
  if (runtime.name === "bun") {
    console.error(`   BENCH_PROFILE works on Node and Deno only (node --expose-gc bench/${name}.ts); not profiling`)
    return async () => {}
  }
  const { Session } = await import("node:inspector/promises")
  const session = new Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: 200 })
  await session.post("Profiler.start")
  return async () => {
    const { profile } = await session.post("Profiler.stop")
    session.disconnect()
    const path = `${directory}/${name}-${new Date().toISOString().replaceAll(":", "")}.cpuprofile`
    mkdirSync(directory, { recursive: true })
    writeFileSync(path, JSON.stringify(profile))
    console.log(`   CPU profile of the counted rounds: ${path} (read it with: bun bench/profile.ts ${path})`)
  }
}

/** A full collection, so one case's garbage is not collected during the next one's clock. */
export const collectGarbage = (): void => {
  const global = globalThis as { Bun?: { gc?: (force: boolean) => void }; gc?: () => void }
  if (global.Bun?.gc !== undefined) global.Bun.gc(true)
  else global.gc?.()
}

/**
 * The heap in use after full collections, twice with a turn of the event loop between (so
 * finalizers and weak references settle). Node and Deno need `--expose-gc` for it.
 */
export const heapAfterGc = async (): Promise<number> => {
  const global = globalThis as { gc?: unknown; Bun?: unknown }
  if (global.gc === undefined && global.Bun === undefined) {
    throw new Error("Reading the heap needs a garbage collector to call: node --expose-gc, deno --v8-flags=--expose-gc")
  }
  collectGarbage()
  await new Promise((resolve) => setTimeout(resolve, 50))
  collectGarbage()
  return process.memoryUsage().heapUsed
}

// ---------------------------------------------------------------------------------------------
// Measurements and statistics

/**
 * One timed window: `records` handled in `seconds`. `joinSeconds`, for a consumer, is the time
 * from starting it to its group's assignment, which is not in `seconds`.
 */
export interface Measurement {
  readonly records: number
  readonly seconds: number
  readonly cpuSeconds: number
  readonly joinSeconds?: number | undefined
  /** Anything else worth seeing per sample (printed, not summarized), e.g. records per send call. */
  readonly detail?: string | undefined
}

/**
 * One sample of a figure that is not a rate (a latency percentile, heap per actor, µs per span):
 * a case returns it beside or instead of `Measurement`s, and the rounds' samples are summarized
 * into a `Reading`.
 */
export interface Observed {
  readonly unit: string
  readonly value: number
  readonly detail?: string | undefined
}

export const observed = (value: number, unit: string, detail?: string): Observed =>
  detail === undefined ? { unit, value } : { unit, value, detail }

const isObserved = (sample: Measurement | Observed): sample is Observed => "unit" in sample

/** A point in time, on the wall clock and on this process's CPU clock. */
export interface Mark {
  readonly at: number
  readonly cpu: ReturnType<typeof process.cpuUsage>
}

export const mark = (): Mark => ({ at: performance.now(), cpu: process.cpuUsage() })

/** The window from `start` to now. */
export const since = (records: number, start: Mark, joinSeconds?: number): Measurement => {
  const used = process.cpuUsage(start.cpu)
  return {
    records,
    seconds: (performance.now() - start.at) / 1000,
    cpuSeconds: (used.user + used.system) / 1e6,
    ...(joinSeconds === undefined ? {} : { joinSeconds }),
  }
}

export const rate = (measurement: Measurement): number => measurement.records / measurement.seconds

export const median = (values: ReadonlyArray<number>): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

export interface Summary {
  readonly median: number
  readonly min: number
  readonly max: number
  readonly samples: ReadonlyArray<number>
}

export const summarize = (samples: ReadonlyArray<number>): Summary => ({
  median: median(samples),
  min: Math.min(...samples),
  max: Math.max(...samples),
  samples,
})

// ---------------------------------------------------------------------------------------------
// The harness

/** One thing measured each round. It may return several named measures (a produce and a consume). */
export interface Case {
  readonly name: string
  readonly run: (round: number) => Promise<Readonly<Record<string, Measurement | Observed>>>
  /**
   * `false` leaves the case out of warm-up rounds: for a slow case whose code another case
   * already warms up. Default true.
   */
  readonly warmup?: boolean | undefined
}

/** The median over rounds of `numerator / denominator`, both measured in the same round. */
export interface RatioSpec {
  readonly numerator: string
  readonly denominator: string
  /** Met when the median is at least this. */
  readonly target?: number | undefined
  /**
   * An A/A ratio: the same case twice. Its median more than 5% from 1 marks the run noisy (the
   * table says so), since then no ratio of that run is sharper than the noise.
   */
  readonly aa?: boolean | undefined
}

/** A measure a runtime cannot produce, and why. */
export interface Unavailable {
  readonly measure: string
  readonly why: string
}

/** A bound on a reading (an `Observed` name): reported as met or missed, never asserted. */
export interface ReadingSpec {
  readonly name: string
  readonly atMost?: number | undefined
  readonly atLeast?: number | undefined
}

export interface TargetSpec {
  readonly measure: string
  /** Met when the median rate is at least this, in records/s. */
  readonly atLeast: number
}

export interface BenchSpec {
  readonly name: string
  /** One line: what is measured. */
  readonly title: string
  readonly records: number
  /** Counted rounds when `BENCH_ROUNDS` is not set. Default 5. */
  readonly rounds?: number | undefined
  /** What the reader must know to read the numbers (payload, partitions, codec). */
  readonly notes?: ReadonlyArray<string> | undefined
  readonly cases: ReadonlyArray<Case>
  readonly ratios?: ReadonlyArray<RatioSpec> | undefined
  readonly targets?: ReadonlyArray<TargetSpec> | undefined
  readonly readings?: ReadonlyArray<ReadingSpec> | undefined
  /**
   * Measures (or readings) this runtime cannot produce, with why (a peer that does not load on
   * Bun, say): the table shows the reason in their cell, and the bench still succeeds.
   */
  readonly unavailable?: ReadonlyArray<Unavailable> | undefined
  /** Runs once, after every round (also on failure). */
  readonly teardown?: (() => Promise<void>) | undefined
}

export interface MeasureResult {
  readonly name: string
  readonly unit: "records/s"
  readonly records: number
  readonly rate: Summary
  /** Records per CPU-second of this process: what one core would do, undisturbed by neighbours. */
  readonly cpuRate: Summary
  readonly seconds: Summary
  readonly joinSeconds?: Summary | undefined
}

export interface RatioResult {
  readonly name: string
  readonly numerator: string
  readonly denominator: string
  readonly value: Summary
  readonly target?: number | undefined
  readonly met?: boolean | undefined
  /** An A/A ratio more than 5% from 1. */
  readonly noisy?: boolean | undefined
}

export interface TargetResult extends TargetSpec {
  readonly median: number
  readonly met: boolean
}

export interface BenchResult {
  readonly bench: string
  readonly title: string
  readonly runtime: string
  readonly runtimeVersion: string
  readonly records: number
  readonly rounds: number
  readonly warmup: number
  readonly notes: ReadonlyArray<string>
  readonly startedAt: string
  readonly wallSeconds: number
  readonly measures: ReadonlyArray<MeasureResult>
  readonly ratios: ReadonlyArray<RatioResult>
  readonly targets: ReadonlyArray<TargetResult>
  /** Figures that are not rates (heap per partition, say), with their unit and bound. */
  readonly readings?: ReadonlyArray<Reading> | undefined
  readonly unavailable?: ReadonlyArray<Unavailable> | undefined
}

/** A figure that is not a rate: a median over rounds, with a bound when it has a target. */
export interface Reading {
  readonly name: string
  readonly unit: string
  readonly value: Summary
  readonly atMost?: number | undefined
  readonly atLeast?: number | undefined
  readonly met?: boolean | undefined
}

export const ratioName = (spec: RatioSpec): string => `${spec.numerator} / ${spec.denominator}`

const withTimeout = <A>(what: string, promise: Promise<A>): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(`${what} did not finish within ${config.roundTimeoutMs / 1000} s (BENCH_ROUND_TIMEOUT)`),
        ),
      config.roundTimeoutMs,
    )
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Runs the bench: warm-up rounds, then interleaved rounds; prints each sample and a summary,
 * writes the JSON result to `BENCH_OUT` when set, and exits non-zero if anything failed.
 */
export const runBench = async (spec: BenchSpec): Promise<void> => {
  const startedAt = new Date()
  const clock = performance.now()
  const rounds = Math.max(1, integer("BENCH_ROUNDS", scaled(1, spec.rounds ?? 5)))
  const selected = config.cases.length === 0
    ? spec.cases
    : spec.cases.filter((benchCase) => config.cases.includes(benchCase.name))
  if (selected.length === 0) {
    throw new Error(
      `No case of ${spec.name} is named in BENCH_CASES="${config.cases.join("|")}"; its cases are: ${
        spec.cases.map((benchCase) => `"${benchCase.name}"`).join(", ")
      }`,
    )
  }
  console.log(
    `\n## ${spec.name} on ${runtime.name} ${runtime.version}: ${spec.title}\n` +
      `   ${
        spec.records.toLocaleString("en-US")
      } records per case, ${config.warmup} warm-up + ${rounds} rounds` +
      (spec.notes === undefined ? "" : spec.notes.map((note) => `\n   ${note}`).join("")),
  )
  const samples = new Map<string, Array<Measurement | undefined>>()
  const observations = new Map<string, Array<Observed | undefined>>()
  // Measures are reported in the order of the cases that produce them, whatever the rotation.
  const order = new Map<string, number>()
  let failure: unknown = undefined
  let stopProfile: (() => Promise<void>) | undefined
  try {
    const total = config.warmup + rounds
    for (let round = 0; round < total; round++) {
      const counted = round >= config.warmup
      if (round === config.warmup) stopProfile = await startProfile(spec.name)
      const label = counted ? `round ${round - config.warmup + 1}/${rounds}` : "warm-up"
      // Rotated, so no case always runs first (or right after the same neighbour).
      const rotated = selected.map((_, index) => selected[(index + round) % selected.length]!)
      for (const benchCase of rotated) {
        if (!counted && benchCase.warmup === false) continue
        collectGarbage()
        const measured = await withTimeout(`${spec.name}: ${benchCase.name} (${label})`, benchCase.run(round))
        for (const [name, measurement] of Object.entries(measured)) {
          if (isObserved(measurement)) {
            console.log(
              `   ${label.padEnd(11)} ${name.padEnd(34)} ${formatReading(measurement.value).padStart(9)} ${measurement.unit}` +
                (measurement.detail === undefined ? "" : `  (${measurement.detail})`),
            )
            if (!order.has(name)) order.set(name, selected.indexOf(benchCase) * 1000 + order.size)
            if (!counted) continue
            const list = observations.get(name) ?? []
            list[round - config.warmup] = measurement
            observations.set(name, list)
            continue
          }
          const join =
            (measurement.joinSeconds === undefined ? "" : `, join ${measurement.joinSeconds.toFixed(2)} s`) +
            (measurement.detail === undefined ? "" : `, ${measurement.detail}`)
          console.log(
            `   ${label.padEnd(11)} ${name.padEnd(34)} ${
              formatRate(rate(measurement)).padStart(9)
            } records/s` +
              `  (${measurement.records.toLocaleString("en-US")} in ${
                measurement.seconds.toFixed(3)
              } s${join})`,
          )
          if (!order.has(name)) order.set(name, selected.indexOf(benchCase) * 1000 + order.size)
          if (!counted) continue
          const list = samples.get(name) ?? []
          list[round - config.warmup] = measurement
          samples.set(name, list)
        }
      }
    }
    await stopProfile?.()
  } catch (error) {
    failure = error
  } finally {
    try {
      await spec.teardown?.()
    } catch (error) {
      console.error(`   teardown failed: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  if (failure !== undefined) {
    console.error(
      `\n${spec.name} failed on ${runtime.name}: ${
        failure instanceof Error ? failure.stack ?? failure.message : String(failure)
      }`,
    )
    process.exit(1)
  }

  const measures: Array<MeasureResult> = [...samples].sort(([a], [b]) => order.get(a)! - order.get(b)!).map(
    ([name, list]) => {
      const present = list.filter((m): m is Measurement => m !== undefined)
      const joins = present.flatMap((m) => m.joinSeconds === undefined ? [] : [m.joinSeconds])
      return {
        name,
        unit: "records/s",
        records: present[0]?.records ?? 0,
        rate: summarize(present.map(rate)),
        cpuRate: summarize(present.map((m) => m.records / m.cpuSeconds)),
        seconds: summarize(present.map((m) => m.seconds)),
        ...(joins.length === 0 ? {} : { joinSeconds: summarize(joins) }),
      }
    },
  )
  // A ratio or target whose measures did not run (BENCH_CASES) is left out.
  const ran = (name: string) => samples.has(name)
  const ratios: Array<RatioResult> = (spec.ratios ?? []).filter((ratio) =>
    ran(ratio.numerator) && ran(ratio.denominator)
  ).map((ratio) => {
    const numerators = samples.get(ratio.numerator) ?? []
    const denominators = samples.get(ratio.denominator) ?? []
    const perRound: Array<number> = []
    for (let round = 0; round < rounds; round++) {
      const a = numerators[round]
      const b = denominators[round]
      if (a !== undefined && b !== undefined) perRound.push(rate(a) / rate(b))
    }
    const value = summarize(perRound)
    return {
      name: ratioName(ratio),
      numerator: ratio.numerator,
      denominator: ratio.denominator,
      value,
      ...(ratio.target === undefined ? {} : { target: ratio.target, met: value.median >= ratio.target }),
      ...(ratio.aa === true ? { noisy: !(Math.abs(value.median - 1) <= 0.05) } : {}),
    }
  })
  const readings: Array<Reading> = [...observations].sort(([a], [b]) => order.get(a)! - order.get(b)!).map(
    ([name, list]) => {
      const present = list.filter((o): o is Observed => o !== undefined)
      const value = summarize(present.map((o) => o.value))
      const bound = (spec.readings ?? []).find((reading) => reading.name === name)
      const met = bound === undefined || (bound.atMost === undefined && bound.atLeast === undefined)
        ? undefined
        : (bound.atMost === undefined || value.median <= bound.atMost) &&
          (bound.atLeast === undefined || value.median >= bound.atLeast)
      return {
        name,
        unit: present[0]?.unit ?? "",
        value,
        ...(bound?.atMost === undefined ? {} : { atMost: bound.atMost }),
        ...(bound?.atLeast === undefined ? {} : { atLeast: bound.atLeast }),
        ...(met === undefined ? {} : { met }),
      }
    },
  )
  const targets: Array<TargetResult> = (spec.targets ?? []).filter((target) => ran(target.measure)).map(
    (target) => {
      const found = measures.find((measure) => measure.name === target.measure)
      const value = found?.rate.median ?? Number.NaN
      return { ...target, median: value, met: value >= target.atLeast }
    },
  )
  const result: BenchResult = {
    bench: spec.name,
    title: spec.title,
    runtime: runtime.name,
    runtimeVersion: runtime.version,
    records: spec.records,
    rounds,
    warmup: config.warmup,
    notes: spec.notes ?? [],
    startedAt: startedAt.toISOString(),
    wallSeconds: (performance.now() - clock) / 1000,
    measures,
    ratios,
    targets,
    ...(readings.length === 0 ? {} : { readings }),
    ...(spec.unavailable === undefined || spec.unavailable.length === 0 ? {} : { unavailable: spec.unavailable }),
  }
  console.log("")
  for (const missing of spec.unavailable ?? []) console.log(`   unavailable on ${runtime.name}: ${missing.measure}: ${missing.why}`)
  console.log(benchTable(result))
  if (config.out !== undefined) {
    mkdirSync(dirname(config.out), { recursive: true })
    writeFileSync(config.out, JSON.stringify(result, null, 2) + "\n")
  }
  // kafkajs and Effect may leave timers behind; the bench is done.
  process.exit(0)
}

// ---------------------------------------------------------------------------------------------
// Formatting and tables

export const formatRate = (value: number): string => {
  if (!Number.isFinite(value)) return "-"
  if (value >= 10_000_000) return `${(value / 1e6).toFixed(1)}M`
  if (value >= 1_000_000) return `${(value / 1e6).toFixed(2)}M`
  if (value >= 10_000) return `${Math.round(value / 1e3)}k`
  if (value >= 1_000) return `${(value / 1e3).toFixed(1)}k`
  return value.toFixed(0)
}

/** A reading's value: three significant digits, at most two decimals. */
export const formatReading = (value: number): string => {
  if (!Number.isFinite(value)) return "-"
  const magnitude = Math.abs(value)
  if (magnitude >= 100) return Math.round(value).toString()
  if (magnitude >= 10) return value.toFixed(1)
  return value.toFixed(2)
}

export const formatRatio = (value: number): string => Number.isFinite(value) ? `${value.toFixed(2)}×` : "-"

/** `412k (398k–420k)`: the median, then the range over rounds. */
export const rateCell = (summary: Summary): string =>
  summary.samples.length < 2
    ? formatRate(summary.median)
    : `${formatRate(summary.median)} (${formatRate(summary.min)}–${formatRate(summary.max)})`

export const ratioCell = (ratio: RatioResult): string =>
  (ratio.value.samples.length < 2
    ? formatRatio(ratio.value.median)
    : `${formatRatio(ratio.value.median)} (${formatRatio(ratio.value.min)}–${
      formatRatio(ratio.value.max)
    })`) +
  (ratio.target === undefined ? "" : ` ${ratio.met === true ? "met" : "MISSED"} ≥${ratio.target}`) +
  (ratio.noisy === true ? " NOISY (A/A off by more than 5%)" : "")

export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((cell, column) =>
    Math.max(cell.length, ...rows.map((row) => (row[column] ?? "").length))
  )
  const line = (row: ReadonlyArray<string>) =>
    row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...rows.map(line)].join("\n")
}

/** One bench, one runtime: every measure and ratio. */
export const benchTable = (result: BenchResult): string =>
  table(
    ["measure", "records/s median (min–max)", "per CPU-second", "join s"],
    [
      ...result.measures.map((measure) => [
        measure.name,
        rateCell(measure.rate),
        formatRate(measure.cpuRate.median),
        measure.joinSeconds === undefined ? "" : measure.joinSeconds.median.toFixed(2),
      ]),
      ...result.ratios.map((ratio) => [ratio.name, ratioCell(ratio), "", ""]),
      ...result.targets.map((target) => [
        `${target.measure} ≥ ${formatRate(target.atLeast)}/s`,
        target.met ? "met" : "MISSED",
        "",
        "",
      ]),
      ...(result.readings ?? []).map((reading) => [`${reading.name}, ${reading.unit}${boundLabel(reading)}`, readingCell(reading), "", ""]),
    ],
  )

export const boundLabel = (reading: Reading): string =>
  (reading.atMost === undefined ? "" : ` (≤ ${reading.atMost})`) + (reading.atLeast === undefined ? "" : ` (≥ ${reading.atLeast})`)

export const readingCell = (reading: Reading): string => {
  const cell = reading.value.samples.length < 2
    ? formatReading(reading.value.median)
    : `${formatReading(reading.value.median)} (${formatReading(reading.value.min)}–${formatReading(reading.value.max)})`
  return reading.met === undefined ? cell : `${cell} ${reading.met ? "met" : "MISSED"}`
}

/**
 * Every bench, one column per runtime: what `bench/run` prints at the end. Rows follow the
 * first appearance of each bench and measure; a cell is empty where a runtime did not run it.
 */
export const suiteTable = (results: ReadonlyArray<BenchResult>): string => {
  const runtimes = [...new Set(results.map((result) => result.runtime))]
  const benches = [...new Set(results.map((result) => result.bench))]
  const rows: Array<Array<string>> = []
  for (const bench of benches) {
    const byRuntime = new Map(results.filter((r) => r.bench === bench).map((r) => [r.runtime, r]))
    const first = [...byRuntime.values()][0]!
    const measures = [...new Set([...byRuntime.values()].flatMap((r) => r.measures.map((m) => m.name)))]
    const ratios = [...new Set([...byRuntime.values()].flatMap((r) => r.ratios.map((m) => m.name)))]
    let label = `${bench} (${first.records.toLocaleString("en-US")})`
    const take = () => {
      const value = label
      label = ""
      return value
    }
    for (const name of measures) {
      rows.push([
        take(),
        `${name}, records/s`,
        ...runtimes.map((runtimeName) => {
          const measure = byRuntime.get(runtimeName)?.measures.find((m) => m.name === name)
          return measure === undefined ? "" : rateCell(measure.rate)
        }),
      ])
    }
    for (const name of ratios) {
      rows.push([
        take(),
        name,
        ...runtimes.map((runtimeName) => {
          const ratio = byRuntime.get(runtimeName)?.ratios.find((r) => r.name === name)
          return ratio === undefined ? "" : ratioCell(ratio)
        }),
      ])
    }
    const targets = [...new Set([...byRuntime.values()].flatMap((r) => r.targets.map((t) => t.measure)))]
    for (const name of targets) {
      const atLeast = [...byRuntime.values()].flatMap((r) =>
        r.targets
      ).find((t) => t.measure === name)!.atLeast
      rows.push([
        take(),
        `${name} ≥ ${formatRate(atLeast)}/s`,
        ...runtimes.map((runtimeName) => {
          const target = byRuntime.get(runtimeName)?.targets.find((t) => t.measure === name)
          return target === undefined ? "" : target.met ? "met" : "MISSED"
        }),
      ])
    }
    const readings = [...new Set([...byRuntime.values()].flatMap((r) => (r.readings ?? []).map((m) => m.name)))]
    for (const name of readings) {
      const first = [...byRuntime.values()].flatMap((r) => r.readings ?? []).find((m) => m.name === name)!
      rows.push([
        take(),
        `${name}, ${first.unit}${boundLabel(first)}`,
        ...runtimes.map((runtimeName) => {
          const reading = byRuntime.get(runtimeName)?.readings?.find((m) => m.name === name)
          return reading === undefined ? "" : readingCell(reading)
        }),
      ])
    }
  }
  return table(["bench (records)", "measure", ...runtimes], rows)
}

/** Writes a bench result for `bench/run` (for benches that do not go through `runBench`). */
export const writeResult = (result: BenchResult): void => {
  if (config.out === undefined) return
  mkdirSync(dirname(config.out), { recursive: true })
  writeFileSync(config.out, JSON.stringify(result, null, 2) + "\n")
}

/** Reads bench results written by `runBench`. */
export const readResult = (path: string): BenchResult => JSON.parse(readFileSync(path, "utf8")) as BenchResult

// ---------------------------------------------------------------------------------------------
// Kafka's own tools (the "limit" rows)

/** The jars `scripts/kafka` fetched: Kafka's Java tools run from them, against the same broker. */
export const kafkaLibs = new URL("../.cache/kafka/libs/", import.meta.url).pathname

/** Why Kafka's Java tools cannot run here, or undefined when they can. */
export const javaToolsMissing = (): string | undefined =>
  existsSync(kafkaLibs)
    ? undefined
    : `Kafka's jars are not in ${kafkaLibs} (run scripts/kafka fetch)`

/**
 * Runs one of Kafka's Java tools (`org.apache.kafka.tools.ProducerPerformance`, say) to its end
 * and resolves with its stdout; rejects, with the end of stderr, when it exits non-zero or runs
 * past `timeoutMs`. The JVM is started for each call, so a figure read from the tool's own
 * report excludes the JVM's start but not its warm-up (the tools' usual cold-JVM figure).
 */
export const runJavaTool = (mainClass: string, args: ReadonlyArray<string>, timeoutMs = 120_000): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn("java", ["-Xms256m", "-Xmx1g", "-cp", `${kafkaLibs}*`, mainClass, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, KAFKA_HEAP_OPTS: "" },
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
    child.on("error", (error) => {
      clearTimeout(timer)
      reject(new Error(`${mainClass} did not start: ${error.message}`))
    })
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(stdout)
      else {
        reject(
          new Error(
            `${mainClass} ${signal === "SIGKILL" ? `ran past ${timeoutMs} ms` : `exited with ${code ?? signal}`}: ${
              stderr.slice(-2000) || stdout.slice(-2000)
            }`,
          ),
        )
      }
    })
  })

// ---------------------------------------------------------------------------------------------
// Payloads

const encoder = new TextEncoder()

/** The bench payload: `{"id":<n>}`, 8 to 13 bytes of JSON below a million. */
export const payload = (id: number): Uint8Array => encoder.encode(`{"id":${id}}`)

/** A random sampled W3C `traceparent`, as a producer would write it. */
export const randomTraceparent = (): string => {
  const hex = (bytes: number) => Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("")
  return `00-${hex(16)}-${hex(8)}-01`
}

/** Spans sent and dropped so far, from the span exporter's own metrics (global to the process). */
const spanCounts = async () => {
  const metrics = await Effect.runPromise(Metric.snapshot)
  const count = (id: string, error: string | undefined) =>
    metrics
      .filter((metric) => metric.id === id && metric.attributes?.["error.type"] === error)
      .reduce((sum, metric) => sum + (metric.state as { readonly count: number }).count, 0)
  return { sent: count("otel.sdk.exporter.span.exported", undefined), dropped: count("otel.sdk.processor.span.processed", "queue_full") }
}

/** `measure`, with how many spans it sent and dropped as the sample's detail. */
export const withSpanCounts = async (measure: () => Promise<Measurement>): Promise<Measurement> => {
  const before = await spanCounts()
  const measurement = await measure()
  const after = await spanCounts()
  return { ...measurement, detail: `spans sent ${after.sent - before.sent}, dropped ${after.dropped - before.dropped}` }
}

/**
 * An embedded broker holding `total` `payload` records on `partitions` partitions of `topic`, each
 * with a sampled `traceparent` header when `traced`: what the memory benches consume.
 */
export const memoryTopic = async (topic: string, total: number, partitions: number, traced = false) => {
  const memory = ManagedRuntime.make(MemoryTransport.layer().pipe(Layer.provideMerge(loggingLayer)))
  const transport = Context.get(await memory.context(), Transport.Transport)
  await memory.runPromise(Effect.gen(function*() {
    yield* transport.createTopic({ topic, partitions })
    const batch = 10_000
    for (let from = 0; from < total; from += batch) {
      yield* transport.send(Array.from({ length: Math.min(batch, total - from) }, (_, index) => ({
        topic,
        key: null,
        value: payload(from + index),
        ...(traced ? { headers: [{ key: "traceparent", value: encoder.encode(randomTraceparent()) }] } : {}),
      })))
    }
  }))
  const described = await memory.runPromise(transport.describeTopic(topic))
  const ends = new Map(described.partitions.map((p) => [p.partition, p.highWatermark]))
  return { memory, transport, ends, probe: instrument(transport) }
}

/** A topic or group name no other run (or engineer) on the shared broker uses. */
export const uniqueName = (what: string): string =>
  `partita-bench-${what}-${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`

// ---------------------------------------------------------------------------------------------
// Effect plumbing

/**
 * Where kafkajs says a consumer joined its group, by group id: kafkajs logs "Consumer has joined
 * the group" in the same tick as its `GROUP_JOIN` event, and `KafkaJsTransport` forwards that line
 * to Effect's logger at Debug. Join times of Partita's consumers and of raw kafkajs ones are
 * thus taken at the same point.
 */
export const joins = new Map<string, Mark>()

/**
 * The bench's logger: keeps kafkajs' join lines (see {@link joins}), prints warnings and errors,
 * drops the rest (Partita's Info lines about assignments would drown the numbers).
 */
const benchLogger = Logger.make((options) => {
  const message = Array.isArray(options.message) ? options.message.join(" ") : String(options.message)
  if (message.includes("Consumer has joined the group")) {
    const annotations = options.fiber.getRef(References.CurrentLogAnnotations)
    // KafkaJsTransport logs kafkajs' lines on its layer's context (no annotations), with kafkajs'
    // fields in the line itself: `(groupId=…, memberId=…, …)`.
    const group = annotations["groupId"] ?? /[(,] ?groupId="?([^",)\s]+)/.exec(message)?.[1]
    if (typeof group === "string" && !joins.has(group)) joins.set(group, mark())
    return
  }
  if (options.logLevel === "Warn" || options.logLevel === "Error" || options.logLevel === "Fatal") {
    console.error(`   [${options.logLevel}] ${message}`)
  }
})

/**
 * Provides the bench logger. Debug is the minimum so that kafkajs' join lines (Info in kafkajs,
 * Debug in Effect) reach it; nothing in Partita's per-record path logs.
 */
export const loggingLayer = Layer.mergeAll(
  Logger.layer([benchLogger]),
  Layer.succeed(References.MinimumLogLevel)("Debug"),
)

/** A Kafka transport on the bench's broker, built once for the whole bench. */
export const kafkaRuntime = (client: "kafkajs" | "own" = "kafkajs") =>
  ManagedRuntime.make(
    (client === "own"
      ? KafkaTransport.layer({ brokers: config.brokers, clientId: "partita-bench" })
      : KafkaJsTransport.layer({ brokers: config.brokers, clientId: "partita-bench" })).pipe(
        Layer.provideMerge(loggingLayer),
      ),
  )

/**
 * A `Transport` that passes everything through and reports, per consumer group, when its first
 * assignment arrived and what it committed: the end of a consume window is "every partition
 * committed up to its end", seen at the moment the commit returns, with no polling.
 */
export const instrument = (
  transport: Transport.Transport["Service"],
  /** Whether kafkajs announces the group join (KafkaJsTransport); otherwise windows start at `Assigned`. */
  options: { readonly kafkajsJoin?: boolean } = {},
) => {
  const kafkajsJoin = options.kafkajsJoin ?? transport.name !== "memory"
  const assignedAt = new Map<string, Mark>()
  let warnedNoJoin = false
  const committed = new Map<string, Map<number, number>>()
  const waiters: Array<{ group: string; ends: ReadonlyMap<number, number>; resolve: () => void }> = []
  const reached = (group: string, ends: ReadonlyMap<number, number>) => {
    const offsets = committed.get(group)
    for (const [partition, end] of ends) {
      if (end > 0 && (offsets?.get(partition) ?? -1) < end) return false
    }
    return true
  }
  const onCommit = (group: string, offsets: ReadonlyArray<Transport.OffsetCommit>) => {
    const byPartition = committed.get(group) ?? new Map<number, number>()
    committed.set(group, byPartition)
    for (const offset of offsets) {
      byPartition.set(offset.partition, Math.max(byPartition.get(offset.partition) ?? -1, offset.offset))
    }
    for (let index = waiters.length - 1; index >= 0; index--) {
      const waiter = waiters[index]!
      if (waiter.group === group && reached(group, waiter.ends)) {
        waiters.splice(index, 1)
        waiter.resolve()
      }
    }
  }
  const wrapped = Transport.Transport.of({
    ...transport,
    subscribe: (options) =>
      Effect.map(transport.subscribe(options), (subscription): Transport.Subscription => ({
        group: subscription.group,
        get memberId() {
          return subscription.memberId
        },
        events: Stream.tap(subscription.events, (event) =>
          Effect.sync(() => {
            if (event._tag === "Assigned" && !assignedAt.has(options.group)) {
              assignedAt.set(options.group, mark())
            }
          })),
        commit: (offsets) =>
          Effect.tap(subscription.commit(offsets), () => Effect.sync(() => onCommit(options.group, offsets))),
        committed: subscription.committed,
        pause: subscription.pause,
        resume: subscription.resume,
        seek: subscription.seek,
      })),
    // Exactly-once actors commit their offsets in transactions: counted once a commit returns.
    transactional: (transactionalId) =>
      Effect.map(transport.transactional(transactionalId), (producer): Transport.TransactionalProducer => ({
        transactionalId: producer.transactionalId,
        begin: Effect.map(producer.begin, (transaction): Transport.Transaction => {
          const sent: Array<readonly [string, ReadonlyArray<Transport.OffsetCommit>]> = []
          return {
            send: transaction.send,
            sendOffsets: (group, offsets) =>
              Effect.tap(transaction.sendOffsets(group, offsets), () => Effect.sync(() => void sent.push([group, offsets]))),
            commit: Effect.tap(transaction.commit, () => Effect.sync(() => sent.forEach(([group, offsets]) => onCommit(group, offsets)))),
            abort: transaction.abort,
          }
        }),
      })),
  })
  return {
    transport: wrapped,
    /**
     * Where a consume window starts: kafkajs' join of the group when there is one (see
     * {@link joins}), else the group's first `Assigned` event (the memory transport joins at once).
     */
    joinedAt: (group: string): Mark | undefined => {
      const joined = joins.get(group)
      if (joined !== undefined || !kafkajsJoin) return joined ?? assignedAt.get(group)
      if (!warnedNoJoin) {
        warnedNoJoin = true
        console.error(
          `   [Warn] no kafkajs "joined the group" line reached the bench logger for "${group}": windows start at ` +
            "the Assigned event instead, which is later; check how KafkaJsTransport forwards kafkajs' logs",
        )
      }
      return assignedAt.get(group)
    },
    /** Resolves once the group committed every partition up to `ends` (partition → end offset). */
    committedTo: (group: string, ends: ReadonlyMap<number, number>): Promise<void> =>
      reached(group, ends)
        ? Promise.resolve()
        : new Promise((resolve) => waiters.push({ group, ends, resolve })),
  }
}

// ---------------------------------------------------------------------------------------------
// Kafka

const quietLogCreator = () => ({ namespace, log }: LogEntry) => {
  // The error answers of the metadata polls `kafkaResources.topic` makes while a new topic's
  // leaders are elected (LEADER_NOT_AVAILABLE): expected, and hundreds for a large topic.
  if (namespace === "Connection" && log.message.startsWith("Response Metadata")) return
  console.error(`   [kafkajs ${namespace}] ${log.message}`)
}

/** A raw kafkajs client on the bench's broker, for baselines, producing and cleanup. */
export const kafkaClient = (clientId = "partita-bench-raw"): KafkaClient =>
  new Kafka({
    brokers: [...config.brokers],
    clientId,
    logLevel: KafkaLogLevel.ERROR,
    logCreator: quietLogCreator,
  })

/**
 * What a bench created on the shared broker, deleted at teardown so runs leave nothing behind.
 */
export const kafkaResources = () => {
  const topics = new Set<string>()
  const groups = new Set<string>()
  let admin: Admin | undefined
  const connected = async () => {
    if (admin === undefined) {
      admin = kafkaClient("partita-bench-admin").admin()
      await admin.connect()
    }
    return admin
  }
  return {
    /** Creates a topic and remembers it. */
    topic: async (what: string, partitions: number): Promise<string> => {
      const name = uniqueName(what)
      const client = await connected()
      await client.createTopics({ topics: [{ topic: name, numPartitions: partitions }], waitForLeaders: false })
      topics.add(name)
      // Not kafkajs' wait for leaders: right after the broker starts it gives up (see KafkaJsTransport.createTopic).
      for (const deadline = Date.now() + 30_000; ; await new Promise((resolve) => setTimeout(resolve, 50))) {
        const found = await client.fetchTopicMetadata({ topics: [name] }).then((metadata) => metadata.topics[0]?.partitions ?? [], () => [])
        if (found.length === partitions && found.every((partition) => partition.leader >= 0)) return name
        if (Date.now() > deadline) throw new Error(`Topic ${name}: partitions without a leader after 30 s`)
      }
    },
    /** A fresh consumer group name, remembered for deletion. */
    group: (what: string): string => {
      const name = uniqueName(what)
      groups.add(name)
      return name
    },
    /** Each partition's end offset (the high watermark). */
    ends: async (topic: string): Promise<Map<number, number>> => {
      const client = await connected()
      const offsets = await client.fetchTopicOffsets(topic)
      return new Map(offsets.map(({ partition, high }) => [partition, Number(high)]))
    },
    cleanup: async (): Promise<void> => {
      if (admin === undefined) return
      if (groups.size > 0) await admin.deleteGroups([...groups]).catch(() => undefined)
      if (topics.size > 0) await admin.deleteTopics({ topics: [...topics] })
      await admin.disconnect()
      admin = undefined
    },
  }
}

/** Produces `count` bench payloads to `topic` with kafkajs, round-robin over its partitions, with `headers` if given. */
export const produceRaw = async (
  topic: string,
  count: number,
  partitions: number,
  headers?: (index: number) => Record<string, string>,
): Promise<void> => {
  const producer = kafkaClient().producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
  })
  await producer.connect()
  try {
    const batch = 1000
    for (let from = 0; from < count; from += batch) {
      const messages = Array.from({ length: Math.min(batch, count - from) }, (_, index) => ({
        value: Buffer.from(payload(from + index)),
        partition: (from + index) % partitions,
        ...(headers === undefined ? {} : { headers: headers(from + index) }),
      }))
      await producer.send({ topic, messages, acks: -1 })
    }
  } finally {
    await producer.disconnect()
  }
}

// ---------------------------------------------------------------------------------------------
// Consuming, the Partita way

/** What one consume run needs: the data (`ends` per partition), a fresh group, and the probe. */
export interface ConsumeOptions {
  readonly probe: ReturnType<typeof instrument>
  readonly topic: string
  readonly group: string
  /** Partition → end offset; the run is done when the group committed every one. */
  readonly ends: ReadonlyMap<number, number>
}

const totalOf = (ends: ReadonlyMap<number, number>): number =>
  [...ends.values()].reduce((sum, end) => sum + end, 0)

/** The window from the group's join to now, and how long the join took after `start`. */
const windowFrom = (options: ConsumeOptions, start: Mark): Measurement => {
  const joined = options.probe.joinedAt(options.group)
  if (joined === undefined) {
    throw new Error(`Group "${options.group}" finished without ever being assigned partitions`)
  }
  return since(totalOf(options.ends), joined, (joined.at - start.at) / 1000)
}

/**
 * Reads every record back through a bare `Subscription` (no actors): each claim's stream is
 * drained on its own fiber, counting records; once all arrived, the ends are committed.
 */
export const consumeWithSubscription = (
  options: ConsumeOptions,
): Effect.Effect<Measurement, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const { probe, topic, group, ends } = options
    const total = totalOf(ends)
    const start = mark()
    const subscription = yield* probe.transport.subscribe({ group, topics: [topic], reset: "earliest" })
    const arrived = Deferred.makeUnsafe<void>()
    let count = 0
    const tally = (batch: ReadonlyArray<Transport.ConsumerRecord>) =>
      Effect.sync(() => {
        count += batch.length
        if (count >= total) Deferred.doneUnsafe(arrived, Exit.void)
      })
    yield* subscription.events.pipe(
      Stream.runForEach((event) =>
        event._tag === "Assigned"
          ? Effect.forEach(event.claims, (claim) =>
            Effect.forkScoped(Stream.runForEach(claim.records, tally)), {
            discard: true,
          })
          : event.acknowledge
      ),
      Effect.forkScoped,
    )
    yield* Deferred.await(arrived)
    yield* subscription.commit(
      [...ends].filter(([, end]) =>
        end > 0
      ).map(([partition, end]) => ({ topic, partition, offset: end })),
    )
    return windowFrom(options, start)
  })

/**
 * Reads every record back through an `ActorSystem` running one actor with a no-op handler
 * (it counts), with the actor's defaults otherwise; done once the actor committed every end.
 */
export const consumeWithActors = <V>(
  options: ConsumeOptions & {
    readonly value: Producer.CodecOrSchema<V>
    /** Anything else of the actor's options (mailbox, commit), to try a setting. */
    readonly actor?: Partial<Actor.Options<V, Uint8Array | null, never, never>> | undefined
    /** What the handler does with each value before it counts it (default nothing). */
    readonly work?: ((value: V) => Effect.Effect<void, never, Producer.Producer>) | undefined
    /** A no-op batch handler (`handleBatch`) with these limits instead of the per-record one; `actor` and `work` do not apply. */
    readonly batch?: Actor.BatchLimits | undefined
  },
): Effect.Effect<Measurement, unknown, Scope.Scope> =>
  Effect.gen(function* () {
    const { probe, topic, group, ends } = options
    const total = totalOf(ends)
    const start = mark()
    const handledAll = Deferred.makeUnsafe<void>()
    let handled = 0
    const actor = options.batch !== undefined
      ? Actor.make({
        name: "bench",
        group,
        topics: [topic],
        value: options.value,
        handleBatch: (records) =>
          Effect.sync(() => {
            handled += records.length
            if (handled === total) Deferred.doneUnsafe(handledAll, Exit.void)
          }),
        batch: options.batch,
        onError: { default: ErrorPolicy.halt },
      })
      : Actor.make({
      name: "bench",
      group,
      topics: [topic],
      value: options.value,
      handle: (value: V) => {
        const count = Effect.sync(() => {
          if (++handled === total) Deferred.doneUnsafe(handledAll, Exit.void)
        })
        return options.work === undefined ? count : Effect.andThen(options.work(value), count)
      },
      onError: { default: ErrorPolicy.halt },
      ...options.actor,
    })
    yield* ActorSystem.start([actor]).pipe(Effect.provideService(Transport.Transport, probe.transport))
    yield* Deferred.await(handledAll)
    yield* Effect.promise(() => probe.committedTo(group, ends))
    return windowFrom(options, start)
  })

// ---------------------------------------------------------------------------------------------
// Many fibers sending one record each through `Producer` (bench/produce.ts, bench/kafka_producer.ts)

/**
 * `count` records sent by `fibers` fibers through a batching `Producer` (lib/Producer.ts), each
 * fiber sending one record and waiting for its acknowledgement before the next, the way
 * handlers that each forward a record use it: the producer gathers what the waiting fibers sent
 * into one `sendEach` per round trip. The window runs from the first send to the last
 * acknowledgement.
 */
export const sendFromFibers = (
  producer: Producer.Producer["Service"],
  options: {
    readonly topic: string
    readonly count: number
    readonly fibers: number
    readonly value: (id: number) => Uint8Array
  },
) =>
  Effect.gen(function*() {
    const { topic, count, value } = options
    let next = 0
    const start = mark()
    yield* Effect.forEach(Array.from({ length: options.fibers }), () =>
      Effect.whileLoop({
        while: () => next < count,
        body: () => producer.send({ topic, key: null, value: value(next++) }),
        step: () => undefined,
      }), { concurrency: "unbounded", discard: true })
    return since(count, start)
  })

/** A bench peer's module, or why it is not here (not installed, or does not load on this runtime). */
export type Peer = { readonly module: any; readonly problem?: undefined } | { readonly module?: undefined; readonly problem: string }

/**
 * Loads a bench peer from `.cache/<directory>/node_modules/<entry>`: ES modules by `import`,
 * CommonJS packages (a native addon) by `require`, as their users do. Never throws: a peer that
 * is missing or does not load on this runtime comes back as its `problem`, for the cells that say so.
 */
export const loadPeer = async (options: {
  readonly directory: "bench-peers" | "bench-peers-native"
  readonly entry: string
  readonly how: "import" | "require"
  /** What to say when it is not installed. */
  readonly missing: string
}): Promise<Peer> => {
  const url = new URL(`../.cache/${options.directory}/node_modules/${options.entry}`, import.meta.url)
  if (!existsSync(url)) return { problem: `not installed (${options.missing})` }
  try {
    return { module: options.how === "import" ? await import(url.href) : createRequire(import.meta.url)(url.pathname) }
  } catch (cause) {
    return { problem: `does not load on ${runtime.name}: ${cause instanceof Error ? cause.message : String(cause)}`.slice(0, 200) }
  }
}

/** `@platformatic/kafka`, from the bench peers bench/run installs. */
export const loadPlatformatic = (): Promise<Peer> =>
  loadPeer({
    directory: "bench-peers",
    entry: "@platformatic/kafka/dist/index.js",
    how: "import",
    missing: "bench/run installs bench/peers into .cache/bench-peers",
  })

// ---------------------------------------------------------------------------------------------
// The raw kafkajs baseline (actors_kafka, consume)

/**
 * Reads `total` records of `topic` (`partitions` partitions) with kafkajs and nothing in between,
 * set up as `KafkaJsTransport` sets up its consumer: `eachBatch`, every partition consumed
 * concurrently, `resolveOffset` per batch, no work per record, one commit of every partition's
 * end at the end (at-least-once). The window runs from kafkajs' `GROUP_JOIN` to that commit's
 * return; the join is `joinSeconds`. With `commit: false` nothing is committed and the window
 * ends at the last record (bench/fetch_loop.ts: a fetch loop commits nothing either).
 */
export const consumeRawKafkajs = async (
  options: {
    readonly topic: string
    readonly group: string
    readonly total: number
    readonly partitions: number
    readonly commit?: boolean | undefined
  },
): Promise<Measurement> => {
  const { topic, group, total, partitions } = options
  const start = mark()
  const consumer = kafkaClient().consumer({
    groupId: group,
    maxWaitTimeInMs: 500,
    allowAutoTopicCreation: false,
  })
  let joined = start
  consumer.on(consumer.events.GROUP_JOIN, () => {
    joined = mark()
  })
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    const done = Promise.withResolvers<void>()
    const next = new Map<number, number>()
    let count = 0
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: partitions,
      eachBatch: async ({ batch, resolveOffset }) => {
        if (batch.messages.length === 0) return
        const last = batch.lastOffset()
        resolveOffset(last)
        next.set(batch.partition, Number(last) + 1)
        count += batch.messages.length
        if (count >= total) done.resolve()
      },
    })
    await done.promise
    if (options.commit !== false) {
      await consumer.commitOffsets(
        [...next].map(([partition, offset]) => ({ topic, partition, offset: String(offset) })),
      )
    }
    return since(total, joined, (joined.at - start.at) / 1000)
  } finally {
    await consumer.disconnect()
  }
}

// ---------------------------------------------------------------------------------------------
// Idle partition actors (memory, idle_partitions)

/**
 * Starts one no-op actor on `topic` in `rt` and resolves once each of its `partitions` has its
 * partition actor; `stop` ends the system and resolves when it has. A system that fails first
 * rejects the wait with that.
 */
export const idleActorSystem = async (
  rt: ManagedRuntime.ManagedRuntime<Transport.Transport, unknown>,
  options: { readonly topic: string; readonly group: string; readonly partitions: number },
): Promise<{ readonly stop: () => Promise<void> }> => {
  const release = Promise.withResolvers<void>()
  const ready = Promise.withResolvers<void>()
  const done = rt.runPromise(Effect.scoped(Effect.gen(function*() {
    const actor = Actor.make({
      name: "idle",
      group: options.group,
      topics: [options.topic],
      value: Codec.bytes,
      handle: () => Effect.void,
      onError: { default: ErrorPolicy.halt },
    })
    const system = yield* ActorSystem.start([actor])
    const watcher = yield* Effect.forkScoped(Effect.gen(function*() {
      while ((yield* system.health).partitions.length < options.partitions) yield* Effect.sleep("50 millis")
      ready.resolve()
    }))
    yield* Effect.promise(() => release.promise)
    yield* Fiber.interrupt(watcher)
  })))
  await Promise.race([ready.promise, done.then(() => Promise.reject(new Error("the system stopped before every partition had its actor")))])
  return {
    stop: () => {
      release.resolve()
      return done
    },
  }
}
