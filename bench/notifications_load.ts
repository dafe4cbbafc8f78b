/**
 * Load for the notification app: posts notifications at a chosen rate and reports throughput and
 * end-to-end latency, p50 and p99:
 *
 * - POST → 202: until the broker acknowledged the record;
 * - 202 → visible in GET: until a reader polling the recipient's `GET /users/:id/notifications`
 *   first sees it;
 * - 202 → received on SSE: until the recipient's open live stream delivers it.
 *
 * A notification can be stored and streamed before its 202 reaches the client (the worker is
 * that quick): those count as 0 ms, and how many there were is reported.
 *
 *   bun bench/notifications_load.ts                       # starts the app itself, embedded broker
 *   KAFKA_BROKERS=127.0.0.1:9092 bun bench/notifications_load.ts   # starts it on Kafka
 *   bun bench/notifications_load.ts --url http://127.0.0.1:8080    # an app already running
 *
 * Options: --rate <per second> (200), --count <notifications> (2000, at most 100000),
 * --duration <seconds> (60, at most 600: sending stops then), --concurrency <requests in flight>
 * (64), --json. It talks to loopback addresses only and refuses any other URL. Tokens are the
 * demo ones, or NOTIFY_TOKENS ("1:token,2:token,3:token") for an app that was given its own.
 */
import process from "node:process"
import { Effect, Layer, ManagedRuntime, References } from "effect"
import * as App from "../actors/notifications/App.ts"
import { HttpServer, runtime } from "../actors/notifications/serve/Server.ts"
import * as Transports from "../actors/notifications/Transports.ts"

// ---------------------------------------------------------------------------------------------
// Options

const argument = (name: string): string | undefined => {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? process.argv[index + 1] : undefined
}

