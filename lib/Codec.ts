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
import { Cause, Data, Effect, Exit, Schema, SchemaAST, SchemaIssue, SchemaParser } from "effect"
import * as SchemaJITCompiler from "effect/schema/SchemaJITCompiler"
import * as JsonBytes from "./internal/jsonBytes.ts"
import * as PlainDecode from "./internal/plainDecode.ts"

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

const issueProblems = (issue: SchemaIssue.Issue): ReadonlyArray<Problem> =>
  formatter(issue).issues.map((found) => ({
    path: (found.path ?? []).map((segment) => typeof segment === "object" ? segment.key : segment),
    message: found.message,
  }))

const schemaProblems = (cause: Cause.Cause<Schema.SchemaError>): ReadonlyArray<Problem> => {
  const error = Cause.squash(cause)
  return Schema.isSchemaError(error) ? issueProblems(error.issue) : [{ path: [], message: String(error) }]
}

const mismatch = (error: Schema.SchemaError) => new CodecError({ reason: "SchemaMismatch", problems: issueProblems(error.issue) })

/** A synchronous run of a schema that needed to wait (an effectful transformation that sleeps, say). */
const ranAsync = (cause: Cause.Cause<unknown>): boolean =>
  cause.reasons.some((reason) => Cause.isDieReason(reason) && Cause.isAsyncFiberError(reason.defect))

const utf8 = new TextDecoder("utf-8", { fatal: true })
const encoder = new TextEncoder()

const problem = (reason: CodecError["reason"], message: string) =>
  new CodecError({ reason, problems: [{ path: [], message }] })

/*
 * TextDecoder and JSON.parse report bad input by throwing; the readers below turn that into a
 * value, once, here. A reader returns what it read, or the `CodecError` saying why it could not
 * (neither JSON nor text is ever a `CodecError`), so a record that decodes allocates no result
 * wrapper for this step.
 */
/** Shared: a null key or value decodes to the same `Exit` every time. */
const nullExit: Exit.Exit<null> = Exit.succeed(null)

/** What a reader gives back: the value read, or why it could not read one. */
type Read = unknown

const readUtf8 = (bytes: Uint8Array): string | CodecError => {
  const text = JsonBytes.ascii(bytes)
  if (text !== JsonBytes.unread) return text
  try {
    return utf8.decode(bytes)
  } catch {
    return problem("InvalidUtf8", `Expected UTF-8 text, got ${bytes.length} bytes that are not`)
  }
}

/**
 * ASCII JSON (most records) is read straight from its bytes, its object keys kept from one
 * record to the next; the rest, and every error, by the runtime's decoder and JSON.parse.
 */
const jsonReader = (): (bytes: Uint8Array) => Read => {
  const reader = new JsonBytes.Reader()
  return (bytes) => readJson(bytes, reader)
}

const readJson = (bytes: Uint8Array, reader: JsonBytes.Reader): Read => {
  const value = reader.read(bytes)
  if (value !== JsonBytes.unread) return value
  const text = readUtf8(bytes)
  if (typeof text !== "string") return text
  try {
    return JSON.parse(text)
  } catch (error) {
    return problem("InvalidJson", `Expected JSON: ${(error as Error).message}`)
  }
}

/**
 * A codec that checks values with `schema`: `read` turns bytes into the schema's encoded input,
 * `write` turns its encoded output into bytes.
 *
 * Per record, decoding runs the schema synchronously and answers with an `Exit`, which the
 * partition actor reads without a fiber step (or, through `PlainDecode`, with the value itself).
 * The schema's parser is compiled once, here, by Effect's JIT compiler (`SchemaJITCompiler`: a
 * function generated for the schema's checks, which returns the value or "invalid" without
 * building an Effect); a value it rejects is run again through Schema's interpreter, which
 * finds every problem with its path. Where the
 * compiler does not apply (transformations, declarations) Schema interprets as before, with the
 * same results. A schema that turns out to need waiting (an effectful transformation that
 * sleeps) cannot run synchronously: from its first such record on, the codec runs it as an
 * Effect.
 */
