/**
 * In what order a partition actor handles its records, and how many at once.
 *
 * - `partition`: one at a time, in offset order. The default.
 * - `byKey({ concurrency })`: records with different keys run concurrently, up to
 *   `concurrency` at once; records with the same key run one at a time, in offset order.
 * - `unordered({ concurrency })`: up to `concurrency` records at once, in any order.
 *
 * In every mode the committed offset is the highest one below which every record completed
 * (Confluent Parallel Consumer's model), so a crash never skips a record that was not handled.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 * @category models
 */
export type Ordering =
  | { readonly _tag: "Partition" }
  | { readonly _tag: "ByKey"; readonly concurrency: number }
  | { readonly _tag: "Unordered"; readonly concurrency: number }

/**
 * @since 0.1.0
 * @category constructors
 */
export const partition: Ordering = { _tag: "Partition" }

/**
 * @since 0.1.0
 * @category constructors
 */
export const byKey = (options: { readonly concurrency: number }): Ordering => ({
  _tag: "ByKey",
  concurrency: Math.max(1, Math.floor(options.concurrency)),
})

/**
 * @since 0.1.0
 * @category constructors
 */
export const unordered = (options: { readonly concurrency: number }): Ordering => ({
  _tag: "Unordered",
  concurrency: Math.max(1, Math.floor(options.concurrency)),
})
