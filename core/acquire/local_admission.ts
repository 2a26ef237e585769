/**
 * The acquire's side of the local fallback (see `../local_fallback.ts`):
 * finds the limits of the entity and, with cascade, of its parent without
 * waiting on DynamoDB, takes the charge from the in-process buckets, and
 * hands out a lease marked `local` whose rollback gives the tokens back to
 * those buckets.
 *
 * @module
 */
import { ValidationError } from "../errors.ts";
import { Lease } from "../lease.ts";
import type { Limit } from "../limit.ts";
import type { LocalFallback, LocalSide } from "../local_fallback.ts";
import { withGrace } from "../transport.ts";
import type { Admission } from "./admission.ts";

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
