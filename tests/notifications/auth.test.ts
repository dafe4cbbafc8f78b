/**
 * Authorization: a bearer token per user; 401 without one or with a wrong one, 403 for another
 * user's notifications; `?token=` only on the live stream; tokens never echoed back.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Redacted } from "effect"
import * as Users from "../../actors/notifications/Users.ts"
import { bearer, openStream, postJson, type RunningApp, send, tokens, onEveryTransport, withApp } from "./fixtures.ts"

const expect = async (response: Response, status: number) => {
  const text = await response.text()
  assert.equal(response.status, status, text)
  return { text, body: JSON.parse(text) as { error: string } }
}

const requests = (app: RunningApp) => ({
  post: (headers: Record<string, string>) =>
    fetch(`${app.url}/notifications`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ fromId: 2, toId: 1, message: "hi" }),
    }),
  list: (headers: Record<string, string>, userId = 1, query = "") =>
    fetch(`${app.url}/users/${userId}/notifications${query}`, { headers }),
  stream: (headers: Record<string, string>, userId = 1, query = "") =>
    fetch(`${app.url}/users/${userId}/notifications/stream${query}`, { headers }),
})

onEveryTransport("Without a token every user endpoint is a 401 with a Bearer challenge", (transport) =>
  withApp(async (app) => {
    const r = requests(app)
    for (const response of [await r.post({}), await r.list({}), await r.stream({}), await postJson(app, "/likes", { postId: "p", authorId: 1 })]) {
      const { body } = await expect(response, 401)
      assert.equal(body.error, "Missing bearer token: send Authorization: Bearer <token>")
      assert.equal(response.headers.get("www-authenticate"), `Bearer realm="notifications"`)
    }
  }, transport))

onEveryTransport("A wrong or malformed token is a 401, and the token is never echoed", (transport) =>
  withApp(async (app) => {
    const r = requests(app)
    const wrong = "wrong-token-value-123"
    for (
      const headers of [
        bearer(wrong),
        bearer(`${tokens.emma}x`),
        bearer(tokens.emma.slice(0, -1)),
        { authorization: `Basic ${btoa(`emma:${tokens.emma}`)}` },
        { authorization: "Bearer" },
      ]
    ) {
      for (const response of [await r.post(headers), await r.list(headers), await r.stream(headers)]) {
        const { text, body } = await expect(response, 401)
        assert.equal(body.error, "Invalid bearer token")
        assert.match(response.headers.get("www-authenticate") ?? "", /error="invalid_token"/)
        assert.equal(text.includes(wrong) || text.includes("emma-demo"), false)
      }
    }
  }, transport))

onEveryTransport("Reading another user's notifications or stream is a 403", (transport) =>
  withApp(async (app) => {
    const r = requests(app)
    const list = await expect(await r.list(bearer(tokens.bruno), 1), 403)
    assert.equal(list.body.error, "Forbidden: user 2 cannot read the notifications of user 1")
    await expect(await r.stream(bearer(tokens.bruno), 1), 403)
    await expect(await r.stream({}, 1, `?token=${tokens.bruno}`), 403)
    // An id nobody has is someone else's too: no hint whether the user exists.
    await expect(await r.list(bearer(tokens.bruno), 99), 403)
  }, transport))

onEveryTransport("Sending in another user's name is a 403", (transport) =>
  withApp(async (app) => {
    const { body } = await expect(await postJson(app, "/notifications", { fromId: 1, toId: 3, message: "hi" }, tokens.bruno), 403)
    assert.equal(body.error, "Forbidden: user 2 cannot send notifications in the name of user 1")
  }, transport))

onEveryTransport("?token= is accepted on the live stream only", (transport) =>
  withApp(async (app) => {
    const r = requests(app)
    await expect(await r.list({}, 1, `?token=${tokens.emma}`), 401)
    const stream = await openStream(`${app.url}/users/1/notifications/stream?token=${tokens.emma}`)
    try {
      assert.equal(stream.status, 200)
      await send(app, tokens.bruno, { fromId: 2, toId: 1, message: "via query token" })
      assert.equal((await stream.waitFor(1))[0]?.message, "via query token")
    } finally {
      await stream.close()
    }
    // A header, when present, wins: a wrong header is not rescued by a right query token.
    await expect(await r.stream(bearer("wrong-token-value-123"), 1, `?token=${tokens.emma}`), 401)
  }, transport))

onEveryTransport("Configured tokens replace the demo ones", (transport) =>
  withApp(async (app) => {
    const r = requests(app)
    await expect(await r.list(bearer(tokens.emma)), 401)
    assert.equal((await r.list(bearer("emma-configured-token"))).status, 200)
    assert.equal((await r.list(bearer(tokens.bruno), 2)).status, 200, "users left alone keep theirs")
  }, { ...transport, users: { tokens: new Map([[1, Redacted.make("emma-configured-token")], [2, Redacted.make(tokens.bruno)]]) } }))

test("NOTIFY_TOKENS is parsed as id:token pairs, and a bad one is refused without showing it", async () => {
  const parsed = await Effect.runPromise(Users.parseTokens(" 1:first-secret-token , 3:third-secret-token"))
  assert.deepEqual([...parsed].map(([id, token]) => [id, Redacted.value(token)]), [
    [1, "first-secret-token"],
    [3, "third-secret-token"],
  ])
  const failure = async (effect: Effect.Effect<unknown, Users.InvalidUsers>) => (await Effect.runPromise(Effect.flip(effect))).message
  assert.equal(await failure(Users.parseTokens("1:ok-secret-token,nonsense")), `Invalid user configuration: NOTIFY_TOKENS entry 2 is not "id:token"`)
  const short = await failure(Users.make({ tokens: new Map([[1, Redacted.make("short")]]) }))
  assert.equal(short, "Invalid user configuration: the token of user 1 is shorter than 12 characters")
  const unknown = await failure(Users.make({ tokens: new Map([[7, Redacted.make("seventh-secret-token")]]) }))
  assert.equal(unknown, "Invalid user configuration: a token is set for user 7, who does not exist")
  const shared = await failure(Users.make({
    tokens: new Map([[1, Redacted.make("shared-secret-token")], [2, Redacted.make("shared-secret-token")]]),
  }))
  assert.equal(shared.includes("shared-secret"), false)
})
