/**
 * The `partita` command line's argument parsing: each command's options become a typed command,
 * and what is wrong becomes a UsageError naming the problem and the help to read.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Duration } from "effect"
import { parse, parseDuration, UsageError } from "../../lib/internal/cliArgs.ts"

const problem = (args: ReadonlyArray<string>): string => {
  const parsed = parse(args)
  assert.ok(parsed instanceof UsageError, `expected a UsageError for ${args.join(" ")}`)
  return parsed.message
}

test("cliArgs: dlq replay takes --from, --to, repeated --where, --since (a time or a duration), --group, --batch-size and --session-timeout", () => {
  const parsed = parse([
    "dlq", "replay", "--from", "orders.dlq", "--to=orders.retry",
    "--where", "error=DecodeError", "--where", "error=HandlerTimeout", "--where=actor=billing", "--where", "source=orders",
    "--since", "2h", "--group", "g", "--batch-size", "50", "--session-timeout", "10s",
  ])
  assert.ok(!(parsed instanceof UsageError) && parsed._tag === "DlqReplay")
  assert.equal(parsed.from, "orders.dlq")
  assert.equal(parsed.to, "orders.retry")
  assert.deepEqual(parsed.where, { error: ["DecodeError", "HandlerTimeout"], actor: ["billing"], sourceTopic: ["orders"] })
  assert.ok(Duration.isDuration(parsed.since) && Duration.toMillis(parsed.since) === 7_200_000)
  assert.equal(parsed.group, "g")
  assert.equal(parsed.batchSize, 50)
  assert.equal(Duration.toMillis(parsed.sessionTimeout!), 10_000)
  const at = parse(["dlq", "replay", "--from", "t", "--since", "2026-12-01T10:00:00Z"])
  assert.ok(!(at instanceof UsageError) && at._tag === "DlqReplay" && at.since instanceof Date)
  assert.equal((at.since as Date).toISOString(), "2026-12-01T10:00:00.000Z")
  const epoch = parse(["dlq", "replay", "--from", "t", "--since", "1700000000000"])
  assert.ok(!(epoch instanceof UsageError) && epoch._tag === "DlqReplay" && (epoch.since as Date).getTime() === 1_700_000_000_000)
  assert.equal(Duration.toMillis(parseDuration("2 hours")!), 7_200_000)
  assert.equal(Duration.toMillis(parseDuration("500ms")!), 500)
  assert.equal(parseDuration("soon"), undefined)
})

test("cliArgs: dlq list, topics and groups describe", () => {
  assert.deepEqual(parse(["dlq", "list", "--from", "t.dlq"]), { _tag: "DlqList", from: "t.dlq", limit: 20 })
  assert.deepEqual(parse(["dlq", "list", "--from", "t.dlq", "--limit", "5"]), { _tag: "DlqList", from: "t.dlq", limit: 5 })
  assert.deepEqual(parse(["topics"]), { _tag: "Topics" })
  assert.deepEqual(parse(["groups", "describe", "billing"]), { _tag: "GroupsDescribe", group: "billing" })
  for (const args of [[], ["--help"], ["dlq", "replay", "--help"], ["dlq", "list", "-h"], ["groups"], ["topics", "--help"]]) {
    const parsed = parse(args)
    assert.ok(!(parsed instanceof UsageError) && parsed._tag === "Help", args.join(" "))
    assert.match(parsed.text, /^partita/)
  }
})

test("cliArgs: bad arguments say what is wrong and which help to read", () => {
  assert.equal(problem(["deploy"]), 'Unknown command "deploy" (see `partita --help`)')
  assert.equal(problem(["dlq", "replay"]), "dlq replay needs --from <dead-letter topic> (see `partita dlq replay --help`)")
  assert.equal(problem(["dlq", "replay", "--from"]), "--from needs a value (see `partita dlq replay --help`)")
  assert.equal(problem(["dlq", "replay", "--from", "t", "--frm", "x"]), "Unknown option --frm (see `partita dlq replay --help`)")
  assert.equal(problem(["dlq", "replay", "--from", "t", "--from", "u"]), "--from is given twice (see `partita dlq replay --help`)")
  assert.match(problem(["dlq", "replay", "--from", "t", "--where", "tag=DecodeError"]), /--where "tag=DecodeError" is not <key>=<value> with key error, actor or source/)
  assert.match(problem(["dlq", "replay", "--from", "t", "--since", "yesterday"]), /--since "yesterday" is neither a time/)
  assert.match(problem(["dlq", "replay", "--from", "t", "--batch-size", "0"]), /--batch-size "0" is not a positive integer/)
  assert.match(problem(["dlq", "list", "--from", "t", "--limit", "many"]), /--limit "many" is not a positive integer/)
  assert.match(problem(["dlq", "purge"]), /Unknown command "dlq purge": dlq has replay and list/)
  assert.match(problem(["groups", "describe"]), /groups describe needs a group name/)
  assert.match(problem(["groups", "describe", "a", "b"]), /Unexpected argument "b"/)
  assert.match(problem(["topics", "extra"]), /Unexpected argument "extra"/)
})
