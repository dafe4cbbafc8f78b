/**
 * A small pipeline on the embedded broker, no infrastructure needed: a producer writes greetings
 * keyed by user to a 3-partition topic, and a consumer group prints each partition's records as
 * they arrive, committing as it goes. The notification system in actors/notifications/ replaces
 * this as the main example once it exists.
 *
 *   npm start            (Bun)
 *   deno run -A actors/demo/main.ts
 */
import { Effect, Stream } from "effect"
import { MemoryTransport, Transport } from "../../mod.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const users = ["emma", "bruno", "chen", "dara"]

const program = Effect.gen(function*() {
  const transport = yield* Transport.Transport
  yield* transport.createTopic({ topic: "greetings", partitions: 3 })

  const subscription = yield* transport.subscribe({ group: "printer", topics: ["greetings"] })
  let printed = 0
  const done = Effect.gen(function*() {
    yield* subscription.events.pipe(
      Stream.runForEach((event) =>
        event._tag === "Revoked"
          ? event.acknowledge
          : Effect.forEach(event.claims, (claim) =>
            claim.records.pipe(
              Stream.runForEach((batch) =>
                Effect.gen(function*() {
                  for (const record of batch) {
                    const key = decoder.decode(record.key ?? new Uint8Array())
                    yield* Effect.log(`${record.topic}/${record.partition}@${record.offset} ${key}: ${decoder.decode(record.value ?? new Uint8Array())}`)
                  }
                  const last = batch[batch.length - 1]!
                  yield* subscription.commit([{ topic: last.topic, partition: last.partition, offset: last.offset + 1 }])
                  printed += batch.length
                })
              ),
              Effect.forkScoped,
            ), { discard: true })
      ),
      Effect.forkScoped,
    )
  })
  yield* done

  for (let round = 1; round <= 3; round++) {
    const sent = yield* transport.send(users.map((user) => ({
      topic: "greetings",
      key: encoder.encode(user),
      value: encoder.encode(`hello #${round} from ${user}`),
    })))
    yield* Effect.log(`sent ${sent.length} records: partitions ${sent.map((m) => m.partition).join(", ")}`)
    yield* Effect.sleep("200 millis")
  }
  yield* Effect.log(`printed ${printed} records; each user's records stayed in one partition, in order`)
})

Effect.runPromise(Effect.scoped(program).pipe(Effect.provide(MemoryTransport.layer())))
