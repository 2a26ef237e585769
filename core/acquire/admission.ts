/**
 * What every step of an acquire shares: the {@linkcode Admission} context a
 * `RateLimiter` builds once (source, store, writer, clock, random, lease
 * options), and the steps both paths take through it: resolving limits,
 * reading them again when a stored bucket shows another config, learning
 * an entity's cascade and shards from an item, reporting a stranded charge.
 *
 * @module
 */
import type { BucketItem, BucketRef } from "../bucket_item.ts";
import type { BucketWriter } from "../bucket_writer.ts";
import type { Clock } from "../clock.ts";
import type { Coalescer } from "./coalescer.ts";
import { ValidationError } from "../errors.ts";
import type { LeaseOptions, StrandedCharge } from "../lease.ts";
import type { Limit } from "../limit.ts";
import type { BucketStore } from "./bucket_store.ts";
import type { LimiterSource, ResolvedLimits } from "./limiter_source.ts";
import { chargeSide, checkSatisfiable, type Side } from "./plan.ts";

/** The context of a limiter's acquires. */
export interface Admission {
  /** Configuration and entities. */
  readonly source: LimiterSource;
  /** Bucket items. */
  readonly store: BucketStore;
  /** Exact writes and what is known of each item. */
  readonly writer: BucketWriter;
  /** The writer's charges, coalesced per item within this process (`coalescer.ts`). */
  readonly coalescer: Coalescer;
  /** The source's clock. */
  readonly clock: Clock;
  /** Random numbers in [0, 1) (shard choice). */
  readonly random: () => number;
  /** Options of every lease handed out. */
  readonly leaseOptions: LeaseOptions;
  /** Where charges that may stand without a lease are reported. */
  readonly onStranded: (charge: StrandedCharge) => void;
}

/**
 * The limits of an entity: `override`, or the stored ones.
 *
 * @throws {ValidationError} none are configured
 */
export async function resolveLimits(
  adm: Admission,
  entityId: string,
  resource: string,
  override: readonly Limit[] | null,
): Promise<ResolvedLimits> {
  if (override) return { limits: override, source: "override" };
  const r = await adm.source.resolveLimits(entityId, resource);
  if (!r) {
    throw new ValidationError(
      "limits",
      `entity=${entityId}, resource=${resource}`,
      "no limits are configured at entity, resource or system level; store some (setLimits, " +
        "setResourceDefaults, setSystemDefaults) or pass limits",
    );
  }
  return r;
}

/**
 * {@linkcode resolveLimits} without I/O: `override`, or the stored limits
 * when the source has every level cached; `undefined` when it must read
 * (or none are configured: the async path says so).
 */
export function cachedLimits(
  adm: Admission,
  entityId: string,
  resource: string,
  override: readonly Limit[] | null,
): ResolvedLimits | undefined {
  if (override) return { limits: override, source: "override" };
  return adm.source.cachedLimits?.(entityId, resource) ?? undefined;
}

/**
 * The side again with its config read fresh (and its cascade parent's):
 * another writer changed the stored limits, or this process's cache is
 * stale. Overrides are what the caller passed and are kept.
 */
export async function refreshedSide(
  adm: Admission,
  side: Side,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
): Promise<Side> {
  if (override !== null) return side;
  const fresh = await adm.source.resolveLimits(side.entityId, resource, {
    fresh: true,
  });
  const parentId = adm.source.entityInfo(side.entityId)?.parentId;
  if (parentId) {
    await adm.source.resolveLimits(parentId, resource, { fresh: true });
  }
  if (!fresh) {
    const r = await resolveLimits(adm, side.entityId, resource, null);
    return chargeSide(side.entityId, r, consume, side.shards, true, adm.random);
  }
  const next = chargeSide(
    side.entityId,
    fresh,
    consume,
    side.shards,
    true,
    adm.random,
  );
  checkSatisfiable(next, resource);
  return { ...next, shard: side.shard };
}

/** Caches the cascade link and shard count an item shows. */
export function learn(
  adm: Admission,
  entityId: string,
  resource: string,
  item: BucketItem | null,
): void {
  if (!item) return;
  adm.source.rememberEntity(entityId, {
    cascade: item.cascade,
    parentId: item.parentId,
  }, {
    resource,
    count: item.shardCount,
  });
}

/** Reports a charge that may stand in the bucket without a lease (under-admission). */
export function reportStranded(
  adm: Admission,
  ref: BucketRef,
  amounts: ReadonlyMap<string, bigint>,
  kind: "debit" | "giveback",
  cause: unknown,
): void {
  strandedTo(adm.onStranded, ref, amounts, kind, cause);
}

/**
 * How long a caller waits for the give-back of a charge that must not stand
 * (a side of an all-or-nothing charge applied, another did not), on top of
 * its deadline: the acquire's compensation and `lease.consume`'s give-back.
 * A give-back still running then ends in the background, reported stranded
 * unless it applied.
 */
export const COMPENSATION_GRACE_MS = 1000;

/** Reports the millitokens `left` of a give-back that applied but could not place them (nothing when 0). */
export function unplacedTo(
  onStranded: (charge: StrandedCharge) => void,
  ref: BucketRef,
  left: bigint,
): void {
  if (left > 0n) {
    strandedTo(onStranded, ref, new Map([["*", left]]), "giveback", null);
  }
}

/**
 * Reports to `onStranded` the millitokens `amounts` (either sign: a delta
 * given back is negative) on `ref` as whole tokens (also a lease's reports,
 * `lease_writes.ts`).
 */
export function strandedTo(
  onStranded: (charge: StrandedCharge) => void,
  ref: BucketRef,
  amounts: ReadonlyMap<string, bigint>,
  kind: "debit" | "giveback",
  cause: unknown,
): void {
  const tokens: Record<string, number> = {};
  for (const [n, a] of amounts) tokens[n] = Math.abs(Number(a)) / 1000;
  onStranded({
    entityId: ref.entityId,
    resource: ref.resource,
    shard: ref.shard,
    kind,
    amounts: tokens,
    cause,
  });
}
