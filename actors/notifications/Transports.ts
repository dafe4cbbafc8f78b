/**
 * Which broker the app runs on: a real Kafka cluster when `KAFKA_BROKERS` is set (with the rest
 * of `KafkaJsTransport`'s environment: `KAFKA_CLIENT_ID`, `KAFKA_SSL`, `KAFKA_SASL_*`), otherwise
 * the embedded broker, which needs nothing and keeps everything in memory.
 */
import { Config, Effect, Layer, Option } from "effect"
import { KafkaJsTransport, MemoryTransport, type Transport } from "../../mod.ts"

/**
 * @category models
 */
export type Kind = "memory" | "kafka"

/**
 * The transport the environment names, and which one it is.
 *
 * @category layers
 */
export const fromEnv = Effect.map(
  Config.option(Config.String("KAFKA_BROKERS")),
  (brokers): { readonly kind: Kind; readonly layer: Layer.Layer<Transport.Transport, unknown> } =>
    Option.isSome(brokers) && brokers.value.trim() !== ""
      ? { kind: "kafka", layer: KafkaJsTransport.layerFromEnv({ logLevel: "warn" }) }
      : { kind: "memory", layer: MemoryTransport.layer() },
)
