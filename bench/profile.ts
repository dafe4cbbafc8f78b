/**
 * Summarizes a V8 `.cpuprofile` (from `node --cpu-prof`): where the samples landed, by area
 * (Partita's files, Effect's, kafkajs', the runtime's, idle and GC) and by function, self time
 * and, for Partita's functions, total time (self plus everything they called).
 *
 *   BENCH_PROFILE=.cache/bench/profiles BENCH_CASES="actor" node --expose-gc bench/actors_kafka.ts
 *   bun bench/profile.ts .cache/bench/profiles/<file>.cpuprofile [top=25]
 *
 * `BENCH_PROFILE` profiles the counted rounds only; `node --cpu-prof` profiles the whole process
 * (setup included) and its files read here too.
 */
import { readFileSync } from "node:fs"
import process from "node:process"
import { table } from "./common.ts"

interface ProfileNode {
  readonly id: number
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
  }
  readonly children?: ReadonlyArray<number>
}

interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const [file, topArgument] = process.argv.slice(2)
if (file === undefined) {
  console.error("usage: bun bench/profile.ts <file.cpuprofile> [top]")
  process.exit(2)
}
const top = Number(topArgument ?? 25)
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile

/** `lib/internal/partitionActor.ts`, `effect/internal/effect.js`, `kafkajs/src/...`, or the runtime's own. */
const placeOf = (url: string): string => {
  if (url === "") return ""
  const path = url.replace(/^file:\/\//, "")
  const modules = path.lastIndexOf("node_modules/")
  if (modules >= 0) return path.slice(modules + "node_modules/".length).replace(/^effect\/dist\//, "effect/")
  const repo = path.search(/\/(lib|bench|tests|actors)\//)
  return repo >= 0 ? path.slice(repo + 1) : path
}

const areaOf = (node: ProfileNode): string => {
  const { functionName, url } = node.callFrame
  if (functionName === "(idle)") return "idle (waiting for I/O or timers)"
  if (functionName === "(garbage collector)") return "garbage collector"
  if (functionName === "(program)") return "runtime (program)"
  const place = placeOf(url)
  if (place.startsWith("lib/")) return place
  if (place.startsWith("effect/")) return "effect"
  if (place.startsWith("kafkajs/")) return "kafkajs"
  if (place.startsWith("bench/")) return "bench"
  return place === ""
    ? `runtime (${functionName || "anonymous"})`
    : place.startsWith("node:")
    ? "runtime (node:)"
    : place
}

const byId = new Map(profile.nodes.map((node) => [node.id, node]))
const parent = new Map<number, number>()
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)

const self = new Map<number, number>()
let total = 0
profile.samples.forEach((id, index) => {
  const delta = Math.max(0, profile.timeDeltas[index] ?? 0)
  self.set(id, (self.get(id) ?? 0) + delta)
  total += delta
})

const keyOf = (node: ProfileNode) => {
  const { functionName, url, lineNumber } = node.callFrame
  const place = placeOf(url)
  return place === ""
    ? functionName || "(anonymous)"
    : `${functionName || "(anonymous)"}  ${place}:${lineNumber + 1}`
}

const areas = new Map<string, number>()
const functions = new Map<string, number>()
// Total time of Partita's functions: each sample counted once per function on its stack.
const inclusive = new Map<string, number>()
for (const [id, time] of self) {
  const node = byId.get(id)!
  areas.set(areaOf(node), (areas.get(areaOf(node)) ?? 0) + time)
  functions.set(keyOf(node), (functions.get(keyOf(node)) ?? 0) + time)
  const seen = new Set<string>()
  for (let current: number | undefined = id; current !== undefined; current = parent.get(current)) {
    const frame = byId.get(current)!
    if (!placeOf(frame.callFrame.url).startsWith("lib/")) continue
    const key = keyOf(frame)
    if (seen.has(key)) continue
    seen.add(key)
    inclusive.set(key, (inclusive.get(key) ?? 0) + time)
  }
}

const busy = total - (areas.get("idle (waiting for I/O or timers)") ?? 0)
const percent = (time: number, of: number) => `${((100 * time) / of).toFixed(1)}%`
const ms = (time: number) => `${(time / 1000).toFixed(0)} ms`
const sorted = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1])

console.log(`${file}: ${ms(total)} sampled, ${ms(busy)} busy (not idle)\n`)
console.log(table(
  ["area (self time)", "time", "of all", "of busy"],
  sorted(areas).slice(0, top).map(([area, time]) => [
    area,
    ms(time),
    percent(time, total),
    area.startsWith("idle") ? "" : percent(time, busy),
  ]),
))
console.log("")
console.log(table(
  ["function (self time)", "time", "of busy"],
  sorted(functions).filter(([name]) => name !== "(idle)").slice(0, top).map(([name, time]) => [
    name,
    ms(time),
    percent(time, busy),
  ]),
))
console.log("")
console.log(table(
  ["Partita function (total time: self + callees)", "time", "of busy"],
  sorted(inclusive).slice(0, top).map(([name, time]) => [name, ms(time), percent(time, busy)]),
))
