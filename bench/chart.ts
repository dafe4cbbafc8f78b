/**
 * The baseline's chart (bench/baseline.svg): consume throughput by partition count, a line per
 * client, and end-to-end latency percentiles, a bar per case, each a panel per runtime. Plain
 * SVG text, no library: the figures come from the same results as the table.
 *
 * It reads the consume bench's measures named `<client>, <N> partitions` and the latency
 * bench's readings named `<case>, <rate>/s, p<percentile>`; a run without them draws an empty
 * panel that says so.
 */
import type { BenchResult } from "./common.ts"

const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
const escape = (text: string) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
const compact = (value: number) =>
  value >= 1e6 ? `${(value / 1e6).toFixed(1)}M` : value >= 1e3 ? `${(value / 1e3).toFixed(0)}k` : value.toFixed(value < 10 ? 1 : 0)

interface Panel {
  readonly x: number
  readonly y: number
  readonly width: number
  readonly height: number
}

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`. */
const niceMax = (max: number): number => {
  if (!(max > 0)) return 1
  const power = 10 ** Math.floor(Math.log10(max))
  return [1, 2, 5, 10].map((step) => step * power).find((bound) => bound >= max)!
}

const frame = (panel: Panel, title: string, yMax: number, unit: string): Array<string> => {
  const out = [
    `<text x="${panel.x + panel.width / 2}" y="${panel.y - 8}" text-anchor="middle" font-weight="bold">${escape(title)}</text>`,
    `<rect x="${panel.x}" y="${panel.y}" width="${panel.width}" height="${panel.height}" fill="none" stroke="#999"/>`,
  ]
  for (let tick = 0; tick <= 4; tick++) {
    const value = (yMax * tick) / 4
    const y = panel.y + panel.height - (panel.height * tick) / 4
    out.push(`<line x1="${panel.x}" x2="${panel.x + panel.width}" y1="${y}" y2="${y}" stroke="#eee"/>`)
    out.push(`<text x="${panel.x - 4}" y="${y + 4}" text-anchor="end" font-size="10">${compact(value)}</text>`)
  }
  out.push(
    `<text x="${panel.x - 34}" y="${panel.y + panel.height / 2}" font-size="10" transform="rotate(-90 ${panel.x - 34} ${panel.y + panel.height / 2})" text-anchor="middle">${escape(unit)}</text>`,
  )
  return out
}

const empty = (panel: Panel, why: string) =>
  `<text x="${panel.x + panel.width / 2}" y="${panel.y + panel.height / 2}" text-anchor="middle" fill="#999">${escape(why)}</text>`

/** Throughput by partition count, a line per client. */
const consumePanel = (result: BenchResult | undefined, panel: Panel, title: string): Array<string> => {
  const series = new Map<string, Array<{ readonly partitions: number; readonly rate: number }>>()
  for (const measure of result?.measures ?? []) {
    const match = /^(.*), (\d+) partitions?$/.exec(measure.name)
    if (match === null) continue
    const points = series.get(match[1]!) ?? []
    points.push({ partitions: Number(match[2]), rate: measure.rate.median })
    series.set(match[1]!, points)
  }
  const counts = [...new Set([...series.values()].flatMap((points) => points.map((point) => point.partitions)))].sort((a, b) => a - b)
  const yMax = niceMax(Math.max(0, ...[...series.values()].flatMap((points) => points.map((point) => point.rate))))
  const out = frame(panel, title, yMax, "records/s")
  if (counts.length === 0) return [...out, empty(panel, "no consume figures")]
  const xOf = (partitions: number) =>
    panel.x + (counts.length === 1 ? panel.width / 2 : (panel.width * counts.indexOf(partitions)) / (counts.length - 1))
  const yOf = (rate: number) => panel.y + panel.height - (panel.height * rate) / yMax
  for (const partitions of counts) {
    out.push(`<text x="${xOf(partitions)}" y="${panel.y + panel.height + 14}" text-anchor="middle" font-size="10">${partitions}</text>`)
  }
  out.push(`<text x="${panel.x + panel.width / 2}" y="${panel.y + panel.height + 28}" text-anchor="middle" font-size="10">partitions</text>`)
  let index = 0
  for (const [client, points] of series) {
    const color = palette[index % palette.length]!
    const sorted = [...points].sort((a, b) => a.partitions - b.partitions)
    out.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2" points="${sorted.map((p) => `${xOf(p.partitions).toFixed(1)},${yOf(p.rate).toFixed(1)}`).join(" ")}"/>`,
    )
    for (const point of sorted) out.push(`<circle cx="${xOf(point.partitions).toFixed(1)}" cy="${yOf(point.rate).toFixed(1)}" r="3" fill="${color}"/>`)
    out.push(`<rect x="${panel.x + 6}" y="${panel.y + 6 + index * 14}" width="10" height="10" fill="${color}"/>`)
    out.push(`<text x="${panel.x + 20}" y="${panel.y + 15 + index * 14}" font-size="10">${escape(client)}</text>`)
    index++
  }
  return out
}

