/**
 * Recognizes an `Effect.sync(thunk)` before it runs, so a loop that would otherwise hand it to
 * the fiber can call the thunk itself (the processor's in-order loop, per record).
 *
 * Why: a handler answering `Effect.sync` costs a fiber step per record (a continuation frame,
 * two turns of the run loop, the thunk, popping the frame): as much as a whole record of the
 * Kafka client's own fetch path. Calling the thunk where the loop stands does what the fiber
 * would have done: the thunk's value is the result, a throw is a defect.
 *
 * How: Effect 4.1 has no public way to tell a synchronous effect from any other, so this reads
 * its primitive's representation (`effect/internal/core.js`: `identifier` is the op, `args` the
 * thunk; `Effect.sync` is the only primitive whose op is "Sync"). If Effect changes that, the
 * check finds nothing and every effect takes the fiber's path as before: slower, never wrong.
 * tests/internal/syncEffect.test.ts fails when that happens, so an upgrade does not lose the
 * fast path silently.
 */
import type { Effect } from "effect"

/** `effect/internal/core.js`: `${EffectTypeId}/identifier` and `${EffectTypeId}/args`. */
const identifier = "~effect/Effect/identifier"
const args = "~effect/Effect/args"

/** The thunk of `effect` when it is an `Effect.sync`, or undefined. */
export const thunkOf = <A>(effect: Effect.Effect<A, unknown, unknown>): (() => A) | undefined => {
  const primitive = effect as unknown as { readonly [identifier]?: unknown; readonly [args]?: unknown }
  if (primitive[identifier] !== "Sync") return undefined
  const thunk = primitive[args]
  return typeof thunk === "function" ? thunk as () => A : undefined
}
