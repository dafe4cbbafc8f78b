/**
 * The notification app on the real broker named by `KAFKA_BROKERS`, under topic and group names
 * of this run's own: the API round trip in order, a record produced twice stored once, both
 * hops of a like, and `main.ts` shutting down gracefully on SIGTERM.
 */
import assert from "node:assert/strict"
import { Effect } from "effect"
import type { Notification } from "../../actors/notifications/Domain.ts"
import { Topics } from "../../actors/notifications/Topics.ts"
import { kafkaTest, uniqueName } from "../fixtures/services.ts"
import { isRunning, startChild, within } from "./child.ts"
import { bearer, eventually, list, listAtLeast, metric, openStream, postJson, send, onKafka, tokens, withApp } from "./fixtures.ts"

kafkaTest("On Kafka, a posted notification is acknowledged, stored, streamed and read back in order", (brokers) =>
  withApp(async (app) => {
    const stream = await openStream(`${app.url}/users/1/notifications/stream`, bearer(tokens.emma))
    try {
      const ids = [
        await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "Bruno started following you." }),
        await send(app, tokens.chen, { fromId: 3, toId: 1, message: "Chen started following you." }),
        await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "Bruno liked your photo." }),
      ]
      assert.deepEqual((await stream.waitFor(3, 30_000)).map((n) => n.id), ids)
      const stored = await listAtLeast(app, 1, tokens.emma, 3, 30_000)
      assert.deepEqual(stored.map((n) => n.id), [...ids].reverse())
      assert.deepEqual(
        { from: stored[2]!.from, to: stored[2]!.to, message: stored[2]!.message },
        { from: { id: 2, name: "Bruno" }, to: { id: 1, name: "Emma" }, message: "Bruno started following you." },
      )
    } finally {
      await stream.close()
    }
  }, onKafka(brokers)))

kafkaTest("On Kafka, a notification produced twice is stored once", (brokers) =>
  withApp(async (app) => {
    const notification: Notification = {
      id: `twice-${crypto.randomUUID()}`,
      from: { id: 3, name: "Chen" },
      to: { id: 2, name: "Bruno" },
      message: "Only once, please.",
      createdAt: new Date().toISOString(),
    }
    await app.run(Effect.gen(function*() {
      const topics = yield* Topics
      yield* topics.notifications.send(notification, { key: "2" })
      yield* topics.notifications.send(notification, { key: "2" })
    }))
    await eventually("the copy to be handled", async () => (await metric(app, "notifications_duplicates_total")) === 1 || undefined, 30_000)
    assert.deepEqual((await list(app, 2, tokens.bruno)).notifications.map((n) => n.id), [notification.id])
  }, onKafka(brokers)))

kafkaTest("On Kafka, a like travels both hops to the author's followers", (brokers) =>
  withApp(async (app) => {
    assert.equal((await postJson(app, "/likes", { postId: "post-1", authorId: 1 }, tokens.chen)).status, 202)
    const [notification] = await listAtLeast(app, 2, tokens.bruno, 1, 30_000)
    assert.equal(notification?.message, "Chen liked Emma's post post-1.")
    assert.deepEqual((await list(app, 3, tokens.chen)).notifications, [], "not the liker")
  }, onKafka(brokers)))

kafkaTest("On Kafka, main.ts shuts down gracefully on SIGTERM and exits 0", async (brokers) => {
  const child = startChild("actors/notifications/main.ts", {
    PORT: "0",
    HOST: "127.0.0.1",
    NOTIFY_TOKENS: "",
    KAFKA_BROKERS: brokers.join(","),
    NOTIFY_TOPIC_PREFIX: `${uniqueName("notify-main")}.`,
  })
  try {
    const [, url] = await child.waitForLine(/Partita notifications: (http:\/\/\S+)\s+\(broker: kafka/, 60_000)
    const posted = await fetch(`${url}/notifications`, {
      method: "POST",
      headers: { ...bearer(tokens.bruno), "content-type": "application/json" },
      body: JSON.stringify({ fromId: 2, toId: 1, message: "on Kafka" }),
    })
    assert.equal(posted.status, 202)
    child.kill("SIGTERM")
    assert.equal(await within(child.exited, 30_000, "Shutdown"), 0, `stderr:\n${child.stderr()}`)
    assert.equal(isRunning(child.pid), false)
  } finally {
    await child.stop()
  }
})
