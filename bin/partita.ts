#!/usr/bin/env -S node --experimental-strip-types --no-warnings
/**
 * The `partita` command line (`partita --help`): dead-letter replay and listing, topics and
 * consumer groups, on the Kafka cluster the environment names. Runs on Bun (`bun
 * bin/partita.ts`), Deno (`deno run -A bin/partita.ts`) and Node 22.6+ (type stripping);
 * `npx partita` and `bunx partita` go through bin/partita.js, which picks how.
 *
 * @module
 */
import process from "node:process"
import { Effect } from "effect"
import { run } from "../lib/internal/cli.ts"

// exitCode rather than exit(): stdout may be a pipe still being written.
process.exitCode = await Effect.runPromise(run(process.argv.slice(2)))
