import assert from "node:assert/strict"
import { test } from "node:test"
import { Context, Effect, Metric } from "effect"
import { DurationHistogram } from "../../lib/internal/durationHistogram.ts"

test("DurationHistogram reads as the same HistogramState Effect's own histogram gives, through the registry", () =>
  Effect.runPromise(Effect.gen(function*() {
    const boundaries = Metric.exponentialBoundaries({ start: 0.0005, factor: 2, count: 16 })
    const values = [0, 0, 0.0004, 0.0005, 0.0006, 0.003, 0.1, 2, 40, 1e6]
    const reference = Metric.histogram("reference", { boundaries })
    for (const value of values) yield* Metric.update(reference, value)
    const expected = yield* Metric.value(reference)

    const histogram = new DurationHistogram(boundaries)
    for (const value of values) histogram.record(value)
    const context = Context.make(Metric.MetricRegistry, new Map())
    const series = Metric.histogram("messaging.process.duration", { boundaries })
    const registration = Metric.registerUnsafe(series, context, histogram.hooks())
    const [snapshot] = Metric.snapshotUnsafe(context)
    assert.deepEqual(snapshot?.state, expected)
    assert.equal(snapshot?.id, "messaging.process.duration")
    registration.remove()
    assert.equal(Metric.snapshotUnsafe(context).length, 0)
  }).pipe(Effect.provideService(Metric.MetricRegistry, new Map()))))

test("DurationHistogram.recordMany books as many durations as recording each", () => {
  const boundaries = [0.001, 0.01, 1]
  const each = new DurationHistogram(boundaries)
  const many = new DurationHistogram(boundaries)
  for (const [seconds, count] of [[0.0002, 3], [0.005, 2], [3, 1]] as const) {
    for (let i = 0; i < count; i++) each.record(seconds)
    many.recordMany(seconds, count)
  }
  const [a, b] = [each.state(), many.state()]
  assert.deepEqual({ ...b, sum: Math.round(b.sum * 1e9) }, { ...a, sum: Math.round(a.sum * 1e9) })
  assert.equal(b.count, 6)
})

test("DurationHistogram calls its first-record hook once, before the first duration, from record or recordMany", () => {
  for (const first of ["record", "recordMany"] as const) {
    const calls: Array<number> = []
    const histogram: DurationHistogram = new DurationHistogram([0.001, 1], () => calls.push(histogram.state().count))
    assert.deepEqual(calls, [], "nothing before a duration")
    if (first === "record") histogram.record(0.0005)
    else histogram.recordMany(0.0005, 3)
    histogram.record(0.5)
    histogram.recordMany(2, 2)
    assert.deepEqual(calls, [0], `once, before the first (${first})`)
  }
})
