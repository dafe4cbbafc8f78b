/**
 * `GET /`: the live page, plain HTML and JavaScript served inline (no build step), and
 * `GET /users`, the list it picks users from.
 *
 * The page signs in as a user with their token, shows their notifications and keeps them live
 * through an `EventSource`, and sends notifications and likes as that user. `/users` includes the
 * tokens only while every token is a published demo token, so the page can fill them in; once
 * `NOTIFY_TOKENS` sets any, the page asks for the token instead.
 *
 * Everything a user typed is shown with `textContent`, never parsed as HTML, and the Content
 * Security Policy allows only this page's own script (by hash) and requests to this origin.
 */
import { Effect, Option } from "effect"
import { Users } from "../Users.ts"
import { json } from "./Errors.ts"

const style = `
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d1d1f; }
  h1 { font-size: 1.4rem; } h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
  fieldset { border: 1px solid #ddd; border-radius: 8px; padding: .8rem 1rem; display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
  input, select, button { font: inherit; padding: .3rem .5rem; }
  input[name=message] { flex: 1 1 16rem; }
  #status { font-weight: 600; } #status[data-state=live] { color: #0a7d33; } #status[data-state=error] { color: #b00020; }
  #feed { list-style: none; padding: 0; } #feed li { border-bottom: 1px solid #eee; padding: .45rem 0; }
  #feed time { color: #777; font-size: .85em; margin-left: .5rem; }
  .result { color: #555; min-height: 1.3em; } .result[data-ok=false] { color: #b00020; }
`

const script = `
const $ = (id) => document.getElementById(id)
let users = [], demoTokens = {}, me = null, token = "", source = null
const shown = new Map()

function setStatus(text, state) { $("status").textContent = text; $("status").dataset.state = state }
function auth() { return { authorization: "Bearer " + token } }
function nameOf(id) { return (users.find((u) => u.id === id) || { name: "user " + id }).name }

function render() {
  const items = [...shown.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.seq - a.seq)
  $("feed").replaceChildren(...items.map((n) => {
    const li = document.createElement("li")
    li.dataset.id = n.id
    li.append(n.from.name + " → " + n.to.name + ": " + n.message)
    const time = document.createElement("time")
    time.dateTime = n.createdAt
    time.textContent = new Date(n.createdAt).toLocaleTimeString()
    li.append(time)
    return li
  }))
}
let seq = 0
function add(n) { if (!shown.has(n.id)) { shown.set(n.id, { ...n, seq: seq++ }); render() } }

async function describe(response) {
  const body = await response.json().catch(() => ({}))
  const problems = (body.problems || []).map((p) => (p.path.join(".") || "body") + ": " + p.message)
  return [body.error || response.statusText, ...problems].join("; ")
}

async function loadPage() {
  const response = await fetch("/users/" + me + "/notifications?limit=50", { headers: auth() })
  if (!response.ok) throw new Error(await describe(response))
  const { notifications } = await response.json()
  for (const n of notifications.slice().reverse()) add(n)
  return notifications[0] && notifications[0].id
}

async function connect(event) {
  event && event.preventDefault()
  if (source) source.close()
  me = Number($("user").value); token = $("token").value.trim()
  shown.clear(); render()
  setStatus("signing in…", "pending")
  try {
    const newest = await loadPage()
    const url = "/users/" + me + "/notifications/stream?token=" + encodeURIComponent(token) +
      (newest ? "&lastEventId=" + encodeURIComponent(newest) : "")
    source = new EventSource(url)
    source.addEventListener("notification", (e) => add(JSON.parse(e.data)))
    // Read the page again once live: whatever was stored while the stream opened shows too.
    source.addEventListener("open", () => { setStatus("live as " + nameOf(me), "live"); loadPage().catch(() => {}) })
    source.addEventListener("error", () => setStatus(source.readyState === 2 ? "disconnected" : "reconnecting…", "error"))
    const others = users.filter((u) => u.id !== me)
    for (const id of ["to", "author"]) {
      $(id).replaceChildren(...(id === "to" ? others : users).map((u) => new Option(u.name + " (" + u.id + ")", u.id)))
    }
    $("send").disabled = false; $("like").disabled = false
  } catch (error) {
    setStatus("sign-in failed: " + error.message, "error")
  }
}

async function post(path, body, result) {
  result.textContent = "sending…"; result.dataset.ok = ""
  const response = await fetch(path, { method: "POST", headers: { ...auth(), "content-type": "application/json" }, body: JSON.stringify(body) })
  result.dataset.ok = String(response.ok)
  result.textContent = response.ok ? "accepted: " + JSON.stringify(await response.json()) : await describe(response)
}

$("signin").addEventListener("submit", connect)
$("user").addEventListener("change", () => { $("token").value = demoTokens[$("user").value] || "" })
$("compose").addEventListener("submit", (e) => {
  e.preventDefault()
  post("/notifications", { fromId: me, toId: Number($("to").value), message: $("message").value }, $("send-result"))
    .then(() => { if ($("send-result").dataset.ok === "true") $("message").value = "" })
})
$("likes").addEventListener("submit", (e) => {
  e.preventDefault()
  post("/likes", { postId: $("post").value, authorId: Number($("author").value) }, $("like-result"))
})

fetch("/users").then((r) => r.json()).then((body) => {
  users = body.users; demoTokens = body.demoTokens || {}
  $("user").replaceChildren(...users.map((u) => new Option(u.name + " (" + u.id + ")", u.id)))
  $("token").value = demoTokens[$("user").value] || ""
  $("demo-note").hidden = !body.demoTokens
  $("connect").disabled = false
})
`

