/**
 * The slow path (the bucket's state is not known, or the cascade flags are
 * due for a re-read): one consistent read of the entity's item, its
 * metadata link and (when the cache knows it) its parent's item; a decision
 * with refill ({@linkcode planWrite}); one write under the `rf` lock, a
 * transaction when the parent is charged too. A lost lock brings the items
 * back, and the fast path decides again from them without a read.
 *
 * @module
 */
import type { BucketItem, BucketRef } from "../bucket_item.ts";
import { RateLimitExceeded } from "../errors.ts";
import { Lease } from "../lease.ts";
import type { Limit } from "../limit.ts";
import { markPath } from "../telemetry.ts";
import { checkDeadline, type LateOutcome, watchLate } from "../transport.ts";
import { errorName, isTransactionConflictOnly } from "../_sdk_errors.ts";
import { type Admission, learn, refreshedSide } from "./admission.ts";
import type { BucketWrite } from "./bucket_store.ts";
import { guessParent, slowParentPlan } from "./cascade.ts";
import { compensate, fastPath } from "./fast_path.ts";
import { settleFailedCharge } from "./late_charge.ts";
import {
  afterWrite,
  contendedStatuses,
  leaseEntries,
  type Plan,
  planWrite,
  type Side,
  sideRef,
  slowWrite,
  staleParams,
} from "./plan.ts";

const MAX_SLOW_ATTEMPTS = 4;
const MAX_CONFLICT_RETRIES = 16;

/**
 * The slow path, retried up to {@linkcode MAX_SLOW_ATTEMPTS} times.
 *
 * @throws {RateLimitExceeded} a limit refused, or the race was lost every time
 */
export async function slowPath(
  adm: Admission,
  child0: Side,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
): Promise<Lease> {
  let child = child0;
  let refreshed = false;
  for (let attempt = 0;; attempt++) {
    checkDeadline();
    const nowMs = adm.clock.now();
    const ns = adm.source.namespaceId;
    const guess = guessParent(adm, child.entityId, resource);
    const refs: BucketRef[] = [sideRef(ns, child, resource)];
    if (guess) refs.push(guess);
    const read = await adm.store.read(refs, { ns, entityId: child.entityId });
    const cascade = read.link?.cascade ?? false;
    const parentId = read.link?.parentId ?? null;
    adm.source.rememberEntity(child.entityId, { cascade, parentId });
    const childItem = read.items[0] ?? null;
    if (childItem) learn(adm, child.entityId, resource, childItem);
    if (childItem && childItem.shardCount !== child.shards) {
      child = { ...child, shards: childItem.shardCount };
    }
    const plans: Plan[] = [
      planWrite(ns, child, resource, childItem, nowMs, { cascade, parentId }),
    ];
    const parent = await slowParentPlan(
      adm,
      { cascade, parentId },
      guess,
      read,
      resource,
      consume,
      override,
      nowMs,
    );
    if (parent) plans.push(parent.plan);
    if (
      override === null && !refreshed &&
      (parent?.stale || staleParams(child, childItem))
    ) {
      // Never write a cached config over a newer one: read it again first.
      refreshed = true;
      child = await refreshedSide(adm, child, resource, consume, override);
      continue;
    }
    for (const p of plans) adm.writer.remember(p.ref, p.item);
    const statuses = plans.flatMap((p) => p.statuses);
    if (statuses.some((s) => s.exceeded)) {
      throw new RateLimitExceeded(statuses);
    }
    for (const p of plans) {
      if (p.wcuShort) {
        await bumpShards(adm, p.side.entityId, resource, p.item);
      }
    }
    const writes = plans.map((p) =>
      slowWrite(p, adm.source.bucketTtl(p.side.resolved, nowMs))
    );
    const outcome = await send(adm, writes, plans);
    if (outcome === "ok") {
      for (const p of plans) {
        adm.writer.remember(
          p.ref,
          afterWrite(p, adm.source.bucketTtl(p.side.resolved, nowMs)),
        );
      }
      return new Lease(
        adm.writer,
        child.entityId,
        resource,
        plans.flatMap((p) =>
          leaseEntries(
            p.side,
            sideRef(adm.source.namespaceId, p.side, resource, p.ref.shard),
          )
        ),
        false,
        adm.leaseOptions,
      );
    }
    // Lost the `rf` lock or a create race. The failed write brought the
    // items back: the fast path decides again from them without a read.
    if (plans.every((p) => adm.writer.known(p.ref) !== undefined)) {
      const lease = await fastPath(adm, child, resource, consume, override);
      if (lease && lease !== "params") return lease;
    }
    if (attempt + 1 >= MAX_SLOW_ATTEMPTS) {
      throw new RateLimitExceeded(contendedStatuses(plans));
    }
    markPath("retry");
    await adm.writer.backoff(attempt);
  }
}

/**
 * Sends the slow-path writes; `conflict` when a condition failed (the old
 * images it brings back are remembered). Retries pure transaction
 * conflicts, which DynamoDB refused before applying anything.
 */
async function send(
  adm: Admission,
  writes: BucketWrite[],
  plans: Plan[],
): Promise<"ok" | "conflict"> {
  // How the write ended, if the deadline passes while it is on the wire.
  let late: Promise<LateOutcome> | undefined;
  const onLate = (p: Promise<LateOutcome>): void => void (late = p);
  for (let attempt = 0;; attempt++) {
    try {
      const r = await watchLate(onLate, () => adm.store.transact(writes));
      if (r.ok) return "ok";
      plans.forEach((p, i) => adm.writer.remember(p.ref, r.olds[i] ?? null));
      return "conflict";
    } catch (e) {
      // Other writers on the same items (a transaction, or a write racing one).
      const conflict = isTransactionConflictOnly(e) ||
        errorName(e) === "TransactionConflictException";
      if (conflict && attempt < MAX_CONFLICT_RETRIES) {
        await adm.writer.backoff(attempt);
        continue;
      }
      if (conflict) throw new RateLimitExceeded(contendedStatuses(plans));
      // One write or one transaction: every side applied, or none. Applied
      // after the deadline: each given back; not applied: nothing; else stranded.
      for (const p of plans) {
        settleFailedCharge(
          adm,
          p.ref,
          p.side.charge,
          late,
          e,
          () => compensate(adm, p.side, p.ref),
        );
      }
      throw e;
    }
  }
}

/** Doubles the shard count of an item past its write rate (shard 0 holds it). */
async function bumpShards(
  adm: Admission,
  entityId: string,
  resource: string,
  item: BucketItem | null,
): Promise<void> {
  const current = item?.shardCount ?? 1;
  const ref: BucketRef = {
    ns: adm.source.namespaceId,
    entityId,
    resource,
    shard: 0,
  };
  const r = await adm.store.write({
    kind: "shards",
    ref,
    from: current,
    to: current * 2,
  });
  if (!r.ok) return;
  adm.source.rememberEntity(entityId, {
    cascade: item?.cascade ?? false,
    parentId: item?.parentId ?? null,
  }, { resource, count: current * 2 });
}