/** Latency percentiles, a group of bars per case and rate. */
const latencyPanel = (result: BenchResult | undefined, panel: Panel, title: string): Array<string> => {
  const groups = new Map<string, Map<string, number>>()
  for (const reading of result?.readings ?? []) {
    const match = /^(.*), (p[0-9.]+)$/.exec(reading.name)
    if (match === null || reading.unit !== "ms" || /added/.test(match[1]!)) continue
    const group = groups.get(match[1]!) ?? new Map<string, number>()
    group.set(match[2]!, reading.value.median)
    groups.set(match[1]!, group)
  }
  const percentiles = [...new Set([...groups.values()].flatMap((group) => [...group.keys()]))]
    .sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
  const yMax = niceMax(Math.max(0, ...[...groups.values()].flatMap((group) => [...group.values()])))
  const out = frame(panel, title, yMax, "ms")
  if (groups.size === 0) return [...out, empty(panel, "no latency figures")]
  const slot = panel.width / groups.size
  const bar = (slot * 0.8) / Math.max(1, percentiles.length)
  let index = 0
  for (const [label, group] of groups) {
    const left = panel.x + slot * index + slot * 0.1
    percentiles.forEach((percentile, position) => {
      const value = group.get(percentile)
      if (value === undefined) return
      const height = (panel.height * value) / yMax
      out.push(
        `<rect x="${(left + bar * position).toFixed(1)}" y="${(panel.y + panel.height - height).toFixed(1)}" width="${(bar * 0.9).toFixed(1)}" height="${height.toFixed(1)}" fill="${palette[position % palette.length]}"><title>${escape(`${label} ${percentile}: ${value.toFixed(2)} ms`)}</title></rect>`,
      )
    })
    // Slanted down to the right from under its bars, so a long label stays inside the picture.
    const x = left + slot * 0.3
    const short = label.replace(/^Partita actor, /, "Partita, ").replace(/^Limit: Kafka /, "")
    out.push(
      `<text x="${x.toFixed(1)}" y="${panel.y + panel.height + 12}" font-size="9" text-anchor="start" transform="rotate(35 ${x.toFixed(1)} ${panel.y + panel.height + 12})">${escape(short)}</text>`,
    )
    index++
  }
  percentiles.forEach((percentile, position) => {
    out.push(`<rect x="${panel.x + panel.width - 60}" y="${panel.y + 6 + position * 14}" width="10" height="10" fill="${palette[position % palette.length]}"/>`)
    out.push(`<text x="${panel.x + panel.width - 46}" y="${panel.y + 15 + position * 14}" font-size="10">${percentile}</text>`)
  })
  return out
}

/** The whole chart: a row of consume panels and a row of latency panels, a column per runtime. */
export const chart = (results: ReadonlyArray<BenchResult>): string => {
  const order = ["bun", "deno", "node"]
  const runtimes = [...new Set(results.map((result) => result.runtime))].sort((a, b) => order.indexOf(a) - order.indexOf(b))
  const columns = Math.max(1, runtimes.length)
  const panelWidth = 360
  const panelHeight = 220
  const width = 130 + columns * (panelWidth + 70)
  const height = 2 * (panelHeight + 150) + 60
  const body: Array<string> = []
  runtimes.forEach((runtime, column) => {
    const x = 70 + column * (panelWidth + 70)
    const of = (bench: string) => results.find((result) => result.bench === bench && result.runtime === runtime)
    body.push(...consumePanel(of("consume"), { x, y: 40, width: panelWidth, height: panelHeight }, `consume by partitions, ${runtime}`))
    body.push(...latencyPanel(of("latency"), { x, y: 40 + panelHeight + 150, width: panelWidth, height: panelHeight }, `end-to-end latency, ${runtime}`))
  })
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...body,
    `</svg>`,
    "",
  ].join("\n")
}
