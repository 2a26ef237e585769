/**
 * The cascade parent of an acquire: an entity with `cascade` set charges
 * its parent's bucket too, all or nothing (the fast path gives back what it
 * charged when the other side fails; the slow path writes both in one
 * transaction). This file resolves the parent's side and plans its item; a
 * parent without limits, or with none of the names consumed, is not
 * charged.
 *
 * @module
 */
import type { BucketItem, BucketRef } from "../bucket_item.ts";
import { ValidationError } from "../errors.ts";
import type { Limit } from "../limit.ts";
import { type Admission, learn, resolveLimits } from "./admission.ts";
import type { EntityLink, ReadResult } from "./bucket_store.ts";
import type { ResolvedLimits } from "./limiter_source.ts";
import {
  chargeSide,
  checkSatisfiable,
  type Plan,
  planWrite,
  type Side,
  staleParams,
} from "./plan.ts";

/** The parent's side, or `null` when it has no limits (then it is not charged). */
export async function parentSide(
  adm: Admission,
  parentId: string,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
): Promise<Side | null> {
  let resolved: ResolvedLimits;
  try {
    resolved = await resolveLimits(adm, parentId, resource, override);
  } catch (e) {
    if (e instanceof ValidationError) return null; // a parent without limits is not charged
    throw e;
  }
  const info = adm.source.entityInfo(parentId);
  return chargeSide(
    parentId,
    resolved,
    consume,
    info?.shards.get(resource) ?? 1,
    false,
    adm.random,
  );
}

/**
 * The parent's side when it is charged at all (`null`: no limits, or no
 * name consumed).
 *
 * @throws {RequestExceedsCapacity} the parent can never admit the charge
 */
export async function chargedParent(
  adm: Admission,
  parentId: string,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
): Promise<Side | null> {
  const parent = await parentSide(adm, parentId, resource, consume, override);
  if (!parent || parent.charge.size === 0) return null;
  checkSatisfiable(parent, resource);
  return parent;
}

/**
 * The parent's item the slow path reads in the same batch as the entity's,
 * when the entity cache knows a cascade parent (picks its shard).
 */
export function guessParent(
  adm: Admission,
  entityId: string,
  resource: string,
): BucketRef | null {
  const known = adm.source.entityInfo(entityId);
  const parentId = known?.cascade && known.parentId ? known.parentId : null;
  if (!parentId) return null;
  const shards = adm.source.entityInfo(parentId)?.shards.get(resource) ?? 1;
  const shard = shards > 1 ? Math.floor(adm.random() * shards) : 0;
  return { ns: adm.source.namespaceId, entityId: parentId, resource, shard };
}

/** The plan of a parent's item as read (its cascade and shards learned from it). */
export function parentPlan(
  adm: Admission,
  parent: Side,
  resource: string,
  item: BucketItem | null,
  nowMs: number,
): Plan {
  if (item) learn(adm, parent.entityId, resource, item);
  const side = item && item.shardCount !== parent.shards
    ? { ...parent, shards: item.shardCount }
    : parent;
  return planWrite(adm.source.namespaceId, side, resource, item, nowMs, {
    cascade: item?.cascade ?? false,
    parentId: item?.parentId ?? null,
  });
}

/**
 * The slow path's plan for the parent of an entity whose stored link is
 * `link`, or `null` when no parent is charged. The parent's item comes from
 * the batch read when `guess` was right, else from one more read. `stale`:
 * the item stores other parameters than the parent resolved.
 */
export async function slowParentPlan(
  adm: Admission,
  link: EntityLink,
  guess: BucketRef | null,
  read: ReadResult,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
  nowMs: number,
): Promise<{ plan: Plan; stale: boolean } | null> {
  const parentId = link.cascade ? link.parentId : null;
  if (!parentId) return null;
  const parent = await chargedParent(
    adm,
    parentId,
    resource,
    consume,
    override,
  );
  if (!parent) return null;
  // The parent's bucket was read in the same batch when the cache knew the parent.
  const guessed = guess !== null && parentId === guess.entityId;
  const shard = guessed ? guess.shard : parent.shard;
  const item = guessed ? read.items[1] ?? null : (await adm.store.read([{
    ns: adm.source.namespaceId,
    entityId: parentId,
    resource,
    shard,
  }])).items[0] ?? null;
  return {
    plan: parentPlan(adm, { ...parent, shard }, resource, item, nowMs),
    stale: staleParams(parent, item),
  };
}
