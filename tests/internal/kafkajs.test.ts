import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Layer, Logger, References } from "effect"
import kafkajs, { type LogEntry } from "kafkajs"
import * as KafkaJsTransport from "../../lib/KafkaJsTransport.ts"
import { lineOf, nonRetriable, severityOf } from "../../lib/internal/kafkajs.ts"
import * as TransportError from "../../lib/TransportError.ts"
import { run } from "../fixtures/effect.ts"

const { logLevel } = kafkajs

const entry = (namespace: string, level: number, log: { readonly message: string } & Record<string, unknown>): LogEntry =>
  ({ namespace, level, label: "", log: { timestamp: "2026-12-01T00:00:00.000Z", logger: "kafkajs", ...log } }) as LogEntry

test("A kafkajs entry becomes one line with its fields inline and no stack", () => {
  const line = lineOf(entry("Consumer", logLevel.ERROR, {
    message: "Crash: KafkaJSNonRetriableError: The group is\nbroken",
    groupId: "g1",
    retryCount: 0,
    stack: "KafkaJSNonRetriableError: x\n    at Runner.start (runner.js:1:1)",
  }))
  assert.equal(line, "kafkajs Consumer: Crash: KafkaJSNonRetriableError: The group is broken (groupId=g1, retryCount=0)")
})

test("A seed broker kafkajs cannot reach is a warning naming the attempt, not 'trying another broker'", () => {
  const seed = entry("BrokerPool", logLevel.ERROR, {
    message: "Failed to connect to seed broker, trying another broker from the list: Connection error: connect ECONNREFUSED 127.0.0.1:1",
    retryCount: 2,
    retryTime: 1036,
  })
  assert.equal(severityOf(seed), "Warn")
  assert.equal(lineOf(seed), "kafkajs BrokerPool: Cannot connect to a seed broker (attempt 3): Connection error: connect ECONNREFUSED 127.0.0.1:1")
})

test("A socket's own connection error is an echo of whoever was connecting", () => {
  const socket = entry("Connection", logLevel.ERROR, {
    message: "Connection error: connect ECONNREFUSED 127.0.0.1:1",
    broker: "127.0.0.1:1",
    stack: "Error: connect ECONNREFUSED",
  })
  assert.equal(severityOf(socket), "Debug")
  assert.equal(severityOf(entry("Consumer", logLevel.ERROR, { message: "Crash: x" })), "Error")
  assert.equal(severityOf(entry("Consumer", logLevel.INFO, { message: "Starting" })), "Debug")
})

test("An unreachable broker logs one warning line per connection attempt, and the caller gets the error", () => {
  const lines: Array<{ readonly level: string; readonly text: string }> = []
  const capture = Logger.make(({ logLevel: level, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    lines.push({ level, text: parts.map(String).join(" ") })
  })
  const captured = Layer.mergeAll(Logger.layer([capture]), Layer.succeed(References.MinimumLogLevel, "Info"))
  const transport = KafkaJsTransport.layer({
    brokers: ["127.0.0.1:1"],
    connectionTimeout: "200 millis",
    retry: { retries: 2, initialRetryTime: 20, maxRetryTime: 100 },
  })
  return run(
    Effect.gen(function*() {
      // The layer connects its admin client when built: that is where an unreachable broker shows.
      const error = yield* Effect.flip(Effect.scoped(Layer.build(transport)))
      assert.equal(error.code, "NETWORK_EXCEPTION")
      // Loggers run on forked fibers: give the last line a moment to arrive.
      yield* Effect.sleep("50 millis")
      assert.ok(lines.length >= 1 && lines.length <= 3, lines.map((line) => line.text).join("\n"))
      for (const line of lines) {
        assert.equal(line.level, "Warn", line.text)
        assert.doesNotMatch(line.text, /\n/)
        assert.doesNotMatch(line.text, /trying another broker|    at /)
        assert.match(line.text, /^kafkajs BrokerPool: Cannot connect to a seed broker \(attempt \d\): .*ECONNREFUSED/)
      }
    }),
    captured,
  )
})

test("nonRetriable keeps the error's condition, message and cause, and only clears retriable", () => {
  const cause = new Error("coordinator moved")
  const error = TransportError.make("NOT_COORDINATOR", "subscribe", `The consumer of group "g" stopped: coordinator moved`, cause)
  const fatal = nonRetriable(error)
  assert.equal(fatal.retriable, false)
  assert.equal(fatal.code, "NOT_COORDINATOR")
  assert.equal(fatal.operation, "subscribe")
  assert.equal(fatal.message, `The consumer of group "g" stopped: coordinator moved`)
  assert.equal(fatal.cause, cause)
})
