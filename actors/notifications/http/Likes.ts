/**
 * `POST /likes`: the signed-in user likes a post. This only produces a `post-liked` event; the
 * fan-out actor turns it into notifications for the author's followers, and the worker stores
 * those: the two-hop pipeline, started from curl or the page.
 */
import { Effect, Metric } from "effect"
import * as AppMetrics from "../AppMetrics.ts"
import { LikePost } from "../Domain.ts"
import { Topics } from "../Topics.ts"
import * as Auth from "./Auth.ts"
import * as Body from "./Body.ts"
import { json } from "./Errors.ts"
import { acknowledged, findUsers, type Limits } from "./Notifications.ts"

/**
 * @category routes
 */
export const like = (request: Request, url: URL, limits: Limits) =>
  Effect.gen(function*() {
    const caller = yield* Auth.authenticate(request, url)
    const body = yield* Body.decodeBody(request, LikePost, { limit: limits.maxBodyBytes })
    const author = (yield* findUsers([["authorId", body.authorId]]))("authorId")
    const topics = yield* Topics
    yield* acknowledged(
      topics.postLiked.send({ postId: body.postId, authorId: author.id, likerId: caller.id }, { key: String(author.id) }),
      "like",
    )
    yield* Metric.modify(AppMetrics.likes, 1)
    return json(202, { postId: body.postId })
  })
