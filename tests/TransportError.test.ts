import assert from "node:assert/strict"
import { test } from "node:test"
import * as TransportError from "../lib/TransportError.ts"

test("TransportError.forRecord names the record's topic and partition and keeps the condition", () => {
  const error = TransportError.make("MESSAGE_TOO_LARGE", "send", `Cannot send 3 records to "orders": too large`)
  const forRecord = TransportError.forRecord(error, "orders", 2)
  assert.equal(forRecord.code, "MESSAGE_TOO_LARGE")
  assert.equal(forRecord.retriable, false)
  assert.equal(forRecord.message, `Cannot send 3 records to "orders": too large`)
  assert.equal(forRecord.topic, "orders")
  assert.equal(forRecord.partition, 2)
})

test("TransportError.refusesBatch holds for the codes that mean nothing of the batch was written", () => {
  for (const code of ["MESSAGE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD", "INVALID_TIMESTAMP", "CORRUPT_MESSAGE"] as const) {
    assert.ok(TransportError.refusesBatch(TransportError.make(code, "send", code)), code)
  }
  // A timeout or a lost connection says nothing about what was written.
  for (const code of ["REQUEST_TIMED_OUT", "NETWORK_EXCEPTION", "NOT_LEADER_OR_FOLLOWER", "TOPIC_AUTHORIZATION_FAILED"] as const) {
    assert.ok(!TransportError.refusesBatch(TransportError.make(code, "send", code)), code)
  }
})
