/**
 * What a refill write (under the item's `rf` lock) settles and leaves:
 * every stored limit that refills moves with the one `rf`, and the item as
 * the write left it (for `BucketWriter`).
 *
 * Every writer that moves `rf` (the fast path's and the lease's refill
 * writes, the slow path and its cascade parent, a config change settled on
 * the bucket) plans its refill with {@linkcode settleRefill}: a limit
 * stored on the item but outside the write's limits (removed from the
 * config, left out by a per-call override, written by another client) is
 * refilled to the new `rf` too, else its refill since the old `rf` is lost.
 *
 * @module
 */
import {
  type BucketParams,
  planRefill,
  type RefillPlan,
  shardParams,
} from "./bucket.ts";
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

/** A limit a refill write decides on: its balance as read and its effective parameters. */
export interface RefillEntry {
  /** Millitokens as read (the capacity for a limit new to the item). */
  readonly tk: bigint;
  /** Effective parameters on one shard. */
  readonly p: BucketParams;
  /** The write's charge on it, if any (see `planRefill`). */
  readonly need?: bigint | undefined;
}

/**
 * The refill of a write that moves `k`'s `rf` to `now` (a new item, `k`
 * `null`: nothing to settle): `plan` for `limits` (same order), and the
 * settled part of every other limit of `k` that refills and is not `named`,
 * consuming nothing. Those others ride along ({@linkcode planRefill}): they
 * neither set the span nor make the write a full-bucket one.
 */
export function settleRefill(
  k: BucketItem | null,
  shards: number,
  named: ReadonlySet<string>,
  now: bigint,
  limits: readonly RefillEntry[],
): { plan: RefillPlan; others: PlannedLimit[] } {
  const riders = k ? refilling(k, shards, named) : [];
  const all = planRefill(k ? k.rf : now, now, [
    ...limits,
    ...riders.map((o) => ({ tk: o.st.tk, p: o.p, ride: true })),
  ]);
  const n = limits.length;
  return {
    plan: {
      rf: all.rf,
      tk: all.tk.slice(0, n),
      clamped: all.clamped.slice(0, n),
      hold: all.hold.slice(0, n),
    },
    others: riders.map((o, j) => ({
      name: o.name,
      params: o.st.params,
      paramsBefore: o.st.params,
      tkBefore: o.st.tk,
      tkAfter: all.tk[n + j] as bigint,
      consumed: 0n,
      capped: true,
      exact: all.clamped[n + j] === true,
    })),
  };
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
