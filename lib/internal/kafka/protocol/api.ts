/**
 * The seam between the generated message codecs and the connection: what one Kafka API looks
 * like to the code that frames, sends and receives it, and the request and response headers
 * (https://kafka.apache.org/protocol#protocol_messages). Hand-written, like wire.ts; each
 * generated `<Api>.ts` exports one {@link Api}.
 *
 * A request on the wire is: int32 size, request header, request body. A response: int32 size,
 * response header, response body. The size prefix is the connection's (Writer.reserveInt32 /
 * patchInt32); the rest is here and in the generated files.
 */
import { attempt, type Attempt, ProtocolError, Reader, Writer } from "./wire.ts"

/**
 * One Kafka API: its key, the versions generated, which header versions go with each, and the
 * codecs of its request and response bodies. The codecs throw {@link ProtocolError} on bad bytes
 * (see {@link tryDecodeResponse} for a non-throwing call) and on a version outside
 * `minVersion..maxVersion`.
 *
 * Decoded values: every field the type has is filled, with the JSON default where the version
 * lacks it; `bytes` and `records` fields are views into the decoded bytes (valid as long as those
 * are); UUIDs are strings as Kafka prints them; int64s are numbers (see wire.ts); tagged fields
 * this Kafka version does not define are skipped. Encoders take a field left undefined as its
 * default, and refuse, as Kafka's Java client does, a non-default value in a version without the
 * field unless the definition marks it ignorable.
 */
export interface Api<Req, Res> {
  /** The API's name in Kafka's message definitions, e.g. "ApiVersions". */
  readonly name: string
  /** The API key, e.g. 18. */
  readonly key: number
  /** The lowest version generated. */
  readonly minVersion: number
  /** The highest version generated. */
  readonly maxVersion: number
  /** 2 for the API's flexible versions, 1 before them. */
  readonly requestHeaderVersion: (version: number) => 1 | 2
  /** 1 for the API's flexible versions, 0 before them; ApiVersions responses always use 0. */
  readonly responseHeaderVersion: (version: number) => 0 | 1
  readonly encodeRequest: (writer: Writer, version: number, request: Req) => void
  readonly decodeRequest: (reader: Reader, version: number) => Req
  readonly encodeResponse: (writer: Writer, version: number, response: Res) => void
  readonly decodeResponse: (reader: Reader, version: number) => Res
}

/**
 * The request type of an {@link Api}.
 */
export type RequestOf<A> = A extends Api<infer Req, unknown> ? Req : never

/**
 * The response type of an {@link Api}.
 */
export type ResponseOf<A> = A extends Api<unknown, infer Res> ? Res : never

/**
 * The fields of a request header (RequestHeader.json, versions 1 and 2).
 */
export interface RequestHeader {
  readonly apiKey: number
  readonly apiVersion: number
  readonly correlationId: number
  readonly clientId: string | null
}

/**
 * Writes a request header. The client id keeps its int16 length even in header v2: brokers
 * must read an ApiVersions request's header before they know which versions the client speaks.
 */
export const encodeRequestHeader = (writer: Writer, headerVersion: 1 | 2, header: RequestHeader): void => {
  writer.int16(header.apiKey)
  writer.int16(header.apiVersion)
  writer.int32(header.correlationId)
  writer.nullableString(header.clientId)
  if (headerVersion >= 2) writer.taggedFields(0)
}

/**
 * Reads a request header (the inverse of {@link encodeRequestHeader}; for tests and fakes).
 * Tagged fields in a v2 header are skipped.
 */
export const decodeRequestHeader = (reader: Reader, headerVersion: 1 | 2): RequestHeader => {
  reader.what = `RequestHeader v${headerVersion}`
  const apiKey = reader.int16()
  const apiVersion = reader.int16()
  const correlationId = reader.int32()
  const clientId = reader.nullableString()
  if (headerVersion >= 2) skipTaggedFields(reader)
  return { apiKey, apiVersion, correlationId, clientId }
}

/**
 * The fields of a response header (ResponseHeader.json).
 */
export interface ResponseHeader {
  readonly correlationId: number
}

/**
 * Writes a response header (for tests and fakes).
 */
export const encodeResponseHeader = (writer: Writer, headerVersion: 0 | 1, header: ResponseHeader): void => {
  writer.int32(header.correlationId)
  if (headerVersion >= 1) writer.taggedFields(0)
}

/**
 * Reads a response header; tagged fields in a v1 header are skipped (none are defined).
 */
