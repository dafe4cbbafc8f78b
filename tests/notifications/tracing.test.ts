/**
 * The app traced to the real Jaeger: one POST is followed from the HTTP request through the
 * produce to the worker actor, in one trace.
 */
import assert from "node:assert/strict"
import { jaegerQueryUrl, jaegerTest, uniqueName } from "../fixtures/services.ts"
import { startChild, within } from "./child.ts"
import { tokens } from "./fixtures.ts"

interface JaegerSpan {
  readonly spanID: string
  readonly operationName: string
  readonly references: ReadonlyArray<{ readonly refType: string; readonly spanID: string }>
}

jaegerTest("With OTEL_EXPORTER_OTLP_ENDPOINT set, a notification is one trace from the HTTP request to the worker", async (endpoint) => {
  const service = uniqueName("notifications-traced")
  const child = startChild("actors/notifications/main.ts", {
    PORT: "0",
    HOST: "127.0.0.1",
    KAFKA_BROKERS: "",
    NOTIFY_TOKENS: "",
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_SERVICE_NAME: service,
  })
  try {
    const [, url] = await child.waitForLine(/Partita notifications: (http:\/\/\S+)/, 60_000)
    const posted = await fetch(`${url}/notifications`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokens.bruno}`, "content-type": "application/json" },
      body: JSON.stringify({ fromId: 2, toId: 1, message: "traced" }),
    })
    assert.equal(posted.status, 202)
    let spans: ReadonlyArray<JaegerSpan> = []
    for (let attempt = 0; attempt < 100 && spans.length === 0; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 200))
      const body = await fetch(`${jaegerQueryUrl()}/api/traces?service=${service}`).then((r) => r.json()) as {
        data: ReadonlyArray<{ spans: ReadonlyArray<JaegerSpan> }>
      }
      const trace = body.data.find((t) => t.spans.some((s) => s.operationName === "process notifications"))
      if (trace?.spans.some((s) => s.operationName === "POST /notifications")) spans = trace.spans
    }
    const find = (name: string) => {
      const span = spans.find((s) => s.operationName === name)
      assert.ok(span, `the trace has "${name}"`)
      return span
    }
    const parent = (span: JaegerSpan) => span.references.find((r) => r.refType === "CHILD_OF")?.spanID
    const request = find("POST /notifications")
    const send = find("send notifications")
    const process = find("process notifications")
    assert.equal(parent(send), request.spanID)
    assert.equal(parent(process), send.spanID)
  } finally {
    child.kill("SIGTERM")
    await within(child.exited, 20_000, "Shutdown").catch(() => undefined)
    await child.stop()
  }
})
