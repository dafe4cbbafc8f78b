/**
 * Key lanes: the records of a partition grouped by key, each key's in offset order, different
 * keys independent of each other and of chunk boundaries. A key waiting on a retry holds its
 * own lane only; the other keys' later records keep flowing past it.
 *
 * A fixed number of workers take lanes that have records waiting, one lane per worker at a time,
 * and handle what the lane holds in order; records pushed meanwhile wait for the lane's next
 * turn, behind the lanes already waiting, so a busy key cannot starve the others. A record
 * pushed without a key is a lane of its own (unordered).
 *
 * The lanes do not bound themselves: records enter them from the mailbox with `takeHeld` and
 * leave its bound only when done, so what waits here is counted there.
 */
import { Deferred, Effect, Exit } from "effect"

interface Lane<A> {
  readonly key: string | undefined
  /** Records waiting for the lane's next turn. */
  queue: Array<A>
  /** The records a worker is handling now; undefined while the lane waits. */
  running: ReadonlyArray<A> | undefined
  /** In the ready line. */
  ready: boolean
}

export interface Lanes<A> {
  /** Adds a record behind the others of its key; `undefined` makes it a lane of its own. */
  readonly push: (key: string | undefined, item: A) => void
  /** No more records will be pushed: the workers end once every lane is done. */
  readonly close: () => void
  /** Lanes with records waiting or running. */
  readonly active: () => number
  /**
   * Puts back, first in their lanes, the records of the lanes that were running when the
   * workers were interrupted or failed and that `done` says did not finish: for a restart.
   */
  readonly recover: (done: (item: A) => boolean) => void
  /**
   * Runs `workers` fibers that handle the lanes with `handle` (a lane's records, in order)
   * until closed and done, calling `afterEach` after each turn (and running what it returns, if
   * anything). Fails with the first failure of `handle`, interrupting the other workers.
   */
  readonly run: <E, R>(
    workers: number,
    handle: (items: ReadonlyArray<A>) => Effect.Effect<void, E, R>,
    afterEach: () => Effect.Effect<void> | undefined,
  ) => Effect.Effect<void, E, R>
}

export const make = <A>(): Lanes<A> => {
  const noItems: Array<A> = []
  const byKey = new Map<string, Lane<A>>()
  let ready: Array<Lane<A>> = []
  let readyHead = 0
  let running = 0
  let lanes = 0
  let closed = false
  /** Workers waiting for a ready lane: one is woken per lane that becomes ready, not all. */
  let idle: Array<Deferred.Deferred<void>> = []
  const wakeOne = () => {
    const worker = idle.pop()
    if (worker !== undefined) Deferred.doneUnsafe(worker, Exit.void)
  }
  const wakeAll = () => {
    const waiting = idle
    idle = []
    for (const worker of waiting) Deferred.doneUnsafe(worker, Exit.void)
  }

  const enqueue = (lane: Lane<A>) => {
    lane.ready = true
    ready.push(lane)
    wakeOne()
  }
  const push = (key: string | undefined, item: A) => {
    let lane = key === undefined ? undefined : byKey.get(key)
    if (lane === undefined) {
      lane = { key, queue: [], running: undefined, ready: false }
      lanes++
      if (key !== undefined) byKey.set(key, lane)
    }
    lane.queue.push(item)
    if (!lane.ready && lane.running === undefined) enqueue(lane)
  }
  const next = (): Lane<A> | undefined => {
    if (readyHead >= ready.length) return undefined
    const lane = ready[readyHead]!
    ready[readyHead++] = undefined as never
    if (readyHead > 64 && readyHead * 2 > ready.length) {
      ready = ready.slice(readyHead)
      readyHead = 0
    }
    lane.ready = false
    lane.running = lane.queue
    // Nothing more comes to a lane without a key: it keeps the empty queue it had.
    lane.queue = lane.key === undefined ? noItems : []
    running++
    return lane
  }
  const finish = (lane: Lane<A>) => {
    lane.running = undefined
    running--
    if (lane.queue.length > 0) {
      // Back in line without a wake-up: the worker finishing it looks for its next lane now.
      lane.ready = true
      ready.push(lane)
      return
    }
    lanes--
    if (lane.key !== undefined) byKey.delete(lane.key)
    if (done()) wakeAll()
  }
  const done = () => closed && running === 0 && readyHead >= ready.length

  const recover = (completed: (item: A) => boolean) => {
    const all = new Set<Lane<A>>(byKey.values())
    for (let i = readyHead; i < ready.length; i++) all.add(ready[i]!)
    // Lanes without a key that were running are in neither: they come from `held`.
    for (const lane of held) if (lane !== undefined) all.add(lane)
    held = []
    ready = []
    readyHead = 0
    running = 0
    lanes = 0
    for (const lane of all) {
      if (lane.running !== undefined) lane.queue = [...lane.running.filter((item) => !completed(item)), ...lane.queue]
      lane.running = undefined
      lane.ready = false
      if (lane.queue.length === 0) {
        if (lane.key !== undefined) byKey.delete(lane.key)
        continue
      }
      lanes++
      lane.ready = true
      ready.push(lane)
    }
    // The workers that waited were interrupted with the rest.
    idle = []
  }
  /** The lane each worker of the last `run` holds, if any, for a restart. */
  let held: Array<Lane<A> | undefined> = []

  const run = <E, R>(
    workers: number,
    handle: (items: ReadonlyArray<A>) => Effect.Effect<void, E, R>,
    afterEach: () => Effect.Effect<void> | undefined,
  ): Effect.Effect<void, E, R> => {
    held = new Array(workers).fill(undefined)
    const worker = (index: number): Effect.Effect<void, E, R> => Effect.gen(function*() {
      while (true) {
        const lane = next()
        if (lane === undefined) {
          if (done()) return wakeAll()
          // Registered in the same synchronous step as the look: no push can come between.
          const wake = Deferred.makeUnsafe<void>()
          idle.push(wake)
          yield* Deferred.await(wake)
          continue
        }
        held[index] = lane
        yield* handle(lane.running!)
        held[index] = undefined
        finish(lane)
        const after = afterEach()
        if (after !== undefined) yield* after
      }
    })
    return Effect.all(Array.from({ length: workers }, (_, index) => worker(index)), { concurrency: "unbounded", discard: true })
  }

  return {
    push,
    close: () => {
      closed = true
      if (done()) wakeAll()
    },
    active: () => lanes,
    recover,
    run,
  }
}
