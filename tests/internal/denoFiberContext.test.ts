/**
 * A long-lived fiber's suspensions keep no memory (issue 11: on Deno each one kept an
 * AsyncResource, ~440 bytes, until the fiber ended; see lib/internal/denoFiberContext.ts).
 * Measured in a child process of this runtime with gc() exposed, as a live heap after a full
 * collection.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { fileURLToPath } from "node:url"
import { spawnTs } from "../faults/runner.ts"

const probe = fileURLToPath(new URL("./denoFiberContext.probe.ts", import.meta.url))
// The leak was ~440 bytes a suspension; noise after a full collection is a few bytes.
const bound = 100

const perSuspension = async (mode: string): Promise<number> => {
  const child = spawnTs(probe, { MODE: mode, SUSPENSIONS: "20000" })
  const code = await child.exited
  assert.equal(code, 0, child.stderr().slice(-2000))
  const line = child.stdout().split("\n").find((l) => l.startsWith("{"))
  assert.ok(line !== undefined, `the probe printed no result: ${child.stdout().slice(-500)}`)
  return (JSON.parse(line) as { perSuspension: number }).perSuspension
}

test("a fiber that suspends 20,000 times keeps no memory per suspension once the workaround is installed", async () => {
  const bytes = await perSuspension("fixed")
  assert.ok(bytes < bound, `${bytes.toFixed(1)} bytes of live heap per suspension (bound ${bound})`)
})

test("the workaround is what keeps it flat: on Deno, without it, each suspension keeps an AsyncResource", async () => {
  const deno = (globalThis as { readonly Deno?: unknown }).Deno !== undefined
  const unfixed = await perSuspension("unfixed")
  // When this fails on Deno, Deno's polyfill no longer chains resources: remove the workaround.
  if (deno) {
    const raw = await perSuspension("raw")
    assert.ok(unfixed > bound && raw > bound, `without the workaround: ${unfixed.toFixed(1)} bytes (Effect), ${raw.toFixed(1)} (AsyncResource alone)`)
  } else assert.ok(unfixed < bound, `${unfixed.toFixed(1)} bytes per suspension without the workaround, off Deno`)
})
