/**
 * Smoke test of the real Jaeger: a span sent over OTLP/HTTP comes back from the query API.
 * The Tracing issue's end-to-end tests stand on this.
 */
import assert from "node:assert/strict"
import process from "node:process"
import { jaegerTest, uniqueName } from "./fixtures/services.ts"

const queryUrl = () => (process.env["JAEGER_QUERY_URL"] ?? "http://127.0.0.1:16686").replace(/\/+$/, "")

const hex = (bytes: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("")

jaegerTest("Jaeger stores a span sent over OTLP/HTTP and serves it from the query API", async (endpoint) => {
  const service = uniqueName("partita-smoke")
  const traceId = hex(16)
  const now = BigInt(Date.now()) * 1_000_000n
  const response = await fetch(`${endpoint}/v1/traces`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      resourceSpans: [{
        resource: { attributes: [{ key: "service.name", value: { stringValue: service } }] },
        scopeSpans: [{
          scope: { name: "partita-smoke" },
          spans: [{
            traceId,
            spanId: hex(8),
            name: "smoke",
            kind: 1,
            startTimeUnixNano: String(now),
            endTimeUnixNano: String(now + 1_000_000n),
          }],
        }],
      }],
    }),
  })
  assert.equal(response.status, 200, await response.text())

  // The collector batches before storing: poll briefly.
  for (let attempt = 0; attempt < 50; attempt++) {
    const traces = await fetch(`${queryUrl()}/api/traces?service=${service}`).then((r) => r.json()) as {
      data: Array<{ traceID: string; spans: Array<{ operationName: string }> }>
    }
    if (traces.data.length > 0) {
      assert.equal(traces.data[0]?.traceID, traceId)
      assert.deepEqual(traces.data[0]?.spans.map((span) => span.operationName), ["smoke"])
      return
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.fail(`the span never showed up in Jaeger for service ${service}`)
})
