/**
 * The fault suite's runner: starts actor apps (tests/faults/app.ts) as child processes on the
 * runtime the test runs on, signals them (SIGTERM, SIGKILL, SIGSTOP, SIGCONT), logs each start,
 * signal and exit to the scenario's history, and stops every child it started in `close`, which a
 * scenario calls in its `finally`.
 *
 * Under Deno children are spawned with `Deno.Command`: Deno's `node:child_process` reports a child
 * it signalled as killed by the signal even when the child handled it and exited 0 (see
 * tests/fixtures/child.ts), and the shutdown scenarios assert exactly that exit code.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import process from "node:process"
import { type History, parseLog } from "./history.ts"

export type Signal = "SIGTERM" | "SIGKILL" | "SIGINT" | "SIGSTOP" | "SIGCONT"

interface DenoChild {
  readonly pid: number
  readonly stdout: ReadableStream<Uint8Array<ArrayBuffer>>
  readonly stderr: ReadableStream<Uint8Array<ArrayBuffer>>
  readonly status: Promise<{ readonly code: number; readonly signal: string | null }>
  kill(signal: string): void
}
interface DenoApi {
  execPath(): string
  readonly Command: new (command: string, options: {
    readonly args: ReadonlyArray<string>
    readonly env: Record<string, string>
    readonly stdin: "null"
    readonly stdout: "piped"
    readonly stderr: "piped"
  }) => { spawn(): DenoChild }
}

/** A spawned process: its output, signals, and its exit (the code, or the signal's name). */
export interface Process {
  readonly pid: number
  readonly kill: (signal: Signal) => void
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<number | string>
  readonly hasExited: () => boolean
  /** Resolves with the first stdout line matching, rejects on exit or after `timeoutMs`. */
  readonly waitForLine: (pattern: RegExp, timeoutMs: number) => Promise<string>
}

const isBun = (globalThis as { readonly Bun?: unknown }).Bun !== undefined

/**
 * Spawns `file` on this runtime (`bun file`, `deno run -A file`, `node file`), with `gc()` exposed
 * on V8 (Bun has `Bun.gc`) so the app can report its heap after a collection.
 */
export const spawnTs = (file: string, env: Record<string, string>): Process => {
  const deno = (globalThis as unknown as { readonly Deno?: DenoApi }).Deno
  const childEnv = { ...process.env, NO_COLOR: "1", ...env } as Record<string, string>
  let stdout = ""
  let stderr = ""
  const listeners = new Set<() => void>()
  const changed = () => listeners.forEach((listener) => listener())
  let pid: number
  let kill: (signal: Signal) => void
  let exited: Promise<number | string>
  if (deno !== undefined) {
    const child = new deno.Command(deno.execPath(), { args: ["run", "-A", "--v8-flags=--expose-gc", file], env: childEnv, stdin: "null", stdout: "piped", stderr: "piped" }).spawn()
    const pump = async (stream: ReadableStream<Uint8Array<ArrayBuffer>>, append: (text: string) => void) => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        append(text)
        changed()
      }
    }
    const pumped = Promise.all([pump(child.stdout, (t) => (stdout += t)), pump(child.stderr, (t) => (stderr = (stderr + t).slice(-200_000)))])
    pid = child.pid
    kill = (signal) => {
      try {
        child.kill(signal)
      } catch {
        // Already gone.
      }
    }
    exited = child.status.then(async (status) => {
      await pumped.catch(() => undefined)
      return status.signal ?? status.code
    })
  } else {
    const child = spawn(process.execPath, [...(isBun ? [] : ["--expose-gc"]), file], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] })
    child.stdout.setEncoding("utf8").on("data", (text: string) => ((stdout += text), changed()))
    child.stderr.setEncoding("utf8").on("data", (text: string) => ((stderr = (stderr + text).slice(-200_000)), changed()))
    pid = child.pid!
    kill = (signal) => void child.kill(signal)
    exited = new Promise((resolve) => child.once("close", (code, signal) => resolve(code ?? signal ?? "unknown")))
  }
  let done = false
  void exited.then(() => {
    done = true
    changed()
  })
  return {
    pid,
    kill,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    hasExited: () => done,
    waitForLine: (pattern, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const line = stdout.split("\n").find((candidate) => pattern.test(candidate))
          if (line !== undefined) return finish(() => resolve(line))
          if (done) return finish(() => reject(new Error(`Exited before printing ${pattern}; stderr:\n${stderr.slice(-3000)}`)))
        }
        const timer = setTimeout(
          () => finish(() => reject(new Error(`Nothing matched ${pattern} within ${timeoutMs} ms; stderr:\n${stderr.slice(-3000)}`))),
          timeoutMs,
        )
        const finish = (settle: () => void) => {
          clearTimeout(timer)
          listeners.delete(check)
          settle()
        }
        listeners.add(check)
        check()
      }),
  }
}

/** How big a scenario runs: `ci` (the default) or `full` (PARTITA_FAULTS_SCALE=full). */
export const fullScale = process.env["PARTITA_FAULTS_SCALE"] === "full"
/** `ci` at CI scale, `full` at full scale. */
export const scaled = <A>(ci: A, full: A): A => (fullScale ? full : ci)

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `condition` every 50 ms until it holds; rejects with `what` after `timeoutMs`. */
export const until = async (what: string, condition: () => boolean, timeoutMs: number): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50)
  }
}

const appFile = new URL("./app.ts", import.meta.url).pathname

/** User plus system CPU time of a live process, in ms (Linux /proc; undefined elsewhere). */
export const cpuMillisOf = (pid: number): number | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // Fields after the command (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second).
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return undefined
  }
}

