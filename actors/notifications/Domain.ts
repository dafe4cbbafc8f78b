/**
 * The app's data as Schemas: what travels on the topics (`Notification`, `PostLiked`) and what
 * the HTTP API accepts (`SendNotification`, `LikePost`). The same schema decodes a JSON body and
 * form fields, and the worker decodes records with it, so a bad value is caught at each edge
 * with the path of every problem.
 */
import { Schema } from "effect"

/** A positive integer. */
export const UserId = Schema.Int.check(Schema.isGreaterThan(0))

/** The most characters a message may have, after trimming. */
export const maxMessageLength = 500

/** Trimmed, not empty, at most {@link maxMessageLength} characters. */
export const Message = Schema.Trim.check(Schema.isNonEmpty(), Schema.isMaxLength(maxMessageLength))

/** A user as a notification names them. */
export const UserRef = Schema.Struct({ id: UserId, name: Schema.String })
export type UserRef = typeof UserRef.Type

/** An ISO 8601 UTC timestamp, as `Date.prototype.toISOString` writes it. */
export const Timestamp = Schema.String.check(Schema.isPattern(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$/))

/**
 * A notification, as produced to the `notifications` topic and as the API returns it. The `id`
 * is assigned once, when it is produced, and makes storing it idempotent.
 */
export const Notification = Schema.Struct({
  id: Schema.String.check(Schema.isNonEmpty(), Schema.isMaxLength(64)),
  from: UserRef,
  to: UserRef,
  message: Message,
  createdAt: Timestamp,
})
export type Notification = typeof Notification.Type

/** A post identifier: letters, digits, `-` and `_`. */
export const PostId = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9_-]{1,64}$/))

/** Someone liked a post: the event on the `post-liked` topic. */
export const PostLiked = Schema.Struct({ postId: PostId, authorId: UserId, likerId: UserId })
export type PostLiked = typeof PostLiked.Type

/** The body of `POST /notifications`. */
export const SendNotification = Schema.Struct({ fromId: UserId, toId: UserId, message: Message })
export type SendNotification = typeof SendNotification.Type

/** The body of `POST /likes`; the liker is the signed-in user. */
export const LikePost = Schema.Struct({ postId: PostId, authorId: UserId })
export type LikePost = typeof LikePost.Type
