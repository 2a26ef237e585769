/**
 * What a callback's failed rollback leaves behind. The callback form of
 * `RateLimiter.acquire` rethrows the body's error and never hands the lease
 * back, so a rollback that failed before it applied (throttled on every
 * attempt, say: the lease stays open to be retried) leaves tokens charged
 * under a lease nobody can settle. They are reported stranded (`giveback`:
 * tokens that may not have been given back), as a give-back whose answer
 * was lost already is, so every charge is committed, given back or
 * reported. A give-back still running past the rollback's deadline is
 * waited for first (`lease_writes.ts`): what it gave back is not reported,
 * and what it left is reported once.
 *
 * @module
 */
import type { BucketRef } from "../bucket_item.ts";
import type { Lease } from "../lease.ts";
import { type Admission, reportStranded } from "./admission.ts";
import { trackLate } from "./late_charge.ts";

/**
 * Reports what `lease` still holds in DynamoDB (its written amounts) as
 * stranded give-backs, per item: at once, or (a write of the lease may
 * still apply) once it ended, tracked for `close()`.
 */
export function reportUnreturned(
  adm: Admission,
  lease: Lease,
  cause: unknown,
): void {
  const settling = lease.settling();
  if (settling) {
    trackLate(
      adm,
      settling.then(() => reportHeld(adm, lease, cause)).catch(() => {}),
    );
  } else reportHeld(adm, lease, cause);
}

function reportHeld(adm: Admission, lease: Lease, cause: unknown): void {
  const items = new Map<
    string,
    { ref: BucketRef; amounts: Map<string, bigint> }
  >();
  for (const e of lease.entries) {
    if (e.written <= 0n) continue;
    const k = `${e.ref.entityId}\u0000${e.ref.resource}\u0000${e.ref.shard}`;
    let item = items.get(k);
    if (!item) items.set(k, item = { ref: e.ref, amounts: new Map() });
    item.amounts.set(
      e.limit.name,
      (item.amounts.get(e.limit.name) ?? 0n) + e.written,
    );
  }
  for (const { ref, amounts } of items.values()) {
    reportStranded(adm, ref, amounts, "giveback", cause);
  }
}
