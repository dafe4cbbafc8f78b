/**
 * The Kafka transports' configuration from the environment: `KAFKA_BROKERS`, `KAFKA_CLIENT_ID`,
 * `KAFKA_SSL`, `KAFKA_SSL_CA_FILE` and `KAFKA_SASL_*`, read the same way for `KafkaTransport`
 * and `KafkaJsTransport`, so an app switches transports without touching its environment.
 */
import { readFile } from "node:fs/promises"
import type * as tls from "node:tls"
import { Config, ConfigProvider, Effect, Option } from "effect"
import type { SaslCredentials } from "./kafka/sasl.ts"

/** What the environment can say about a Kafka connection. */
export interface EnvOptions {
  readonly brokers: ReadonlyArray<string>
  readonly clientId?: string
  readonly ssl?: boolean | { readonly ca: string }
  readonly sasl?: SaslCredentials
}

/** The PEM file `KAFKA_SSL_CA_FILE` names, read when the config is; a file that cannot be is a `ConfigError`. */
const caFile = Config.option(Config.String("KAFKA_SSL_CA_FILE")).pipe(
  Config.mapEffect(Option.match({
    onNone: () => Effect.succeed(Option.none<string>()),
    onSome: (path) =>
      Effect.tryPromise({
        try: () => readFile(path, "utf8"),
        catch: (error) =>
          new Config.ConfigError(
            new ConfigProvider.SourceError({
              message: `Cannot read the CA certificates in KAFKA_SSL_CA_FILE "${path}": ${
                error instanceof Error ? error.message : String(error)
              }`,
              cause: error,
            }),
          ),
      }).pipe(Effect.map(Option.some)),
  })),
)

/** See `KafkaTransport.config`. */
export const config: Config.Config<EnvOptions> = Config.all({
  brokers: Config.String("KAFKA_BROKERS").pipe(
    Config.map((value) => value.split(",").map((broker) => broker.trim()).filter((broker) => broker !== "")),
  ),
  clientId: Config.option(Config.String("KAFKA_CLIENT_ID")),
  ssl: Config.all({ enabled: Config.option(Config.Boolean("KAFKA_SSL")), ca: caFile }).pipe(
    Config.mapEffect(({ enabled, ca }): Effect.Effect<Option.Option<boolean | { readonly ca: string }>, Config.ConfigError> => {
      if (Option.isNone(ca)) return Effect.succeed(enabled)
      if (Option.isSome(enabled) && !enabled.value) {
        return Effect.fail(
          new Config.ConfigError(
            new ConfigProvider.SourceError({
              message: "KAFKA_SSL_CA_FILE is set but KAFKA_SSL=false: a CA file is for TLS, unset one of them",
            }),
          ),
        )
      }
      return Effect.succeed(Option.some({ ca: ca.value }))
    }),
  ),
  sasl: Config.option(Config.Literals(["plain", "scram-sha-256", "scram-sha-512"], "KAFKA_SASL_MECHANISM"))
    .pipe(
      Config.flatMap(Option.match({
        onNone: () => Config.succeed(Option.none<SaslCredentials>()),
        onSome: (mechanism) =>
          Config.all({
            username: Config.String("KAFKA_SASL_USERNAME"),
            password: Config.Redacted("KAFKA_SASL_PASSWORD"),
          })
            .pipe(Config.map((credentials) => Option.some<SaslCredentials>({ mechanism, ...credentials }))),
      })),
    ),
}).pipe(Config.map(({ brokers, clientId, ssl, sasl }): EnvOptions => ({
  brokers,
  ...(Option.isSome(clientId) ? { clientId: clientId.value } : {}),
  ...(Option.isSome(ssl) ? { ssl: ssl.value } : {}),
  ...(Option.isSome(sasl) ? { sasl: sasl.value } : {}),
})))

/**
 * Options given in code with what the environment says on top: the environment wins, except
 * that `KAFKA_SSL=true` keeps TLS options given in code, and `KAFKA_SSL_CA_FILE` adds its CA to them.
 */
export const withEnv = <O extends { readonly ssl?: boolean | tls.ConnectionOptions | undefined }>(
  options: O,
  fromEnv: EnvOptions,
): O => ({
  ...options,
  ...fromEnv,
  ...(fromEnv.ssl === true && options.ssl !== undefined && options.ssl !== false
    ? { ssl: options.ssl }
    : typeof fromEnv.ssl === "object" && typeof options.ssl === "object"
    ? { ssl: { ...options.ssl, ...fromEnv.ssl } }
    : {}),
})