export const decodeResponseHeader = (reader: Reader, headerVersion: 0 | 1): ResponseHeader => {
  reader.what = `ResponseHeader v${headerVersion}`
  const correlationId = reader.int32()
  if (headerVersion >= 1) skipTaggedFields(reader)
  return { correlationId }
}

/** Skips a tagged-field section whose tags this side does not know. */
export const skipTaggedFields = (reader: Reader): void => {
  const count = reader.unsignedVarint()
  for (let i = 0; i < count; i++) {
    reader.unsignedVarint()
    reader.skip(reader.unsignedVarint())
  }
}

/**
 * Decodes a response body without throwing: a ProtocolError comes back as a value, for callers
 * at the Effect boundary.
 */
export const tryDecodeResponse = <Req, Res>(api: Api<Req, Res>, reader: Reader, version: number): Attempt<Res> =>
  attempt(() => api.decodeResponse(reader, version))

/**
 * Decodes a request body without throwing (for fakes and tests).
 */
export const tryDecodeRequest = <Req, Res>(api: Api<Req, Res>, reader: Reader, version: number): Attempt<Req> =>
  attempt(() => api.decodeRequest(reader, version))

/**
 * A data message (`"type": "data"` in Kafka's definitions): a payload that API messages carry as
 * opaque bytes, such as the classic consumer protocol's subscription (JoinGroup protocol metadata)
 * and assignment (SyncGroup). Its codecs are generated like an API's and follow the same rules;
 * on the wire it goes with its int16 version in front ({@link encodeVersionPrefixed}).
 */
export interface Data<T> {
  /** The message's name in Kafka's definitions, e.g. "ConsumerProtocolSubscription". */
  readonly name: string
  readonly minVersion: number
  readonly maxVersion: number
  readonly encode: (writer: Writer, version: number, value: T) => void
  readonly decode: (reader: Reader, version: number) => T
}

/**
 * A data message as its own bytes: int16 version, then the body in that version
 * (Kafka's MessageUtil.toVersionPrefixedByteBuffer).
 */
export const encodeVersionPrefixed = <T>(data: Data<T>, version: number, value: T, writer: Writer = new Writer(64)): Uint8Array => {
  if (version < data.minVersion || version > data.maxVersion) throw unsupportedVersion(data.name, version, data.minVersion, data.maxVersion)
  writer.int16(version)
  data.encode(writer, version, value)
  return writer.finish()
}

/**
 * Reads a version-prefixed data message as Kafka's ConsumerProtocol does: a version above the
 * highest generated is read as the highest (newer versions may only append fields, so their
 * prefix is an older version's message) and bytes after it are left unread; a version below the
 * lowest is refused. `version` is the one on the wire.
 */
export const decodeVersionPrefixed = <T>(data: Data<T>, bytes: Uint8Array): { readonly version: number; readonly value: T } => {
  const reader = new Reader(bytes)
  reader.what = data.name
  const version = reader.int16()
  if (version < data.minVersion) {
    throw new ProtocolError(`Cannot decode ${data.name}: version ${version} is below the lowest known, ${data.minVersion}`)
  }
  return { version, value: data.decode(reader, Math.min(version, data.maxVersion)) }
}

/** {@link decodeVersionPrefixed} without throwing, for callers at the Effect boundary. */
export const tryDecodeVersionPrefixed = <T>(data: Data<T>, bytes: Uint8Array): Attempt<{ readonly version: number; readonly value: T }> =>
  attempt(() => decodeVersionPrefixed(data, bytes))

/** The error a generated codec throws for a version it was not generated for. */
export const unsupportedVersion = (what: string, version: number, min: number, max: number): ProtocolError =>
  new ProtocolError(
    `Cannot encode or decode ${what} v${version}: only versions ${min} to ${max} are generated (scripts/generate-protocol.ts)`,
  )

/**
 * The error an encoder throws for a field set to something other than its default in a version
 * that does not have it (and is not marked ignorable), as Kafka's Java client refuses it: sending
 * the request without it would silently change what it asks for.
 */
export const fieldNotInVersion = (what: string, field: string, version: number): never => {
  throw new ProtocolError(
    `Cannot encode ${what} v${version}: field ${field} is set but v${version} does not have it; use a version that does or leave it unset`,
  )
}

/** The error an encoder throws for null in a field the version does not allow to be null. */
export const nullNotAllowed = (what: string, field: string, version: number): never => {
  throw new ProtocolError(`Cannot encode ${what} v${version}: field ${field} is null but v${version} requires a value`)
}
