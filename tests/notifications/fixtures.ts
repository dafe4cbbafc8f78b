/**
 * Fixtures for the notification app's tests: the app running in this process on a free port
 * (embedded broker by default), an HTTP client for its API, and a Server-Sent Events reader.
 *
 * `withApp` always closes the app (server, actors, broker) when the test body ends, whatever
 * happened in it.
 */
import { test } from "node:test"
import { Cause, Effect, Exit, Layer, ManagedRuntime, References } from "effect"
import { KafkaTransport, MemoryTransport, type Transport } from "../../mod.ts"
import * as App from "../../actors/notifications/App.ts"
import type { Notification } from "../../actors/notifications/Domain.ts"
import { HttpServer } from "../../actors/notifications/serve/Server.ts"
import * as Users from "../../actors/notifications/Users.ts"
import { kafkaTest, uniqueName } from "../fixtures/services.ts"

/** Only warnings and errors: the actors' assignment lines would drown the test output. */
const quiet = Layer.succeed(References.MinimumLogLevel, "Warn")

export const tokens = { emma: "emma-demo-token", bruno: "bruno-demo-token", chen: "chen-demo-token" } as const

export interface RunningApp {
  readonly url: string
  /** Runs an Effect with the app's services (and the memory broker's control panel, on memory). */
  readonly run: <A, E>(effect: Effect.Effect<A, E, AppServices>) => Promise<A>
  readonly close: () => Promise<void>
}

type AppServices = App.Provided | Transport.Transport | MemoryTransport.MemoryBroker

export interface StartOptions extends App.Options {
  /** Default: a fresh embedded broker. */
  readonly transport?: Layer.Layer<Transport.Transport, unknown> | undefined
  /** Replaces the user directory built from `users`. */
  readonly directory?: Layer.Layer<Users.Users, unknown> | undefined
}

export const startApp = async (options: StartOptions = {}): Promise<RunningApp> => {
  const transport = (options.transport ?? MemoryTransport.layer()) as Layer.Layer<
    Transport.Transport | MemoryTransport.MemoryBroker,
    unknown
  >
  const runtime = ManagedRuntime.make(
    App.layerWith(options.directory ?? Users.layer(options.users), { port: 0, instance: "test", ...options }).pipe(
      Layer.provideMerge(transport),
      Layer.provideMerge(quiet),
    ),
  )
  const run = <A, E>(effect: Effect.Effect<A, E, AppServices>) =>
    runtime.runPromiseExit(effect).then((exit) => {
      if (Exit.isSuccess(exit)) return exit.value
      throw new Error(Cause.pretty(exit.cause))
    })
  try {
    const server = await run(HttpServer)
    return { url: server.url, run, close: () => runtime.dispose() }
  } catch (error) {
    await runtime.dispose()
    throw error
  }
}

