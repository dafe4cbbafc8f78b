// Produce and consume on the embedded broker: no Kafka needed. (README's Quick look; CI runs it.)
import { Effect, Schedule, Schema } from "effect"
import { Actor, ActorSystem, ErrorPolicy, MemoryTransport, Producer } from "../../mod.ts"

const Greeting = Schema.Struct({ to: Schema.String, text: Schema.String })
const greetings = Producer.forTopic({ topic: "greetings", key: Schema.String, value: Greeting })

const printer = Actor.make({
  name: "printer",
  topics: ["greetings"],
  value: Greeting,
  handle: (greeting) => Effect.log(`${greeting.to} got "${greeting.text}"`),
  onError: { default: ErrorPolicy.skip },
})

const program = Effect.gen(function*() {
  const system = yield* ActorSystem.start([printer])
  for (const to of ["emma", "bruno", "chen"]) yield* greetings.send({ to, text: "hello" }, { key: to })
  // Done once the printer has handled all three: the system's health counts what it processed.
  yield* system.health.pipe(Effect.repeat({
    until: (health) => health.partitions.reduce((handled, partition) => handled + partition.processed, 0) === 3,
    schedule: Schedule.spaced("10 millis"),
  }))
})

Effect.runPromise(program.pipe(
  Effect.scoped,
  Effect.provide(Producer.layer()),
  Effect.provide(MemoryTransport.layer({ topics: [{ topic: "greetings", partitions: 3 }] })),
))
