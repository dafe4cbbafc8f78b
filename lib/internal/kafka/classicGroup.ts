import { Effect } from "effect"
import * as TransportError from "../../TransportError.ts"
import type * as Core from "./groupCore.ts"

export const join = (_brokers: Core.GroupBrokers, options: Core.Options) =>
  Effect.fail(TransportError.make("UNSUPPORTED_VERSION", "subscribe", `classic ${options.group}`)) as Effect.Effect<Core.Group, TransportError.TransportError>