const number = (name: string, fallback: number, max: number): number => {
  const raw = argument(name)
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number, got "${raw}"`)
  return Math.min(value, max)
}

const options = {
  url: argument("url"),
  rate: number("rate", 200, 20_000),
  count: Math.floor(number("count", 2000, 100_000)),
  duration: number("duration", 60, 600),
  concurrency: Math.floor(number("concurrency", 64, 1024)),
  json: process.argv.includes("--json"),
}

const loopback = (url: string) => {
  const { hostname } = new URL(url)
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(hostname)
}

const users = [1, 2, 3] as const
const tokens = new Map<number, string>([[1, "emma-demo-token"], [2, "bruno-demo-token"], [3, "chen-demo-token"]])
for (const pair of (process.env["NOTIFY_TOKENS"] ?? "").split(",").filter((p) => p.includes(":"))) {
  const [id, ...token] = pair.trim().split(":")
  tokens.set(Number(id), token.join(":"))
}
const auth = (userId: number) => ({ authorization: `Bearer ${tokens.get(userId)}` })

// ---------------------------------------------------------------------------------------------
// The app: the one at --url, or one started here

const startApp = async () => {
  if (options.url !== undefined) {
    if (!loopback(options.url)) throw new Error(`Refusing ${options.url}: this load test only targets loopback addresses`)
    return { url: options.url.replace(/\/+$/, ""), broker: "external", close: async () => {} }
  }
  const transport = await Effect.runPromise(Transports.fromEnv)
  const layer = App.layer({
    port: 0,
    // Fresh topics on a shared cluster, so earlier runs' records are not read again.
    topicPrefix: transport.kind === "kafka" ? `bench-${Date.now().toString(36)}.` : "",
  }).pipe(Layer.provide(transport.layer), Layer.provide(Layer.succeed(References.MinimumLogLevel, "Warn")))
  const app = ManagedRuntime.make(layer)
  const server = await app.runPromise(HttpServer)
  return { url: server.url, broker: transport.kind, close: () => app.dispose() }
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Sample {
  sentAt: number
  acceptedAt?: number
  seenInGet?: number
  seenOnSse?: number
}

const samples = new Map<string, Sample>()
/** Ids seen before their 202 arrived, with when. */
const early = new Map<string, { get?: number; sse?: number }>()

const mark = (id: string, field: "seenInGet" | "seenOnSse", at: number) => {
  const sample = samples.get(id)
  if (sample === undefined) {
    const seen = early.get(id) ?? {}
    const key = field === "seenInGet" ? "get" : "sse"
    if (seen[key] === undefined) early.set(id, { ...seen, [key]: at })
    return
  }
  if (sample[field] === undefined) sample[field] = at
}

/** Reads a user's live stream, marking each notification when it arrives. */
const follow = async (url: string, userId: number, signal: AbortSignal, opened: () => void) => {
  const response = await fetch(`${url}/users/${userId}/notifications/stream`, { headers: auth(userId), signal })
  if (response.status !== 200 || response.body === null) throw new Error(`The stream of user ${userId} answered ${response.status}`)
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
  // Aborting the fetch does not always end a piped body's reader (Deno): cancel it too.
  signal.addEventListener("abort", () => void reader.cancel().catch(() => {}))
  let buffer = ""
  try {
    while (true) {
      const chunk = await reader.read()
      if (chunk.done) return
      const at = performance.now()
      buffer += chunk.value
      if (buffer.includes(": connected")) opened()
      let end: number
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const id = /^id: (.+)$/m.exec(buffer.slice(0, end))?.[1]
        buffer = buffer.slice(end + 2)
        if (id !== undefined) mark(id, "seenOnSse", at)
      }
    }
  } catch {
    // Aborted at the end of the run.
  }
}

/** Polls a user's newest notifications as fast as answers come, marking each id when first listed. */
const poll = async (url: string, userId: number, until: () => boolean) => {
  while (!until()) {
    const response = await fetch(`${url}/users/${userId}/notifications?limit=100`, { headers: auth(userId) })
    const at = performance.now()
    const body = await response.json() as { notifications?: ReadonlyArray<{ id: string }> }
    for (const notification of body.notifications ?? []) mark(notification.id, "seenInGet", at)
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

const summarize = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return { count: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? Number.NaN }
}

const ms = (value: number) => Number.isNaN(value) ? "   n/a" : `${value.toFixed(1).padStart(6)} ms`

// ---------------------------------------------------------------------------------------------
// The run

const main = async () => {
  const app = await startApp()
  const abort = new AbortController()
  const failures = new Map<string, number>()
  try {
    const opened = users.map(() => {
      let resolve: () => void = () => {}
      return { promise: new Promise<void>((r) => (resolve = r)), resolve: () => resolve() }
    })
    const streams = users.map((user, i) => follow(app.url, user, abort.signal, opened[i]!.resolve))
    await Promise.all(opened.map((o) => o.promise))

    let sending = true
    const pollers = users.map((user) => poll(app.url, user, () => !sending && [...samples.values()].every((s) => s.acceptedAt === undefined || s.seenInGet !== undefined)))

    const started = performance.now()
    const deadline = started + options.duration * 1000
    const interval = 1000 / options.rate
    let inFlight = 0
    let behind = 0
    /** Senders waiting for a request to finish, when the concurrency cap is reached. */
    const waitingForSlot: Array<() => void> = []
    const requests: Array<Promise<void>> = []
    for (let i = 0; i < options.count && performance.now() < deadline; i++) {
      // Open loop: request i is due at started + i × interval, whatever earlier ones took.
      const due = started + i * interval
      const wait = due - performance.now()
      if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
      if (inFlight >= options.concurrency) behind++
      while (inFlight >= options.concurrency) await new Promise<void>((resolve) => waitingForSlot.push(resolve))
      const from = users[i % 3]!
      const to = users[(i + 1) % 3]!
      inFlight++
      const sentAt = performance.now()
      requests.push(
        fetch(`${app.url}/notifications`, {
          method: "POST",
          headers: { ...auth(from), "content-type": "application/json" },
          body: JSON.stringify({ fromId: from, toId: to, message: `load #${i}` }),
        }).then(async (response) => {
          const acceptedAt = performance.now()
          const body = await response.json() as { id?: string; error?: string }
          if (response.status !== 202 || body.id === undefined) {
            const key = `${response.status} ${body.error ?? ""}`.trim()
            failures.set(key, (failures.get(key) ?? 0) + 1)
            return
          }
          const seen = early.get(body.id)
          samples.set(body.id, { sentAt, acceptedAt, ...(seen?.get !== undefined ? { seenInGet: seen.get } : {}), ...(seen?.sse !== undefined ? { seenOnSse: seen.sse } : {}) })
        }).catch((error: unknown) => {
          const key = `request failed: ${error instanceof Error ? error.message : String(error)}`
          failures.set(key, (failures.get(key) ?? 0) + 1)
        }).finally(() => {
          inFlight--
          waitingForSlot.shift()?.()
        }),
      )
    }
    await Promise.all(requests)
    const sendSeconds = (performance.now() - started) / 1000
    sending = false
    // Stragglers: at most 15 seconds more for everything accepted to show up.
    const settleBy = performance.now() + 15_000
    while (performance.now() < settleBy && [...samples.values()].some((s) => s.seenInGet === undefined || s.seenOnSse === undefined)) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const everyone = [...samples.values()]
    for (const sample of everyone) sample.seenInGet ??= Number.NaN
    await Promise.all(pollers)
    abort.abort()
    await Promise.all(streams.map((stream) => stream.catch(() => {})))

    const latency = (field: "seenInGet" | "seenOnSse") =>
      everyone.filter((s) => !Number.isNaN(s[field] ?? Number.NaN) && s[field] !== undefined).map((s) => Math.max(0, s[field]! - s.acceptedAt!))
    const result = {
      runtime,
      broker: app.broker,
      target: { rate: options.rate, count: options.count, concurrency: options.concurrency },
      sent: requests.length,
      accepted: everyone.length,
      failed: Object.fromEntries(failures),
      seconds: sendSeconds,
      throughput: everyone.length / sendSeconds,
      waitedForConcurrency: behind,
      accept: summarize(everyone.map((s) => s.acceptedAt! - s.sentAt)),
      get: summarize(latency("seenInGet")),
      sse: summarize(latency("seenOnSse")),
      visibleBeforeAccepted: {
        get: everyone.filter((s) => (s.seenInGet ?? Infinity) <= s.acceptedAt!).length,
        sse: everyone.filter((s) => (s.seenOnSse ?? Infinity) <= s.acceptedAt!).length,
      },
      missing: {
        get: everyone.filter((s) => s.seenInGet === undefined || Number.isNaN(s.seenInGet)).length,
        sse: everyone.filter((s) => s.seenOnSse === undefined).length,
      },
    }
    if (options.json) {
      console.log(JSON.stringify(result, null, 2))
      return result
    }
    console.log(`notifications load on ${runtime}, ${app.broker} broker, app at ${app.url}`)
    console.log(`  target ${options.rate}/s × ${options.count} (≤ ${options.concurrency} in flight, ≤ ${options.duration} s)`)
    console.log(`  sent ${result.sent} in ${sendSeconds.toFixed(2)} s: ${result.accepted} accepted (${result.throughput.toFixed(1)}/s)` +
      (failures.size === 0 ? ", none failed" : `, failed: ${JSON.stringify(result.failed)}`))
    if (behind > 0) console.log(`  ${behind} sends waited for the concurrency cap: the app fell behind the rate at times`)
    console.log(`                           p50        p99        max`)
    for (const [label, s] of [["POST → 202", result.accept], ["202 → visible in GET", result.get], ["202 → received on SSE", result.sse]] as const) {
      console.log(`  ${label.padEnd(22)} ${ms(s.p50)} ${ms(s.p99)} ${ms(s.max)}`)
    }
    console.log(`  visible before the 202 arrived: GET ${result.visibleBeforeAccepted.get}, SSE ${result.visibleBeforeAccepted.sse} (counted as 0 ms)`)
    console.log(`  never seen: GET ${result.missing.get}, SSE ${result.missing.sse}`)
    return result
  } finally {
    abort.abort()
    await app.close()
  }
}

main().then(
  (result) => process.exit(result.missing.sse + result.missing.get === 0 && Object.keys(result.failed).length === 0 ? 0 : 1),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error))
    process.exit(1)
  },
)
