import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Exit, Fiber } from "effect"
import { Mailbox } from "../../lib/internal/mailbox.ts"

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

test("Mailbox holds batches up to its capacity in records, and a full one makes offer wait", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(10)
    yield* mailbox.offer(range(0, 6))
    assert.equal(mailbox.size, 6)
    assert.equal(mailbox.fits(range(6, 11)), false, "6 + 5 is over 10")
    const offering = yield* Effect.forkChild(mailbox.offer(range(6, 11)))
    yield* Effect.yieldNow
    assert.equal(mailbox.size, 6, "the second batch waits")
    assert.deepEqual(yield* mailbox.take(100), range(0, 6), "a take returns a whole batch")
    yield* Fiber.join(offering)
    assert.equal(mailbox.size, 5)
    assert.deepEqual(yield* mailbox.take(100), range(6, 11))
  })))

test("Mailbox takes at most max records of a batch, keeping the rest first in line", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(100)
    yield* mailbox.offer(range(0, 5))
    yield* mailbox.offer(range(5, 7))
    assert.deepEqual(yield* mailbox.take(3), [0, 1, 2])
    assert.deepEqual(yield* mailbox.take(3), [3, 4])
    assert.deepEqual(yield* mailbox.take(3), [5, 6])
    assert.equal(mailbox.size, 0)
  })))

test("Mailbox accepts a batch larger than its capacity into an empty mailbox rather than block forever", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(3)
    yield* mailbox.offer(range(0, 8))
    assert.equal(mailbox.size, 8)
    assert.equal(mailbox.fits([8]), false, "nothing more until it drains")
  })))

test("Mailbox ends: takes drain what is held, then fail with Done; offers and waiting takes stop", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(10)
    yield* mailbox.offer([1, 2])
    const taker = new Mailbox<number>(10)
    const blocked = yield* Effect.forkChild(Effect.exit(taker.take(5)))
    yield* Effect.yieldNow
    taker.end()
    const ended = yield* Fiber.join(blocked)
    assert.ok(Exit.isFailure(ended), "a take waiting on an empty mailbox ends when it ends")
    mailbox.end()
    yield* mailbox.offer([3])
    assert.equal(mailbox.size, 2, "an offer after the end is dropped")
    assert.deepEqual(yield* mailbox.take(5), [1, 2], "what was held is still taken")
    assert.ok(Exit.isFailure(yield* Effect.exit(mailbox.take(5))), "then Done")
  })))

test("Mailbox.clear drops everything held and wakes a waiting offer", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(2)
    yield* mailbox.offer([1, 2])
    const offering = yield* Effect.forkChild(mailbox.offer([3]))
    yield* Effect.yieldNow
    mailbox.clear()
    yield* Fiber.join(offering)
    assert.deepEqual(yield* mailbox.take(5), [3])
  })))

/** A mailbox of strings whose bytes are their lengths. */
const byLength = (capacity: number, maxBytes: number) => new Mailbox<string>(capacity, { maxBytes, sizeOf: (item) => item.length })

test("Mailbox is bounded by bytes too: an offer over maxBytes waits until a take makes room", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = byLength(100, 10)
    yield* mailbox.offer(["aaaa", "bbbb"])
    assert.equal(mailbox.bytes, 8)
    assert.equal(mailbox.fits(["ccc"]), false, "8 + 3 bytes is over 10, though 3 records are well under 100")
    const offering = yield* Effect.forkChild(mailbox.offer(["ccc"]))
    yield* Effect.yieldNow
    assert.equal(mailbox.size, 2, "the offer waits")
    assert.deepEqual(yield* mailbox.take(1), ["aaaa"], "a partial take frees its bytes")
    yield* Fiber.join(offering)
    assert.equal(mailbox.bytes, 7, "4 left, 3 added")
    assert.deepEqual(yield* mailbox.take(10), ["bbbb"])
    assert.deepEqual(yield* mailbox.take(10), ["ccc"])
    assert.equal(mailbox.bytes, 0)
  })))

test("Mailbox accepts a batch over maxBytes into an empty mailbox rather than block forever", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = byLength(100, 10)
    yield* mailbox.offer(["x".repeat(25)])
    assert.equal(mailbox.bytes, 25)
    assert.equal(mailbox.fits(["y"]), false, "nothing more until it drains")
    assert.equal((yield* mailbox.take(10))[0]!.length, 25)
    assert.equal(mailbox.fits(["y".repeat(30)]), true, "empty again: any batch enters")
  })))

test("Mailbox.takeHeld keeps taken records counted against both bounds until each is released", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = byLength(3, 100)
    yield* mailbox.offer(["a", "bb", "ccc"])
    assert.deepEqual(yield* mailbox.takeHeld(10), ["a", "bb", "ccc"])
    assert.equal(mailbox.size, 3, "taken, but not done")
    assert.equal(mailbox.bytes, 6)
    const offering = yield* Effect.forkChild(mailbox.offer(["d"]))
    yield* Effect.yieldNow
    assert.equal(mailbox.size, 3, "no room while the taken records are in flight")
    mailbox.release("bb")
    yield* Fiber.join(offering)
    assert.equal(mailbox.size, 3)
    assert.equal(mailbox.bytes, 5)
    const taking = yield* Effect.forkChild(mailbox.takeHeld(10))
    assert.deepEqual(yield* Fiber.join(taking), ["d"], "a take waits only for records not taken yet")
  })))

test("Mailbox.fill puts in what fits now, and the rest as room for a quarter of the mailbox frees", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(8)
    yield* mailbox.offer(range(0, 6))
    const held = yield* mailbox.takeHeld(10)
    const filling = yield* Effect.forkChild(mailbox.fill(range(6, 12)))
    yield* Effect.yieldNow
    assert.equal(mailbox.size, 8, "two places: two records in, four wait")
    mailbox.release(held[0]!)
    yield* Effect.yieldNow
    assert.equal(mailbox.size, 7, "one place free is less than a quarter (2): no wake-up per record")
    mailbox.release(held[1]!)
    yield* Effect.yieldNow
    assert.equal(mailbox.size, 8, "two free: two more in")
    for (const item of held.slice(2)) mailbox.release(item)
    yield* Fiber.join(filling)
    const taken: Array<number> = []
    while (mailbox.size > 0) taken.push(...(yield* mailbox.take(10)))
    assert.deepEqual(taken, range(6, 12), "in order")
  })))

test("Mailbox.nudge wakes a wait for records once, records or not", () =>
  Effect.runPromise(Effect.gen(function*() {
    const mailbox = new Mailbox<number>(10)
    const waiting = yield* Effect.forkChild(mailbox.available)
    yield* Effect.yieldNow
    mailbox.nudge()
    yield* Fiber.join(waiting)
    assert.equal(mailbox.pollHeld(10), undefined, "nothing to take")
    // Nudged before the wait: the wait returns at once, the next one waits again.
    mailbox.nudge()
    yield* mailbox.available
    const again = yield* Effect.forkChild(mailbox.available)
    yield* Effect.yieldNow
    assert.equal(again.pollUnsafe(), undefined, "the nudge woke one wait only")
    yield* mailbox.offer([1])
    yield* Fiber.join(again)
  })))
