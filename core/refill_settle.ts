/**
 * What a refill write (under the item's `rf` lock) settles and leaves:
 * every stored limit that refills moves with the one `rf`, and the item as
 * the write left it (for `BucketWriter`).
 *
 * @module
 */
import { type BucketParams, shardParams } from "./bucket.ts";
import type { BucketItem, PlannedLimit, StoredLimit } from "./bucket_item.ts";
import { isCalendar, windowAfter } from "./calendar_bucket.ts";
import { WCU_LIMIT_NAME } from "./validation.ts";

/** The limits stored on `k` that refill (not the WCU counter, not a calendar quota) and are not `named`. */
export function refilling(
  k: BucketItem,
  shards: number,
  named: ReadonlySet<string>,
): { name: string; st: StoredLimit; p: BucketParams }[] {
  return [...k.limits].flatMap(([name, st]) =>
    name === WCU_LIMIT_NAME || isCalendar(st) || named.has(name)
      ? []
      : [{ name, st, p: shardParams(st.params, shards) }]
  );
}

/** The item as a successful refill write left it (balances are upper bounds under concurrency). */
export function afterRefill(
  k: BucketItem,
  after: { rf: bigint; limits: PlannedLimit[]; ttl: number | "remove" | null },
): BucketItem {
  const limits = new Map(k.limits);
  for (const l of after.limits) {
    const old = k.limits.get(l.name);
    limits.set(l.name, {
      tk: l.tkAfter,
      params: l.params,
      tc: old?.tc === null || old === undefined ? null : old.tc + l.consumed,
      ...windowAfter(l.window, old),
    });
  }
  return {
    ...k,
    rf: after.rf,
    limits,
    ttl: typeof after.ttl === "number"
      ? after.ttl
      : after.ttl === "remove"
      ? null
      : k.ttl,
  };
}
