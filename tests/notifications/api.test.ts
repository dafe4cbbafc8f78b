/**
 * The notification app's API round trip on the embedded broker: post, read, page, stream live,
 * fan out a like, and the health, metrics and page endpoints.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Redacted } from "effect"
import { bearer, list, listAtLeast, metric, openStream, postJson, send, tokens, withApp } from "./fixtures.ts"

const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

test("POST /notifications answers 202 with the id, and the recipient reads the notification back", () =>
  withApp(async (app) => {
    const response = await postJson(app, "/notifications", { fromId: 2, toId: 1, message: "Bruno started following you." }, tokens.bruno)
    assert.equal(response.status, 202)
    assert.equal(response.headers.get("location"), "/users/1/notifications")
    const { id } = await response.json() as { id: string }
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)

    const [notification] = await listAtLeast(app, 1, tokens.emma, 1)
    const { createdAt, ...rest } = notification!
    assert.deepEqual(rest, {
      id,
      from: { id: 2, name: "Bruno" },
      to: { id: 1, name: "Emma" },
      message: "Bruno started following you.",
    })
    assert.match(createdAt, iso)
  }))

test("GET /users/:id/notifications lists newest first, in pages addressed by nextBefore", () =>
  withApp(async (app) => {
    const ids: Array<string> = []
    for (let i = 1; i <= 5; i++) ids.push(await send(app, tokens.chen, { fromId: 3, toId: 1, message: `note ${i}` }))
    await listAtLeast(app, 1, tokens.emma, 5)
    const newestFirst = [...ids].reverse()

    const first = await list(app, 1, tokens.emma, "?limit=2")
    assert.deepEqual(first.notifications.map((n) => n.id), newestFirst.slice(0, 2))
    assert.equal(first.nextBefore, newestFirst[1])
    const second = await list(app, 1, tokens.emma, `?limit=2&before=${first.nextBefore}`)
    assert.deepEqual(second.notifications.map((n) => n.id), newestFirst.slice(2, 4))
    const last = await list(app, 1, tokens.emma, `?limit=2&before=${second.nextBefore}`)
    assert.deepEqual(last.notifications.map((n) => n.id), newestFirst.slice(4))
    assert.equal(last.nextBefore, undefined, "the last page says so")
    assert.deepEqual((await list(app, 1, tokens.emma)).notifications.map((n) => n.message), [
      "note 5",
      "note 4",
      "note 3",
      "note 2",
      "note 1",
    ])
    assert.deepEqual((await list(app, 2, tokens.bruno)).notifications, [], "nobody else got them")
  }))

test("Form fields are accepted like JSON, URL-encoded and multipart", () =>
  withApp(async (app) => {
    const urlEncoded = await fetch(`${app.url}/notifications`, {
      method: "POST",
      headers: { ...bearer(tokens.bruno), "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ fromId: "2", toId: "3", message: "  from a form  " }),
    })
    assert.equal(urlEncoded.status, 202)
    const form = new FormData()
    form.append("fromId", "2")
    form.append("toId", "3")
    form.append("message", "multipart")
    const multipart = await fetch(`${app.url}/notifications`, { method: "POST", headers: bearer(tokens.bruno), body: form })
    assert.equal(multipart.status, 202)
    const stored = await listAtLeast(app, 3, tokens.chen, 2)
    assert.deepEqual(stored.map((n) => n.message), ["multipart", "from a form"], "trimmed, newest first")
  }))

test("The live stream delivers each new notification as an event with its id", () =>
  withApp(async (app) => {
    const stream = await openStream(`${app.url}/users/1/notifications/stream`, bearer(tokens.emma))
    try {
      assert.equal(stream.status, 200)
      const sent = [
        await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "one" }),
        await send(app, tokens.chen, { fromId: 3, toId: 1, message: "two" }),
        await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "three" }),
      ]
      await send(app, tokens.bruno, { fromId: 2, toId: 3, message: "for Chen, not Emma" })
      const received = await stream.waitFor(3)
      assert.deepEqual(received.map((n) => n.id), sent)
      assert.deepEqual(received.map((n) => n.message), ["one", "two", "three"])
      assert.deepEqual(stream.events.map((e) => e.id), sent, "each event's id is the notification's")
      await listAtLeast(app, 3, tokens.chen, 1)
      assert.equal(stream.notifications().length, 3, "nothing for another user")
    } finally {
      await stream.close()
    }
  }))

test("The live stream accepts ?token= (for EventSource) and resumes after Last-Event-ID", () =>
  withApp(async (app) => {
    const first = await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "seen" })
    const second = await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "missed 1" })
    const third = await send(app, tokens.chen, { fromId: 3, toId: 1, message: "missed 2" })
    await listAtLeast(app, 1, tokens.emma, 3)
    const stream = await openStream(`${app.url}/users/1/notifications/stream?token=${tokens.emma}`, { "last-event-id": first })
    try {
      const fourth = await send(app, tokens.chen, { fromId: 3, toId: 1, message: "live" })
      const received = await stream.waitFor(3)
      assert.deepEqual(received.map((n) => n.id), [second, third, fourth], "the missed ones first, then live, no repeats")
    } finally {
      await stream.close()
    }
  }))

test("A stream the client closes unsubscribes, and the open-streams gauge returns to zero", () =>
  withApp(async (app) => {
    const streams = await Promise.all([1, 2].map(() => openStream(`${app.url}/users/2/notifications/stream`, bearer(tokens.bruno))))
    assert.equal(await metric(app, "sse_streams_open"), 2)
    await Promise.all(streams.map((stream) => stream.close()))
    const deadline = Date.now() + 5000
    while ((await metric(app, "sse_streams_open")) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    assert.equal(await metric(app, "sse_streams_open"), 0)
  }))

test("A like reaches the author's followers through both hops, and not the liker", () =>
  withApp(async (app) => {
    // Emma's followers are Bruno and Chen; Bruno likes her post, so only Chen is told.
    const response = await postJson(app, "/likes", { postId: "post-42", authorId: 1 }, tokens.bruno)
    assert.equal(response.status, 202)
    assert.deepEqual(await response.json(), { postId: "post-42" })
    const [notification] = await listAtLeast(app, 3, tokens.chen, 1)
    assert.deepEqual(
      { from: notification!.from, to: notification!.to, message: notification!.message },
      { from: { id: 2, name: "Bruno" }, to: { id: 3, name: "Chen" }, message: "Bruno liked Emma's post post-42." },
    )
    assert.match(notification!.id, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "a derived (v5) id")
    assert.equal(await metric(app, "notifications_fanned_out_total"), 1)
    assert.deepEqual((await list(app, 2, tokens.bruno)).notifications, [])
    assert.deepEqual((await list(app, 1, tokens.emma)).notifications, [], "likes notify followers, as asked")
  }))

test("healthz and readyz report the actor system healthy, and metrics count what happened", () =>
  withApp(async (app) => {
    const healthz = await fetch(`${app.url}/healthz`)
    assert.equal(healthz.status, 200)
    const health = await healthz.json() as {
      status: string
      members: ReadonlyArray<{ actor: string; member: boolean }>
      partitions: ReadonlyArray<{ actor: string }>
    }
    assert.equal(health.status, "ok")
    assert.deepEqual(
      health.members.map((m) => [m.actor, m.member]).sort(),
      [["notification-worker", true], ["post-liked-fanout", true]],
      "every actor is in its group",
    )
    assert.deepEqual(
      [...new Set(health.partitions.map((p) => p.actor))].sort(),
      ["notification-worker", "post-liked-fanout"],
    )
    const readyz = await fetch(`${app.url}/readyz`)
    assert.equal(readyz.status, 200)
    assert.deepEqual(await readyz.json(), { status: "ready" })

    await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "counted" })
    await listAtLeast(app, 1, tokens.emma, 1)
    const metrics = await fetch(`${app.url}/metrics`)
    assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain/)
    const text = await metrics.text()
    assert.match(text, /^notifications_accepted_total 1$/m)
    assert.match(text, /^notifications_stored_total 1$/m)
    assert.match(text, /^http_requests_total\{route="send",status="202"\} 1$/m)
    assert.match(text, /^partita_healthy 1$/m)
    assert.match(text, /^partita_member\{actor="notification-worker"\} 1$/m)
    for (const line of text.split("\n").filter((l) => l !== "" && !l.startsWith("#"))) {
      assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? \S+$/, line)
    }
  }))

test("GET / serves the live page with a Content Security Policy that pins its script", () =>
  withApp(async (app) => {
    const response = await fetch(`${app.url}/`)
    assert.equal(response.status, 200)
    assert.match(response.headers.get("content-type") ?? "", /^text\/html/)
    assert.match(response.headers.get("content-security-policy") ?? "", /script-src 'sha256-[A-Za-z0-9+/=]+'/)
    const html = await response.text()
    assert.match(html, /<title>Partita notifications<\/title>/)
    assert.match(html, /new EventSource\(/)
  }))

test("GET /users lists the users, with their tokens only while the published demo tokens are in use", async () => {
  await withApp(async (app) => {
    const body = await (await fetch(`${app.url}/users`)).json()
    assert.deepEqual(body, {
      users: [{ id: 1, name: "Emma" }, { id: 2, name: "Bruno" }, { id: 3, name: "Chen" }],
      demoTokens: { 1: tokens.emma, 2: tokens.bruno, 3: tokens.chen },
    })
  })
  await withApp(async (app) => {
    const body = await (await fetch(`${app.url}/users`)).json() as Record<string, unknown>
    assert.equal(body["demoTokens"], undefined)
    assert.equal(JSON.stringify(body).includes("demo-token"), false)
  }, {
    users: {
      tokens: new Map([
        [1, Redacted.make("emma-private-token-1")],
        [2, Redacted.make("bruno-demo-token")],
      ]),
    },
  })
})
