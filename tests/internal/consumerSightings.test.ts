import assert from "node:assert/strict"
import { test } from "node:test"
import { Sightings } from "../../lib/internal/consumerSightings.ts"

test("Sightings says what was seen last, how often and when, most recent first", () => {
  const sightings = new Sightings()
  assert.equal(sightings.describe(0), "nothing held; last seen: nothing")
  sightings.note("fetch.start", 1000)
  sightings.note("join", 2000, "generation 1")
  sightings.note("fetch.start", 9000)
  assert.equal(
    sightings.describe(10_000),
    "nothing held; last seen: fetch.start 1.0 s ago (x2), join 8.0 s ago (x1: generation 1)",
  )
})

test("Sightings lists the waits still held, grouped by what they wait for, oldest first; released ones are gone", () => {
  const sightings = new Sightings()
  const first = sightings.hold("eachBatch", 1000, "claims")
  const second = sightings.hold("eachBatch", 4000, "claims")
  const join = sightings.hold("JoinGroup", 2000, "an acknowledgement")
  assert.equal(
    sightings.describe(5000),
    "2 eachBatch waiting for claims (oldest since 4.0 s ago), 1 JoinGroup waiting for an acknowledgement (oldest since 3.0 s ago); last seen: nothing",
  )
  sightings.step(first, "a pull")
  sightings.release(join)
  assert.equal(
    sightings.describe(5000),
    "1 eachBatch waiting for a pull (oldest since 4.0 s ago), 1 eachBatch waiting for claims (oldest since 1.0 s ago); last seen: nothing",
  )
  sightings.release(first)
  sightings.release(second)
  assert.equal(sightings.describe(5000), "nothing held; last seen: nothing")
})
