import { test } from "node:test"
import { Effect, Layer } from "effect"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import { FaultControl, transportContract } from "./transport_contract.ts"

const withFaultControl = () =>
  Layer.effect(
    FaultControl,
    Effect.map(MemoryTransport.MemoryBroker, (broker) =>
      FaultControl.of({
        failNext: (operation, code) => broker.failNext(operation, code),
        calls: (operation) => broker.calls(operation),
      })),
  ).pipe(Layer.provideMerge(MemoryTransport.layer()))

transportContract({
  name: "memory",
  features: { transactions: true, faultInjection: true, clockDriven: true },
  layer: () => MemoryTransport.layer(),
  test: (name, body) => test(name, body),
  faults: { layer: withFaultControl },
})
