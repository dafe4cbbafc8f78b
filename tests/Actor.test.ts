import assert from "node:assert/strict"
import { test } from "node:test"
import { Data, Effect, Schedule, Schema } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"

class StoreError extends Data.TaggedError("StoreError")<{ readonly reason: string }> {}
const Order = Schema.Struct({ id: Schema.Number })
const failing = (): Effect.Effect<void, StoreError> => Effect.fail(new StoreError({ reason: "down" }))

// The checks below are compile-time: `tsc --noEmit -p .` (and deno check) fail when an
// `@ts-expect-error` finds no error, so each names one direction of the promise.

test("Actor.make: onError needs no HandlerTimeout policy without handlerTimeout, and may still name one", () => {
  const without = Actor.make({
    name: "no-timeout",
    topics: ["t"],
    value: Order,
    handle: failing,
    onError: { StoreError: ErrorPolicy.skip, DecodeError: ErrorPolicy.deadLetter },
  })
  const naming = Actor.make({
    name: "names-it",
    topics: ["t"],
    value: Order,
    handle: failing,
    onError: { StoreError: ErrorPolicy.skip, DecodeError: ErrorPolicy.deadLetter, HandlerTimeout: ErrorPolicy.halt },
  })
  assert.equal(without.handlerTimeout, undefined)
  assert.equal(naming.policyFor("HandlerTimeout")._tag, "Halt")
})

test("Actor.make: with handlerTimeout, onError must cover HandlerTimeout (by name or default)", () => {
  const named = Actor.make({
    name: "timed",
    topics: ["t"],
    value: Order,
    handle: failing,
    handlerTimeout: "1 second",
    onError: { StoreError: ErrorPolicy.skip, DecodeError: ErrorPolicy.deadLetter, HandlerTimeout: ErrorPolicy.halt },
  })
  const defaulted = Actor.make({
    name: "timed-default",
    topics: ["t"],
    value: Order,
    handle: failing,
    handlerTimeout: "1 second",
    onError: { StoreError: ErrorPolicy.skip, default: ErrorPolicy.halt },
  })
  const missing = Actor.make({
    name: "timed-missing",
    topics: ["t"],
    value: Order,
    handle: failing,
    handlerTimeout: "1 second",
    // @ts-expect-error HandlerTimeout can occur: the table must name it or give a default
    onError: { StoreError: ErrorPolicy.skip, DecodeError: ErrorPolicy.deadLetter },
  })
  assert.equal(named.policyFor("HandlerTimeout")._tag, "Halt")
  assert.equal(defaulted.policyFor("HandlerTimeout")._tag, "Halt")
  // The table without it still runs: an unnamed tag halts.
  assert.equal(missing.policyFor("HandlerTimeout")._tag, "Halt")
})

test("Actor.make: onError must still cover the handler's own errors and DecodeError", () => {
  const actor = Actor.make({
    name: "uncovered",
    topics: ["t"],
    value: Order,
    handle: failing,
    // @ts-expect-error StoreError has no policy and there is no default
    onError: { DecodeError: ErrorPolicy.deadLetter },
  })
  assert.equal(actor.policyFor("StoreError")._tag, "Halt")
})

test("ErrorPolicy.retry needs its exhausted outcome spelled out", () => {
  // @ts-expect-error `then` is required: what happens to a record out of retries is the caller's call
  const implicit = ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 3 })
  const explicit = ErrorPolicy.retry(Schedule.spaced("1 second"), { times: 3, then: "skip" })
  assert.equal(explicit._tag === "Retry" && explicit.then, "skip")
  assert.equal(implicit._tag === "Retry" && implicit.bisect, false)
})

test("Actor.make takes handle or handleBatch, not both; batch limits default to 500 records and 100 ms", () => {
  const batched = Actor.make({
    name: "batched",
    topics: ["t"],
    value: Order,
    handleBatch: (records) => Effect.sync(() => void records.map((record) => record.value.id + record.offset)),
    onError: { default: ErrorPolicy.halt },
  })
  assert.deepEqual(
    { maxRecords: batched.batch?.maxRecords, maxWait: batched.batch?.maxWait, invalid: batched.invalid },
    { maxRecords: 500, maxWait: "100 millis", invalid: undefined },
  )
  // @ts-expect-error one handler only (the check at run time is for callers without types)
  const both = Actor.make({
    name: "both",
    topics: ["t"],
    value: Order,
    handle: () => Effect.void,
    handleBatch: () => Effect.void,
    onError: { default: ErrorPolicy.halt },
  })
  assert.match(both.invalid ?? "", /sets both handle and handleBatch/)
  // @ts-expect-error batch limits go with handleBatch
  const limitsWithoutBatch = Actor.make({
    name: "limits",
    topics: ["t"],
    value: Order,
    handle: () => Effect.void,
    batch: { maxRecords: 10 },
    onError: { default: ErrorPolicy.halt },
  })
  assert.match(limitsWithoutBatch.invalid ?? "", /batch limits for a per-record handler/)
})
