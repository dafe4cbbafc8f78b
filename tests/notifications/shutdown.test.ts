/**
 * The app as a process: `main.ts` starts on this runtime, serves, and on SIGTERM finishes what it
 * was doing, ends its live streams and exits 0 within its deadline, leaving no process behind.
 */
import assert from "node:assert/strict"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { test } from "node:test"
import { isRunning, startChild, within } from "./child.ts"
import { openStream, tokens } from "./fixtures.ts"

const main = "actors/notifications/main.ts"
// The embedded broker, whatever the test run's environment says.
const env = { PORT: "0", HOST: "127.0.0.1", KAFKA_BROKERS: "", NOTIFY_TOKENS: "" }

test("main.ts shuts down gracefully on SIGTERM: exit 0 within the deadline, streams ended, no process left", async () => {
  const child = startChild(main, env)
  try {
    const [, url] = await child.waitForLine(/Partita notifications: (http:\/\/\S+)/, 60_000)
    assert.match(child.stdout(), /curl -i -X POST http:\/\/127\.0\.0\.1:\d+\/notifications/, "prints example curl commands")

    const stream = await openStream(`${url}/users/1/notifications/stream?token=${tokens.emma}`)
    const posted = await fetch(`${url}/notifications`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokens.bruno}`, "content-type": "application/json" },
      body: JSON.stringify({ fromId: 2, toId: 1, message: "before shutdown" }),
    })
    assert.equal(posted.status, 202)
    assert.equal((await stream.waitFor(1))[0]?.message, "before shutdown")

    const started = Date.now()
    child.kill("SIGTERM")
    const code = await within(child.exited, 20_000, "Shutdown")
    assert.equal(code, 0, `exit code; stderr:\n${child.stderr()}`)
    assert.ok(Date.now() - started < 20_000)
    await within(stream.ended, 5_000, "The live stream ending")
    assert.equal(isRunning(child.pid), false, "the process is gone")
    assert.match(child.stderr(), /Received SIGTERM: shutting down gracefully/)
    assert.doesNotMatch(child.stderr(), /\n\s+at |Error:/, "no failure on the way out")
    await assert.rejects(fetch(`${url}/healthz`), "the port is closed")
  } finally {
    await child.stop()
  }
})

test("main.ts exits 1 with a clear message when its port is taken", async () => {
  const blocker = http.createServer()
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
  const port = (blocker.address() as AddressInfo).port
  const child = startChild(main, { ...env, PORT: String(port) })
  try {
    const code = await within(child.exited, 60_000, "Exiting")
    assert.equal(code, 1)
    assert.match(child.stderr(), new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${port}`))
    assert.equal(isRunning(child.pid), false)
  } finally {
    await child.stop()
    await new Promise((resolve) => blocker.close(resolve))
  }
})
