/**
 * `GET /healthz`, `GET /readyz` and `GET /metrics`, from the actor system's health report.
 *
 * - `/healthz` (liveness) fails when a partition actor halted, failed or stalled, or an actor was
 *   out of its consumer group for longer than the grace: a restart of the process is what takes
 *   a halted partition up again. It is answered from in-process state, so it answers at once
 *   while the broker is down.
 * - `/readyz` (readiness) also fails until every actor had its first assignment, while an actor
 *   is out of its group, while the broker has not answered recently, and while the server shuts
 *   down, so a load balancer stops sending requests before the listener closes.
 */
import { Effect } from "effect"
import { ActorSystem } from "../../../mod.ts"
import * as AppMetrics from "../AppMetrics.ts"
import { json } from "./Errors.ts"
import { Lifecycle } from "./Lifecycle.ts"

const report = Effect.gen(function*() {
  const health = yield* (yield* ActorSystem.System).health
  return {
    healthy: health.healthy,
    ready: health.ready,
    broker: { reachable: health.broker.reachable, lastAnswer: health.broker.lastAnswer },
    members: health.members.map((member) => ({
      actor: member.actor,
      member: member.member,
      healthy: member.healthy,
      rejoins: member.rejoins,
    })),
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
      lagAge: partition.lagAge ?? null,
    })),
  }
})

/**
 * @category routes
 */
export const healthz = Effect.map(report, ({ healthy, members, partitions }) =>
  json(healthy ? 200 : 503, { status: healthy ? "ok" : "unhealthy", members, partitions }))

/**
 * @category routes
 */
export const readyz = Effect.gen(function*() {
  if (yield* (yield* Lifecycle).isClosing) return json(503, { status: "shutting down" })
  const { broker, healthy, members, ready } = yield* report
  if (!ready) {
    const status = !broker.reachable ? "broker unreachable" : members.some((m) => !m.member) ? "joining" : "starting"
    return json(503, { status })
  }
  return json(healthy ? 200 : 503, { status: healthy ? "ready" : "unhealthy" })
})

/**
 * @category routes
 */
export const metrics = Effect.map(AppMetrics.render, (text) =>
  new Response(text, {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
  }))
