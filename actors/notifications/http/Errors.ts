/**
 * What the API answers when a request cannot be served, one tagged error per condition, and the
 * one function that turns them into JSON responses: `{"error": "...", "problems": [...]}`.
 * Messages say what was wrong and what to do; they never carry a stack trace, a token or an
 * internal error's text.
 */
import { Data } from "effect"

/**
 * One thing wrong with a request: where (a path into the body or query) and what.
 *
 * @category models
 */
export interface Problem {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

/** 400: the body or query did not validate; every problem is listed. */
export class BadRequest extends Data.TaggedError("BadRequest")<{
  readonly error: string
  readonly problems: ReadonlyArray<Problem>
}> {}

/** 401: no bearer token, or one that belongs to nobody. */
export class Unauthorized extends Data.TaggedError("Unauthorized")<{ readonly reason: "missing" | "invalid" }> {}

/** 403: a valid token, for another user. */
export class Forbidden extends Data.TaggedError("Forbidden")<{ readonly error: string }> {}

/** 404: no such route or no such user. */
export class NotFound extends Data.TaggedError("NotFound")<{
  readonly error: string
  readonly problems?: ReadonlyArray<Problem> | undefined
}> {}

/** 405: the path exists, the method does not. */
export class MethodNotAllowed extends Data.TaggedError("MethodNotAllowed")<{ readonly allow: ReadonlyArray<string> }> {}

/** 413: the body is over the limit. */
export class PayloadTooLarge extends Data.TaggedError("PayloadTooLarge")<{ readonly limit: number }> {}

/** 415: a body in a format the API does not read. */
export class UnsupportedMediaType extends Data.TaggedError("UnsupportedMediaType")<{
  readonly contentType: string
}> {}

/** 503: the broker did not acknowledge in time, or the app is shutting down. */
export class Unavailable extends Data.TaggedError("Unavailable")<{ readonly error: string }> {}

/**
 * @category models
 */
export type HttpError =
  | BadRequest
  | Unauthorized
  | Forbidden
  | NotFound
  | MethodNotAllowed
  | PayloadTooLarge
  | UnsupportedMediaType
  | Unavailable

/** Headers every API answer carries. */
export const apiHeaders = {
  "content-type": "application/json; charset=utf-8",
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
} as const

/**
 * A JSON response.
 *
 * @category constructors
 */
export const json = (status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { ...apiHeaders, ...headers } })

const problemsJson = (problems: ReadonlyArray<Problem>) =>
  problems.map((problem) => ({
    path: problem.path.map((segment) => typeof segment === "symbol" ? String(segment) : segment),
    message: problem.message,
  }))

/**
 * The response for an error.
 *
 * @category constructors
 */
export const toResponse = (error: HttpError): Response => {
  switch (error._tag) {
    case "BadRequest":
      return json(400, { error: error.error, problems: problemsJson(error.problems) })
    case "Unauthorized":
      return json(
        401,
        { error: error.reason === "missing" ? "Missing bearer token: send Authorization: Bearer <token>" : "Invalid bearer token" },
        {
          "www-authenticate": error.reason === "missing"
            ? `Bearer realm="notifications"`
            : `Bearer realm="notifications", error="invalid_token"`,
        },
      )
    case "Forbidden":
      return json(403, { error: error.error })
    case "NotFound":
      return json(404, error.problems === undefined ? { error: error.error } : { error: error.error, problems: problemsJson(error.problems) })
    case "MethodNotAllowed":
      return json(405, { error: `Method not allowed: use ${error.allow.join(" or ")}` }, { allow: error.allow.join(", ") })
    case "PayloadTooLarge":
      return json(413, { error: `Request body too large: the limit is ${error.limit} bytes` })
    case "UnsupportedMediaType":
      return json(415, {
        error: `Unsupported content type "${error.contentType}": send application/json, application/x-www-form-urlencoded or multipart/form-data`,
      })
    case "Unavailable":
      return json(503, { error: error.error }, { "retry-after": "1" })
  }
}
