/**
 * A `Map` that holds at most `maxSize` entries and evicts the oldest one to
 * make room: the one bounded cache of the library (entity, refusal and
 * known-item caches). Not part of the public API.
 *
 * @module
 */

/** Options of {@linkcode BoundedMap}. */
export interface BoundedMapOptions {
  /**
   * Whether `set` on a key already present makes it the newest entry (so
   * the cache evicts the least recently written). Otherwise the key keeps
   * its place (first in, first out).
   *
   * @default true
   */
  readonly renewOnSet?: boolean;
}

/**
 * A `Map` bounded to `maxSize` entries: `set` of a new key when full first
 * deletes the oldest entry (insertion order). A `maxSize` below 1 still
 * keeps the last entry set.
 *
 * @example Evict the oldest entry
 * ```ts
 * import assert from "node:assert/strict";
 * import { BoundedMap } from "./_bounded_map.ts";
 *
 * const cache = new BoundedMap<string, number>(2);
 * cache.set("a", 1).set("b", 2).set("a", 3).set("c", 4);
 * assert.deepEqual([...cache], [["a", 3], ["c", 4]]);
 * ```
 */
export class BoundedMap<K, V> extends Map<K, V> {
  /** The most entries kept. */
  readonly maxSize: number;
  readonly #renewOnSet: boolean;

  /** Creates an empty map of at most `maxSize` entries. */
  constructor(maxSize: number, options: BoundedMapOptions = {}) {
    super();
    this.maxSize = maxSize;
    this.#renewOnSet = options.renewOnSet ?? true;
  }

  /** Sets `key`; evicts the oldest entry first when `key` is new and the map is full. */
  override set(key: K, value: V): this {
    if (this.has(key)) {
      if (!this.#renewOnSet) return super.set(key, value);
      this.delete(key);
    } else if (this.size >= this.maxSize) {
      const oldest = this.keys().next();
      if (!oldest.done) this.delete(oldest.value);
    }
    return super.set(key, value);
  }
}
