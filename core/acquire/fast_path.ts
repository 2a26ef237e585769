/**
 * The fast path: one conditional write per side (the entity and, with
 * cascade, its parent, sent together) from the state the last answers
 * showed, through `BucketWriter.charge`. All or nothing: when one
 * side fails, the sides charged are given back before the answer.
 *
 * @module
 */
import { paramsOf } from "../bucket.ts";
import { type BucketRef, WCU_PER_WRITE } from "../bucket_item.ts";
import type { ChargeOutcome, LimitSpec, Target } from "../bucket_writer.ts";
import { RateLimitExceeded } from "../errors.ts";
import { Lease, type LeaseEntry } from "../lease.ts";
import type { Limit } from "../limit.ts";
import type { LimitStatus } from "../models.ts";
import {
  type LateOutcome,
  lateWithUnplaced,
  watchLate,
  withGrace,
} from "../transport.ts";
import {
  type Admission,
  COMPENSATION_GRACE_MS,
  reportStranded,
  unplacedTo,
} from "./admission.ts";
import { LateOutcomes, settleFailedCharge, trackLate } from "./late_charge.ts";
import { chargedParent } from "./cascade.ts";
import { passingStatuses, type Side, sideRef } from "./plan.ts";

/** Limit specs, computed once per limit set (the config cache hands out the same array until it refetches). */
const specCache = new WeakMap<
  readonly Limit[],
  Map<number, readonly LimitSpec[]>
>();

function specs(limits: readonly Limit[], shards: number): readonly LimitSpec[] {
  let byShards = specCache.get(limits);
  if (!byShards) {
    byShards = new Map();
    specCache.set(limits, byShards);
  }
  let out = byShards.get(shards);
  if (!out) {
    // Shadow limits are never charged: left out of the item's writes.
    out = limits.filter((l) => !l.shadow).map((l) => ({
      limit: l,
      stored: paramsOf(l),
      eff: paramsOf(l, shards),
    }));
    byShards.set(shards, out);
  }
  return out;
}

/** The write target of a side's item at `nowMs` (also used by `acquire/reserve.ts`). */
export function target(
  adm: Admission,
  side: Side,
  resource: string,
  nowMs: number,
): Target {
  return {
    ref: sideRef(adm.source.namespaceId, side, resource),
    limits: specs(side.resolved.limits, side.shards),
    shards: side.shards,
    ttl: adm.source.bucketTtl(side.resolved, nowMs),
  };
}

/**
 * The fast path. `null` sends the caller to the slow path (entity unknown
 * or due for a re-read, nothing known of an item, item or limit missing);
 * `"params"` asks it to re-read the config.
 *
 * @throws {RateLimitExceeded} a side refused (decided on fresh state) or
 * stayed contended
 * @throws the store's error when a write failed without a verdict (reported
 * as stranded when it may have applied)
 */
export async function fastPath(
  adm: Admission,
  child: Side,
  resource: string,
  consume: ReadonlyMap<string, bigint>,
  override: readonly Limit[] | null,
): Promise<Lease | "params" | null> {
  const nowMs = adm.clock.now();
  const info = adm.source.entityInfo(child.entityId);
  // Unknown entity, or its cascade flags are due for a re-read: the slow path reads META.
  if (info === undefined || info.refreshAt <= nowMs) return null;
  const sides: Side[] = [child];
  if (info.cascade && info.parentId) {
    const parent = await chargedParent(
      adm,
      info.parentId,
      resource,
      consume,
      override,
    );
    if (parent) sides.push(parent);
  }
  const targets = sides.map((s) => target(adm, s, resource, nowMs));
  const writer = adm.writer;
  if (targets.some((t) => writer.known(t.ref) === undefined)) {
    return null;
  }
  if (sides.length === 1) {
    return await oneSide(adm, child, targets[0] as Target, resource);
  }
  // Each side learns how its write ended if the deadline passes while it is on the wire.
  const late = new LateOutcomes();
  const results = await Promise.allSettled(
    sides.map((s, i) =>
      late.watch(i, () => adm.coalescer.charge(targets[i] as Target, s.charge))
    ),
  );
  const ok = results.map((r) =>
    r.status === "fulfilled" && r.value.kind === "ok"
  );
  if (ok.every(Boolean)) {
    return leaseOf(
      adm,
      child.entityId,
      resource,
      sides.flatMap((s, i) => targetEntries(s, targets[i] as Target)),
    );
  }
  // All or nothing: give back what was charged, then answer for the rest.
  await Promise.all(
    sides.map((s, i) =>
      ok[i] ? compensate(adm, s, (targets[i] as Target).ref) : null
    ),
  );
  let statuses: LimitStatus[] | null = null;
  let next: "params" | null | undefined = undefined;
  // Every side whose write may have applied is reported, then the first failure thrown.
  const failed = results.flatMap((r, i) => {
    if (r.status !== "rejected") return [];
    const side = sides[i] as Side;
    const ref = (targets[i] as Target).ref;
    // Applied after the deadline: given back; not applied: nothing; else stranded.
    settleFailedCharge(
      adm,
      ref,
      side.charge,
      late.of(i),
      r.reason,
      () => compensate(adm, side, ref),
    );
    return [r.reason];
  });
  if (failed.length > 0) throw failed[0];
  for (let i = 0; i < sides.length; i++) {
    const r = results[i] as PromiseSettledResult<ChargeOutcome>;
    if (r.status === "rejected") continue;
    const o = r.value;
    if (o.kind === "refused" || o.kind === "contended") {
      statuses ??= [];
      statuses.push(...o.statuses);
    } else if (o.kind === "params") next = "params";
    else if (o.kind === "missing" && next === undefined) next = null;
  }
  if (statuses) {
    const refusedIds = new Set(statuses.map((s) => s.entityId));
    for (const s of sides) {
      if (!refusedIds.has(s.entityId)) {
        statuses.push(...passing(adm, s, resource));
      }
    }
    throw new RateLimitExceeded(statuses);
  }
  return next ?? null;
}

