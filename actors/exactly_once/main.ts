// Exactly-once on the embedded broker: orders in, priced orders out, each output once even though
// a handler dies halfway through. The ledger stands for a database outside Kafka: its write is
// keyed by the record's position, so a record handled again writes nothing new.
import { Effect, Schema, Stream } from "effect"
import { Actor, ActorSystem, ErrorPolicy, MemoryTransport, Producer, RecordContext, Transport } from "../../mod.ts"

const Order = Schema.Struct({ id: Schema.Number, quantity: Schema.Number })
const Priced = Schema.Struct({ id: Schema.Number, total: Schema.Number })
const orders = Producer.forTopic({ topic: "orders", key: Schema.String, value: Order })
const priced = Producer.forTopic({ topic: "orders.priced", key: Schema.String, value: Priced })

/** Rows by source position: INSERT ... ON CONFLICT (source) DO NOTHING. */
const ledger = new Map<string, number>()
let runs = 0
let crashed = false

const pricer = Actor.make({
  name: "pricer",
  topics: ["orders"],
  value: Order,
  handle: (order) =>
    Effect.gen(function*() {
      const { topic, partition, offset, delivery } = yield* RecordContext.RecordContext
      runs++
      const source = `${topic}/${partition}@${offset}`
      if (!ledger.has(source)) ledger.set(source, order.id)
      yield* priced.send({ id: order.id, total: order.quantity * 3 }, { key: String(order.id) })
      // Once, after producing: the transaction aborts and its records are handled again.
      if (order.id === 7 && !crashed) {
        crashed = true
        yield* Effect.logInfo(`order 7 (${delivery}): dying after its output was sent`)
        return yield* Effect.die(new Error("crash after producing"))
      }
    }),
  onError: { default: ErrorPolicy.halt },
  delivery: "exactly-once",
  transaction: { records: 5, interval: "20 millis" },
  supervision: { maxRestarts: 3 },
})

const program = Effect.gen(function*() {
  yield* ActorSystem.start([pricer])
  for (let id = 0; id < 20; id++) yield* orders.send({ id, quantity: id + 1 }, { key: String(id) })
  // Read what a downstream consumer sees (read-committed, the default).
  const transport = yield* Transport.Transport
  const out = yield* transport.subscribe({ group: "reader", topics: ["orders.priced"] })
  const seen: Array<number> = []
  yield* out.events.pipe(
    Stream.flatMap((event) => event._tag === "Assigned" ? Stream.mergeAll(event.claims.map((claim) => claim.records), { concurrency: "unbounded" }) : Stream.empty),
    Stream.runForEach((batch) => Effect.sync(() => batch.forEach((record) => seen.push(JSON.parse(new TextDecoder().decode(record.value!)).id)))),
    Effect.forkScoped,
  )
  while (seen.length < 20) yield* Effect.sleep("10 millis")
  yield* Effect.sleep("100 millis")
  const distinct = new Set(seen).size
  yield* Effect.log(`orders in: 20; priced orders out: ${seen.length}, ${distinct} distinct; ledger rows: ${ledger.size}; handler runs: ${runs}`)
})

Effect.runPromise(program.pipe(
  Effect.scoped,
  Effect.provide(Producer.layer()),
  Effect.provide(MemoryTransport.layer({ topics: [{ topic: "orders", partitions: 2 }, { topic: "orders.priced", partitions: 2 }] })),
))
