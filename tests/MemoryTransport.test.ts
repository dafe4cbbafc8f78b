import { test } from "node:test"
import * as MemoryTransport from "../lib/MemoryTransport.ts"
import { transportContract } from "./transport_contract.ts"

transportContract({
  name: "memory",
  features: { transactions: true, faultInjection: true, clockDriven: true },
  layer: () => MemoryTransport.layer(),
  test: (name, body) => test(name, body),
})
