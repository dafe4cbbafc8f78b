/**
 * The app's counters, and `GET /metrics` in Prometheus' text format.
 *
 * Counters are Effect `Metric`s in a registry of the app's own (so two apps in one process, as
 * in the tests, count separately); the actor system's per-partition health is read at scrape
 * time and exposed beside them.
 */
import { Effect, Layer, Metric } from "effect"
import { ActorSystem } from "../../mod.ts"

/** POST /notifications answered 202: the broker acknowledged the record. */
export const accepted = Metric.counter("notifications_accepted_total", {
  description: "Notifications the broker acknowledged after POST /notifications",
  incremental: true,
})
/** The worker stored a notification it had not seen. */
export const stored = Metric.counter("notifications_stored_total", {
  description: "Notifications stored by the worker",
  incremental: true,
})
/** The worker was handed a notification it had already stored (a redelivery). */
export const duplicates = Metric.counter("notifications_duplicates_total", {
  description: "Redelivered notifications the worker did not store again",
  incremental: true,
})
/** Notifications the fan-out actor produced from post-liked events. */
export const fannedOut = Metric.counter("notifications_fanned_out_total", {
  description: "Notifications produced by the post-liked fan-out",
  incremental: true,
})
/** POST /likes answered 202. */
export const likes = Metric.counter("likes_accepted_total", {
  description: "Post-liked events the broker acknowledged after POST /likes",
  incremental: true,
})
/** Open Server-Sent Events streams. */
export const streams = Metric.gauge("sse_streams_open", { description: "Open Server-Sent Events streams" })

const requests = Metric.counter("http_requests_total", { description: "HTTP requests answered", incremental: true })

/** Counts an answer by route and status. */
export const request = (route: string, status: number) =>
  Metric.modify(Metric.withAttributes(requests, { route, status: String(status) }), 1)

/** A registry of this app's own, fresh each time the layer is built. */
export const layer: Layer.Layer<never> = Layer.sync(Metric.MetricRegistry, () => new Map())

const escape = (value: string) => value.replaceAll("\\", "\\\\").replaceAll("\"", "\\\"").replaceAll("\n", "\\n")

/** Prometheus names allow `[a-zA-Z0-9_:]`; OpenTelemetry's dotted names (the library's) become underscores. */
const name = (id: string) => id.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/^(\d)/, "_$1")

const labels = (attributes: Readonly<Record<string, unknown>> | undefined, extra: Readonly<Record<string, string>> = {}) => {
  const entries = [...Object.entries(attributes ?? {}), ...Object.entries(extra)]
  return entries.length === 0
    ? ""
    : `{${entries.map(([key, value]) => `${name(key)}="${escape(String(value))}"`).join(",")}}`
}

const types = { Counter: "counter", Gauge: "gauge", Histogram: "histogram" } as const

/**
 * Every counter and gauge, then the partition actors' health, in Prometheus' text format.
 *
 * @category rendering
 */
export const render: Effect.Effect<string, never, ActorSystem.System> = Effect.gen(function*() {
  const lines: Array<string> = []
  const described = new Set<string>()
  const snapshots = [...yield* Metric.snapshot].sort((a, b) => a.id.localeCompare(b.id))
  for (const snapshot of snapshots) {
    if (snapshot.type !== "Counter" && snapshot.type !== "Gauge" && snapshot.type !== "Histogram") continue
    const id = name(snapshot.id)
    if (!described.has(id)) {
      described.add(id)
      if (snapshot.description !== undefined) lines.push(`# HELP ${id} ${snapshot.description}`)
      lines.push(`# TYPE ${id} ${types[snapshot.type]}`)
    }
    if (snapshot.type === "Histogram") {
      // Effect's buckets are cumulative already, as Prometheus wants them.
      for (const [boundary, count] of snapshot.state.buckets) {
        lines.push(`${id}_bucket${labels(snapshot.attributes, { le: String(boundary) })} ${count}`)
      }
      lines.push(`${id}_bucket${labels(snapshot.attributes, { le: "+Inf" })} ${snapshot.state.count}`)
      lines.push(`${id}_sum${labels(snapshot.attributes)} ${snapshot.state.sum}`)
      lines.push(`${id}_count${labels(snapshot.attributes)} ${snapshot.state.count}`)
      continue
    }
    const value = snapshot.type === "Counter" ? snapshot.state.count : snapshot.state.value
    lines.push(`${id}${labels(snapshot.attributes)} ${String(value)}`)
  }
  const health = yield* (yield* ActorSystem.System).health
  const partitionMetrics = [
    ["processed", "Records handled"],
    ["failed", "Handler failures"],
    ["retried", "Retries"],
    ["deadLettered", "Records dead-lettered"],
    ["mailbox", "Records waiting in the mailbox"],
    ["lag", "Records past the committed offset"],
  ] as const
  for (const [field, help] of partitionMetrics) {
    const id = `partita_partition_${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`
    lines.push(`# HELP ${id} ${help}`, `# TYPE ${id} gauge`)
    for (const partition of health.partitions) {
      const value = partition[field]
      if (value === undefined) continue
      lines.push(`${id}${labels({ actor: partition.actor, topic: partition.topic, partition: partition.partition })} ${value}`)
    }
  }
  lines.push("# HELP partita_member 1 while the actor is in its consumer group", "# TYPE partita_member gauge")
  for (const member of health.members) lines.push(`partita_member${labels({ actor: member.actor })} ${member.member ? 1 : 0}`)
  lines.push("# HELP partita_healthy 1 when every partition actor is healthy and every actor in its group", "# TYPE partita_healthy gauge")
  lines.push(`partita_healthy ${health.healthy ? 1 : 0}`)
  return `${lines.join("\n")}\n`
})
