/**
 * Who is asking: the bearer token of the `Authorization` header, checked against the users'
 * tokens in constant time (see `Users.authenticate`).
 *
 * Browsers' `EventSource` cannot set headers, so the live stream, and only it, also accepts the
 * token as `?token=`. A token in a URL can end up in proxy logs and browser history; the app
 * itself never logs query strings, and a header is preferred wherever the client can send one.
 */
import { Effect, Option } from "effect"
import { type User, Users } from "../Users.ts"
import { Forbidden, Unauthorized } from "./Errors.ts"

const bearer = /^Bearer\s+(\S+)\s*$/i

/** The token a request presents, if any. */
const tokenOf = (request: Request, url: URL, allowQueryToken: boolean): string | undefined => {
  const header = request.headers.get("authorization")
  if (header !== null) return bearer.exec(header)?.[1] ?? ""
  if (allowQueryToken) return url.searchParams.get("token") ?? undefined
  return undefined
}

/**
 * The signed-in user, or `Unauthorized`.
 *
 * @category authentication
 */
export const authenticate = (request: Request, url: URL, options: { readonly allowQueryToken?: boolean } = {}) =>
  Effect.gen(function*() {
    const token = tokenOf(request, url, options.allowQueryToken ?? false)
    if (token === undefined) return yield* new Unauthorized({ reason: "missing" })
    const user = yield* (yield* Users).authenticate(token)
    if (Option.isNone(user)) return yield* new Unauthorized({ reason: "invalid" })
    return user.value
  })

/**
 * Succeeds when `user` is the owner `userId`; a user reads only their own notifications.
 *
 * @category authorization
 */
export const requireSelf = (user: User, userId: number, what: string) =>
  user.id === userId
    ? Effect.void
    : Effect.fail(new Forbidden({ error: `Forbidden: user ${user.id} cannot ${what} of user ${userId}` }))
