import assert from "node:assert/strict"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { test } from "node:test"
import { Effect, Exit, Metric, Scope } from "effect"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as HttpBody from "effect/http/HttpBody"
import * as SpanExport from "../../lib/internal/spanExport.ts"

/**
 * A collector on a real port. Bodies are JSON arrays of numbers (the "spans"); `answer` decides,
 * per request, when and how to respond. Records what arrived and how many requests overlapped.
 */
const collector = async (answer: (request: number, respond: (status: number) => void) => void) => {
  const received: Array<Array<number>> = []
  let open = 0
  let mostOpen = 0
  let requests = 0
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    open++
    mostOpen = Math.max(mostOpen, open)
    let body = ""
    request.setEncoding("utf8")
    request.on("data", (chunk: string) => body += chunk)
    request.on("end", () => {
      answer(++requests, (status) => {
        if (status === 200) received.push(JSON.parse(body) as Array<number>)
        open--
        response.writeHead(status, { "content-type": "application/json" }).end("{}")
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
    received,
    mostOpen: () => mostOpen,
    requests: () => requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

const options = (url: string, overrides: Partial<SpanExport.Options<number>> = {}): SpanExport.Options<number> => ({
  url,
  maxQueueSize: 100,
  maxExportBatchSize: 10,
  scheduledDelay: "1 hour",
  exportTimeout: "10 seconds",
  shutdownTimeout: "10 seconds",
  body: (items) => HttpBody.text(JSON.stringify(items), "application/json"),
  exporterType: "otlp_http_json_span_exporter",
  ...overrides,
})

/** Runs `use` with an exporter in a scope of its own, then closes the scope (which sends what is queued). */
const withExporter = <A>(
  exportOptions: SpanExport.Options<number>,
  use: (exporter: SpanExport.SpanExport<number>) => Effect.Effect<A>,
  finalizers: "sequential" | "parallel" = "sequential",
) =>
  Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make(finalizers)
    const exporter = yield* SpanExport.make(exportOptions).pipe(Scope.provide(scope))
    const result = yield* use(exporter)
    yield* Scope.close(scope, Exit.void)
    return { result, exporter }
  }).pipe(Effect.provide(FetchHttpClient.layer)))

const waitUntil = (condition: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000 && !condition(); i++) yield* Effect.sleep("10 millis")
    assert.ok(condition(), "condition reached within 10 s")
  })

test("A collector slower than the spans: the queue stays bounded, the surplus is dropped and counted, one request at a time", async () => {
  const held: Array<() => void> = []
  const server = await collector((_request, respond) => held.push(() => respond(200)))
  try {
    const { exporter } = await withExporter(options(server.url), (exporter) =>
      Effect.gen(function*() {
        // The first full batch goes out and is held by the collector; the queue fills behind it.
        for (let span = 0; span < 10; span++) exporter.push(span)
        yield* waitUntil(() => held.length === 1)
        for (let span = 10; span < 5_000; span++) exporter.push(span)
        const stats = exporter.stats()
        assert.equal(stats.queued, 100, "the queue holds its bound, no more")
        assert.equal(stats.dropped, 5_000 - 10 - 100, "everything past the bound is dropped and counted")
        // Drain: the collector answers one request at a time, and another only comes after.
        while (server.received.flat().length < 110) {
          if (held.length > 0) held.shift()!()
          yield* Effect.sleep("5 millis")
        }
        const processed = (yield* Metric.snapshot).filter((metric) =>
          metric.id === "otel.sdk.processor.span.processed" && metric.attributes?.["error.type"] === "queue_full"
        )
        assert.equal(processed.length, 1, "dropped spans are counted in a metric")
        assert.ok((processed[0]!.state as { count: number }).count >= 4_890)
        assert.equal(processed[0]!.attributes?.["otel.component.type"], "batching_span_processor")
        yield* waitUntil(() => exporter.stats().exported === 110)
        const exported = (yield* Metric.snapshot).filter((metric) =>
          metric.id === "otel.sdk.exporter.span.exported" && metric.attributes?.["error.type"] === undefined &&
          metric.attributes?.["otel.component.type"] === "otlp_http_json_span_exporter"
        )
        assert.ok(exported.length >= 1, "sent spans are counted per exporter")
        assert.match(String(exported[0]!.attributes?.["otel.component.name"]), /^otlp_http_json_span_exporter\/\d+$/)
      }))
    assert.equal(server.mostOpen(), 1, "never more than one request in flight")
    assert.deepEqual(server.received.flat(), [...Array.from({ length: 110 }, (_, span) => span)], "the first spans, in order, none twice")
    assert.deepEqual(exporter.stats(), { queued: 0, exported: 110, dropped: 4_890, failed: 0 })
  } finally {
    await server.close()
  }
})

