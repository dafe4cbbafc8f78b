/**
 * Which offset of a partition is safe to commit when records complete out of order.
 *
 * Confluent Parallel Consumer's model: the committable offset is that of the first delivered
 * record not yet completed (or one past the last delivered, when all are), so a crash never
 * skips a record that was not handled. Offsets need not be contiguous: transaction markers and
 * compaction leave gaps, which is why delivered offsets are tracked rather than assumed.
 */
export class OffsetTracker {
  private delivered: Array<number> = []
  private head = 0
  private readonly completed = new Set<number>()
  private next: number

  constructor(startOffset: number) {
    this.next = startOffset
  }

  /** Forgets everything: the partition is handled again from `offset` (an exactly-once rewind). */
  reset(offset: number): void {
    this.delivered = []
    this.head = 0
    this.completed.clear()
    this.next = offset
  }

  /** Records handed to the actor, in offset order. */
  track(offset: number): void {
    this.delivered.push(offset)
  }

  complete(offset: number): void {
    if (this.delivered[this.head] === offset) {
      // In order, the usual case: no set needed.
      this.head++
      this.next = offset + 1
    } else {
      this.completed.add(offset)
    }
    while (this.completed.size > 0 && this.head < this.delivered.length && this.completed.has(this.delivered[this.head]!)) {
      const done = this.delivered[this.head++]!
      this.completed.delete(done)
      this.next = done + 1
    }
    if (this.head > 1024 && this.head * 2 > this.delivered.length) {
      this.delivered = this.delivered.slice(this.head)
      this.head = 0
    }
  }

  /** The offset to commit: where a new owner of the partition must start. */
  committable(): number {
    return this.head < this.delivered.length ? this.delivered[this.head]! : this.next
  }

  /** Delivered records not yet completed. */
  outstanding(): number {
    return this.delivered.length - this.head
  }

  isCompleted(offset: number): boolean {
    return this.completed.has(offset) || offset < this.committable()
  }
}
