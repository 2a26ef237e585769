/**
 * The pure decisions of an acquire, over bucket items and resolved limits
 * (no I/O, no clock, no cache): what each side of an acquire charges
 * ({@linkcode chargeSide}), whether a request can ever fit
 * ({@linkcode checkSatisfiable}), the slow-path plan of one bucket item
 * ({@linkcode planWrite}, {@linkcode slowWrite}, {@linkcode afterWrite}),
 * and the statuses a refusal reports.
 *
 * @module
 */
import {
  type BucketParams,
  heldBack,
  paramsOf,
  retryAfterAt,
  retryAfterSeconds,
  sameParams,
  settleParams,
  shardParams,
  wholeTokens,
} from "../bucket.ts";
import {
  type BucketItem,
  type BucketRef,
  type PlannedLimit,
  WCU_PER_WRITE,
  wcuPlanned,
} from "../bucket_item.ts";
import { dropWindow, planCalendar, windowAfter } from "../calendar_bucket.ts";
import { RequestExceedsCapacity, ValidationError } from "../errors.ts";
import { settleRefill } from "../refill_settle.ts";
import type { LeaseEntry } from "../lease.ts";
import type { Limit } from "../limit.ts";
import type { LimitStatus } from "../models.ts";
import type { BucketWrite } from "./bucket_store.ts";
import type { ResolvedLimits } from "./limiter_source.ts";

/** One side of an acquire (the entity, or its cascade parent) and what it is charged. */
export interface Side {
  /** The entity. */
  readonly entityId: string;
  /** Its resolved limits. */
  readonly resolved: ResolvedLimits;
  /** Millitokens to take per limit name (only names this side has). */
  readonly charge: Map<string, bigint>;
  /** The shard charged. */
  readonly shard: number;
  /** The shard count the effective parameters are divided by. */
  readonly shards: number;
}

/** The cascade link a slow-path write stores. */
export interface PlanMeta {
  /** Cascade flag. */
  readonly cascade: boolean;
  /** Parent id, or `null`. */
  readonly parentId: string | null;
}

/** The slow-path decision for one bucket item. */
export interface Plan {
  /** The side planned. */
  readonly side: Side;
  /** The item written. */
  readonly ref: BucketRef;
  /** The item as read (`null`: none). */
  readonly item: BucketItem | null;
  /** Every limit written, `wcu` last. */
  readonly limits: PlannedLimit[];
  /** One status per resolved limit. */
  readonly statuses: LimitStatus[];
  /** Whether the item is past its write rate (the slow path splits it into shards). */
  readonly wcuShort: boolean;
  /** The `rf` the write stores: the read `rf` plus the refill span claimed (now for a new item). */
  readonly rfAfter: bigint;
  /** Cascade flag stored. */
  readonly cascade: boolean;
  /** Parent id stored. */
  readonly parentId: string | null;
}

/** The item of a side on `shard` (its charged shard by default). */
export function sideRef(
  ns: string,
  side: Side,
  resource: string,
  shard: number = side.shard,
): BucketRef {
  return { ns, entityId: side.entityId, resource, shard };
}

/** The names of a limit list and its stored-shadow names. */
interface Names {
  readonly names: ReadonlySet<string>;
  /** Shadow limits (stored flag) are judged after the charge, never charged. */
  readonly shadow: ReadonlySet<string>;
}

/**
 * {@linkcode Names} per stored limit list (the config cache hands out the
 * same array until it refetches); an override, which the caller may
 * mutate between calls, is not cached.
 */
const namesCache = new WeakMap<readonly Limit[], Names>();

function namesOf(resolved: ResolvedLimits): Names {
  const cached = namesCache.get(resolved.limits);
  if (cached) return cached;
  const out: Names = {
    names: new Set(resolved.limits.map((l) => l.name)),
    shadow: new Set(
      resolved.limits.filter((l) => l.shadow).map((l) => l.name),
    ),
  };
  if (resolved.source !== "override") namesCache.set(resolved.limits, out);
  return out;
}

/**
 * The side of `entityId` charging `consume` (millitokens per limit name);
 * picks the shard with `random`. `strict`: a name the side has no limit
 * for is a {@linkcode ValidationError} (the entity), else skipped (a
 * parent).
 */
export function chargeSide(
  entityId: string,
  resolved: ResolvedLimits,
  consume: ReadonlyMap<string, bigint>,
  shards: number,
  strict: boolean,
  random: () => number,
): Side {
  const { names, shadow } = namesOf(resolved);
  const charge = new Map<string, bigint>();
  for (const [name, amount] of consume) {
    if (!names.has(name)) {
      if (strict) {
        throw new ValidationError(
          "consume",
          name,
          `no limit "${name}" is configured for entity "${entityId}" (configured: ${
            [...names].join(", ")
          })`,
        );
      }
      continue;
    }
    if (amount > 0n && !shadow.has(name)) charge.set(name, amount);
  }
  const shard = shards > 1 ? Math.floor(random() * shards) : 0;
  return { entityId, resolved, charge, shard, shards };
}

