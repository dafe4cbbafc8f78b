/**
 * Notification ids, as a service so tests can make them predictable.
 *
 * `random` is a v4 UUID for a notification posted over HTTP. `derived` is a name-based v5 UUID
 * (SHA-1 of a namespace and a name): the fan-out actor derives each notification's id from the
 * coordinates of the `post-liked` record it came from, so handling that record again produces
 * the same ids and the store drops the copies.
 */
import { Context, Effect, Layer } from "effect"

/**
 * @category services
 */
export class Ids extends Context.Service<Ids, {
  readonly random: Effect.Effect<string>
  readonly derived: (name: string) => Effect.Effect<string>
}>()("notifications/Ids") {}

/** This app's namespace for v5 UUIDs (itself a random UUID, fixed forever). */
const namespace = "6f1c1d0e-8d0a-4a5e-9a55-3c1f2b7d9e41"

const hex = (bytes: Uint8Array): string => [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("")

const parseUuid = (uuid: string): Uint8Array =>
  Uint8Array.from(uuid.replaceAll("-", "").match(/../g)!.map((pair) => parseInt(pair, 16)))

const formatUuid = (bytes: Uint8Array): string => {
  const text = hex(bytes)
  return `${text.slice(0, 8)}-${text.slice(8, 12)}-${text.slice(12, 16)}-${text.slice(16, 20)}-${text.slice(20, 32)}`
}

/**
 * The v5 UUID of `name` in this app's namespace (RFC 9562, section 5.5).
 *
 * @category constructors
 */
export const uuidV5 = (name: string): Effect.Effect<string> =>
  Effect.promise(() => {
    const input = new Uint8Array([...parseUuid(namespace), ...new TextEncoder().encode(name)])
    return crypto.subtle.digest("SHA-1", input)
  }).pipe(Effect.map((digest) => {
    const bytes = new Uint8Array(digest).slice(0, 16)
    bytes[6] = (bytes[6]! & 0x0f) | 0x50
    bytes[8] = (bytes[8]! & 0x3f) | 0x80
    return formatUuid(bytes)
  }))

/**
 * Random ids from the platform's `crypto.randomUUID`.
 *
 * @category layers
 */
export const layer: Layer.Layer<Ids> = Layer.succeed(Ids, {
  random: Effect.sync(() => crypto.randomUUID()),
  derived: uuidV5,
})
