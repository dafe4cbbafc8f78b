/**
 * `GET /healthz`, `GET /readyz` and `GET /metrics`, from the actor system's health report.
 *
 * - `/healthz` (liveness) fails when a partition actor halted, failed or stalled: a restart of
 *   the process is what takes a halted partition up again.
 * - `/readyz` (readiness) also fails until every actor had its first assignment, and while the
 *   server shuts down, so a load balancer stops sending requests before the listener closes.
 */
import { Effect } from "effect"
import { ActorSystem } from "../../../mod.ts"
import * as AppMetrics from "../AppMetrics.ts"
import { json } from "./Errors.ts"
import { Lifecycle } from "./Lifecycle.ts"

const report = Effect.gen(function*() {
  const health = yield* (yield* ActorSystem.ActorSystem).health
  return {
    healthy: health.healthy,
    ready: health.ready,
    partitions: health.partitions.map((partition) => ({
      actor: partition.actor,
      topic: partition.topic,
      partition: partition.partition,
      state: partition.state,
      healthy: partition.healthy,
      stalled: partition.stalled,
      processed: partition.processed,
      deadLettered: partition.deadLettered,
      lag: partition.lag ?? null,
    })),
  }
})

/**
 * @category routes
 */
export const healthz = Effect.map(report, ({ healthy, partitions }) =>
  json(healthy ? 200 : 503, { status: healthy ? "ok" : "unhealthy", partitions }))

/**
 * @category routes
 */
export const readyz = Effect.gen(function*() {
  if (yield* (yield* Lifecycle).isClosing) return json(503, { status: "shutting down" })
  const { healthy, ready } = yield* report
  if (!ready) return json(503, { status: "joining" })
  return json(healthy ? 200 : 503, { status: healthy ? "ready" : "unhealthy" })
})

/**
 * @category routes
 */
export const metrics = Effect.map(AppMetrics.render, (text) =>
  new Response(text, {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
  }))