const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Partita notifications</title>
<link rel="icon" href="data:,">
<style>${style}</style>
</head>
<body>
<h1>Partita notifications</h1>
<form id="signin">
  <fieldset>
    <label>User <select id="user" name="user"></select></label>
    <label>Token <input id="token" name="token" type="password" autocomplete="off" size="22"></label>
    <button id="connect" disabled>Connect</button>
    <span id="status" data-state="idle">not connected</span>
  </fieldset>
  <p id="demo-note" class="result" hidden>Running with the published demo tokens: they are filled in for you.</p>
</form>
<h2>Send a notification</h2>
<form id="compose">
  <fieldset>
    <label>To <select id="to" name="to"></select></label>
    <input id="message" name="message" placeholder="Message" maxlength="500" required>
    <button id="send" disabled>Send</button>
  </fieldset>
  <p id="send-result" class="result"></p>
</form>
<h2>Like a post</h2>
<form id="likes">
  <fieldset>
    <label>Author <select id="author" name="author"></select></label>
    <label>Post <input id="post" name="post" value="post-1" size="10" pattern="[A-Za-z0-9_\\-]{1,64}"></label>
    <button id="like" disabled>Like</button>
  </fieldset>
  <p id="like-result" class="result"></p>
</form>
<h2>Notifications</h2>
<ul id="feed"></ul>
<script>${script}</script>
</body>
</html>
`

const base64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes))

/**
 * The page's response, built once: its Content Security Policy pins the inline script by hash.
 *
 * @category routes
 */
export const make = Effect.gen(function*() {
  const digest = yield* Effect.promise(() => crypto.subtle.digest("SHA-256", new TextEncoder().encode(script)))
  const policy = [
    "default-src 'none'",
    `script-src 'sha256-${base64(new Uint8Array(digest))}'`,
    "style-src 'unsafe-inline'",
    "connect-src 'self'",
    "img-src data:",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join("; ")
  return Effect.sync(() =>
    new Response(html, {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": policy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
      },
    })
  )
})

/**
 * `GET /users`: ids and names, and the demo tokens while only those are in use.
 *
 * @category routes
 */
export const users = Effect.map(Users, (directory) =>
  json(200, {
    users: directory.all.map((user) => ({ id: user.id, name: user.name })),
    ...Option.match(directory.demoTokens, {
      onNone: () => ({}),
      onSome: (tokens) => ({ demoTokens: Object.fromEntries(tokens) }),
    }),
  }))
