/**
 * The actors behind the API: the worker stores each notification once however often its record
 * arrives, keeps each recipient's notifications in order, and dead-letters what it cannot read;
 * the fan-out derives its notifications from the record, so handling a record again changes
 * nothing.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect } from "effect"
import { Codec, MemoryTransport, Producer, Transport } from "../../mod.ts"
import { workerGroup } from "../../actors/notifications/App.ts"
import { Notification } from "../../actors/notifications/Domain.ts"
import { Topics } from "../../actors/notifications/Topics.ts"
import { headerText, readAll } from "../fixtures/actors.ts"
import { text } from "../fixtures/effect.ts"
import { eventually, list, listAtLeast, metric, openStream, postJson, send, tokens, withApp } from "./fixtures.ts"

const users = [{ id: 1, name: "Emma" }, { id: 2, name: "Bruno" }, { id: 3, name: "Chen" }] as const

const notification = (i: number, to: { id: number; name: string }): Notification => ({
  id: `n-${i}`,
  from: users[1],
  to,
  message: `#${i}`,
  createdAt: new Date(1_700_000_000_000 + i).toISOString(),
})

/** Makes every commit fail from now on, so a rebalance hands the records out again. */
const failCommits = MemoryTransport.MemoryBroker.use((broker) =>
  broker.failNext("commit", "GROUP_AUTHORIZATION_FAILED", { times: Number.POSITIVE_INFINITY })
)

const rebalance = (group: string) => MemoryTransport.MemoryBroker.use((broker) => broker.rebalance(group))

test("The same notification produced twice is stored once and streamed once", () =>
  withApp(async (app) => {
    const stream = await openStream(`${app.url}/users/1/notifications/stream`, { authorization: `Bearer ${tokens.emma}` })
    try {
      const twice = notification(1, users[0])
      await app.run(Effect.gen(function*() {
        const topics = yield* Topics
        yield* topics.notifications.send(twice, { key: "1" })
        yield* topics.notifications.send(twice, { key: "1" })
        yield* topics.notifications.send(notification(2, users[0]), { key: "1" })
      }))
      await listAtLeast(app, 1, tokens.emma, 2)
      await eventually("the copy to be handled", async () => (await metric(app, "notifications_duplicates_total")) === 1 || undefined)
      assert.deepEqual((await list(app, 1, tokens.emma)).notifications.map((n) => n.id), ["n-2", "n-1"])
      assert.deepEqual((await stream.waitFor(2)).map((n) => n.id), ["n-1", "n-2"])
      assert.equal(stream.notifications().length, 2, "the copy was not streamed")
    } finally {
      await stream.close()
    }
  }))

test("Records redelivered after a rebalance are not stored again", () =>
  withApp(async (app) => {
    await app.run(failCommits)
    const ids = [
      await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "first" }),
      await send(app, tokens.chen, { fromId: 3, toId: 1, message: "second" }),
      await send(app, tokens.bruno, { fromId: 2, toId: 3, message: "third" }),
    ]
    await listAtLeast(app, 1, tokens.emma, 2)
    await listAtLeast(app, 3, tokens.chen, 1)
    // Nothing was committed, so the new assignment starts from the beginning again.
    await app.run(rebalance(workerGroup("test")))
    await eventually("all three handled again", async () => (await metric(app, "notifications_duplicates_total")) === 3 || undefined)
    assert.deepEqual((await list(app, 1, tokens.emma)).notifications.map((n) => n.id), [ids[1], ids[0]])
    assert.deepEqual((await list(app, 3, tokens.chen)).notifications.map((n) => n.id), [ids[2]])
    assert.equal(await metric(app, "notifications_stored_total"), 3)
  }))

test("Each recipient's notifications are stored and streamed in the order they were produced", () =>
  withApp(async (app) => {
    const streams = await Promise.all(
      users.map((user) =>
        openStream(`${app.url}/users/${user.id}/notifications/stream`, {
          authorization: `Bearer ${Object.values(tokens)[user.id - 1]}`,
        })
      ),
    )
    try {
      const count = 300
      const codec = Codec.json(Notification)
      // One call, in order: the worker gets them as fast as it can take them, all keys at once.
      await app.run(Effect.gen(function*() {
        const topics = yield* Topics
        const producer = yield* Producer.Producer
        const records: Array<Transport.ProducerRecord> = []
        for (let i = 0; i < count; i++) {
          const value = notification(i, users[i % 3]!)
          records.push({ topic: topics.names.notifications, key: new TextEncoder().encode(String(value.to.id)), value: yield* codec.encode(value) })
        }
        yield* producer.sendAll(records)
      }))
      for (const user of users) {
        const expected = Array.from({ length: count }, (_, i) => i).filter((i) => i % 3 === user.id - 1).map((i) => `#${i}`)
        const streamed = await streams[user.id - 1]!.waitFor(expected.length)
        assert.deepEqual(streamed.map((n) => n.message), expected, `${user.name}'s stream in order`)
        const token = Object.values(tokens)[user.id - 1]!
        const stored = await listAtLeast(app, user.id, token, 100)
        assert.deepEqual(stored.map((n) => n.message), [...expected].reverse(), `${user.name}'s inbox newest first`)
      }
    } finally {
      await Promise.all(streams.map((stream) => stream.close()))
    }
  }))

test("Handling a post-liked record again produces the same notifications, stored once", () =>
  withApp(async (app) => {
    await app.run(failCommits)
    // Bruno's followers are Emma: Chen likes Bruno's post, Emma is told.
    assert.equal((await postJson(app, "/likes", { postId: "p-7", authorId: 2 }, tokens.chen)).status, 202)
    const [first] = await listAtLeast(app, 1, tokens.emma, 1)
    assert.equal(first?.message, "Chen liked Bruno's post p-7.")
    await app.run(rebalance("post-liked-fanout"))
    await eventually("the event fanned out again", async () => (await metric(app, "notifications_fanned_out_total")) === 2 || undefined)
    await eventually("the copy reaching the worker", async () => (await metric(app, "notifications_duplicates_total")) === 1 || undefined)
    assert.deepEqual((await list(app, 1, tokens.emma)).notifications.map((n) => n.id), [first!.id])
  }))

test("Records the actors cannot use go to the dead-letter topics, and the rest flow on", () =>
  withApp(async (app) => {
    await app.run(Effect.gen(function*() {
      const transport = yield* Transport.Transport
      const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value))
      yield* transport.send([
        { topic: "notifications", key: encode(1), value: encode({ id: "bad", to: { id: "1" } }) },
        { topic: "post-liked", key: encode(9), value: encode({ postId: "p-1", authorId: 9, likerId: 2 }) },
      ])
    }))
    await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "still flowing" })
    await listAtLeast(app, 1, tokens.emma, 1)
    const [notificationLetter] = await app.run(Effect.scoped(readAll("notifications.dlq", 1)))
    assert.equal(headerText(notificationLetter!.headers, "partita.dlq.error.tag"), "DecodeError")
    assert.match(headerText(notificationLetter!.headers, "partita.dlq.error.message") ?? "", /at \["to","id"\]/)
    const [likeLetter] = await app.run(Effect.scoped(readAll("post-liked.dlq", 1)))
    assert.equal(headerText(likeLetter!.headers, "partita.dlq.error.tag"), "UnknownUser")
    assert.deepEqual(JSON.parse(text(likeLetter!.value)!), { postId: "p-1", authorId: 9, likerId: 2 }, "unchanged")
    const health = await (await fetch(`${app.url}/healthz`)).json() as { status: string }
    assert.equal(health.status, "ok", "dead letters do not make the app unhealthy")
  }))
