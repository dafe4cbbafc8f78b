/**
 * Partita: an embeddable actor runtime for Kafka data pipelines, on Effect.
 *
 * Records flow through a `Transport`: the embedded in-process broker (`MemoryTransport`, the
 * default, with Kafka's semantics) or a real cluster (`KafkaTransport` on Partita's own client,
 * or `KafkaJsTransport` on kafkajs).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { MemoryTransport, Transport } from "./mod.ts"
 *
 * const program = Effect.gen(function*() {
 *   const transport = yield* Transport.Transport
 *   yield* transport.createTopic({ topic: "greetings", partitions: 3 })
 *   const [sent] = yield* transport.send([
 *     { topic: "greetings", key: new TextEncoder().encode("emma"), value: new TextEncoder().encode("hello") },
 *   ])
 *   console.log(`written to partition ${sent?.partition} at offset ${sent?.offset}`)
 * })
 *
 * Effect.runPromise(program.pipe(Effect.provide(MemoryTransport.layer())))
 * ```
 *
 * @module
 */
export * as Actor from "./lib/Actor.ts"
export * as ActorSystem from "./lib/ActorSystem.ts"
export * as Codec from "./lib/Codec.ts"
export * as DeadLetterReplay from "./lib/DeadLetterReplay.ts"
export * as ErrorPolicy from "./lib/ErrorPolicy.ts"
export * as KafkaJsTransport from "./lib/KafkaJsTransport.ts"
export * as KafkaTransport from "./lib/KafkaTransport.ts"
export * as Main from "./lib/Main.ts"
export * as MemoryTransport from "./lib/MemoryTransport.ts"
export * as Ordering from "./lib/Ordering.ts"
export * as Producer from "./lib/Producer.ts"
export * as RecordContext from "./lib/RecordContext.ts"
export * as Tracing from "./lib/Tracing.ts"
export * as Transport from "./lib/Transport.ts"
export * as TransportError from "./lib/TransportError.ts"