/** The fast path of a single side (no cascade charge): its one write, then the answer. */
async function oneSide(
  adm: Admission,
  side: Side,
  t: Target,
  resource: string,
): Promise<Lease | "params" | null> {
  let late: Promise<LateOutcome> | undefined;
  let o: ChargeOutcome;
  try {
    o = await watchLate(
      (p) => void (late = p),
      () => adm.coalescer.charge(t, side.charge),
    );
  } catch (e) {
    // Applied after the deadline: given back; not applied: nothing; else stranded.
    settleFailedCharge(
      adm,
      t.ref,
      side.charge,
      late,
      e,
      () => compensate(adm, side, t.ref),
    );
    throw e;
  }
  switch (o.kind) {
    case "ok":
      return leaseOf(adm, side.entityId, resource, targetEntries(side, t));
    case "refused":
    case "contended":
      throw new RateLimitExceeded(o.statuses);
    case "params":
      return "params";
    default:
      return null;
  }
}

/** The lease of an admitted fast-path charge. */
function leaseOf(
  adm: Admission,
  entityId: string,
  resource: string,
  entries: LeaseEntry[],
): Lease {
  return new Lease(
    adm.writer,
    entityId,
    resource,
    entries,
    false,
    adm.leaseOptions,
  );
}

/**
 * The lease entries of a side charged on `t`: `leaseEntries` (`plan.ts`)
 * with the target's item and effective parameters, computed once per
 * limit set, instead of building them again.
 */
function targetEntries(side: Side, t: Target): LeaseEntry[] {
  return t.limits.map((s) => {
    const amount = side.charge.get(s.limit.name) ?? 0n;
    return {
      ref: t.ref,
      limit: s.limit,
      params: s.eff,
      shards: t.shards,
      consumed: amount,
      written: amount,
    };
  });
}

/** Passing statuses of a side from what the writer knows of its item. */
function passing(
  adm: Admission,
  side: Side,
  resource: string,
): LimitStatus[] {
  const known = adm.writer.known(
    sideRef(adm.source.namespaceId, side, resource),
  );
  return passingStatuses(side, resource, known);
}

/**
 * Gives a side's charge on `ref` back (and its `wcu` write, so usage
 * snapshots do not count a refused acquire). Runs with its own short grace
 * when the caller's deadline has passed; a failure is reported as stranded.
 * (Also the give-back of a charge applied after its caller's deadline:
 * `late_charge.ts`.)
 */
export async function compensate(
  adm: Admission,
  side: Side,
  ref: BucketRef,
): Promise<void> {
  const deltas = new Map<string, bigint>();
  for (const [n, a] of side.charge) deltas.set(n, -a);
  let late: Promise<[LateOutcome, bigint]> | undefined;
  const unplaced = (left: bigint): void =>
    unplacedTo(adm.onStranded, ref, left);
  try {
    unplaced(
      await withGrace(
        COMPENSATION_GRACE_MS,
        () =>
          watchLate(
            lateWithUnplaced((l) => void (late = l)),
            () => adm.coalescer.apply(ref, side.shards, deltas, -WCU_PER_WRITE),
          ),
      ),
    );
  } catch (e) {
    // The charge stands unless the give-back applied after all (then what it could not place).
    if (!late) reportStranded(adm, ref, side.charge, "giveback", e);
    else {
      trackLate(
        adm,
        late.then(([o, left]) => {
          if (o !== "applied") {
            reportStranded(adm, ref, side.charge, "giveback", e);
          } else unplaced(left);
        }).catch(() => {}),
      );
    }
  }
}
