/**
 * The checks `BucketWriter.charge` makes on the known state of an item
 * before it writes (shared with the coalescer, `acquire/coalescer.ts`,
 * which writes one charge for several requests).
 *
 * @module
 */
import { refill, sameParams, saturationCeiling } from "./bucket.ts";
import {
  type BucketItem,
  type StoredLimit,
  WCU_PARAMS,
} from "./bucket_item.ts";
import type { ChargeOutcome, Target } from "./bucket_writer.ts";
import { calendarBalance } from "./calendar_bucket.ts";
import { WCU_LIMIT_NAME } from "./validation.ts";

/**
 * Why `amounts` cannot be charged from the known item `k` (`null`: it can):
 * an item or limit missing or expired, other stored parameters, or past
 * 1000 writes a second (the slow path splits it into shards).
 */
export function blockedCharge(
  target: Target,
  amounts: ReadonlyMap<string, bigint>,
  k: BucketItem,
  nowMs: number,
): ChargeOutcome | null {
  if (k.ttl !== null && k.ttl <= Math.floor(nowMs / 1000)) {
    return { kind: "missing" };
  }
  for (const s of target.limits) {
    if (!amounts.has(s.limit.name)) continue;
    const st = k.limits.get(s.limit.name);
    if (!st) return { kind: "missing" };
    if (!sameParams(st.params, s.stored)) return { kind: "params", item: k };
  }
  const writes = k.limits.get(WCU_LIMIT_NAME);
  if (writes && refill(writes.tk, k.rf, BigInt(nowMs), WCU_PARAMS).tk < 0n) {
    return { kind: "missing" };
  }
  return null;
}

/**
 * Whether the stored tokens of `k` cover `amounts` for a plain write:
 * under the saturation ceiling, or for a calendar quota (no refill, no
 * ceiling) within its window.
 */
export function plainFits(
  target: Target,
  amounts: ReadonlyMap<string, bigint>,
  k: BucketItem,
  now: bigint,
): boolean {
  return target.limits.every((s) => {
    const a = amounts.get(s.limit.name);
    if (a === undefined) return true;
    const st = k.limits.get(s.limit.name) as StoredLimit;
    if (s.limit.calendar) {
      // A calendar quota: no refill, so no ceiling; the window must not have turned.
      const c = calendarBalance(st, s.limit.calendar, Number(now), s.eff.cp);
      return !c.turned && st.tk >= a && st.tk <= s.eff.cp;
    }
    return st.tk >= a && st.tk <= saturationCeiling(k.rf, now, s.eff);
  });
}
