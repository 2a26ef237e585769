/**
 * The statuses `BucketWriter.charge` reports when it lost the race for an
 * item too many times: the charged limits refused with the time to the
 * next token (so the caller backs off instead of seeing an outage).
 *
 * @module
 */
import { retryAfterSeconds, wholeTokens } from "./bucket.ts";
import type { BucketItem } from "./bucket_item.ts";
import type { Target } from "./bucket_writer.ts";
import type { LimitStatus } from "./models.ts";

/** Statuses of a charge that stayed contended (see the module doc). */
export function contendedStatuses(
  target: Target,
  amounts: ReadonlyMap<string, bigint>,
  item: BucketItem | undefined,
): LimitStatus[] {
  return target.limits.map((s) => {
    const a = amounts.get(s.limit.name) ?? 0n;
    const tk = item?.limits.get(s.limit.name)?.tk ?? 0n;
    return {
      entityId: target.ref.entityId,
      resource: target.ref.resource,
      limitName: s.limit.name,
      limit: s.limit,
      available: wholeTokens(tk),
      requested: Number(a / 1000n),
      exceeded: a > 0n,
      retryAfterSeconds: a > 0n
        ? retryAfterSeconds(a > tk ? a - tk : 1000n, s.eff)
        : 0,
    };
  });
}
