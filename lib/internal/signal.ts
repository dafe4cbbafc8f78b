import { Deferred, type Effect, Exit } from "effect"

/**
 * Wakes every fiber waiting on it, then re-arms: a condition variable for "something changed,
 * look again". Take `wait` before looking, so a change between looking and waiting is not missed.
 */
export class Signal {
  private deferred = Deferred.makeUnsafe<void>()
  get wait(): Effect.Effect<void> {
    return Deferred.await(this.deferred)
  }
  notify(): void {
    const fired = this.deferred
    this.deferred = Deferred.makeUnsafe<void>()
    Deferred.doneUnsafe(fired, Exit.void)
  }
}
