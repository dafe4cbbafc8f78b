/**
 * Every way a request can be wrong, and the answer it gets: 400 listing each problem with its
 * path, 404 for unknown users and routes, 405, 413, 415, and a 500 that gives nothing away.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Layer, Option } from "effect"
import * as Users from "../../actors/notifications/Users.ts"
import { bearer, postJson, tokens, onEveryTransport, withApp } from "./fixtures.ts"

interface ErrorBody {
  readonly error: string
  readonly problems?: ReadonlyArray<{ readonly path: ReadonlyArray<string | number>; readonly message: string }>
}

const expectError = async (response: Response, status: number): Promise<ErrorBody> => {
  const text = await response.text()
  assert.equal(response.status, status, text)
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/)
  const body = JSON.parse(text) as ErrorBody
  assert.equal(typeof body.error, "string")
  assert.doesNotMatch(text, /\n\s+at |\.ts:\d+/, "no stack trace")
  return body
}

const paths = (body: ErrorBody) => (body.problems ?? []).map((problem) => problem.path.join("."))

onEveryTransport("A JSON body with wrong fields is a 400 listing every problem with its path", (transport) =>
  withApp(async (app) => {
    const body = await expectError(await postJson(app, "/notifications", { fromId: "2", toId: 0, message: "   " }, tokens.bruno), 400)
    assert.equal(body.error, "Invalid request body")
    assert.deepEqual(body.problems, [
      { path: ["fromId"], message: "Expected number" },
      { path: ["toId"], message: "Expected a value greater than 0" },
      { path: ["message"], message: "Expected a value with a length of at least 1" },
    ])
    const missing = await expectError(await postJson(app, "/notifications", {}, tokens.bruno), 400)
    assert.deepEqual(paths(missing), ["fromId", "toId", "message"])
    const fractional = await expectError(await postJson(app, "/notifications", { fromId: 2, toId: 1.5, message: "x" }, tokens.bruno), 400)
    assert.deepEqual(paths(fractional), ["toId"])
    const long = await expectError(await postJson(app, "/notifications", { fromId: 2, toId: 1, message: "x".repeat(501) }, tokens.bruno), 400)
    assert.deepEqual(long.problems, [{ path: ["message"], message: "Expected a value with a length of at most 500" }])
  }, transport))

onEveryTransport("A body that is not a JSON object is a 400 at the root", (transport) =>
  withApp(async (app) => {
    for (const raw of ["{not json", "[1,2]", "\"text\"", ""]) {
      const response = await fetch(`${app.url}/notifications`, {
        method: "POST",
        headers: { ...bearer(tokens.bruno), "content-type": "application/json" },
        body: raw,
      })
      const body = await expectError(response, 400)
      assert.deepEqual(paths(body), [""], raw)
    }
  }, transport))

onEveryTransport("Form fields that are not numbers are a 400 naming the field", (transport) =>
  withApp(async (app) => {
    const response = await fetch(`${app.url}/notifications`, {
      method: "POST",
      headers: { ...bearer(tokens.bruno), "content-type": "application/x-www-form-urlencoded" },
      body: "fromId=2&toId=abc&message=hi",
    })
    const body = await expectError(response, 400)
    assert.deepEqual(paths(body), ["toId"])
  }, transport))

onEveryTransport("Unknown users are a 404 naming each unknown field", (transport) =>
  withApp(async (app) => {
    const body = await expectError(await postJson(app, "/notifications", { fromId: 2, toId: 99, message: "hi" }, tokens.bruno), 404)
    assert.deepEqual(body, { error: "Unknown user", problems: [{ path: ["toId"], message: "No user has id 99" }] })
    const like = await expectError(await postJson(app, "/likes", { postId: "p1", authorId: 42 }, tokens.bruno), 404)
    assert.deepEqual(paths(like), ["authorId"])
  }, transport))

onEveryTransport("A body over 16 KiB is a 413, whether its length is declared or not", (transport) =>
  withApp(async (app) => {
    const big = JSON.stringify({ fromId: 2, toId: 1, message: "x".repeat(17 * 1024) })
    const declared = await fetch(`${app.url}/notifications`, {
      method: "POST",
      headers: { ...bearer(tokens.bruno), "content-type": "application/json" },
      body: big,
    })
    assert.equal((await expectError(declared, 413)).error, "Request body too large: the limit is 16384 bytes")
    // Streamed in chunks with no Content-Length: cut off at the limit.
    const chunks = Array.from({ length: 20 }, () => new TextEncoder().encode("x".repeat(1024)))
    const streamed = await fetch(`${app.url}/notifications`, {
      method: "POST",
      headers: { ...bearer(tokens.bruno), "content-type": "application/json" },
      body: new ReadableStream({
        pull: (controller) => {
          const chunk = chunks.shift()
          if (chunk === undefined) controller.close()
          else controller.enqueue(chunk)
        },
      }),
      duplex: "half",
    } as RequestInit)
    await expectError(streamed, 413)
    // Just under the limit is fine (and then a 400 for what it says, not a 413).
    const under = JSON.stringify({ fromId: 2, toId: 1, message: "x".repeat(16 * 1024 - 60) })
    assert.equal(under.length < 16 * 1024, true)
    await expectError(await postJson(app, "/notifications", JSON.parse(under), tokens.bruno), 400)
  }, transport))

onEveryTransport("A body in another format is a 415", (transport) =>
  withApp(async (app) => {
    for (const contentType of ["text/plain", undefined]) {
      const response = await fetch(`${app.url}/notifications`, {
        method: "POST",
        headers: { ...bearer(tokens.bruno), ...(contentType === undefined ? {} : { "content-type": contentType }) },
        body: new Blob([`{"fromId":2,"toId":1,"message":"hi"}`]),
      })
      const body = await expectError(response, 415)
      assert.match(body.error, /^Unsupported content type "(text\/plain|none)": send application\/json/)
    }
  }, transport))

onEveryTransport("Bad query parameters are a 400 naming each", (transport) =>
  withApp(async (app) => {
    const get = (query: string) => fetch(`${app.url}/users/1/notifications${query}`, { headers: bearer(tokens.emma) })
    assert.deepEqual(paths(await expectError(await get("?limit=0"), 400)), ["limit"])
    assert.deepEqual(paths(await expectError(await get("?limit=101"), 400)), ["limit"])
    assert.deepEqual(paths(await expectError(await get("?limit=ten&before="), 400)), ["limit", "before"])
    const cursor = await expectError(await get("?before=no-such-id"), 400)
    assert.deepEqual(cursor.problems, [{ path: ["before"], message: `No notification "no-such-id" to page from` }])
  }, transport))

onEveryTransport("Unknown routes are a 404 and wrong methods a 405 with Allow", (transport) =>
  withApp(async (app) => {
    assert.match((await expectError(await fetch(`${app.url}/nope`), 404)).error, /^No route for GET \/nope$/)
    assert.equal((await fetch(`${app.url}/users/abc/notifications`, { headers: bearer(tokens.emma) })).status, 404)
    const wrong = await fetch(`${app.url}/notifications`)
    await expectError(wrong, 405)
    assert.equal(wrong.headers.get("allow"), "POST")
    const deleted = await fetch(`${app.url}/users/1/notifications`, { method: "DELETE", headers: bearer(tokens.emma) })
    await expectError(deleted, 405)
    assert.equal(deleted.headers.get("allow"), "GET")
  }, transport))

test("A defect is a 500 that says nothing about it", async () => {
  // A directory whose token check dies: the route fails with a defect, not an HttpError.
  const broken = Layer.effect(
    Users.Users,
    Effect.map(Users.make(), (users) => ({
      ...users,
      authenticate: () => Effect.die(new Error("secret internals at /srv/db")),
      demoTokens: Option.none(),
    })),
  )
  await withApp(async (app) => {
    const response = await fetch(`${app.url}/users/1/notifications`, { headers: bearer(tokens.emma) })
    const text = await response.text()
    assert.equal(response.status, 500)
    assert.deepEqual(JSON.parse(text), { error: "Internal error: the failure was logged" })
    assert.doesNotMatch(text, /secret|srv|Error/)
  }, { directory: broken })
})
