/**
 * The test locks of tests/fixtures/exclusive.ts, between real processes on the runtime running
 * the test: what `scripts/test` relies on to keep the runtimes' broker-killing tests apart.
 */
import assert from "node:assert/strict"
import * as fs from "node:fs"
import { test } from "node:test"
import { startChild } from "./fixtures/child.ts"
import { acquire, exclusive } from "./fixtures/exclusive.ts"
import { uniqueName } from "./fixtures/services.ts"

const holder = new URL("./fixtures/exclusive_holder.ts", import.meta.url).pathname
const lockDir = (name: string) => new URL(`../.cache/locks/${name}`, import.meta.url).pathname

test("exclusive: a process waits while another holds the lock, and runs once it is released", async () => {
  const name = uniqueName("lock-wait")
  const child = startChild(holder, { LOCK: name, HOLD_MS: "1500" })
  try {
    await child.waitForLine(/^held$/, 30_000)
    // The body's start against the holder's release, by the clock: the holder's lines reach this
    // process through a pipe, possibly after this process took the lock.
    const startedAt = await exclusive(name, async () => Date.now())
    const releasing = await child.waitForLine(/^releasing at \d+$/, 30_000)
    const releasedAt = Number(/(\d+)$/.exec(releasing)![1])
    assert.ok(startedAt >= releasedAt, `the body ran only after the other process released the lock (${startedAt} < ${releasedAt})`)
    assert.equal(fs.existsSync(lockDir(name)), false, "released after the body")
    assert.equal(await child.exited, 0)
  } finally {
    await child.stop()
  }
})

test("exclusive: the lock of a process that was SIGKILLed is broken by the next taker", async () => {
  const name = uniqueName("lock-stale")
  const child = startChild(holder, { LOCK: name, HOLD_MS: "forever" })
  try {
    await child.waitForLine(/^held$/, 30_000)
    child.kill("SIGKILL")
    await child.exited
    assert.equal(fs.existsSync(lockDir(name)), true, "a SIGKILLed holder leaves its lock behind")
    const release = await acquire(name, { waitMs: 10_000 })
    release()
  } finally {
    await child.stop()
  }
})

test("exclusive: a process that exits holding a lock releases it", async () => {
  const name = uniqueName("lock-exit")
  const child = startChild(holder, { LOCK: name, EXIT: "1" })
  try {
    await child.waitForLine(/^held$/, 30_000)
    assert.equal(await child.exited, 0)
    assert.equal(fs.existsSync(lockDir(name)), false)
  } finally {
    await child.stop()
  }
})

test("exclusive: a taker gives up after its wait, naming the holder", async () => {
  const name = uniqueName("lock-busy")
  const child = startChild(holder, { LOCK: name, HOLD_MS: "forever" })
  try {
    await child.waitForLine(/^held$/, 30_000)
    await assert.rejects(acquire(name, { waitMs: 500 }), new RegExp(`still held by \\w+ pid \\d+ \\(exclusive_holder\\)`))
  } finally {
    await child.stop()
  }
  // Its holder gone, the lock is taken at once.
  const release = await acquire(name, { waitMs: 5_000 })
  release()
})

test("exclusive: reentrant within a process, released when the outermost taker releases", async () => {
  const name = uniqueName("lock-nested")
  const outer = await acquire(name)
  const inner = await acquire(name, { waitMs: 0 })
  inner()
  inner()
  assert.equal(fs.existsSync(lockDir(name)), true, "still held by the outer taker")
  outer()
  assert.equal(fs.existsSync(lockDir(name)), false)
})
