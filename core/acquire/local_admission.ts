/**
 * The acquire's side of the local fallback (see `../local_fallback.ts`):
 * finds the limits of the entity and, with cascade, of its parent without
 * waiting on DynamoDB, takes the charge from the in-process buckets, and
 * hands out a lease marked `local` whose rollback gives the tokens back to
 * those buckets.
 *
 * @module
 */
import type { ConcurrencyLimit } from "../concurrency_limit.ts";
import { ValidationError } from "../errors.ts";
import { Lease } from "../lease.ts";
import type { Limit } from "../limit.ts";
import type { LocalFallback, LocalSide } from "../local_fallback.ts";
import { withGrace } from "../transport.ts";
import type { Admission } from "./admission.ts";
import { shortestLease } from "./concurrency.ts";
import { grantOf } from "./grant.ts";

/** Thrown (and caught) when the local fallback skips DynamoDB after a recent failure. */
export const SKIPPED: Error = new Error(
  "DynamoDB failed less than localFallback.probeIntervalMs ago",
);

/** Time the source may take to answer from its cache during an outage. */
const SOURCE_GRACE_MS = 250;

/** `undefined`: unknown (the source failed); `null`: the entity has no limits. */
async function limitsOf(
  adm: Admission,
  local: LocalFallback,
  entityId: string,
  resource: string,
  override: readonly Limit[] | null,
): Promise<readonly Limit[] | null | undefined> {
  if (override) return override;
  const known = local.limitsOf(entityId, resource);
  if (known) return known;
  try {
    const r = await withGrace(
      SOURCE_GRACE_MS,
      () => adm.source.resolveLimits(entityId, resource),
    );
    return r ? r.limits : null;
  } catch (e) {
    return e instanceof ValidationError ? null : undefined;
  }
}

/**
 * Admits from the local buckets. `null` when the limits (or the cascade
 * link) of the entity are unknown to this process: the caller fails as
 * with `block`.
 *
 * @throws {RateLimitExceeded} a local bucket cannot cover the charge; nothing was taken
 */
export async function admitLocally(
  adm: Admission,
  local: LocalFallback,
  entityId: string,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
): Promise<Lease | null> {
  const info = adm.source.entityInfo(entityId);
  const own = await limitsOf(adm, local, entityId, resource, override);
  if (!own || info === undefined) return null;
  const sides: LocalSide[] = [{ entityId, limits: own }];
  if (info.cascade && info.parentId) {
    const parent = await limitsOf(
      adm,
      local,
      info.parentId,
      resource,
      override,
    );
    if (parent === undefined) return null;
    if (parent) sides.push({ entityId: info.parentId, limits: parent });
  }
  const giveBack = local.admit(sides, resource, consume);
  const lease = new Lease(null, entityId, resource, [], true, adm.leaseOptions);
  lease.setHold({ deadline: null, clock: adm.clock, local: true });
  lease.onEnd((ending) => {
    if (ending === "rollback") giveBack();
    return Promise.resolve();
  });
  return lease;
}

/**
 * The local fallback of one try after DynamoDB failed with `error` (or was
 * skipped, {@linkcode SKIPPED}): records and reports the failure, takes the
 * local concurrency slots, then admits from the local buckets (a partial
 * grant with `min`). `null` when the limits are unknown: the caller fails
 * as with `block`.
 *
 * @throws {RateLimitExceeded} a local bucket or slot is short; nothing was taken
 */
export async function fallBackLocally(
  adm: Admission,
  local: LocalFallback,
  error: unknown,
  call: {
    readonly entityId: string;
    readonly resource: string;
    readonly consume: ReadonlyMap<string, bigint>;
    readonly min: ReadonlyMap<string, bigint> | null;
    readonly override: readonly Limit[] | null;
    readonly concurrency: readonly ConcurrencyLimit[];
    readonly start: number;
    readonly onError: (error: unknown, context: string) => void;
    /** The call's own signal aborted it (DynamoDB may be fine). */
    readonly callerAborted?: boolean;
  },
): Promise<Lease | null> {
  if (error !== SKIPPED) {
    // The caller's own abort says nothing about DynamoDB: no skip window.
    if (!call.callerAborted) local.markDown();
    call.onError(error, "local");
  }
  const release = call.concurrency.length === 0 ? null : local.takeSlots(
    call.entityId,
    call.resource,
    call.concurrency,
    call.start,
  );
  let unknown = false;
  let lease: Lease;
  try {
    lease = await grantOf(call.consume, call.min, async (c) => {
      const l = await admitLocally(
        adm,
        local,
        call.entityId,
        call.resource,
        new Map(c),
        call.override,
      );
      if (l) return l;
      unknown = true;
      throw error;
    });
  } catch (e) {
    release?.();
    if (unknown) return null;
    throw e;
  }
  if (release) {
    lease.setHold({
      deadline: call.start + (shortestLease(call.concurrency) as number),
      clock: adm.clock,
    });
    lease.onEnd(() => Promise.resolve(release()));
  }
  return lease;
}
