/**
 * Issue 14's memory and idle rows: what idle partition actors cost, on the real broker.
 *
 * Topics of 128 and 1024 empty partitions. Per case and round a fresh group runs one `ActorSystem`
 * with a no-op actor on one of them, on `KafkaTransport` and on `KafkaJsTransport`; once every
 * partition has its actor and the system has been idle a while, it reads:
 * - the heap after a full GC, as it is and less the heap before the system started (the "0
 *   actors" figure, read the same way just before): per actor, that difference ÷ partitions;
 * - the process's CPU over an idle window, as a percentage of one core: what keeping that many
 *   claims alive costs (fetches long-polling, heartbeats, the actors' own timers).
 *
 *   bun bench/memory.ts            (BENCH_ROUNDS, BENCH_SCALE, KAFKA_BROKERS)
 *   deno run -A --v8-flags=--expose-gc bench/memory.ts;  node --expose-gc bench/memory.ts
 */
import process from "node:process"
import type { ManagedRuntime } from "effect"
import type { Transport } from "../mod.ts"
import { type Case, heapAfterGc, idleActorSystem, kafkaResources, kafkaRuntime, observed, type Observed, runBench, scaled } from "./common.ts"

const sizes = [128, 1024] as const
/** How long every actor is idle before the heap is read, and the CPU window after it. */
const settleMillis = scaled(500, 2_000)
const idleWindowMillis = scaled(1_000, 5_000)

const resources = kafkaResources()
const topics = new Map<number, string>()
for (const partitions of sizes) topics.set(partitions, await resources.topic(`idle-${partitions}`, partitions))
const clients = { KafkaTransport: kafkaRuntime("own"), KafkaJsTransport: kafkaRuntime("kafkajs") } as const

type Runtime = ManagedRuntime.ManagedRuntime<Transport.Transport, unknown>
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** Runs a no-op actor on a topic of `partitions` until each has its actor, then reads heap and CPU. */
const idleActors = (client: keyof typeof clients, partitions: number) => async (): Promise<Record<string, Observed>> => {
  const rt = clients[client] as Runtime
  const before = await heapAfterGc()
  const system = await idleActorSystem(rt, { topic: topics.get(partitions)!, group: resources.group(`idle-${partitions}`), partitions })
  await sleep(settleMillis)
  const after = await heapAfterGc()
  const cpu = process.cpuUsage()
  const started = performance.now()
  await sleep(idleWindowMillis)
  const used = process.cpuUsage(cpu)
  const busy = (used.user + used.system) / 1000 / (performance.now() - started)
  await system.stop()
  const prefix = `${client}, ${partitions} idle partition actors`
  return {
    // Read before every case; reported from the first size's (the same process state each time).
    ...(partitions === sizes[0] ? { [`heap, ${client}, 0 actors`]: observed(before / 1e6, "MB") } : {}),
    [`heap, ${prefix}`]: observed(after / 1e6, "MB"),
    [`heap per actor, ${prefix}`]: observed((after - before) / partitions / 1024, "KiB"),
    [`CPU, ${prefix}`]: observed(busy * 100, "% of a core"),
  }
}

const cases: ReadonlyArray<Case> = sizes.flatMap((partitions) =>
  (Object.keys(clients) as Array<keyof typeof clients>).map((client) => ({
    name: `${client}, ${partitions} partitions`,
    run: idleActors(client, partitions),
  }))
)

await runBench({
  name: "memory",
  title: "heap and CPU of idle partition actors (after GC), real broker",
  records: 1024,
  notes: [
    `topics of ${sizes.join(" and ")} empty partitions; one no-op actor per system, a fresh group per case and round`,
    `heap read after GC once every partition has its actor and ${settleMillis} ms idle; CPU over the next ${idleWindowMillis} ms`,
    "per actor: (heap with the actors - heap just before the system started) / partitions",
  ],
  cases,
  readings: sizes.flatMap((partitions) =>
    Object.keys(clients).map((client) => ({ name: `heap per actor, ${client}, ${partitions} idle partition actors`, atMost: 16 }))
  ),
  teardown: async () => {
    for (const rt of Object.values(clients)) await rt.dispose()
    await resources.cleanup()
  },
})
