/**
 * Runs the notification app: HTTP API and live page, the notification worker and the post-liked
 * fan-out, on the embedded broker, or on Kafka when `KAFKA_BROKERS` is set.
 *
 *   npm start                                  (Bun)
 *   deno run -A actors/notifications/main.ts
 *   node actors/notifications/main.ts          (Node 22.18+; 22.6+ with --experimental-strip-types)
 *
 * Environment: PORT (8080), HOST (127.0.0.1), NOTIFY_TOKENS ("1:token,2:token"),
 * KAFKA_BROKERS ("host:9092,..."), NOTIFY_TOPIC_PREFIX, OTEL_EXPORTER_OTLP_ENDPOINT (and the
 * other OTEL_* variables: traces and metrics to Jaeger or any collector). SIGINT or SIGTERM shuts it down
 * gracefully: the server stops taking requests and finishes the ones in flight, the actors drain
 * and commit, the producer flushes; the process exits 0.
 */
import { Console, Effect, Layer, Option } from "effect"
import { ActorSystem, Main, Tracing } from "../../mod.ts"
import * as App from "./App.ts"
import { HttpServer } from "./serve/Server.ts"
import * as Transports from "./Transports.ts"
import { Users } from "./Users.ts"

const banner = (url: string, transport: Transports.Kind, adapter: string, users: Users["Service"]) => {
  const user = users.all[0]
  const other = users.all[1] ?? user
  const token = (id: number | undefined) =>
    Option.match(users.demoTokens, {
      onNone: () => "$TOKEN",
      onSome: (tokens) => tokens.get(id ?? 0) ?? "$TOKEN",
    })
  const lines = [
    "",
    `Partita notifications: ${url}  (broker: ${transport}, HTTP: ${adapter})`,
    "",
    `  Live page:  open ${url}/ in a browser`,
    "",
    `  Send ${other?.name} → ${user?.name}:`,
    `    curl -i -X POST ${url}/notifications -H 'authorization: Bearer ${token(other?.id)}' \\`,
    `      -H 'content-type: application/json' -d '{"fromId":${other?.id},"toId":${user?.id},"message":"${other?.name} started following you."}'`,
    `  Read ${user?.name}'s notifications:`,
    `    curl -s ${url}/users/${user?.id}/notifications -H 'authorization: Bearer ${token(user?.id)}'`,
    `  Watch them live (Server-Sent Events):`,
    `    curl -N ${url}/users/${user?.id}/notifications/stream -H 'authorization: Bearer ${token(user?.id)}'`,
    `  Like a post of ${user?.name}'s (notifies her followers):`,
    `    curl -i -X POST ${url}/likes -H 'authorization: Bearer ${token(other?.id)}' \\`,
    `      -H 'content-type: application/json' -d '{"postId":"post-1","authorId":${user?.id}}'`,
    `  Health and metrics:  curl ${url}/healthz  ·  curl ${url}/readyz  ·  curl ${url}/metrics`,
    "",
    Option.isSome(users.demoTokens)
      ? "  Using the published demo tokens: set NOTIFY_TOKENS=\"1:<token>,2:<token>,...\" for anything but a demo."
      : "  Tokens come from NOTIFY_TOKENS.",
    "  Ctrl-C (SIGINT) or SIGTERM shuts down gracefully.",
    "",
  ]
  return lines.join("\n")
}

const program = Effect.gen(function*() {
  const transport = yield* Transports.fromEnv
  return yield* Effect.gen(function*() {
    const server = yield* HttpServer
    yield* Console.log(banner(server.url, transport.kind, server.adapter, yield* Users))
    // Runs until a signal interrupts it, or an actor fails the system.
    return yield* (yield* ActorSystem.System).failure
  }).pipe(Effect.provide(
    App.layerFromEnv().pipe(
      Layer.provide(transport.layer),
      // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 traces every request through both hops.
      Layer.provide(Tracing.layerFromEnv({ serviceName: "notifications" })),
    ),
  ))
})

Main.runMain(program)
