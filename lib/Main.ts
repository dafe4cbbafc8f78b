/**
 * Running a Partita program as a process: SIGINT and SIGTERM become a graceful shutdown.
 *
 * `runMain` forks the program and, on the first SIGINT or SIGTERM, interrupts it: its scopes
 * close, so an `ActorSystem` stops fetching, finishes the records already started within its
 * shutdown deadline (prefetched ones are left to the next owner), commits, flushes its producer
 * and leaves its groups, all within the deadline plus one second. The process then exits 0, or
 * non-zero when the program failed (a shutdown that ran past its deadline counts as a failure,
 * and its message says what was left). A second signal exits at once with 130.
 *
 * Signals come from `node:process`, which Bun, Deno and Node all provide, so this one file
 * serves every runtime.
 *
 * @since 0.1.0
 */
import process from "node:process"
import { Cause, Effect, Exit } from "effect"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Exit the process when the program ends. Default true; tests turn it off. */
  readonly exit?: boolean | undefined
  /** Called with the exit code instead of exiting, when `exit` is false. */
  readonly onExit?: ((code: number) => void) | undefined
}

/**
 * The exit code for a program's exit: 0 for success or a plain interruption (a requested
 * shutdown), 1 for anything else.
 *
 * @since 0.1.0
 * @category getters
 */
export const exitCode = <A, E>(exit: Exit.Exit<A, E>): number =>
  Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1

/**
 * What to print for a failed program: a typed error's message (an expected failure, such as a
 * port in use, needs no stack trace), the full cause for defects.
 */
const describeFailure = <E>(cause: Cause.Cause<E>): string => {
  if (Cause.hasDies(cause)) return Cause.pretty(cause)
  const error = Cause.findErrorOption(cause)
  if (error._tag === "Some") {
    const value = error.value as { readonly _tag?: string; readonly message?: string }
    const tag = typeof value._tag === "string" ? `${value._tag}: ` : ""
    return typeof value.message === "string" && value.message !== "" ? `${tag}${value.message}` : Cause.pretty(cause)
  }
  return Cause.pretty(cause)
}

/**
 * Runs `program` as the process's main: signals shut it down gracefully.
 *
 * @since 0.1.0
 * @category runners
 */
export const runMain = <A, E>(program: Effect.Effect<A, E>, options: Options = {}): void => {
  const fiber = Effect.runFork(program)
  let signalled = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      process.stderr.write(`Received ${signal} again: exiting now\n`)
      process.exit(130)
    }
    signalled = true
    process.stderr.write(`Received ${signal}: shutting down gracefully\n`)
    fiber.interruptUnsafe()
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  fiber.addObserver((exit) => {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
    const code = exitCode(exit)
    if (code !== 0) process.stderr.write(`${describeFailure((exit as Exit.Failure<A, E>).cause)}\n`)
    if (options.exit === false) options.onExit?.(code)
    else process.exit(code)
  })
}
