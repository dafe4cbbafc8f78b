#!/usr/bin/env node
// The `partita` bin (npx partita, bunx partita): runs bin/partita.ts where TypeScript runs.
// Bun and Deno run it as it is; Node strips its types from 22.6 on (by default from 22.18, with
// --experimental-strip-types before), but never for a file under node_modules, so from an
// installed package on Node, run `bunx partita` or `deno run -A <path>/bin/partita.ts` instead.
import { spawnSync } from "node:child_process"
import process from "node:process"
import { fileURLToPath } from "node:url"

const entry = fileURLToPath(new URL("./partita.ts", import.meta.url))
const isNode = process.versions.bun === undefined && typeof globalThis.Deno === "undefined"
if (isNode && entry.includes("/node_modules/")) {
  process.stderr.write(`partita: Node does not run TypeScript from node_modules: run \`bunx --bun partita\` or \`deno run -A ${entry}\`\n`)
  process.exit(2)
} else if (!isNode || process.features.typescript) {
  await import("./partita.ts")
} else {
  const [major, minor] = process.versions.node.split(".").map(Number)
  if (major < 22 || (major === 22 && minor < 6)) {
    process.stderr.write(`partita: Node ${process.versions.node} cannot run TypeScript: use Node 22.6 or newer, Bun (bun bin/partita.ts) or Deno (deno run -A bin/partita.ts)\n`)
    process.exit(2)
  }
  const child = spawnSync(process.execPath, ["--experimental-strip-types", "--no-warnings", entry, ...process.argv.slice(2)], { stdio: "inherit" })
  process.exit(child.status ?? 1)
}