/** Runs `body` against a fresh app and closes the app afterwards. */
export const withApp = async (
  body: (app: RunningApp) => Promise<void>,
  options?: StartOptions,
): Promise<void> => {
  const app = await startApp(options)
  try {
    await body(app)
  } finally {
    await app.close()
  }
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

export const postJson = (app: RunningApp, path: string, body: unknown, token?: string) =>
  fetch(`${app.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token === undefined ? {} : bearer(token)) },
    body: JSON.stringify(body),
  })

/** Posts a notification and returns its id, failing the test unless the answer is 202. */
export const send = async (app: RunningApp, fromToken: string, body: { fromId: number; toId: number; message: string }) => {
  const response = await postJson(app, "/notifications", body, fromToken)
  const json = await response.json() as { id?: string; error?: string }
  if (response.status !== 202 || json.id === undefined) {
    throw new Error(`POST /notifications answered ${response.status}: ${JSON.stringify(json)}`)
  }
  return json.id
}

export interface ListPage {
  readonly notifications: ReadonlyArray<Notification>
  readonly nextBefore?: string
}

export const list = async (app: RunningApp, userId: number, token: string, query = ""): Promise<ListPage> => {
  const response = await fetch(`${app.url}/users/${userId}/notifications${query}`, { headers: bearer(token) })
  if (response.status !== 200) throw new Error(`GET answered ${response.status}: ${await response.text()}`)
  return await response.json() as ListPage
}

/** Polls until `check` returns a value other than `undefined`, for at most `timeoutMs`. */
export const eventually = async <A>(what: string, check: () => Promise<A | undefined> | A | undefined, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** A user's notifications once there are `count` of them, newest first. */
export const listAtLeast = (app: RunningApp, userId: number, token: string, count: number, timeoutMs?: number) =>
  eventually(`${count} notifications for user ${userId}`, async () => {
    const page = await list(app, userId, token, `?limit=100`)
    return page.notifications.length >= count ? page.notifications : undefined
  }, timeoutMs)

export interface SseEvent {
  readonly event: string
  readonly id: string | undefined
  readonly data: string
}

export interface SseReader {
  readonly status: number
  /** Every event received so far. */
  readonly events: Array<SseEvent>
  readonly notifications: () => ReadonlyArray<Notification>
  /** Resolves once `count` notifications arrived. */
  readonly waitFor: (count: number, timeoutMs?: number) => Promise<ReadonlyArray<Notification>>
  /** Resolves when the server ended the stream. */
  readonly ended: Promise<void>
  readonly close: () => Promise<void>
}

/**
 * Opens a live stream and parses its events as they come. It resolves once the stream is open
 * (its first comment arrived), so everything posted afterwards must reach it.
 */
export const openStream = async (url: string, headers: Record<string, string> = {}): Promise<SseReader> => {
  const abort = new AbortController()
  const response = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: abort.signal })
  const events: Array<SseEvent> = []
  const waiters: Array<() => void> = []
  const notify = () => waiters.splice(0).forEach((wake) => wake())
  let opened: () => void = () => {}
  const open = new Promise<void>((resolve) => (opened = resolve))
  const ended = (async () => {
    if (response.body === null || response.status !== 200) return opened()
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
    // Aborting the fetch does not always end a piped body's reader (Deno): cancel it too.
    abort.signal.addEventListener("abort", () => void reader.cancel().catch(() => {}))
    let buffer = ""
    try {
      while (true) {
        const chunk = await reader.read()
        if (chunk.done) break
        buffer += chunk.value
        if (buffer.includes(": connected")) opened()
        let end: number
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          const fields = new Map<string, string>()
          for (const line of block.split("\n")) {
            if (line.startsWith(":") || !line.includes(":")) continue
            const colon = line.indexOf(":")
            fields.set(line.slice(0, colon), line.slice(colon + 1).replace(/^ /, ""))
          }
          if (fields.has("data")) {
            events.push({ event: fields.get("event") ?? "message", id: fields.get("id"), data: fields.get("data")! })
            notify()
          }
        }
      }
    } catch {
      // Aborted by close().
    } finally {
      opened()
      notify()
    }
  })()
  await open
  const notifications = () => events.filter((e) => e.event === "notification").map((e) => JSON.parse(e.data) as Notification)
  return {
    status: response.status,
    events,
    notifications,
    waitFor: (count, timeoutMs = 10_000) =>
      eventually(`${count} streamed notifications`, async () => {
        if (notifications().length >= count) return notifications()
        await Promise.race([new Promise<void>((resolve) => waiters.push(resolve)), new Promise((r) => setTimeout(r, 100))])
        return undefined
      }, timeoutMs),
    ended,
    close: async () => {
      abort.abort()
      await ended
    },
  }
}

/** The value of one sample in a Prometheus text exposition. */
export const metric = async (app: RunningApp, sample: string): Promise<number | undefined> => {
  const text = await (await fetch(`${app.url}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith(`${sample} `))
  return line === undefined ? undefined : Number(line.slice(sample.length + 1))
}

/** The app on the real broker, under topic and group names of this run's own. */
export const onKafka = (brokers: ReadonlyArray<string>): StartOptions => ({
  transport: KafkaTransport.layer({ brokers }),
  topicPrefix: `${uniqueName("notify")}.`,
})

/**
 * Declares a test twice: on the embedded broker, and on the real broker named by
 * `KAFKA_BROKERS` (which fails under CI=true, and skips loudly elsewhere, when it is missing).
 */
export const onEveryTransport = (name: string, body: (transport: StartOptions) => Promise<void>): void => {
  test(`${name} (embedded broker)`, () => body({}))
  kafkaTest(`${name} (Kafka)`, (brokers) => body(onKafka(brokers)))
}
