import type { Context, Metric } from "effect"

/**
 * A histogram of durations in seconds, kept by the partition actor and read by Effect's metric
 * registry when metrics are exported (`Metric.registerUnsafe`).
 *
 * Why not `Metric.update` per record: an update looks the series up in the registry each time
 * (context, attributes, a map), which cost more than a fast handler itself. Recording here is a
 * few arithmetic operations, and what an exporter reads is the same `HistogramState` Effect's own
 * histogram gives.
 */
/**
 * Boundaries as given, sorted: one copy per boundaries array, shared by every histogram made from
 * it (a histogram per partition, and an idle partition holds only its own counts).
 */
const sortedBoundaries = new WeakMap<ReadonlyArray<number>, ReadonlyArray<number>>()
const noChange = (): void => {}

export class DurationHistogram {
  private readonly boundaries: ReadonlyArray<number>
  /**
   * Per bucket, not cumulative; the last one counts values above every boundary. A plain array
   * of small integers: a `Float64Array` costs its buffer and two more objects per partition.
   */
  private readonly counts: Array<number>
  private count = 0
  private sum = 0
  private min = Number.MAX_VALUE
  private max = -Number.MAX_VALUE
  /** Called before the first duration is recorded, then dropped (see `registerDurations`). */
  private onFirstRecord: (() => void) | undefined

  constructor(boundaries: ReadonlyArray<number>, onFirstRecord?: () => void) {
    this.onFirstRecord = onFirstRecord
    let sorted = sortedBoundaries.get(boundaries)
    if (sorted === undefined) {
      sorted = [...boundaries].sort((a, b) => a - b)
      sortedBoundaries.set(boundaries, sorted)
    }
    this.boundaries = sorted
    this.counts = []
    for (let i = 0; i <= sorted.length; i++) this.counts.push(0)
  }

  private first(): void {
    const onFirstRecord = this.onFirstRecord
    this.onFirstRecord = undefined
    onFirstRecord?.()
  }

  record(seconds: number): void {
    if (this.count === 0) this.first()
    const boundaries = this.boundaries
    let bucket = 0
    // Linear: most handler durations land in the first buckets, and there are few of them.
    while (bucket < boundaries.length && seconds > boundaries[bucket]!) bucket++
    this.counts[bucket]!++
    this.count++
    this.sum += seconds
    if (seconds < this.min) this.min = seconds
    if (seconds > this.max) this.max = seconds
  }

  /** `count` durations of `seconds` each: records that ended in one step, sharing its time. */
  recordMany(seconds: number, count: number): void {
    if (this.count === 0) this.first()
    const boundaries = this.boundaries
    let bucket = 0
    while (bucket < boundaries.length && seconds > boundaries[bucket]!) bucket++
    this.counts[bucket]! += count
    this.count += count
    this.sum += seconds * count
    if (seconds < this.min) this.min = seconds
    if (seconds > this.max) this.max = seconds
  }

  state(): Metric.HistogramState {
    const buckets: Array<[number, number]> = []
    let cumulated = 0
    for (let i = 0; i < this.boundaries.length; i++) {
      cumulated += this.counts[i]!
      buckets.push([this.boundaries[i]!, cumulated])
    }
    return { buckets, count: this.count, min: this.min, max: this.max, sum: this.sum }
  }

  /** Hooks for `Metric.registerUnsafe`: reads only. */
  hooks(): Metric.Metric.Hooks<number, Metric.HistogramState> {
    return { get: (_context: Context.Context<never>) => this.state(), update: noChange, modify: noChange }
  }
}
