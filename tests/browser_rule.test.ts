/**
 * The rule for browser tests where Chromium is missing, held for both kinds of browser test (on
 * the embedded broker and on Kafka): outside CI they skip with one loud line; under `CI=true`
 * they fail. A fresh machine following the README has no Chromium, and `npm test` must be green
 * there.
 */
import assert from "node:assert/strict"
import { spawnSync } from "node:child_process"
import process from "node:process"
import { test } from "node:test"

const probe = new URL("./fixtures/browser_probe.ts", import.meta.url).pathname

/** Runs the probe file under this runtime's own test runner, with Chromium pointed at nothing. */
const runProbe = (ci: boolean) => {
  const args = process.versions["bun"] !== undefined
    ? ["test", probe]
    : "Deno" in globalThis
    ? ["test", "--allow-all", "--no-check", probe]
    : ["--test", probe]
  const env: Record<string, string> = { ...process.env as Record<string, string>, PARTITA_CHROMIUM: "/nonexistent/chromium", NO_COLOR: "1" }
  // Set, not deleted: Deno's child_process adds the env given to its own rather than replacing it.
  env["CI"] = ci ? "true" : "false"
  // node --test marks its children; a child that sees the mark will not run its own tests.
  delete env["NODE_TEST_CONTEXT"]
  // Either way the Kafka half must not be what decides: with brokers set or not, Chromium's rule comes first.
  env["KAFKA_BROKERS"] = "127.0.0.1:1"
  const result = spawnSync(process.execPath, args, { env, encoding: "utf8", timeout: 60_000 })
  return { code: result.status, output: `${result.stdout}${result.stderr}` }
}

test("Outside CI, browser tests on both brokers skip where Chromium is missing, with one loud line", () => {
  const { code, output } = runProbe(false)
  assert.equal(code, 0, output)
  assert.equal(output.split("*** SKIPPING browser tests").length - 1, 1, output)
  assert.match(output, /apt-get install -y chromium/)
  assert.doesNotMatch(output, /Chromium is required/)
})

test("Under CI=true, browser tests on both brokers fail where Chromium is missing", () => {
  const { code, output } = runProbe(true)
  assert.notEqual(code, 0, output)
  assert.equal(output.split("Chromium is required under CI=true").length - 1 >= 2, true, output)
})
