/**
 * Which producer a system's handlers and dead letters use: the app's own `Producer` when its
 * context has one (one producer per system), else one the system makes and closes itself.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Data, Effect, Schema } from "effect"
import * as Actor from "../lib/Actor.ts"
import * as ActorSystem from "../lib/ActorSystem.ts"
import * as ErrorPolicy from "../lib/ErrorPolicy.ts"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import * as Producer from "../lib/Producer.ts"
import { createTopics, eventually, readAll, sendJson } from "./fixtures/actors.ts"
import { run } from "./fixtures/effect.ts"

const Event = Schema.Struct({ id: Schema.Number })
class Refused extends Data.TaggedError("Refused")<{ readonly id: number }> {}

/** A producer that records the topic of every record sent through it. */
const recording = Effect.gen(function*() {
  const inner = yield* Producer.make()
  const topics: Array<string> = []
  const producer = Producer.Producer.of({
    ...inner,
    send: (record) => Effect.andThen(Effect.sync(() => topics.push(record.topic)), inner.send(record)),
    sendAll: (records) => Effect.andThen(Effect.sync(() => topics.push(...records.map((r) => r.topic))), inner.sendAll(records)),
  })
  return { producer, topics }
})

const relay = () => {
  const out = Producer.forTopic({ topic: "out", value: Event })
  return Actor.make({
    name: "relay",
    topics: ["in"],
    value: Event,
    handle: (event) =>
      Effect.gen(function*() {
        if (event.id === 3) return yield* Effect.fail(new Refused({ id: event.id }))
        yield* out.send(event)
      }),
    onError: { Refused: ErrorPolicy.deadLetter, default: ErrorPolicy.halt },
    deadLetter: { topic: "in.dlq" },
    commit: { interval: "20 millis" },
  })
}

test("Handlers and dead letters use the Producer the app provides: one producer for the app and its system", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["in", 2], ["out", 2], ["in.dlq", 1])
      const { producer, topics } = yield* recording
      yield* Effect.provideService(ActorSystem.start([relay()]), Producer.Producer, producer)
      yield* sendJson("in", [0, 1, 2, 3, 4].map((id) => ({ key: `k${id}`, value: { id } })))
      yield* eventually(10, "4 outputs and 1 letter", () => topics.filter((t) => t === "out").length === 4 && topics.includes("in.dlq"))
      assert.equal((yield* readAll("out", 4)).length, 4)
      assert.equal((yield* readAll("in.dlq", 1)).length, 1)
    }),
    MemoryTransport.layer(),
  ))

test("With producer settings of its own, the system makes its own producer and leaves the app's alone", () =>
  run(
    Effect.gen(function*() {
      yield* createTopics(["in", 2], ["out", 2], ["in.dlq", 1])
      const { producer, topics } = yield* recording
      yield* Effect.provideService(ActorSystem.start([relay()], { producer: { linger: "1 millis" } }), Producer.Producer, producer)
      yield* sendJson("in", [0, 1, 2, 3, 4].map((id) => ({ key: `k${id}`, value: { id } })))
      yield* Effect.all([readAll("out", 4), readAll("in.dlq", 1)]).pipe(Effect.timeout("10 seconds"))
      assert.deepEqual(topics, [], "nothing went through the app's producer")
    }),
    MemoryTransport.layer(),
  ))
