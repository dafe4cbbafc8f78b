/**
 * The app's HTTP side as one neutral function, `(request: Request) => Promise<Response>`, which
 * every runtime adapter serves unchanged.
 *
 * The handler runs each request as an Effect with the services of the layer that built it, so
 * routes are plain Effects and the handler lives exactly as long as those services. Every
 * failure becomes a JSON answer here: the tagged errors of `Errors.ts` by their status, anything
 * else (a defect) as a 500 that says nothing about the cause, which is logged instead.
 * Logs name the route, never the query string (the stream's `?token=` is in it).
 */
import { Cause, Clock, Duration, Effect } from "effect"
import type { ActorSystem, Producer } from "../../../mod.ts"
import * as AppMetrics from "../AppMetrics.ts"
import type { Ids } from "../Ids.ts"
import type { LiveFeed } from "../LiveFeed.ts"
import type { NotificationStore } from "../NotificationStore.ts"
import type { Topics } from "../Topics.ts"
import type { Users } from "../Users.ts"
import * as Body from "./Body.ts"
import { type HttpError, json, MethodNotAllowed, NotFound, toResponse, Unavailable } from "./Errors.ts"
import * as Health from "./Health.ts"
import type { Lifecycle } from "./Lifecycle.ts"
import * as Likes from "./Likes.ts"
import * as LiveStream from "./LiveStream.ts"
import * as Notifications from "./Notifications.ts"
import * as Page from "./Page.ts"

/**
 * A web-standard request handler.
 *
 * @category models
 */
export type Handler = (request: Request) => Promise<Response>

/**
 * What the routes need.
 *
 * @category models
 */
export type Services =
  | Users
  | Ids
  | NotificationStore
  | LiveFeed
  | Topics
  | Producer.Producer
  | ActorSystem.System
  | Lifecycle

/**
 * @category models
 */
export interface Options {
  /** The largest request body accepted. Default 16 KiB. */
  readonly maxBodyBytes?: number | undefined
  /** A request (other than a live stream) taking longer is answered 503. Default 30 seconds. */
  readonly requestTimeout?: Duration.Input | undefined
}

/**
 * @category defaults
 */
export const defaults = {
  maxBodyBytes: Body.defaults.maxBodyBytes,
  requestTimeout: Duration.seconds(30),
}

type Route = {
  readonly name: string
  readonly path: RegExp
  readonly methods: Readonly<Record<string, (request: Request, url: URL, params: ReadonlyArray<string>) => Effect.Effect<Response, HttpError, Services>>>
}

/**
 * Builds the handler from the services in the current context.
 *
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const limits = { maxBodyBytes: options.maxBodyBytes ?? defaults.maxBodyBytes }
  const requestTimeout = options.requestTimeout ?? defaults.requestTimeout
  const page = yield* Page.make
  const userId = (params: ReadonlyArray<string>) => Number(params[0])

  const routes: ReadonlyArray<Route> = [
    { name: "page", path: /^\/$/, methods: { GET: () => page } },
    { name: "users", path: /^\/users$/, methods: { GET: () => Page.users } },
    { name: "send", path: /^\/notifications$/, methods: { POST: (request, url) => Notifications.send(request, url, limits) } },
    { name: "like", path: /^\/likes$/, methods: { POST: (request, url) => Likes.like(request, url, limits) } },
    {
      name: "list",
      path: /^\/users\/(\d{1,9})\/notifications$/,
      methods: { GET: (request, url, params) => Notifications.list(request, url, userId(params)) },
    },
    {
      name: "stream",
      path: /^\/users\/(\d{1,9})\/notifications\/stream$/,
      methods: { GET: (request, url, params) => LiveStream.stream(request, url, userId(params)) },
    },
    { name: "healthz", path: /^\/healthz$/, methods: { GET: () => Health.healthz } },
    { name: "readyz", path: /^\/readyz$/, methods: { GET: () => Health.readyz } },
    { name: "metrics", path: /^\/metrics$/, methods: { GET: () => Health.metrics } },
  ]

  const dispatch = (request: Request, url: URL): { readonly name: string; readonly effect: Effect.Effect<Response, HttpError, Services> } => {
    for (const route of routes) {
      const match = route.path.exec(url.pathname)
      if (match === null) continue
      // HEAD is answered as GET; runtimes drop the body.
      const method = request.method === "HEAD" ? "GET" : request.method
      const handle = route.methods[method]
      if (handle === undefined) return { name: route.name, effect: Effect.fail(new MethodNotAllowed({ allow: Object.keys(route.methods) })) }
      const effect = handle(request, url, match.slice(1))
      return {
        name: route.name,
        effect: route.name === "stream" ? effect : effect.pipe(
          Effect.timeoutOrElse({
            duration: requestTimeout,
            orElse: () => Effect.fail(new Unavailable({ error: "The request took too long: try again" })),
          }),
        ),
      }
    }
    return { name: "none", effect: Effect.fail(new NotFound({ error: `No route for ${request.method} ${url.pathname}` })) }
  }

  const handle = (request: Request): Effect.Effect<Response, never, Services> =>
    Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const url = new URL(request.url)
      const { name, effect } = dispatch(request, url)
      const response = yield* effect.pipe(
        Effect.catch((error) => Effect.succeed(toResponse(error))),
        Effect.catchCause((cause) =>
          Effect.as(
            Effect.logError(`${request.method} ${name} failed`, Cause.pretty(cause)),
            json(500, { error: "Internal error: the failure was logged" }),
          )
        ),
      )
      yield* AppMetrics.request(name, response.status)
      yield* Effect.annotateCurrentSpan({ "http.response.status_code": response.status })
      const elapsed = (yield* Clock.currentTimeMillis) - started
      yield* Effect.logDebug(`${request.method} ${name} ${response.status} ${elapsed}ms`)
      return response
    }).pipe(
      // The trace's entry point: with tracing on, the produce and both actor hops hang under it.
      (handled) =>
        Effect.suspend(() => {
          const url = new URL(request.url)
          return Effect.withSpan(handled, `${request.method} ${url.pathname.replace(/\/\d+/g, "/:id")}`, {
            kind: "server",
            attributes: { "http.request.method": request.method, "url.path": url.pathname },
          })
        }),
    )

  const context = yield* Effect.context<Services>()
  const run = Effect.runPromiseWith(context)
  const handler: Handler = (request) => run(handle(request))
  return handler
})
