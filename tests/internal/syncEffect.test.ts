import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect } from "effect"
import * as SyncEffect from "../../lib/internal/syncEffect.ts"

// Fails when an Effect upgrade changes how `Effect.sync` is represented: the processor would
// then lose its direct path for synchronous handlers without a word (slower, still correct).
test("SyncEffect.thunkOf finds the thunk of Effect.sync and nothing in any other effect", () => {
  const thunk = () => 42
  assert.equal(SyncEffect.thunkOf(Effect.sync(thunk)), thunk)
  for (
    const other of [
      Effect.void,
      Effect.succeed(1),
      Effect.fail("no"),
      Effect.suspend(() => Effect.sync(thunk)),
      Effect.map(Effect.sync(thunk), (n) => n + 1),
      Effect.promise(() => Promise.resolve(1)),
      Effect.sleep("1 millis"),
      Effect.gen(function*() {
        return yield* Effect.sync(thunk)
      }),
    ]
  ) {
    assert.equal(SyncEffect.thunkOf(other as Effect.Effect<unknown, unknown, unknown>), undefined)
  }
})
