// Dead-letter replay on the embedded broker: payments dead-lettered while their store was down go
// back once it is up, and the handler takes them. (README's "Replaying dead letters"; CI runs it.)
import { Data, Effect, Schedule, Schema } from "effect"
import { Actor, ActorSystem, DeadLetterReplay, ErrorPolicy, MemoryTransport, Producer } from "../../mod.ts"

class StoreDown extends Data.TaggedError("StoreDown")<{}> {}

const Payment = Schema.Struct({ id: Schema.String, cents: Schema.Number })
const payments = Producer.forTopic({ topic: "payments", key: Schema.String, value: Payment })
let storeUp = false

const recorder = Actor.make({
  name: "recorder",
  topics: ["payments"],
  value: Payment,
  handle: (payment) => storeUp ? Effect.log(`recorded ${payment.id}`) : Effect.fail(new StoreDown()),
  onError: { default: ErrorPolicy.deadLetter },
  deadLetter: { topic: "payments.dlq", create: { partitions: 1 } },
})

const program = Effect.gen(function*() {
  const system = yield* ActorSystem.start([recorder])
  // Done once the recorder has processed `count` records, dead-lettered or not.
  const handled = (count: number) =>
    system.health.pipe(Effect.repeat({
      until: (health) => health.partitions.reduce((sum, partition) => sum + partition.processed, 0) >= count,
      schedule: Schedule.spaced("10 millis"),
    }))
  for (const id of ["p1", "p2", "p3"]) yield* payments.send({ id, cents: 100 }, { key: id })
  yield* handled(3) // all three dead-lettered: the store is down
  storeUp = true
  const report = yield* DeadLetterReplay.replay({ from: "payments.dlq", where: { error: ["StoreDown"] } })
  yield* Effect.log(`replay moved ${report.moved}, skipped ${report.skipped}, ${report.failed.length} not moved`)
  yield* handled(6) // and handled again, from "payments"
})

Effect.runPromise(program.pipe(
  Effect.scoped,
  Effect.provide(Producer.layer()),
  Effect.provide(MemoryTransport.layer({ topics: [{ topic: "payments", partitions: 2 }] })),
))
