/**
 * What `lib/Producer.ts` itself costs per record, on `MemoryTransport` (no network, so the
 * batching layer's share is not hidden behind round trips): 1000 fibers each sending one record
 * through `Producer.send`, next to the same fibers each calling `Transport.sendEach([record])`,
 * and to `sendEach` given arrays of 1000 (the transport's own cost per record at the batch size
 * the Producer reaches). Producer's share ≈ its CPU per record minus the arrays' CPU per record.
 *
 *   bun bench/producer_share.ts        (BENCH_RECORDS, default 200k; BENCH_ROUNDS, default 5)
 *
 * A diagnostic, not part of bench/run: it prints CPU µs per record and records/s per round.
 */
import process from "node:process"
import { Context, Effect, Layer, ManagedRuntime } from "effect"
import { MemoryTransport, Producer, Transport } from "../mod.ts"
import { loggingLayer, mark, median, since } from "./common.ts"

const total = Math.max(1000, Number(process.env["BENCH_RECORDS"] ?? 200_000))
const rounds = Math.max(1, Number(process.env["BENCH_ROUNDS"] ?? 5))
const concurrency = 1000
const value = new TextEncoder().encode('{"id":123456}')
const ways = ["sendEach per record", "sendEach arrays of 1000", "Producer.send"] as const
const cpu = new Map<string, Array<number>>(ways.map((way) => [way, []]))
const rates = new Map<string, Array<number>>(ways.map((way) => [way, []]))

for (let round = 0; round <= rounds; round++) {
  for (const way of ways) {
    const runtime = ManagedRuntime.make(MemoryTransport.layer().pipe(Layer.provideMerge(loggingLayer)))
    const transport = Context.get(await runtime.context(), Transport.Transport)
    await runtime.runPromise(transport.createTopic({ topic: "t", partitions: 3 }))
    const record = { topic: "t", key: null, value }
    const ids = Array.from({ length: total }, (_, i) => i)
    const chunks = Array.from({ length: Math.ceil(total / 1000) }, () => Array.from({ length: 1000 }, () => record))
    const measured = await runtime.runPromise(
      way === "sendEach per record"
        ? Effect.suspend(() => {
          const start = mark()
          return Effect.as(Effect.forEach(ids, () => transport.sendEach([record]), { concurrency, discard: true }), start)
        }).pipe(Effect.map((start) => since(total, start)))
        : way === "sendEach arrays of 1000"
        ? Effect.suspend(() => {
          const start = mark()
          return Effect.as(Effect.forEach(chunks, (chunk) => transport.sendEach(chunk), { discard: true }), start)
        }).pipe(Effect.map((start) => since(chunks.length * 1000, start)))
        : Effect.scoped(Effect.gen(function*() {
          const producer = yield* Producer.Producer
          const start = mark()
          yield* Effect.forEach(ids, () => producer.send(record), { concurrency, discard: true })
          return since(total, start)
        })).pipe(Effect.provide(Producer.layer())),
    )
    await runtime.dispose()
    if (round === 0) continue // warm-up
    cpu.get(way)!.push((1e6 * measured.cpuSeconds) / measured.records)
    rates.get(way)!.push(measured.records / measured.seconds)
  }
}
console.log(`${total} records, ${concurrency} senders, MemoryTransport, ${rounds} rounds (medians)`)
for (const way of ways) {
  console.log(
    `${way.padEnd(26)} ${median(cpu.get(way)!).toFixed(2).padStart(6)} µs CPU/record  ${
      Math.round(median(rates.get(way)!)).toString().padStart(8)
    } records/s`,
  )
}
process.exit(0)
