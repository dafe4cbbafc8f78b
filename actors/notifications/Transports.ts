/**
 * Which broker the app runs on: a real Kafka cluster when `KAFKA_BROKERS` is set (with the rest
 * of the Kafka transports' environment: `KAFKA_CLIENT_ID`, `KAFKA_SSL`, `KAFKA_SASL_*`), through
 * `KafkaTransport` (Partita's own client; `KAFKA_CLIENT=kafkajs` picks `KafkaJsTransport`),
 * otherwise the embedded broker, which needs nothing and keeps everything in memory.
 */
import { Config, Effect, Layer, Option } from "effect"
import { KafkaJsTransport, KafkaTransport, MemoryTransport, type Transport } from "../../mod.ts"

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
  Config.all({
    brokers: Config.option(Config.String("KAFKA_BROKERS")),
    client: Config.Literals(["own", "kafkajs"], "KAFKA_CLIENT").pipe(Config.withDefault("own" as const)),
  }),
  ({ brokers, client }): { readonly kind: Kind; readonly layer: Layer.Layer<Transport.Transport, unknown> } =>
    Option.isSome(brokers) && brokers.value.trim() !== ""
      ? {
        kind: "kafka",
        layer: client === "kafkajs" ? KafkaJsTransport.layerFromEnv({ logLevel: "warn" }) : KafkaTransport.layerFromEnv(),
      }
      : { kind: "memory", layer: MemoryTransport.layer() },
)
