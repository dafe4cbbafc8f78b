/**
 * What a subscription's kafkajs consumer, and the subscription's own waits around it, were last
 * seen doing: for the Debug line that tells, when a member stops consuming, which of them holds it
 * (issue 11's F5 stalled once after a frozen broker thawed). A consumer that never rejoins, a fetch
 * that never returns and a hold of ours that never ends each read differently here: the last
 * `join` long ago with no `fetch.start` since, a `fetch.start` newer than the last `fetch`, a
 * `hold` older than any bound it has.
 *
 * Times are the subscription's `Clock` millis, taken as each sighting arrives.
 */

/** One kind of sighting: when it was last seen, how often, and what it said then. */
interface Sighting {
  at: number
  count: number
  detail: string | undefined
}

/** A wait of the subscription that kafkajs is blocked on, while it lasts. */
interface Hold {
  readonly what: string
  readonly since: number
  step: string
}

const ago = (now: number, at: number): string => `${((now - at) / 1000).toFixed(1)} s ago`

export class Sightings {
  private readonly seen = new Map<string, Sighting>()
  private readonly holds = new Map<number, Hold>()
  private nextHold = 0

  /** Records a sighting of `what` at `at`. */
  note(what: string, at: number, detail?: string): void {
    const sighting = this.seen.get(what)
    if (sighting === undefined) this.seen.set(what, { at, count: 1, detail })
    else {
      sighting.at = at
      sighting.count++
      sighting.detail = detail
    }
  }

  /** A wait begins; its id moves it on (`step`) and ends it (`release`). */
  hold(what: string, since: number, step: string): number {
    const id = this.nextHold++
    this.holds.set(id, { what, since, step })
    return id
  }

  step(id: number, step: string): void {
    const hold = this.holds.get(id)
    if (hold !== undefined) hold.step = step
  }

  release(id: number): void {
    this.holds.delete(id)
  }

  /** One line: the waits now (oldest first), then every sighting, most recent first. */
  describe(now: number): string {
    const holds = [...this.holds.values()].sort((a, b) => a.since - b.since)
    const byStep = new Map<string, { count: number; oldest: number }>()
    for (const hold of holds) {
      const key = `${hold.what} waiting for ${hold.step}`
      const entry = byStep.get(key)
      if (entry === undefined) byStep.set(key, { count: 1, oldest: hold.since })
      else entry.count++
    }
    const waits = byStep.size === 0
      ? "nothing held"
      : [...byStep].map(([key, { count, oldest }]) => `${count} ${key} (oldest since ${ago(now, oldest)})`).join(", ")
    const sightings = [...this.seen].sort(([, a], [, b]) => b.at - a.at).map(([what, { at, count, detail }]) =>
      `${what} ${ago(now, at)} (x${count}${detail === undefined ? "" : `: ${detail}`})`
    )
    return `${waits}; last seen: ${sightings.length === 0 ? "nothing" : sightings.join(", ")}`
  }
}
