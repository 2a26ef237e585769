/**
 * Test doubles: a rate limiter without DynamoDB. A
 * {@linkcode MemoryBucketStore} applies the same conditional writes as the
 * DynamoDB store (one contract suite runs on both), and a
 * {@linkcode MemoryLimiterSource} holds limits and entities. Use it in your
 * service's tests; production uses a `Repository`.
 *
 * @example
 * ```ts
 * import { Limit, RateLimitExceeded } from "@zae/limiter";
 * import { createTestLimiter } from "@zae/limiter/testing";
 *
 * const { limiter, source } = createTestLimiter();
 * source.setSystemDefaults([Limit.perMinute("rpm", 2)]);
 * const req = { entityId: "key-1", resource: "gpt-4", consume: { rpm: 1 } };
 * await limiter.acquire(req, () => "first");
 * await limiter.acquire(req, () => "second");
 * try {
 *   await limiter.acquire(req, () => "third");
 * } catch (e) {
 *   if (!(e instanceof RateLimitExceeded)) throw e;
 * }
 * ```
 *
 * @module
 */
import { RateLimiter, type RateLimiterOptions } from "./core/limiter.ts";
import {
  MemoryBucketStore,
  type MemoryBucketStoreOptions,
} from "./core/store/memory_bucket_store.ts";
import {
  MemoryLimiterSource,
  type MemoryLimiterSourceOptions,
} from "./core/store/memory_limiter_source.ts";

export {
  MemoryBucketStore,
  type MemoryBucketStoreOptions,
  type MemoryStorePhase,
} from "./core/store/memory_bucket_store.ts";
export { MemorySlotStore } from "./core/store/memory_slot_store.ts";
export {
  MemoryLimiterSource,
  type MemoryLimiterSourceOptions,
} from "./core/store/memory_limiter_source.ts";
export type {
  BucketStore,
  BucketWrite,
  EntityLink,
  ReadResult,
  TransactResult,
  WriteResult,
} from "./core/acquire/bucket_store.ts";
export type {
  PlainLimit,
  PlainWrite,
  PlannedLimit,
  PlannedWindow,
  SlowWrite,
} from "./core/bucket_item.ts";
export type {
  EntityInfo,
  LimiterSource,
  ResolvedLimits,
} from "./core/acquire/limiter_source.ts";

/** Options of {@linkcode createTestLimiter}. */
export interface TestLimiterOptions {
  /** The memory store's options (fault hooks). */
  readonly store?: MemoryBucketStoreOptions;
  /** The source's options (clock, namespace). */
  readonly source?: MemoryLimiterSourceOptions;
  /** The limiter's options. */
  readonly limiter?: Omit<RateLimiterOptions, "bucketStore">;
}

/** A limiter on a fresh memory store and source. */
export function createTestLimiter(options: TestLimiterOptions = {}): {
  limiter: RateLimiter;
  store: MemoryBucketStore;
  source: MemoryLimiterSource;
} {
  const store = new MemoryBucketStore(options.store);
  const source = new MemoryLimiterSource(store, options.source);
  const limiter = new RateLimiter(source, {
    ...options.limiter,
    bucketStore: store,
  });
  return { limiter, store, source };
}
