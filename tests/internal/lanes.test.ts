import assert from "node:assert/strict"
import { test } from "node:test"
import { Deferred, Effect, Exit, Fiber } from "effect"
import * as Lanes from "../../lib/internal/lanes.ts"

interface Item {
  readonly key: string
  readonly n: number
}

const settle = Effect.gen(function*() {
  for (let i = 0; i < 10; i++) yield* Effect.yieldNow
})

test("Lanes handle each key's items in order, and different keys at once up to the worker count", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = Lanes.make<Item>()
    const seen = new Map<string, Array<number>>()
    let running = 0
    let most = 0
    const worker = lanes.run(2, (items) =>
      Effect.forEach(items, (item) =>
        Effect.gen(function*() {
          running++
          most = Math.max(most, running)
          yield* Effect.yieldNow
          seen.set(item.key, [...(seen.get(item.key) ?? []), item.n])
          running--
        }), { discard: true }), () => undefined)
    const fiber = yield* Effect.forkChild(worker)
    for (let n = 0; n < 30; n++) lanes.push(`k${n % 3}`, { key: `k${n % 3}`, n })
    lanes.close()
    yield* Fiber.join(fiber)
    for (const [key, ns] of seen) assert.deepEqual(ns, [...ns].sort((a, b) => a - b), `${key} in order`)
    assert.equal([...seen.values()].flat().length, 30)
    assert.equal(most, 2, "two workers, two keys at once")
    assert.equal(lanes.active(), 0)
  })))

test("Lanes: a key that waits holds only its own lane; later items of other keys go past it", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = Lanes.make<Item>()
    const release = yield* Deferred.make<void>()
    const done: Array<number> = []
    const fiber = yield* Effect.forkChild(lanes.run(2, (items) =>
      Effect.forEach(items, (item) =>
        Effect.andThen(item.key === "stuck" && item.n === 0 ? Deferred.await(release) : Effect.void, Effect.sync(() => done.push(item.n)))
      , { discard: true }), () => undefined))
    lanes.push("stuck", { key: "stuck", n: 0 })
    for (let n = 1; n <= 10; n++) lanes.push(n === 5 ? "stuck" : "other", { key: n === 5 ? "stuck" : "other", n })
    yield* settle
    assert.deepEqual(done, [1, 2, 3, 4, 6, 7, 8, 9, 10], "the other key went on; the stuck key's later item waits")
    assert.equal(lanes.active(), 1)
    yield* Deferred.succeed(release, undefined)
    lanes.close()
    yield* Fiber.join(fiber)
    assert.deepEqual(done.slice(-2), [0, 5], "then the stuck key, in order")
  })))

test("Lanes without a key: each item its own lane, at most `workers` at once", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = Lanes.make<Item>()
    let running = 0
    let most = 0
    let count = 0
    const fiber = yield* Effect.forkChild(lanes.run(3, (items) =>
      Effect.gen(function*() {
        assert.equal(items.length, 1)
        running++
        most = Math.max(most, running)
        yield* Effect.yieldNow
        running--
        count++
      }), () => undefined))
    for (let n = 0; n < 20; n++) lanes.push(undefined, { key: "", n })
    lanes.close()
    yield* Fiber.join(fiber)
    assert.equal(count, 20)
    assert.equal(most, 3)
  })))

test("Lanes.recover puts back what failed workers left unfinished, first in their lanes", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = Lanes.make<Item>()
    const finished = new Set<number>()
    for (let n = 0; n < 6; n++) lanes.push(n % 2 === 0 ? "a" : "b", { key: n % 2 === 0 ? "a" : "b", n })
    let exploded = false
    const first = yield* Effect.exit(lanes.run(2, (items) =>
      Effect.forEach(items, (item) =>
        Effect.suspend(() => {
          if (item.n === 2 && !exploded) {
            exploded = true
            return Effect.die(new Error("boom"))
          }
          finished.add(item.n)
          return Effect.yieldNow
        }), { discard: true }), () => undefined))
    assert.ok(Exit.isFailure(first), "a failure ends every worker")
    lanes.recover((item) => finished.has(item.n))
    const order: Array<number> = []
    lanes.close()
    yield* lanes.run(1, (items) => Effect.sync(() => items.forEach((item) => order.push(item.n))), () => undefined)
    assert.ok(order.includes(2) && order.includes(4), `a's unfinished items come back: ${order}`)
    assert.ok(order.indexOf(2) < order.indexOf(4), "in order")
    for (const n of finished) assert.ok(!order.includes(n), `${n} finished, not repeated`)
    assert.deepEqual([...finished, ...order].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5], "nothing lost")
  })))

test("Lanes.run calls afterEach after every turn and ends once closed and empty", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = Lanes.make<Item>()
    let turns = 0
    const fiber = yield* Effect.forkChild(lanes.run(2, () => Effect.void, () => void turns++))
    lanes.push("a", { key: "a", n: 0 })
    lanes.push("b", { key: "b", n: 1 })
    yield* settle
    assert.equal(turns, 2)
    assert.equal(fiber.pollUnsafe(), undefined, "open: the workers wait for more")
    lanes.close()
    yield* Fiber.join(fiber)
  })))
