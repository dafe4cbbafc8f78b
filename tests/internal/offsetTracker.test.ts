import assert from "node:assert/strict"
import { test } from "node:test"
import { OffsetTracker } from "../../lib/internal/offsetTracker.ts"

test("OffsetTracker commits up to the first record not completed, whatever order they complete in", () => {
  const tracker = new OffsetTracker(10)
  assert.equal(tracker.committable(), 10, "nothing delivered: the start")
  for (const offset of [10, 11, 12, 13]) tracker.track(offset)
  assert.equal(tracker.committable(), 10)
  tracker.complete(12)
  tracker.complete(13)
  assert.equal(tracker.committable(), 10, "10 is still running: a crash must not skip it")
  tracker.complete(10)
  assert.equal(tracker.committable(), 11)
  tracker.complete(11)
  assert.equal(tracker.committable(), 14, "all done: one past the last")
  assert.equal(tracker.outstanding(), 0)
})

test("OffsetTracker follows gaps in offsets left by transaction markers and compaction", () => {
  const tracker = new OffsetTracker(0)
  for (const offset of [0, 1, 5, 9]) tracker.track(offset)
  tracker.complete(0)
  tracker.complete(1)
  assert.equal(tracker.committable(), 5, "the next delivered record, not 2")
  tracker.complete(9)
  assert.equal(tracker.isCompleted(9), true)
  assert.equal(tracker.isCompleted(5), false)
  tracker.complete(5)
  assert.equal(tracker.committable(), 10)
})