/** The status of one limit; `amount` in millitokens, `available` in whole tokens. */
export function limitStatus(
  entityId: string,
  resource: string,
  limit: Limit,
  available: number,
  amount: bigint,
  ok: boolean,
  retryAfter: number,
): LimitStatus {
  return {
    entityId,
    resource,
    limitName: limit.name,
    limit,
    available,
    requested: Number(amount / 1000n),
    exceeded: !ok,
    retryAfterSeconds: ok ? 0 : retryAfter,
  };
}

/**
 * Refuses a request no bucket could ever admit (more than a limit's
 * capacity), before any write: a Retry-After would have the caller loop.
 *
 * @throws {RequestExceedsCapacity} a charge is over a capacity
 */
export function checkSatisfiable(side: Side, resource: string): void {
  const over: LimitStatus[] = [];
  for (const l of side.resolved.limits) {
    const a = side.charge.get(l.name) ?? 0n;
    const cp = paramsOf(l, side.shards).cp;
    if (a > cp) {
      over.push(
        limitStatus(side.entityId, resource, l, wholeTokens(cp), a, false, 0),
      );
    }
  }
  if (over.length > 0) throw new RequestExceedsCapacity(over);
}

/** Passing statuses of a side from what is known of its item (`undefined`: full). */
export function passingStatuses(
  side: Side,
  resource: string,
  known: BucketItem | undefined,
): LimitStatus[] {
  return side.resolved.limits.map((l) => {
    const eff = paramsOf(l, side.shards);
    const tk = known?.limits.get(l.name)?.tk ?? eff.cp;
    return limitStatus(
      side.entityId,
      resource,
      l,
      wholeTokens(tk > eff.cp ? eff.cp : tk),
      side.charge.get(l.name) ?? 0n,
      true,
      0,
    );
  });
}

/** The lease entries of a side charged on `ref`. */
export function leaseEntries(side: Side, ref: BucketRef): LeaseEntry[] {
  // A shadow limit is never charged, by the acquire or the lease.
  return side.resolved.limits.filter((l) => !l.shadow).map((l) => {
    const amount = side.charge.get(l.name) ?? 0n;
    return {
      ref,
      limit: l,
      params: paramsOf(l, side.shards),
      shards: side.shards,
      consumed: amount,
      written: amount,
    };
  });
}

/** Whether a read item stores other parameters than the side resolved (a config changed somewhere). */
export function staleParams(side: Side, item: BucketItem | null): boolean {
  if (!item) return false;
  return side.resolved.limits.some((l) => {
    const st = item.limits.get(l.name);
    if (!st) return false;
    const p = paramsOf(l);
    return st.params.cp !== p.cp || st.params.ra !== p.ra ||
      st.params.rp !== p.rp;
  });
}

/**
 * The slow-path decision for the side's item as read at `nowMs`: refill,
 * admit or refuse each limit, and the `wcu` write budget.
 */
