/**
 * The `partita` command line as a process (bin/partita.ts on the runtime the test runs on): its
 * exit codes for bad arguments and environments, and for a cluster it cannot reach. Its output
 * against the real broker is in tests/cli.kafka.test.ts.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { partita } from "./fixtures/cli.ts"

test("partita: --help prints the usage and exits 0", async () => {
  const { code, stdout } = await partita(["--help"], {})
  assert.equal(code, 0)
  assert.match(stdout, /Usage:\n {2}partita dlq replay --from <topic>/)
  assert.match(stdout, /Exit codes: 0 done, 1 the transport or broker failed, 2 bad arguments or environment/)
})

test("partita: bad arguments print what is wrong on stderr and exit 2", async () => {
  const unknown = await partita(["dlq", "purge"], { KAFKA_BROKERS: "127.0.0.1:1" })
  assert.equal(unknown.code, 2)
  assert.equal(unknown.stdout, "")
  assert.equal(unknown.stderr.trim(), 'partita: Unknown command "dlq purge": dlq has replay and list (see `partita --help`)')
  const since = await partita(["dlq", "replay", "--from", "t", "--since", "yesterday"], { KAFKA_BROKERS: "127.0.0.1:1" })
  assert.equal(since.code, 2)
  assert.match(since.stderr, /--since "yesterday" is neither a time/)
})

test("partita: without KAFKA_BROKERS it exits 2, saying the embedded broker is reachable only from its own process", async () => {
  const { code, stderr } = await partita(["topics"], { KAFKA_BROKERS: "" })
  assert.equal(code, 2)
  assert.match(stderr, /No Kafka cluster to talk to: set KAFKA_BROKERS/)
  assert.match(stderr, /call DeadLetterReplay\.replay or DeadLetterReplay\.list/)
  const client = await partita(["topics"], { KAFKA_BROKERS: "127.0.0.1:1", KAFKA_CLIENT: "librdkafka" })
  assert.equal(client.code, 2)
  assert.match(client.stderr, /the environment is not valid: .*KAFKA_CLIENT/)
})

test("partita: a cluster it cannot reach exits 1 with the transport's message", async () => {
  const { code, stderr } = await partita(["dlq", "list", "--from", "t"], { KAFKA_BROKERS: "127.0.0.1:1" })
  assert.equal(code, 1)
  assert.match(stderr, /^partita: Cannot reach any Kafka broker \(tried 127\.0\.0\.1:1\)/)
})
