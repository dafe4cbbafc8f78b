/**
 * Examples stay alive: each runs as a process on the runtime under test, and the README shows
 * the quick-start file verbatim.
 */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { test } from "node:test"
import { startChild } from "./fixtures/child.ts"

const root = new URL("../", import.meta.url)
const quickstart = new URL("actors/quickstart/main.ts", root).pathname

test("The quick-start example produces and consumes on the embedded broker", async () => {
  const child = startChild(quickstart, { NO_COLOR: "1" })
  try {
    assert.equal(await child.exited, 0, child.stderr())
  } finally {
    await child.stop()
  }
  const output = child.lines.join("\n")
  for (const name of ["emma", "bruno", "chen"]) assert.match(output, new RegExp(`${name} got "hello"`))
})

test("The README shows the quick-start example exactly as CI runs it", () => {
  const readme = readFileSync(new URL("README.md", root), "utf8")
  const source = readFileSync(quickstart, "utf8").trim()
  assert.ok(readme.includes("```ts\n" + source + "\n```"), "README.md's quick look is actors/quickstart/main.ts, verbatim")
})

test("The exactly-once example's output appears once per order although a handler died after producing", async () => {
  const child = startChild(new URL("actors/exactly_once/main.ts", root).pathname, { NO_COLOR: "1" })
  try {
    assert.equal(await child.exited, 0, child.stderr())
  } finally {
    await child.stop()
  }
  const summary = child.lines.find((line) => line.includes("orders in: 20"))
  assert.ok(summary !== undefined, child.lines.join("\n"))
  assert.match(summary, /priced orders out: 20, 20 distinct; ledger rows: 20; handler runs: (\d+)/)
  // The records of the aborted transaction ran again: more runs than orders.
  assert.ok(Number(/handler runs: (\d+)/.exec(summary)![1]) > 20, summary)
})
