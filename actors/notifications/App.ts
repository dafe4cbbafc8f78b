/**
 * The whole notification app as one layer over a `Transport`: the user directory, the store and
 * live feed, the topics, the actor system running the worker and the fan-out, and the HTTP
 * server. `main.ts` runs it on the transport the environment names; tests run it on an embedded
 * broker, on a free port.
 *
 * Layers close in the reverse order they were built, which is the order a graceful shutdown
 * needs: the HTTP server stops first (in-flight requests still have the producer), then the
 * actor system drains and commits, then the producer flushes and the live feed closes.
 */
import { Config, type Duration, Effect, Layer, Schema } from "effect"
import { ActorSystem, Producer, type Transport } from "../../mod.ts"
import * as AppMetrics from "./AppMetrics.ts"
import * as Fanout from "./Fanout.ts"
import * as Ids from "./Ids.ts"
import * as LiveFeed from "./LiveFeed.ts"
import * as NotificationStore from "./NotificationStore.ts"
import * as Server from "./serve/Server.ts"
import * as Topics from "./Topics.ts"
import * as Users from "./Users.ts"
import * as Worker from "./Worker.ts"

/**
 * @category models
 */
export interface Options extends Server.Options {
  readonly users?: Users.Options | undefined
  /** Prefixes topic and consumer group names, to share a cluster. Default none. */
  readonly topicPrefix?: string | undefined
  /**
   * Names this process's worker group, `<prefix>notification-worker.<instance>`: the in-memory
   * store is per process, so each process reads the whole topic. Default: random per start
   * (`NOTIFY_INSTANCE` in `layerFromEnv`).
   */
  readonly instance?: string | undefined
  /** How long the actor system may drain on shutdown. Default 10 seconds. */
  readonly drainDeadline?: Duration.Input | undefined
}

/**
 * The app over a transport, with the user directory given.
 *
 * @category layers
 */
export const layerWith = <E>(users: Layer.Layer<Users.Users, E>, options: Options = {}) =>
  Layer.unwrap(Effect.sync(() => build(users, options, options.instance ?? crypto.randomUUID().slice(0, 8))))

/** The worker's consumer group for an instance. */
export const workerGroup = (instance: string, topicPrefix = "") => `${topicPrefix}notification-worker.${instance}`

const build = <E>(users: Layer.Layer<Users.Users, E>, options: Options, instance: string) => {
  const topicNames = Topics.names(options.topicPrefix)
  const services = Layer.mergeAll(
    users,
    Ids.layer,
    NotificationStore.layerMemory,
    LiveFeed.layer(),
    AppMetrics.layer,
    Topics.layer(options.topicPrefix),
    Producer.layer(),
  )
  const actors = [
    Worker.make(topicNames, { group: workerGroup(instance, options.topicPrefix) }),
    Fanout.make(topicNames),
  ]
  const system = ActorSystem.layer(actors, { shutdownDeadline: options.drainDeadline ?? "10 seconds" })
  return Server.layer(options).pipe(Layer.provideMerge(system), Layer.provideMerge(services))
}

/**
 * The app over a transport, with users from `options`.
 *
 * @category layers
 */
export const layer = (options: Options = {}) => layerWith(Users.layer(options.users), options)

/**
 * The app configured by the environment: `PORT` (default 8080, 0 for any free port), `HOST` (default 127.0.0.1),
 * `NOTIFY_TOKENS` (see `Users.layerFromEnv`), `NOTIFY_TOPIC_PREFIX` and `NOTIFY_INSTANCE`.
 *
 * @category layers
 */
export const layerFromEnv = (options: Options = {}) =>
  Layer.unwrap(Effect.gen(function*() {
    // 0 is allowed: the system picks a free port (the banner shows which).
    const port = yield* Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })), "PORT").pipe(
      Config.withDefault(options.port ?? Server.defaults.port),
    )
    const hostname = yield* Config.String("HOST").pipe(Config.withDefault(options.hostname ?? Server.defaults.hostname))
    const topicPrefix = yield* Config.String("NOTIFY_TOPIC_PREFIX").pipe(Config.withDefault(options.topicPrefix ?? ""))
    const instance = yield* Config.option(Config.String("NOTIFY_INSTANCE"))
    return layerWith(Users.layerFromEnv(options.users), {
      ...options,
      port,
      hostname,
      topicPrefix,
      ...(instance._tag === "Some" ? { instance: instance.value } : {}),
    })
  }))

/**
 * What the app provides once built.
 *
 * @category models
 */
export type Provided = Layer.Success<ReturnType<typeof layer>>

/**
 * What the app needs: only a transport.
 *
 * @category models
 */
export type Requires = Transport.Transport
