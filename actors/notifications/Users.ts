/**
 * Who may use the app: the users, their bearer tokens and who follows whom, all from
 * configuration (this app has no user database).
 *
 * Tokens are `Redacted` from the moment they are read, so they never reach a log or an error
 * message, and they are compared in constant time: both sides are hashed with SHA-256 and the
 * digests compared with a loop that looks at every byte of every user's digest, so neither the
 * length of a token nor which user it belongs to shows in the time an answer takes.
 *
 * The defaults (Emma, Bruno, Chen with demo tokens) are public: `NOTIFY_TOKENS` replaces them.
 */
import { Config, Context, Data, Effect, Layer, Option, Redacted } from "effect"

/**
 * @category models
 */
export interface User {
  readonly id: number
  readonly name: string
}

/**
 * @category models
 */
export interface Options {
  readonly users?: ReadonlyArray<User> | undefined
  /** A token per user id. A user without one cannot sign in. */
  readonly tokens?: ReadonlyMap<number, Redacted.Redacted<string>> | undefined
  /** Author id → the ids of the users who follow them. */
  readonly followers?: ReadonlyMap<number, ReadonlyArray<number>> | undefined
}

/**
 * The demo users, their published tokens and a small follower graph.
 *
 * @category defaults
 */
export const defaults = {
  users: [
    { id: 1, name: "Emma" },
    { id: 2, name: "Bruno" },
    { id: 3, name: "Chen" },
  ] as ReadonlyArray<User>,
  tokens: new Map<number, Redacted.Redacted<string>>([
    [1, Redacted.make("emma-demo-token")],
    [2, Redacted.make("bruno-demo-token")],
    [3, Redacted.make("chen-demo-token")],
  ]) as ReadonlyMap<number, Redacted.Redacted<string>>,
  followers: new Map<number, ReadonlyArray<number>>([
    [1, [2, 3]],
    [2, [1]],
    [3, [1, 2]],
  ]) as ReadonlyMap<number, ReadonlyArray<number>>,
  /** Shorter tokens are refused: they could be guessed. */
  minTokenLength: 12,
}

/**
 * The user directory.
 *
 * @category services
 */
export class Users extends Context.Service<Users, {
  readonly all: ReadonlyArray<User>
  readonly find: (id: number) => Option.Option<User>
  readonly followersOf: (id: number) => ReadonlyArray<User>
  /** The user whose token this is. Constant time in the token and over all users. */
  readonly authenticate: (token: string) => Effect.Effect<Option.Option<User>>
  /**
   * The tokens, for a development listing, when every one of them is a published demo token
   * (so showing them gives nothing away); `None` as soon as any token was configured.
   */
  readonly demoTokens: Option.Option<ReadonlyMap<number, string>>
}>()("notifications/Users") {}

/**
 * The configuration is not usable; the message says which setting and why.
 *
 * @category errors
 */
export class InvalidUsers extends Data.TaggedError("InvalidUsers")<{ readonly reason: string }> {
  override get message(): string {
    return `Invalid user configuration: ${this.reason}`
  }
}

const encoder = new TextEncoder()

const sha256 = (text: string) =>
  Effect.promise(() => crypto.subtle.digest("SHA-256", encoder.encode(text))).pipe(
    Effect.map((digest) => new Uint8Array(digest)),
  )

/** Equal digests, reading every byte whatever the answer. */
const digestsEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  let difference = a.length ^ b.length
  for (let i = 0; i < a.length; i++) difference |= a[i]! ^ (b[i] ?? 0)
  return difference === 0
}

/**
 * Builds the directory, checking that tokens name existing users, are long enough and unique.
 *
 * @category constructors
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const users = options.users ?? defaults.users
  const tokens = options.tokens ?? defaults.tokens
  const followers = options.followers ?? defaults.followers
  const byId = new Map(users.map((user) => [user.id, user]))
  if (byId.size !== users.length) return yield* new InvalidUsers({ reason: "two users have the same id" })

  const digests: Array<{ readonly user: User; readonly digest: Uint8Array }> = []
  const seen = new Set<string>()
  for (const [id, token] of tokens) {
    const user = byId.get(id)
    if (user === undefined) return yield* new InvalidUsers({ reason: `a token is set for user ${id}, who does not exist` })
    const value = Redacted.value(token)
    if (value.length < defaults.minTokenLength) {
      return yield* new InvalidUsers({
        reason: `the token of user ${id} is shorter than ${defaults.minTokenLength} characters`,
      })
    }
    if (seen.has(value)) return yield* new InvalidUsers({ reason: `user ${id} has the same token as another user` })
    seen.add(value)
    digests.push({ user, digest: yield* sha256(value) })
  }
  for (const [author, ids] of followers) {
    for (const id of [author, ...ids]) {
      if (!byId.has(id)) return yield* new InvalidUsers({ reason: `the follower graph names user ${id}, who does not exist` })
    }
  }

  const isDemo = [...tokens].every(([id, token]) => {
    const demo = defaults.tokens.get(id)
    return demo !== undefined && Redacted.value(demo) === Redacted.value(token)
  })

  return Users.of({
    all: users,
    find: (id) => Option.fromNullishOr(byId.get(id)),
    followersOf: (id) => (followers.get(id) ?? []).flatMap((follower) => byId.get(follower) ?? []),
    authenticate: (token) =>
      Effect.map(sha256(token), (presented) => {
        let found: User | undefined
        for (const entry of digests) {
          // No early exit: every user's digest is compared.
          if (digestsEqual(entry.digest, presented) && found === undefined) found = entry.user
        }
        return Option.fromNullishOr(found)
      }),
    demoTokens: isDemo
      ? Option.some(new Map([...tokens].map(([id, token]) => [id, Redacted.value(token)])))
      : Option.none(),
  })
})

/**
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Users, InvalidUsers> => Layer.effect(Users, make(options))

/**
 * Parses `NOTIFY_TOKENS`: `id:token` pairs separated by commas, e.g. `1:s3cret-token-1,2:s3cret-token-2`.
 *
 * @category configuration
 */
export const parseTokens = (text: string): Effect.Effect<ReadonlyMap<number, Redacted.Redacted<string>>, InvalidUsers> =>
  Effect.suspend(() => {
    const tokens = new Map<number, Redacted.Redacted<string>>()
    for (const [index, pair] of text.split(",").map((part) => part.trim()).filter((part) => part !== "").entries()) {
      const separator = pair.indexOf(":")
      const id = Number(pair.slice(0, separator))
      // The token itself never goes into the message.
      if (separator < 1 || !Number.isInteger(id) || id <= 0) {
        return Effect.fail(new InvalidUsers({ reason: `NOTIFY_TOKENS entry ${index + 1} is not "id:token"` }))
      }
      tokens.set(id, Redacted.make(pair.slice(separator + 1)))
    }
    return Effect.succeed(tokens)
  })

/**
 * The directory with the default users, whose tokens `NOTIFY_TOKENS` overrides user by user.
 *
 * @category layers
 */
export const layerFromEnv = (options: Options = {}): Layer.Layer<Users, InvalidUsers | Config.ConfigError> =>
  Layer.effect(
    Users,
    Effect.gen(function*() {
      const text = yield* Config.option(Config.Redacted("NOTIFY_TOKENS"))
      const base = options.tokens ?? defaults.tokens
      const overrides = Option.isSome(text) ? yield* parseTokens(Redacted.value(text.value)) : new Map()
      return yield* make({ ...options, tokens: new Map([...base, ...overrides]) })
    }),
  )