test("A full batch goes out at once, a partial one after the delay, and closing sends what is left", async () => {
  const server = await collector((_request, respond) => respond(200))
  try {
    await withExporter(options(server.url, { scheduledDelay: "200 millis" }), (exporter) =>
      Effect.gen(function*() {
        for (let span = 0; span < 23; span++) exporter.push(span)
        yield* waitUntil(() => server.received.length === 2)
        assert.deepEqual(server.received.map((batch) => batch.length), [10, 10], "two full batches, without waiting")
        yield* waitUntil(() => server.received.length === 3)
        assert.deepEqual(server.received[2], [20, 21, 22], "the rest when the delay passed")
        exporter.push(23)
      }))
    assert.deepEqual(server.received.at(-1), [23], "what was queued at close is sent")
  } finally {
    await server.close()
  }
})

test("A collector's 503 is retried; a batch that keeps failing is counted lost and export goes on", async () => {
  // Request 1 fails once then succeeds on retry (2); requests 3 to 8 all fail (a batch's tries); 9 succeeds.
  const server = await collector((request, respond) => respond(request === 1 || (request >= 3 && request <= 8) ? 503 : 200))
  try {
    const { exporter } = await withExporter(
      options(server.url, { retry: { base: "10 millis", times: 5 } }),
      (exporter) =>
        Effect.gen(function*() {
          for (let span = 0; span < 10; span++) exporter.push(span)
          yield* waitUntil(() => exporter.stats().exported === 10)
          for (let span = 10; span < 20; span++) exporter.push(span)
          yield* waitUntil(() => exporter.stats().failed === 10)
          for (let span = 20; span < 30; span++) exporter.push(span)
          yield* waitUntil(() => exporter.stats().exported === 20)
        }),
    )
    assert.deepEqual(server.received, [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]])
    assert.equal(server.requests(), 9, "one try and five retries for the lost batch, then the next")
    assert.deepEqual(exporter.stats(), { queued: 0, exported: 20, dropped: 0, failed: 10 })
  } finally {
    await server.close()
  }
})

test("A batch that cannot be encoded is counted lost; the exporter goes on with the next", async () => {
  const server = await collector((_request, respond) => respond(200))
  try {
    const unencodable = (items: ReadonlyArray<number>) => {
      if (items.includes(13)) throw new Error("a span that cannot be written")
      return HttpBody.text(JSON.stringify(items), "application/json")
    }
    const { exporter } = await withExporter(options(server.url, { body: unencodable }), (exporter) =>
      Effect.gen(function*() {
        for (let span = 0; span < 30; span++) exporter.push(span)
        yield* waitUntil(() => exporter.stats().exported === 20)
      }))
    assert.deepEqual(server.received, [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29]])
    assert.deepEqual(exporter.stats(), { queued: 0, exported: 20, dropped: 0, failed: 10 })
  } finally {
    await server.close()
  }
})

test("Closing sends what is queued even when the scope runs its finalizers concurrently", async () => {
  const server = await collector((_request, respond) => respond(200))
  try {
    await withExporter(options(server.url), (exporter) =>
      Effect.sync(() => {
        for (let span = 0; span < 5; span++) exporter.push(span)
      }), "parallel")
    assert.deepEqual(server.received, [[0, 1, 2, 3, 4]])
  } finally {
    await server.close()
  }
})
