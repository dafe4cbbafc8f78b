/**
 * Partition actors on the embedded broker: records/s through a no-op handler, on one core.
 * Records are produced up front, then one actor (3 partitions) consumes them all.
 *
 *   bun bench/actors_memory.ts [records]
 */
import { Effect, Schema } from "effect"
import { Actor, ActorSystem, ErrorPolicy, MemoryTransport, Transport } from "../mod.ts"

const total = Number(process.argv[2] ?? 300_000)
const Event = Schema.Struct({ id: Schema.Number })
const encoder = new TextEncoder()

const program = Effect.gen(function*() {
  const transport = yield* Transport.Transport
  yield* transport.createTopic({ topic: "bench", partitions: 3 })
  const batch = 10_000
  for (let from = 0; from < total; from += batch) {
    yield* transport.send(Array.from({ length: Math.min(batch, total - from) }, (_, i) => ({
      topic: "bench",
      key: null,
      value: encoder.encode(`{"id":${from + i}}`),
    })))
  }
  let handled = 0
  const done = Promise.withResolvers<void>()
  const actor = Actor.make({
    name: "bench",
    topics: ["bench"],
    value: Event,
    handle: () =>
      Effect.sync(() => {
        if (++handled === total) done.resolve()
      }),
    onError: { default: ErrorPolicy.halt },
  })
  const started = performance.now()
  yield* ActorSystem.start([actor])
  yield* Effect.promise(() => done.promise)
  const seconds = (performance.now() - started) / 1000
  console.log(`actors on MemoryTransport: ${total} records in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} records/s`)
})

Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(MemoryTransport.layer())))
