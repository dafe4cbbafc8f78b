/**
 * Child process of denoFiberContext.test.ts (run with gc() exposed): one long-lived fiber
 * suspends SUSPENSIONS times; prints the live heap's growth per suspension after a full
 * collection, as `{"perSuspension": bytes}`. MODE: "fixed" installs the workaround first,
 * "unfixed" does not, "raw" is the Deno bug without Effect (an AsyncResource created inside
 * another's runInAsyncScope, as Effect's fibers do at each suspension).
 */
import process from "node:process"
import { Effect } from "effect"
import * as DenoFiberContext from "../../lib/internal/denoFiberContext.ts"

const mode = process.env["MODE"] ?? "fixed"
const suspensions = Number(process.env["SUSPENSIONS"] ?? "20000")
const g = globalThis as { readonly gc?: () => void; readonly Bun?: { readonly gc: (force: boolean) => void } }
const live = (): number => {
  if (g.Bun !== undefined) g.Bun.gc(true)
  else g.gc!()
  return process.memoryUsage().heapUsed
}
const warmUp = 2000
let before = 0
let after = 0
// Both readings are taken while the fiber is alive: its chain, if any, goes when it ends.
const measure = (i: number) => {
  if (i === warmUp) before = live()
  if (i === suspensions) after = live()
}

if (mode === "raw") {
  const { AsyncResource } = process.getBuiltinModule("node:async_hooks")
  let resource = new AsyncResource("probe")
  for (let i = 1; i <= suspensions; i++) {
    await null
    const previous = resource
    previous.runInAsyncScope(() => (resource = new AsyncResource("probe")))
    previous.emitDestroy()
    measure(i)
  }
} else {
  if (mode === "fixed") DenoFiberContext.install()
  await Effect.runPromise(Effect.gen(function*() {
    for (let i = 1; i <= suspensions; i++) {
      yield* Effect.yieldNow
      measure(i)
    }
  }))
}
process.stdout.write(JSON.stringify({ perSuspension: (after - before) / (suspensions - warmUp) }) + "\n")
