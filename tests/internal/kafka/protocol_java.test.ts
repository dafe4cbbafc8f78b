import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import type { Api, Data } from "../../../lib/internal/kafka/protocol/api.ts"
import { apis, dataMessages } from "../../../lib/internal/kafka/protocol/index.ts"
import { Writer } from "../../../lib/internal/kafka/protocol/wire.ts"
import { defaultJar } from "../../../scripts/generate-protocol.ts"
import { apiModels, dataModels, seeded, valueOf } from "./protocolValues.ts"

// The round trips in protocol.test.ts show the codecs agree with themselves; this shows they
// agree with Kafka: its own generated message classes (the same JSON, Kafka's Java generator)
// parse every request and response version we write, to the last byte, and write back the same
// bytes. Java is the one scripts/kafka runs the broker with.

const here = import.meta.dirname ?? new URL(".", import.meta.url).pathname

test("Kafka's Java message classes read every generated request, response and data message version and write back the same bytes", () => {
  const jar = defaultJar()
  assert.ok(existsSync(jar), `${jar} is missing: run \`scripts/kafka fetch\` (it fetches the Kafka jars with Maven)`)
  const rounds = Number(process.env.PARTITA_PROTOCOL_ROUNDS ?? 4)
  const random = seeded(447)
  const cases = new Writer(1 << 16)
  let count = 0
  for (const [i, api] of (apis as ReadonlyArray<Api<unknown, unknown>>).entries()) {
    const model = apiModels()[i]!
    for (let v = api.minVersion; v <= api.maxVersion; v++) {
      for (let round = 0; round < rounds; round++) {
        for (const side of [0, 1] as const) {
          const body = new Writer()
          if (side === 0) api.encodeRequest(body, v, valueOf(model.request.top, v, random))
          else api.encodeResponse(body, v, valueOf(model.response.top, v, random))
          cases.int16(api.key)
          cases.int16(v)
          cases.int8(side)
          cases.bytes(body.finish())
          count++
        }
      }
    }
  }
  // Data messages, keyed -1, -2, … in the generator's order (ProtocolCheck.java knows them).
  for (const [i, data] of (dataMessages as ReadonlyArray<Data<unknown>>).entries()) {
    const model = dataModels()[i]!
    for (let v = data.minVersion; v <= data.maxVersion; v++) {
      for (let round = 0; round < rounds * 4; round++) {
        const body = new Writer()
        data.encode(body, v, valueOf(model.message.top, v, random))
        cases.int16(-1 - i)
        cases.int16(v)
        cases.int8(0)
        cases.bytes(body.finish())
        count++
      }
    }
  }
  const dir = mkdtempSync(join(tmpdir(), "partita-protocol-java-"))
  try {
    const file = join(dir, "cases.bin")
    writeFileSync(file, cases.finish())
    const java = process.env.JAVA_HOME ? join(process.env.JAVA_HOME, "bin/java") : "java"
    let output: string
    try {
      output = execFileSync(java, ["-cp", join(jar, "..", "*"), join(here, "ProtocolCheck.java"), file], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      })
    } catch (error) {
      const failure = error as { code?: string; stdout?: string; stderr?: string }
      if (failure.code === "ENOENT") assert.fail("java is not on PATH (nor JAVA_HOME set): it is needed here as for scripts/kafka")
      throw new Error(`ProtocolCheck.java failed: ${failure.stdout ?? ""}${failure.stderr ?? ""}`)
    }
    assert.equal(output.trim().split("\n").at(-1), `checked ${count}, 0 differ`, output)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
