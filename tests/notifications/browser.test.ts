/**
 * The live page in a real headless Chromium: two pages signed in as two users; what one sends
 * appears in the other's feed as it happens, through the API, the broker, the worker and the
 * live stream. A like travels the two-hop pipeline to the page too.
 */
import assert from "node:assert/strict"
import type { BrowserContext, Page } from "playwright-core"
import { chromiumKafkaTest, chromiumTest } from "../fixtures/chromium.ts"
import { onKafka, type RunningApp, type StartOptions, withApp } from "./fixtures.ts"

/** Declares a browser test on the embedded broker and on the real broker. */
const inBrowserOnEveryTransport = (name: string, body: (browser: BrowserContext, transport: StartOptions) => Promise<void>) => {
  chromiumTest(`${name} (embedded broker)`, (browser) => body(browser, {}))
  chromiumKafkaTest(`${name} (Kafka)`, (browser, brokers) => body(browser, onKafka(brokers)))
}

/** Opens the page and signs in as `userId` with the token the page fills in. */
const signIn = async (browser: BrowserContext, app: RunningApp, userId: number, problems: Array<string>): Promise<Page> => {
  const page = await browser.newPage()
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`))
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`)
  })
  await page.goto(`${app.url}/`)
  await page.waitForSelector("#connect:not([disabled])")
  await page.selectOption("#user", String(userId))
  await page.click("#connect")
  await page.waitForSelector(`#status[data-state="live"]`)
  return page
}

inBrowserOnEveryTransport("The live page shows a notification sent from another page as it arrives", async (browser, transport) => {
  await withApp(async (app) => {
    const problems: Array<string> = []
    const emma = await signIn(browser, app, 1, problems)
    assert.equal(await emma.textContent("#status"), "live as Emma")
    const bruno = await signIn(browser, app, 2, problems)

    await bruno.selectOption("#to", "1")
    await bruno.fill("#message", "Hello Emma, from the browser")
    await bruno.click("#send")
    await bruno.waitForSelector(`#send-result[data-ok="true"]`)
    const item = await emma.waitForSelector("#feed li", { timeout: 10_000 })
    assert.match(await item.textContent() ?? "", /^Bruno → Emma: Hello Emma, from the browser/)

    // Two hops: Bruno likes Chen's post; Chen's followers are Emma and Bruno, the liker is left out.
    await bruno.selectOption("#author", "3")
    await bruno.fill("#post", "post-9")
    await bruno.click("#like")
    await bruno.waitForSelector(`#like-result[data-ok="true"]`)
    await emma.waitForFunction(() => document.querySelectorAll("#feed li").length === 2, undefined, { timeout: 10_000 })
    const feed = await emma.$$eval("#feed li", (items) => items.map((li) => li.firstChild?.textContent))
    assert.deepEqual(feed, ["Bruno → Emma: Bruno liked Chen's post post-9.", "Bruno → Emma: Hello Emma, from the browser"])
    assert.equal(await bruno.$$eval("#feed li", (items) => items.length), 0, "Bruno's own feed stays empty")

    // A fresh page reads what is stored.
    await emma.reload()
    await emma.waitForSelector("#connect:not([disabled])")
    await emma.click("#connect")
    await emma.waitForFunction(() => document.querySelectorAll("#feed li").length === 2)
    assert.deepEqual(problems, [], "no script errors (the Content Security Policy let the page's script run)")
  }, transport)
})

inBrowserOnEveryTransport("The live page says why when the token is wrong, and a bad message is explained", async (browser, transport) => {
  await withApp(async (app) => {
    const problems: Array<string> = []
    const page = await signIn(browser, app, 2, problems)
    await page.fill("#message", "   ")
    // The input's own `required` check passes on spaces; the API's trimming rejects them.
    await page.click("#send")
    await page.waitForSelector(`#send-result[data-ok="false"]`)
    assert.match(await page.textContent("#send-result") ?? "", /Invalid request body; message: Expected a value with a length of at least 1/)

    await page.fill("#token", "not-the-right-token")
    await page.click("#connect")
    await page.waitForSelector(`#status[data-state="error"]`)
    assert.equal(await page.textContent("#status"), "sign-in failed: Invalid bearer token")
    // The browser logs the failed request itself; nothing else went wrong.
    assert.deepEqual(problems.filter((problem) => !/status of 40[01]/.test(problem)), [])
  }, transport)
})
