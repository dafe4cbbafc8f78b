/**
 * A probe, not a test: what one fiber suspension and resumption costs, on the runtime it runs
 * on, with plain Effect and without it, to tell where Deno's cost comes from (issue 12,
 * Performance). Prints one JSON line of microseconds per suspension for each mode:
 * - `effectYield`: a fiber doing `Effect.yieldNow` in a loop (Effect's scheduler: setImmediate,
 *   and an `AsyncResource` captured per suspension, resumed in `runInAsyncScope`);
 * - `effectYieldFixed`: the same with lib/internal/denoFiberContext.ts installed (Deno only:
 *   it skips `runInAsyncScope` for Effect's fiber resources);
 * - `effectAsync`: a fiber waiting on `Effect.callback` resumed from a `setImmediate` the
 *   waiter itself scheduled (a suspension on something outside the fiber);
 * - `setImmediate`: a plain loop awaiting setImmediate, no Effect;
 * - `asyncResource`: setImmediate plus what Effect does per suspension (`new AsyncResource`,
 *   `runInAsyncScope`, `emitDestroy`), no Effect.
 *
 *   deno run -A tests/internal/denoSuspend.probe.ts    (bun / node likewise; N=200000)
 *
 * Measured (Deno 2.9.6, Node 22.23, 2 shared cores, medians of 3, µs per suspension):
 * setImmediate 1.65 / 1.52 (Deno / Node), asyncResource 4.7 / 1.6, effectYield 6.7 / 2.4,
 * effectAsync 3.9 / 1.8, and with the workaround effectYieldFixed 2.1, effectAsyncFixed 1.7.
 * Most of Deno's cost is the resource created inside another one's `runInAsyncScope` (a flat
 * create / run / destroy, without the chain, costs about 0.9 µs on Deno and 0.2 µs on Node): the
 * chain denoFiberContext.ts documents costs time as well as memory. With the workaround a fiber suspends on Deno as fast
 * as on Node, and a partition actor suspends once per chunk of records, not per record.
 */
import process from "node:process"
import { Effect } from "effect"
import * as DenoFiberContext from "../../lib/internal/denoFiberContext.ts"

const n = Number(process.env["N"] ?? "200000")
const { AsyncResource } = process.getBuiltinModule("node:async_hooks")

const timed = async (run: () => Promise<unknown>): Promise<number> => {
  await run() // warm-up
  const start = performance.now()
  await run()
  return Math.round(((performance.now() - start) * 1000 / n) * 100) / 100
}

const effectYield = () =>
  Effect.runPromise(Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* Effect.yieldNow
  }))
const effectAsync = () =>
  Effect.runPromise(Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* Effect.callback<void>((resume) => void setImmediate(() => resume(Effect.void)))
  }))
const plainImmediate = async () => {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}
const withResource = async () => {
  let resource = new AsyncResource("probe")
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve) => setImmediate(resolve))
    const previous = resource
    previous.runInAsyncScope(() => (resource = new AsyncResource("probe")))
    previous.emitDestroy()
  }
}

const result: Record<string, number | string> = { runtime: "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node" }
result["setImmediate"] = await timed(plainImmediate)
result["asyncResource"] = await timed(withResource)
result["effectYield"] = await timed(effectYield)
result["effectAsync"] = await timed(effectAsync)
if (DenoFiberContext.install()) {
  result["effectYieldFixed"] = await timed(effectYield)
  result["effectAsyncFixed"] = await timed(effectAsync)
}
process.stdout.write(JSON.stringify(result) + "\n")
