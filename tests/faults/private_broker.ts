/**
 * A private Kafka broker for the scenarios that kill or freeze the broker (F4, F5): started with
 * `scripts/kafka` on a free port with its own state directory, so the shared broker on 9092 is
 * never touched. `stop` always leaves it dead and its directory removed.
 *
 * CI starts one such broker before the tests (.ci/run) and names it in PARTITA_FAULTS_BROKER_PORT
 * and PARTITA_FAULTS_BROKER_DIR, so that each runtime's F4 and F5 do not pay for a broker start
 * and format (a CA and a certificate each time): `start` then returns that one, and `stop`
 * leaves it running and thawed for the next scenario. That broker is every runtime's: its
 * scenarios hold `Locks.faultsBroker` (faultTest takes it), and so does `start` here, reentrantly,
 * until `stop`.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import process from "node:process"
import { acquire, Locks } from "../fixtures/exclusive.ts"
import { freePorts, runScript } from "../fixtures/scriptedKafka.ts"

/** A port whose two successors (the controller's, the SASL_SSL listener's) are free too. */
const freeBrokerPorts = (): Promise<number> => freePorts(3)

export class PrivateBroker {
  readonly port: number
  readonly dir: string
  private readonly env: Record<string, string>

  readonly shared: boolean
  private release: () => void = () => {}

  private constructor(port: number, dir: string, shared = false) {
    this.shared = shared
    this.port = port
    this.dir = dir
    this.env = {
      KAFKA_PORT: String(port),
      KAFKA_CACHE_DIR: dir,
      KAFKA_HEAP_OPTS: "-Xms128m -Xmx512m",
      KAFKA_STOP_TIMEOUT: "10",
    }
  }

  /** Starts a broker on a free port; resolves once it answers metadata requests. */
  static async start(): Promise<PrivateBroker> {
    const sharedPort = process.env["PARTITA_FAULTS_BROKER_PORT"]
    const sharedDir = process.env["PARTITA_FAULTS_BROKER_DIR"]
    if (sharedPort && sharedDir) {
      const shared = new PrivateBroker(Number(sharedPort), sharedDir, true)
      shared.release = await acquire(Locks.faultsBroker, { what: "PrivateBroker.start" })
      try {
        await shared.startAgain()
      } catch (error) {
        shared.release()
        throw error
      }
      return shared
    }
    const broker = new PrivateBroker(await freeBrokerPorts(), fs.mkdtempSync(path.join(os.tmpdir(), "partita-faults-kafka-")))
    await broker.startAgain()
    return broker
  }

  get address(): string {
    return `127.0.0.1:${this.port}`
  }

  /** (Re)starts the broker on the same port and data; resolves once it answers. */
  async startAgain(): Promise<void> {
    const { code, output } = await runScript(["start"], this.env)
    if (code !== 0) throw new Error(`scripts/kafka start failed (${code}):\n${output.slice(-3000)}`)
  }

  pid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.dir, "kafka.pid"), "utf8").trim())
      return Number.isInteger(pid) && pid > 0 ? pid : undefined
    } catch {
      return undefined
    }
  }

  signal(signal: "SIGKILL" | "SIGSTOP" | "SIGCONT"): void {
    const pid = this.pid()
    if (pid === undefined) throw new Error("The private broker has no pid")
    process.kill(pid, signal)
  }

  /** Whether the broker process is alive. */
  alive(): boolean {
    const pid = this.pid()
    if (pid === undefined) return false
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }

  /** Stops the broker (thawing it first) and removes its state; a shared one is left thawed and running. */
  async stop(): Promise<void> {
    if (this.shared) {
      try {
        if (this.alive()) this.signal("SIGCONT")
        await this.startAgain()
      } finally {
        this.release()
      }
      return
    }
    if (this.alive()) {
      try {
        this.signal("SIGCONT")
      } catch {
        // Gone meanwhile.
      }
      await runScript(["stop"], this.env)
      if (this.alive()) this.signal("SIGKILL")
    }
    fs.rmSync(this.dir, { recursive: true, force: true })
  }
}

/**
 * The TCP connections process `pid` has open to `port` on this machine (Linux: its socket fds
 * matched against /proc/net/tcp), to tell a connection leak from a reconnect.
 */
export const connectionsTo = (pid: number, port: number): number => {
  let inodes: Set<string>
  try {
    inodes = new Set(
      fs.readdirSync(`/proc/${pid}/fd`).map((fd) => {
        try {
          return /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
        } catch {
          return undefined
        }
      }).filter((inode): inode is string => inode !== undefined),
    )
  } catch {
    return -1
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0")
  let count = 0
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = ""
    try {
      text = fs.readFileSync(table, "utf8")
    } catch {
      continue
    }
    for (const row of text.split("\n").slice(1)) {
      const fields = row.trim().split(/\s+/)
      if (fields.length < 10) continue
      const remote = fields[2]!
      // 01: ESTABLISHED.
      if (remote.endsWith(`:${hexPort}`) && fields[3] === "01" && inodes.has(fields[9]!)) count++
    }
  }
  return count
}
