import assert from "node:assert/strict"
import { test } from "node:test"
import { nonRetriable } from "../../lib/internal/kafkajs.ts"
import * as TransportError from "../../lib/TransportError.ts"

test("nonRetriable keeps the error's condition, message and cause, and only clears retriable", () => {
  const cause = new Error("coordinator moved")
  const error = TransportError.make("NOT_COORDINATOR", "subscribe", `The consumer of group "g" stopped: coordinator moved`, cause)
  const fatal = nonRetriable(error)
  assert.equal(fatal.retriable, false)
  assert.equal(fatal.code, "NOT_COORDINATOR")
  assert.equal(fatal.operation, "subscribe")
  assert.equal(fatal.message, `The consumer of group "g" stopped: coordinator moved`)
  assert.equal(fatal.cause, cause)
})
