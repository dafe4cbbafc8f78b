/**
 * How a handler's or the system's error reads in logs, health and dead-letter headers.
 */

/** An error's message, or, for a tagged error without one, its fields as JSON: `{"reason":"down"}`. */
export const messageOf = (error: { readonly _tag: string; readonly message?: string }): string => {
  if (error.message !== undefined && error.message !== "") return error.message
  const fields = Object.fromEntries(Object.entries(error).filter(([key]) => key !== "_tag" && key !== "stack"))
  return Object.keys(fields).length === 0 ? "" : JSON.stringify(fields)
}

/** `StoreError: {"reason":"down"}`, for logs and health. */
export const describe = (error: { readonly _tag: string; readonly message?: string }): string => {
  const message = messageOf(error)
  return message === "" ? error._tag : `${error._tag}: ${message}`
}
