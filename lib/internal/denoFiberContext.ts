/**
 * A workaround for a retention chain between Effect fibers and Deno's `AsyncResource` (issue 11,
 * fault scenario F10: the live heap grew by about 0.7 KB per handled record on Deno only).
 *
 * Effect 4 (`FiberImpl.evaluate`) creates an `AsyncResource("effect/Fiber")` at every async
 * suspension of a fiber and resumes the fiber inside that resource's `runInAsyncScope`, so the
 * next suspension creates its resource inside the previous one's scope. Deno 2.9's polyfill
 * (`ext/node/polyfills/async_hooks.ts`) enters the resource into an `AsyncVariable` (its
 * `executionAsyncResource`) in `emitBefore`, so the async context a new resource snapshots maps,
 * in that variable's WeakMap, to the previous resource, whose snapshot maps to the one before:
 * a long-lived fiber (a partition's loop, one suspension per record) keeps every resource it ever
 * suspended on, until the fiber ends. Node and Bun keep the current resource on a stack instead.
 * Reproduction without Effect: tests/internal/denoFiberContext.test.ts, mode "raw".
 *
 * The workaround runs the body of an Effect fiber's `runInAsyncScope` directly on Deno, for
 * resources of that one type only. What is lost: an `AsyncLocalStorage` store set outside a
 * fiber is no longer restored by Effect when the fiber resumes; the resumption still runs in the
 * context Deno itself propagated to whatever resumed it (a timer or a promise continuation keeps
 * the context it was created in). Partita does not use `AsyncLocalStorage`. Other resources
 * (the user's, other libraries') are untouched. Remove this once Deno's polyfill no longer
 * chains resources (check with the test's "raw" mode).
 */
import process from "node:process"

/** The type Effect gives the resource it captures at each suspension (effect/internal/effect.js). */
const fiberResourceType = "effect/Fiber"

type RunInAsyncScope = (this: { readonly type?: unknown }, fn: (...args: Array<unknown>) => unknown, thisArg: unknown, ...args: Array<unknown>) => unknown

const patched = Symbol.for("partita/denoFiberContext")

/**
 * Installs the workaround when running on Deno (once per process; a no-op elsewhere). Returns
 * whether it is in place.
 */
export const install = (): boolean => {
  if ((globalThis as { readonly Deno?: unknown }).Deno === undefined) return false
  const hooks = process.getBuiltinModule?.("node:async_hooks") as
    | { readonly AsyncResource?: { readonly prototype: { runInAsyncScope: RunInAsyncScope; [patched]?: true } } }
    | undefined
  const prototype = hooks?.AsyncResource?.prototype
  if (prototype === undefined) return false
  if (prototype[patched] === true) return true
  const original = prototype.runInAsyncScope
  prototype.runInAsyncScope = function(fn, thisArg, ...args) {
    return this.type === fiberResourceType ? fn.apply(thisArg, args) : original.call(this, fn, thisArg, ...args)
  }
  prototype[patched] = true
  return true
}