const schemaCodec = <A, I>(
  schema: Schema.Codec<A, I>,
  read: (bytes: Uint8Array) => Read,
  write: (encoded: I) => Uint8Array,
): Codec<A> => {
  // Before any parser of these ASTs is made: a parser keeps the entry it was made with.
  SchemaJITCompiler.enable(schema.ast)
  SchemaJITCompiler.enable(SchemaAST.flip(schema.ast))
  const options = { errors: "all" } as const
  // The compiled parser answers the value itself, called straight by SchemaParser's sync adapter
  // (Schema's own adapters run it as an Effect, and make an `Exit` per record). A value it
  // rejects throws, and is decoded again by the `Exit` adapter, whose failure lists every
  // problem (failures are the rare case).
  // Without options: they only shape failures, and a failure is decoded again below with them.
  const decodeSync = SchemaParser.decodeUnknownSync(schema)
  const decodeExit = Schema.decodeUnknownExit(schema, options)
  const encodeExit = Schema.encodeUnknownExit(schema, options)
  const decodeEffect = Schema.decodeUnknownEffect(schema, options)
  const encodeEffect = Schema.encodeUnknownEffect(schema, options)
  let decodesAsync = false
  let encodesAsync = false
  const decodeAsync = (input: unknown): Effect.Effect<A, CodecError> => Effect.mapError(decodeEffect(input), mismatch)
  const encodeAsync = (value: A): Effect.Effect<Uint8Array | null, CodecError> =>
    Effect.mapError(Effect.map(encodeEffect(value), write), mismatch)
  /** The value of `bytes`, or `declined` for anything else: bad bytes, a mismatch, a schema that waits. */
  const plain = (bytes: Uint8Array | null): unknown => {
    if (decodesAsync) return PlainDecode.declined
    const input = bytes === null ? null : read(bytes)
    if (input instanceof CodecError) return PlainDecode.declined
    try {
      return decodeSync(input)
    } catch {
      return PlainDecode.declined
    }
  }
  /** Why `bytes` do not decode synchronously (or, for a schema that waits, its Effect). */
  const explain = (bytes: Uint8Array | null): Effect.Effect<A, CodecError> => {
    const input = bytes === null ? null : read(bytes)
    if (input instanceof CodecError) return Exit.fail(input)
    if (decodesAsync) return decodeAsync(input)
    const exit = decodeExit(input)
    if (Exit.isSuccess(exit)) return exit as Exit.Exit<A, never>
    if (ranAsync(exit.cause)) {
      decodesAsync = true
      return decodeAsync(input)
    }
    return Exit.fail(new CodecError({ reason: "SchemaMismatch", problems: schemaProblems(exit.cause) }))
  }
  const decode = (bytes: Uint8Array | null): Effect.Effect<A, CodecError> => {
    const value = plain(bytes)
    return value === PlainDecode.declined ? explain(bytes) : Exit.succeed(value as A)
  }
  PlainDecode.register(decode, plain)
  return {
    decode,
    encode: (value) =>
      Effect.suspend(() => {
        if (encodesAsync) return encodeAsync(value)
        const exit = encodeExit(value)
        if (Exit.isSuccess(exit)) return Effect.succeed(write(exit.value))
        if (ranAsync(exit.cause)) {
          encodesAsync = true
          return encodeAsync(value)
        }
        return Effect.fail(new CodecError({ reason: "SchemaMismatch", problems: schemaProblems(exit.cause) }))
      }),
  }
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
  schemaCodec(schema, jsonReader(), (encoded) => encoder.encode(JSON.stringify(encoded)))

/**
 * UTF-8 text checked by `schema` both ways, for schemas whose encoded form is a string
 * (`Schema.String`, `Schema.NumberFromString`, branded ids, string literals): the bytes are the
 * text itself, as Kafka's string serializer writes them, not a JSON string in quotes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const text = <A, I>(schema: Schema.Codec<A, I>): Codec<A> =>
  schemaCodec(schema, readUtf8, (encoded) => encoder.encode(encoded as string))

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
  decode: (bytes) => {
    if (bytes === null) return nullExit
    const text = readUtf8(bytes)
    return typeof text === "string" ? Exit.succeed(text) : Exit.fail(text)
  },
  encode: (value) => Effect.succeed(value === null ? null : encoder.encode(value)),
}
PlainDecode.register(string.decode, (bytes) => {
  if (bytes === null) return null
  const text = readUtf8(bytes)
  return typeof text === "string" ? text : PlainDecode.declined
})

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
PlainDecode.register(bytes.decode, (bytes) => bytes)
