/**
 * How typed keys and values become record bytes and back.
 *
 * A `Codec` is the seam between Effect Schema and the wire. A schema given where a codec is
 * expected becomes `fromSchema(schema)`: UTF-8 JSON validated by the schema, or plain UTF-8 text
 * when the schema's encoded form is a string (so string keys are what every Kafka tool expects).
 * Any other format (Avro, Protobuf) plugs in by implementing the same two functions. A codec never throws: bad bytes and rejected values are a typed
 * `CodecError` that lists every problem with its path.
 *
 * @since 0.1.0
 */
import { Cause, Data, Effect, Exit, Schema, SchemaAST, SchemaIssue } from "effect"

/**
 * One thing wrong with a value: where (a path into it) and what.
 *
 * @since 0.1.0
 * @category models
 */
export interface Problem {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

/**
 * Bytes that could not be decoded, or a value that could not be encoded.
 *
 * @since 0.1.0
 * @category errors
 */
export class CodecError extends Data.TaggedError("CodecError")<{
  readonly reason: "InvalidUtf8" | "InvalidJson" | "SchemaMismatch"
  /** Every problem found, each with its path; at least one. */
  readonly problems: ReadonlyArray<Problem>
}> {
  override get message(): string {
    return this.problems.map(formatProblem).join("; ")
  }
}

/**
 * `expected number at ["to","id"]`, or just the message at the root.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatProblem = (problem: Problem): string =>
  problem.path.length === 0
    ? problem.message
    : `${problem.message} at ${JSON.stringify(problem.path.map((segment) => typeof segment === "symbol" ? String(segment) : segment))}`

/**
 * A two-way mapping between `A` and record bytes (`null` is an absent key or a tombstone).
 *
 * @since 0.1.0
 * @category models
 */
export interface Codec<in out A> {
  readonly encode: (value: A) => Effect.Effect<Uint8Array | null, CodecError>
  readonly decode: (bytes: Uint8Array | null) => Effect.Effect<A, CodecError>
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

const schemaProblems = (cause: Cause.Cause<Schema.SchemaError>): ReadonlyArray<Problem> => {
  const error = Cause.squash(cause)
  if (!Schema.isSchemaError(error)) return [{ path: [], message: String(error) }]
  const { issues } = formatter(error.issue)
  return issues.map((issue) => ({
    path: (issue.path ?? []).map((segment) => typeof segment === "object" ? segment.key : segment),
    message: issue.message,
  }))
}

const utf8 = new TextDecoder("utf-8", { fatal: true })
const encoder = new TextEncoder()

const problem = (reason: CodecError["reason"], message: string) =>
  new CodecError({ reason, problems: [{ path: [], message }] })

/*
 * TextDecoder and JSON.parse report bad input by throwing; these two turn that into values, once,
 * here. They return an `Exit` (which is an `Effect`) so the per-record path allocates no more
 * than it must.
 */
/** Shared: a null key or value decodes to the same `Exit` every time. */
const nullExit: Exit.Exit<null> = Exit.succeed(null)

const decodeUtf8 = (bytes: Uint8Array): Exit.Exit<string, CodecError> => {
  try {
    return Exit.succeed(utf8.decode(bytes))
  } catch {
    return Exit.fail(problem("InvalidUtf8", `Expected UTF-8 text, got ${bytes.length} bytes that are not`))
  }
}

const parseJson = (text: string): Exit.Exit<unknown, CodecError> => {
  try {
    return Exit.succeed(JSON.parse(text))
  } catch (error) {
    return Exit.fail(problem("InvalidJson", `Expected JSON: ${(error as Error).message}`))
  }
}

/**
 * A codec that checks values with `schema`: `read` turns bytes into the schema's encoded input,
 * `write` turns its encoded output into bytes.
 */
const schemaCodec = <A, I>(
  schema: Schema.Codec<A, I>,
  read: (bytes: Uint8Array) => Exit.Exit<unknown, CodecError>,
  write: (encoded: I) => Uint8Array,
): Codec<A> => {
  const decodeValue = Schema.decodeUnknownExit(schema)
  const encodeValue = Schema.encodeUnknownExit(schema)
  const options = { errors: "all" } as const
  return {
    decode: (bytes): Exit.Exit<A, CodecError> => {
      const input = bytes === null ? nullExit : read(bytes)
      if (Exit.isFailure(input)) return Exit.failCause(input.cause)
      const exit = decodeValue(input.value, options)
      // A success carries no error: the schema's own Exit is returned as it is.
      return Exit.isSuccess(exit)
        ? exit as Exit.Exit<A, never>
        : Exit.fail(new CodecError({ reason: "SchemaMismatch", problems: schemaProblems(exit.cause) }))
    },
    encode: (value) =>
      Effect.suspend(() => {
        const exit = encodeValue(value, options)
        return Exit.isSuccess(exit)
          ? Effect.succeed(write(exit.value))
          : Effect.fail(new CodecError({ reason: "SchemaMismatch", problems: schemaProblems(exit.cause) }))
      }),
  }
}

const readJson = (bytes: Uint8Array): Exit.Exit<unknown, CodecError> => {
  // Per record: one Exit, not one per step.
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    return decodeUtf8(bytes)
  }
  return parseJson(text)
}

/**
 * UTF-8 JSON checked by `schema` both ways: decoding reports every problem (not just the
 * first), encoding rejects a value the schema rejects before any byte is produced. A `null`
 * (tombstone) decodes as JSON `null`, so `Schema.NullOr(...)` accepts tombstones.
 *
 * @since 0.1.0
 * @category constructors
 */
export const json = <A, I>(schema: Schema.Codec<A, I>): Codec<A> =>
  schemaCodec(schema, readJson, (encoded) => encoder.encode(JSON.stringify(encoded)))

/**
 * UTF-8 text checked by `schema` both ways, for schemas whose encoded form is a string
 * (`Schema.String`, `Schema.NumberFromString`, branded ids, string literals): the bytes are the
 * text itself, as Kafka's string serializer writes them, not a JSON string in quotes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const text = <A, I>(schema: Schema.Codec<A, I>): Codec<A> =>
  schemaCodec(schema, decodeUtf8, (encoded) => encoder.encode(encoded as string))

const isTextual = (ast: SchemaAST.AST): boolean =>
  ast._tag === "String" || (ast._tag === "Literal" && typeof ast.literal === "string") ||
  (ast._tag === "Union" && ast.types.every(isTextual))

/**
 * The codec for a schema: `text` when its encoded form is a string, `json` otherwise.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSchema = <A, I>(schema: Schema.Codec<A, I>): Codec<A> =>
  isTextual(SchemaAST.toEncoded(schema.ast)) ? text(schema) : json(schema)

/**
 * UTF-8 text; `null` stays `null`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const string: Codec<string | null> = {
  decode: (bytes) => bytes === null ? nullExit : decodeUtf8(bytes),
  encode: (value) => Effect.succeed(value === null ? null : encoder.encode(value)),
}

/**
 * The bytes as they are.
 *
 * @since 0.1.0
 * @category constructors
 */
export const bytes: Codec<Uint8Array | null> = {
  decode: (bytes) => bytes === null ? nullExit : Exit.succeed(bytes),
  encode: (value) => Effect.succeed(value),
}
