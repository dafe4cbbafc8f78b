/**
 * Every HTTP adapter this runtime can use (its own, and `node:http`, which Bun and Deno provide
 * too) serves the same handler the same way, and stops promptly with clients still connected.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { available, runtime } from "../../actors/notifications/serve/Server.ts"
import { within } from "./child.ts"
import { bearer, listAtLeast, openStream, send, startApp, tokens } from "./fixtures.ts"

for (const adapter of available) {
  test(`The ${adapter} adapter on ${runtime} serves the API and a live stream, and stops promptly with them open`, async () => {
    const app = await startApp({ adapter })
    let closed = false
    try {
      const stream = await openStream(`${app.url}/users/1/notifications/stream`, bearer(tokens.emma))
      const id = await send(app, tokens.bruno, { fromId: 2, toId: 1, message: `via ${adapter}` })
      assert.equal((await stream.waitFor(1))[0]?.id, id)
      assert.equal((await listAtLeast(app, 1, tokens.emma, 1))[0]?.message, `via ${adapter}`)

      const tooLarge = await fetch(`${app.url}/notifications`, {
        method: "POST",
        headers: { ...bearer(tokens.bruno), "content-type": "application/json" },
        body: new ReadableStream({
          start: (controller) => {
            for (let i = 0; i < 20; i++) controller.enqueue(new TextEncoder().encode("x".repeat(1024)))
            controller.close()
          },
        }),
        duplex: "half",
      } as RequestInit)
      assert.equal(tooLarge.status, 413)
      await tooLarge.body?.cancel()

      // The stream is open and the fetch connections are idle keep-alives: neither holds the stop.
      const started = Date.now()
      await app.close()
      closed = true
      assert.ok(Date.now() - started < 5_000, `stopped in ${Date.now() - started} ms`)
      await within(stream.ended, 2_000, "The stream ending")
      await assert.rejects(fetch(`${app.url}/healthz`), "the listener is closed")
    } finally {
      if (!closed) await app.close()
    }
  })
}