export function planWrite(
  ns: string,
  side: Side,
  resource: string,
  item: BucketItem | null,
  nowMs: number,
  meta: PlanMeta,
): Plan {
  const now = BigInt(nowMs);
  const ref = sideRef(ns, side, resource);
  // Shadow limits are never charged: they are left out of the item's writes
  // (an always-full limit would hold back the refill of the others).
  const enforced = side.resolved.limits.filter((l) => !l.shadow);
  const effective = enforced.map((l) => paramsOf(l, side.shards));
  // Calendar quotas do not take part in the rolling refill (calendar_bucket.ts).
  const rolling = enforced.flatMap((l, i) => l.calendar ? [] : [i]);
  // A limit new to the item starts full (its balance is clamped like the
  // others). A limit whose stored parameters differ (changed at some
  // unknown time since rf) is refilled under the smaller capacity and the
  // slower rate of the two. The write moves the item's one `rf`: the
  // limits stored on it outside `enforced` (removed from the config, left
  // out by an override, written by another client) are settled with it.
  const { plan: refilled, others } = settleRefill(
    item,
    side.shards,
    new Set(enforced.map((l) => l.name)),
    now,
    rolling.map((i) => {
      const l = enforced[i] as Limit;
      const eff = effective[i] as BucketParams;
      const stored = item?.limits.get(l.name);
      return {
        need: side.charge.get(l.name),
        tk: stored ? stored.tk : eff.cp,
        p: stored && !sameParams(stored.params, paramsOf(l))
          ? settleParams(shardParams(stored.params, side.shards), eff)
          : eff,
      };
    }),
  );
  const limits: PlannedLimit[] = [];
  const statuses: LimitStatus[] = [];
  enforced.forEach((l, i) => {
    const eff = effective[i] as BucketParams;
    const stored = item?.limits.get(l.name);
    const amount = side.charge.get(l.name) ?? 0n;
    if (l.calendar) {
      const c = planCalendar(
        l.name,
        paramsOf(l),
        stored,
        l.calendar,
        nowMs,
        eff.cp,
        amount,
      );
      statuses.push(
        limitStatus(
          side.entityId,
          resource,
          l,
          wholeTokens(c.tk),
          amount,
          c.ok,
          c.retryAfterSeconds,
        ),
      );
      limits.push({
        ...c.planned,
        paramsBefore: stored ? stored.params : null,
      });
      return;
    }
    const r = rolling.indexOf(i);
    const tk = refilled.tk[r] as bigint;
    const ok = amount <= 0n || tk >= amount;
    statuses.push(
      limitStatus(
        side.entityId,
        resource,
        l,
        wholeTokens(tk),
        amount,
        ok,
        ok ? 0 : retryAfterAt(amount - tk, eff, refilled.rf, now),
      ),
    );
    limits.push({
      name: l.name,
      params: paramsOf(l),
      paramsBefore: stored ? stored.params : null,
      tkBefore: stored ? stored.tk : null,
      tkAfter: heldBack(ok ? tk - amount : tk, refilled.hold[r]),
      consumed: ok ? amount : 0n,
      capped: stored !== undefined,
      exact: stored !== undefined && refilled.clamped[r] === true,
      ...dropWindow(stored),
    });
  });
  limits.push(...others);
  const wcu = wcuPlanned(item, refilled.rf, WCU_PER_WRITE);
  limits.push(wcu);
  return {
    side,
    ref,
    item,
    limits,
    statuses,
    wcuShort: wcu.tkAfter < 0n,
    rfAfter: refilled.rf,
    cascade: meta.cascade,
    parentId: meta.parentId,
  };
}

/** The write of a plan, storing `ttl` (the source's bucket TTL policy). */
export function slowWrite(
  plan: Plan,
  ttl: number | "remove" | null,
): BucketWrite {
  const item = plan.item;
  return {
    kind: "slow",
    write: {
      ref: plan.ref,
      create: item === null,
      expectedRf: item ? item.rf : 0n,
      now: plan.rfAfter,
      limits: plan.limits,
      cascade: plan.cascade,
      parentId: plan.parentId,
      shardCount: plan.side.shards,
      ttl,
    },
  };
}

/** The item as a successful slow-path write left it (balances are upper bounds under concurrency). */
export function afterWrite(
  plan: Plan,
  ttl: number | "remove" | null,
): BucketItem {
  const limits = new Map(plan.item?.limits ?? []);
  for (const l of plan.limits) {
    const old = plan.item?.limits.get(l.name);
    limits.set(l.name, {
      tk: l.tkAfter,
      params: l.params,
      tc: old ? (old.tc ?? 0n) + l.consumed : l.consumed,
      ...windowAfter(l.window, old),
    });
  }
  return {
    entityId: plan.side.entityId,
    resource: plan.ref.resource,
    shard: plan.ref.shard,
    rf: plan.rfAfter,
    shardCount: plan.item?.shardCount ?? plan.side.shards,
    cascade: plan.cascade,
    parentId: plan.parentId,
    ttl: typeof ttl === "number"
      ? ttl
      : ttl === "remove"
      ? null
      : (plan.item?.ttl ?? null),
    limits,
  };
}

/**
 * Statuses for a request that lost the race for the last tokens several
 * times in a row: the charged limits are refused with the time to the next
 * token, so the caller backs off instead of seeing an outage.
 */
export function contendedStatuses(plans: readonly Plan[]): LimitStatus[] {
  return plans.flatMap((p) =>
    p.side.resolved.limits.map((l) => {
      const planned = p.limits.find((x) => x.name === l.name);
      const amount = p.side.charge.get(l.name) ?? 0n;
      const eff = paramsOf(l, p.side.shards);
      const tk = planned ? planned.tkAfter + amount : 0n;
      return limitStatus(
        p.side.entityId,
        p.ref.resource,
        l,
        wholeTokens(tk),
        amount,
        amount === 0n,
        retryAfterSeconds(amount > 0n ? amount : 1000n, eff),
      );
    })
  );
}
