/**
 * The app as a child process, on the runtime the test runs on, for the shutdown tests: its
 * output collected line by line, signals, its exit, and a `stop` that always leaves it dead.
 *
 * Under Deno the child is spawned with `Deno.Command`, because Deno's `node:child_process`
 * reports a child that handled a signal and exited 0 as killed by the signal, which is the very
 * difference these tests check.
 */
import { spawn } from "node:child_process"
import process from "node:process"

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

export interface Child {
  readonly pid: number
  readonly kill: (signal: "SIGTERM" | "SIGINT" | "SIGKILL") => void
  readonly stdout: () => string
  readonly stderr: () => string
  /** The first stdout line matching, once it is printed. */
  readonly waitForLine: (pattern: RegExp, timeoutMs: number) => Promise<RegExpExecArray>
  /** The exit code, or the name of the signal that killed it. */
  readonly exited: Promise<number | string>
  /** Kills it unless it already exited, and waits for the exit. */
  readonly stop: () => Promise<void>
}

/** Runs a TypeScript file on this runtime: `bun file`, `deno run -A file`, `node file`. */
export const startChild = (file: string, env: Record<string, string>): Child => {
  const deno = (globalThis as unknown as { readonly Deno?: DenoApi }).Deno
  const childEnv = { ...process.env, NO_COLOR: "1", ...env } as Record<string, string>
  let stdout = ""
  let stderr = ""
  const listeners = new Set<() => void>()
  const onOutput = () => listeners.forEach((listener) => listener())

  let pid: number
  let kill: Child["kill"]
  let exited: Promise<number | string>
  if (deno !== undefined) {
    const child = new deno.Command(deno.execPath(), {
      args: ["run", "-A", file],
      env: childEnv,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn()
    const pump = async (stream: ReadableStream<Uint8Array<ArrayBuffer>>, append: (text: string) => void) => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        append(text)
        onOutput()
      }
    }
    const pumped = Promise.all([pump(child.stdout, (t) => (stdout += t)), pump(child.stderr, (t) => (stderr += t))])
    pid = child.pid
    kill = (signal) => child.kill(signal)
    exited = child.status.then(async (status) => {
      await pumped
      return status.signal ?? status.code
    })
  } else {
    const child = spawn(process.execPath, [file], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] })
    child.stdout.setEncoding("utf8").on("data", (text: string) => ((stdout += text), onOutput()))
    child.stderr.setEncoding("utf8").on("data", (text: string) => ((stderr += text), onOutput()))
    pid = child.pid!
    kill = (signal) => void child.kill(signal)
    exited = new Promise((resolve) => child.once("close", (code, signal) => resolve(code ?? signal ?? "unknown")))
  }
  let done = false
  void exited.then(() => {
    done = true
    onOutput()
  })

  return {
    pid,
    kill,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    waitForLine: (pattern, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = stdout.split("\n").map((line) => pattern.exec(line)).find((m) => m !== null)
          if (match !== undefined && match !== null) return finish(() => resolve(match))
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
    stop: async () => {
      if (!done) kill("SIGKILL")
      await exited
    },
  }
}

/** Resolves with the promise's value, or rejects after `timeoutMs`. */
export const within = <A>(promise: Promise<A>, timeoutMs: number, what: string): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} took longer than ${timeoutMs} ms`)), timeoutMs)
    }),
  ]).finally(() => clearTimeout(timer))
}

/** Whether a process with this id exists (signal 0 checks without sending anything). */
export const isRunning = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