/** One incarnation of an actor app: `label.n`. */
export interface Member {
  readonly id: string
  readonly label: string
  readonly process: Process
  /** When the member was sent each signal. */
  readonly signals: Array<{ readonly signal: Signal; readonly t: number }>
}

/**
 * The processes and the history of one scenario. Every child it starts is stopped by `close`.
 */
export class Scenario {
  readonly dir: string
  private readonly members: Array<Member> = []
  private readonly incarnations = new Map<string, number>()
  private readonly runnerLog: number
  /** Lines read so far from every log, by file, for progress. */
  private readonly tails = new Map<string, { position: number; partial: string }>()
  /** Distinct `partition@offset` handled so far, across members. */
  readonly handledSoFar = new Set<string>()
  /** Every parsed line of every log so far. */
  readonly lines: Array<Record<string, any>> = []

  readonly name: string
  readonly baseEnv: Record<string, string>

  constructor(name: string, baseEnv: Record<string, string>) {
    this.name = name
    this.baseEnv = baseEnv
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `partita-faults-${name}-`))
    this.runnerLog = fs.openSync(path.join(this.dir, "runner.jsonl"), "a")
  }

  /** Appends a line to the runner's own log (exits, signals, notes). */
  log(line: Record<string, unknown>): void {
    fs.writeSync(this.runnerLog, JSON.stringify(line) + "\n")
  }

  /** Starts a new incarnation of `label` with `env` over the scenario's base environment. */
  start(label: string, env: Record<string, string> = {}): Member {
    const n = (this.incarnations.get(label) ?? 0) + 1
    this.incarnations.set(label, n)
    const id = `${label}.${n}`
    const logFile = path.join(this.dir, `${id}.jsonl`)
    const child = spawnTs(appFile, { ...this.baseEnv, ...env, MEMBER: id, LOG: logFile })
    const member: Member = { id, label, process: child, signals: [] }
    this.members.push(member)
    this.log({ e: "start", m: id, t: Date.now(), pid: child.pid })
    void child.exited.then((code) => {
      // A SIGKILLed process is gone when the signal is sent; the exit is only observed later.
      const killed = member.signals.find((s) => s.signal === "SIGKILL")
      this.log({ e: "exit", m: id, t: code === "SIGKILL" && killed !== undefined ? killed.t : Date.now(), code })
    })
    return member
  }

  /**
   * Sends `signal`, logging it and, before a SIGTERM or SIGKILL, the CPU time the process used
   * so far (`cpu` line, from /proc: the process's own stats may not have been written yet).
   */
  signal(member: Member, signal: Signal): void {
    const t = Date.now()
    member.signals.push({ signal, t })
    if (signal === "SIGTERM" || signal === "SIGKILL") {
      const cpu = cpuMillisOf(member.process.pid)
      if (cpu !== undefined) this.log({ e: "cpu", m: member.id, ms: cpu, t })
    }
    this.log({ e: "signal", m: member.id, signal, t })
    member.process.kill(signal)
  }

  /** Every member started so far. */
  all(): ReadonlyArray<Member> {
    return this.members
  }

  /** Reads what the logs gained since the last call. */
  poll(): void {
    for (const file of fs.readdirSync(this.dir)) {
      if (!file.endsWith(".jsonl")) continue
      const full = path.join(this.dir, file)
      const tail = this.tails.get(full) ?? { position: 0, partial: "" }
      this.tails.set(full, tail)
      const size = fs.statSync(full).size
      if (size <= tail.position) continue
      const buffer = Buffer.alloc(size - tail.position)
      const handle = fs.openSync(full, "r")
      try {
        fs.readSync(handle, buffer, 0, buffer.length, tail.position)
      } finally {
        fs.closeSync(handle)
      }
      tail.position = size
      const text = tail.partial + buffer.toString("utf8")
      const complete = text.split("\n")
      tail.partial = complete.pop() ?? ""
      for (const raw of complete) {
        if (raw === "") continue
        try {
          const line = JSON.parse(raw) as Record<string, any>
          this.lines.push(line)
          if (line["e"] === "handled") this.handledSoFar.add(`${line["p"]}@${line["o"]}`)
        } catch {
          // A line cut by a kill.
        }
      }
    }
  }

  /** Waits until `count` distinct records were handled (across members). */
  async handled(count: number, timeoutMs = 60_000): Promise<void> {
    await until(`${count} records handled`, () => (this.poll(), this.handledSoFar.size >= count), timeoutMs)
  }

  /** Every log of the scenario as one history (before the topics are read back). */
  history(): Omit<History, "topic" | "deadLetterTopic" | "outputTopic" | "finalCommitted" | "ordering"> {
    const text = fs.readdirSync(this.dir).filter((file) => file.endsWith(".jsonl")).map((file) =>
      fs.readFileSync(path.join(this.dir, file), "utf8")
    ).join("\n")
    return parseLog(text)
  }

  /** Stops every child still running (SIGCONT first, for stopped ones), and waits for their exits. */
  async close(): Promise<void> {
    for (const member of this.members) {
      if (member.process.hasExited()) continue
      member.process.kill("SIGCONT")
      member.process.kill("SIGKILL")
      member.signals.push({ signal: "SIGKILL", t: Date.now() })
    }
    await Promise.all(this.members.map((member) => member.process.exited))
    // Give the exit observers their turn to write.
    await sleep(10)
    fs.closeSync(this.runnerLog)
    if (process.env["PARTITA_FAULTS_KEEP"] !== "1") fs.rmSync(this.dir, { recursive: true, force: true })
    else console.log(`fault logs kept in ${this.dir}`)
  }
}
