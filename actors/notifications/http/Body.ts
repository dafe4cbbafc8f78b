/**
 * Request bodies and query strings, decoded with a Schema that reports every problem at once.
 *
 * A body is read up to a byte limit and no further: a `Content-Length` over the limit is refused
 * before reading, and a body that streams past it (no length, or a false one) is cut off there.
 * JSON, URL-encoded forms and multipart forms decode with the same schema; form fields are text,
 * so numbers in them are parsed first (`Schema.toCodecStringTree`).
 */
import { Cause, Effect, Exit, Schema, SchemaIssue } from "effect"
import { BadRequest, PayloadTooLarge, type Problem, UnsupportedMediaType } from "./Errors.ts"

/**
 * @category defaults
 */
export const defaults = {
  /** The largest body accepted: 16 KiB. */
  maxBodyBytes: 16 * 1024,
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const problemsOf = (cause: Cause.Cause<Schema.SchemaError>): ReadonlyArray<Problem> => {
  const error = Cause.squash(cause)
  if (!Schema.isSchemaError(error)) return [{ path: [], message: "Invalid value" }]
  return formatter(error.issue).issues.map((issue) => ({
    path: (issue.path ?? []).map((segment) => typeof segment === "object" ? segment.key : segment),
    message: issue.message,
  }))
}

/**
 * Decodes `input` with `schema`, or fails with every problem found.
 *
 * @category decoding
 */
export const decode = <A, I>(schema: Schema.Codec<A, I>, input: unknown, error: string) => {
  const exit = Schema.decodeUnknownExit(schema)(input, { errors: "all" })
  return Exit.isSuccess(exit)
    ? Effect.succeed(exit.value)
    : Effect.fail(new BadRequest({ error, problems: problemsOf(exit.cause) }))
}

/**
 * Decodes a query string with `schema`; parameters the schema does not name are ignored.
 *
 * @category decoding
 */
export const decodeQuery = <A, I>(schema: Schema.Codec<A, I>, url: URL) =>
  decode(Schema.fromURLSearchParams(Schema.toCodecStringTree(schema as Schema.Codec<A, I, never, never>)), url.searchParams, "Invalid query string")

/**
 * The body's bytes, at most `limit` of them.
 *
 * @category reading
 */
export const readBytes = (
  request: Request,
  limit: number,
): Effect.Effect<Uint8Array<ArrayBuffer>, PayloadTooLarge | BadRequest> =>
  Effect.gen(function*() {
    const declared = Number(request.headers.get("content-length") ?? "0")
    if (declared > limit) return yield* new PayloadTooLarge({ limit })
    if (request.body === null) return new Uint8Array(0)
    const reader = request.body.getReader()
    const chunks: Array<Uint8Array> = []
    let size = 0
    while (true) {
      const chunk = yield* Effect.tryPromise({
        try: () => reader.read(),
        catch: () => new BadRequest({ error: "The request body could not be read", problems: [] }),
      })
      if (chunk.done) break
      size += chunk.value.length
      if (size > limit) {
        // Stop the client sending more; the answer is already known.
        yield* Effect.promise(() => reader.cancel().catch(() => undefined))
        return yield* new PayloadTooLarge({ limit })
      }
      chunks.push(chunk.value)
    }
    const bytes = new Uint8Array(size)
    let offset = 0
    for (const chunk of chunks) {
      bytes.set(chunk, offset)
      offset += chunk.length
    }
    return bytes
  })

const utf8 = new TextDecoder("utf-8", { fatal: true })

const text = (bytes: Uint8Array) =>
  Effect.try({
    try: () => utf8.decode(bytes),
    catch: () => new BadRequest({ error: "Invalid request body", problems: [{ path: [], message: "Expected UTF-8 text" }] }),
  })

/**
 * Reads and decodes the body as JSON or form fields, by its `Content-Type`.
 *
 * @category decoding
 */
export const decodeBody = <A, I>(request: Request, schema: Schema.Codec<A, I>, options: { readonly limit: number }) =>
  Effect.gen(function*() {
    const contentType = request.headers.get("content-type") ?? ""
    const mediaType = contentType.split(";")[0]!.trim().toLowerCase()
    const isJson = mediaType === "application/json" || mediaType.endsWith("+json")
    const isForm = mediaType === "application/x-www-form-urlencoded" || mediaType === "multipart/form-data"
    if (!isJson && !isForm) return yield* new UnsupportedMediaType({ contentType: mediaType || "none" })
    const bytes = yield* readBytes(request, options.limit)
    const error = "Invalid request body"
    if (isJson) {
      const parsed = yield* Effect.try({
        try: (): unknown => JSON.parse(utf8.decode(bytes)),
        catch: () => new BadRequest({ error, problems: [{ path: [], message: "Expected a JSON document" }] }),
      })
      return yield* decode(schema, parsed, error)
    }
    const fields = schema as Schema.Codec<A, I, never, never>
    if (mediaType === "application/x-www-form-urlencoded") {
      const params = new URLSearchParams(yield* text(bytes))
      return yield* decode(Schema.fromURLSearchParams(Schema.toCodecStringTree(fields)), params, error)
    }
    // The platform's multipart parser, on bytes already read within the limit.
    const form = yield* Effect.tryPromise({
      try: () => new Response(bytes, { headers: { "content-type": contentType } }).formData(),
      catch: () => new BadRequest({ error, problems: [{ path: [], message: "Expected multipart form data" }] }),
    })
    return yield* decode(Schema.fromFormData(Schema.toCodecStringTree(fields)), form, error)
  })
