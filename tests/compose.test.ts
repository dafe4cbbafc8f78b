/**
 * compose.yaml cannot be run here (no Docker engine), so it is kept equivalent to the scripts
 * by hand, and this test holds it to that: the same Kafka version and broker settings as
 * scripts/kafka, the same Jaeger release and ports as scripts/jaeger.
 */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { test } from "node:test"
import { parse } from "yaml"

const root = new URL("../", import.meta.url)
const read = (path: string) => readFileSync(new URL(path, root), "utf8")

interface Compose {
  readonly services: Record<string, { image: string; ports: Array<string>; environment?: Record<string, string> }>
}
const compose = parse(read("compose.yaml")) as Compose

/**
 * The server.properties scripts/kafka writes, as key → value (with its defaults filled in), less
 * its secured listener: SASL_SSL needs the throw-away CA and SCRAM user scripts/kafka makes, so
 * compose.yaml has only the plain listener (the security tests skip, or fail under CI, without it).
 */
const scriptProperties = (): Map<string, string> => {
  const script = read("scripts/kafka")
  const head = script.split(`cat >"$SERVER_PROPS" <<EOF\n`)[1]?.split("\nEOF")[0]
  assert.ok(head !== undefined, "scripts/kafka writes server.properties from a heredoc")
  // The single broker appends `replication_config 1 1` and `common_config`: their heredocs, less
  // the ones for Kafka before 4.0 (`((KAFKA_MAJOR >= 4)) ||`), since compose runs the 4.x pin.
  const heredocsOf = (fn: string): string => {
    const body = script.split(`\n${fn}() {\n`)[1]?.split("\n}\n")[0]
    assert.ok(body !== undefined, `scripts/kafka defines ${fn}`)
    return [...body.matchAll(/^(.*)cat <<'?EOF'?\n([\s\S]*?)\nEOF$/gm)]
      .filter((match) => !match[1]!.includes("KAFKA_MAJOR >= 4)) ||"))
      .map((match) => match[2]!)
      .join("\n")
  }
  const body = [head, heredocsOf("replication_config"), heredocsOf("common_config")].join("\n")
  const values = {
    HOST: "127.0.0.1",
    PORT: "9092",
    CONTROLLER_PORT: "9093",
    SASL_SSL_PORT: "9094",
    DATA: "/data",
    replicas: "1",
    min_isr: "1",
  }
  const lines = body.split("\n").filter((line) => line.trim() !== "" && !line.startsWith("#"))
  const withoutSecured = (value: string) => value.split(",").filter((entry) => !entry.startsWith("SASL_SSL:")).join(",")
  return new Map(lines.map((line) => {
    const [key, ...rest] = line.split("=")
    const value = rest.join("=").replace(/\$(\w+)/g, (_, name: keyof typeof values) => {
      assert.ok(name in values, `scripts/kafka's server.properties uses $${name}, which this test does not know`)
      return values[name]
    })
    return [key!.trim(), withoutSecured(value)]
  }))
}

/** The official image maps KAFKA_FOO_BAR to foo.bar. */
const toProperty = (variable: string) => variable.replace(/^KAFKA_/, "").toLowerCase().replaceAll("_", ".")

test("compose.yaml runs the Kafka version that scripts/kafka fetches", () => {
  const pinned = read("scripts/kafka.pom.xml").match(/<kafka\.version>([^<]+)<\/kafka\.version>/)?.[1]
  assert.ok(pinned !== undefined, "scripts/kafka.pom.xml pins kafka.version")
  assert.equal(compose.services["kafka"]?.image, `apache/kafka:${pinned}`)
})

test("compose.yaml configures the broker as scripts/kafka does", () => {
  const script = scriptProperties()
  const environment = compose.services["kafka"]?.environment ?? {}
  const fromCompose = new Map(Object.entries(environment).map(([key, value]) => [toProperty(key), String(value)]))
  // Where a container legitimately differs: it binds every interface, names itself localhost,
  // keeps data at the image's path and sizes threads for its own host.
  const containerOnly = new Set(["listeners", "controller.quorum.voters", "log.dirs", "num.network.threads", "num.io.threads"])
  for (const [key, value] of script) {
    if (containerOnly.has(key)) continue
    assert.equal(fromCompose.get(key), value, `compose.yaml sets ${key} as scripts/kafka does`)
  }
  for (const key of fromCompose.keys()) {
    assert.ok(script.has(key), `compose.yaml sets ${key}, which scripts/kafka does not`)
  }
  assert.equal(fromCompose.get("listeners"), "PLAINTEXT://:9092,CONTROLLER://:9093")
  assert.deepEqual(compose.services["kafka"]?.ports, ["127.0.0.1:9092:9092"])
})

test("compose.yaml runs the Jaeger release scripts/jaeger builds, on the same ports", () => {
  const script = read("scripts/jaeger")
  const config = parse(read("scripts/jaeger.yaml")) as {
    receivers: { otlp: { protocols: { grpc: { endpoint: string }; http: { endpoint: string } } } }
    extensions: { jaeger_query: { http: { endpoint: string } } }
  }
  const release = script.match(/^V2_VERSION="v([\d.]+)"/m)?.[1]
  assert.ok(release !== undefined, "scripts/jaeger names the v2 release it builds")
  assert.equal(compose.services["jaeger"]?.image, `jaegertracing/jaeger:${release}`)
  const ports = [
    config.receivers.otlp.protocols.grpc.endpoint,
    config.receivers.otlp.protocols.http.endpoint,
    config.extensions.jaeger_query.http.endpoint,
  ].map((endpoint) => endpoint.split(":")[1])
  assert.deepEqual(
    compose.services["jaeger"]?.ports,
    ports.map((port) => `127.0.0.1:${port}:${port}`),
  )
})
