/**
 * Capacity queries: the tokens available now and the time until a request
 * would be admitted, over the entity's items and, with cascade, its
 * parent's (reference weakness 34), summed or taken over shards. Reads
 * only; nothing is charged.
 *
 * @module
 */
import { calendarBalance } from "../calendar_bucket.ts";
import {
  type BucketParams,
  paramsOf,
  refill,
  retryAfterAt,
  wholeTokens,
} from "../bucket.ts";
import type { BucketItem, BucketRef } from "../bucket_item.ts";
import type { Limit } from "../limit.ts";
import type { ConfigSource } from "../models.ts";
import { ZAELimiterError } from "../zae_limiter_error.ts";
import { withDeadline } from "../transport.ts";
import {
  validateAmount,
  validateAmounts,
  validateConfiguredNames,
  validateIdentifier,
  validateOptions,
  validateResource,
} from "../validation.ts";
import { type Admission, resolveLimits } from "./admission.ts";
import type { ResolvedLimits } from "./limiter_source.ts";
import type { CapacityOptions } from "./options.ts";

/** The items of one side (entity or parent) on one resource. */
export interface CapacitySide {
  /** The limits resolved for it. */
  readonly side: ResolvedLimits;
  /** The entity. */
  readonly entityId: string;
  /** Its items that exist, any order. */
  readonly items: BucketItem[];
  /** Its shard count. */
  readonly shards: number;
}

/**
 * A capacity query's items under its deadline: the options checked, then
 * {@linkcode loadCapacity}.
 *
 * @throws {ValidationError} a bad option
 * @throws what `unavailable` makes of a DynamoDB failure
 */
export async function queryCapacity(
  adm: Admission,
  o: CapacityOptions,
  timeoutMs: number,
  unavailable: (
    e: unknown,
    at: { entityId: string; resource: string },
  ) => Error,
): Promise<CapacitySide[]> {
  validateOptions(o, "options", "{ entityId, resource }");
  const entityId = validateIdentifier(o.entityId);
  const resource = validateResource(o.resource);
  try {
    return await withDeadline(
      o,
      timeoutMs,
      () => loadCapacity(adm, entityId, resource, o.limits),
    );
  } catch (e) {
    if (e instanceof ZAELimiterError) throw e;
    throw unavailable(e, { entityId, resource });
  }
}

/** What turns a DynamoDB failure of a capacity query into the error thrown. */
type Unavailable = (
  e: unknown,
  at: { entityId: string; resource: string },
) => Error;

/** `RateLimiter.available`: whole tokens per limit now. */
export async function capacityNow(
  adm: Admission,
  o: CapacityOptions,
  timeoutMs: number,
  unavailable: Unavailable,
): Promise<Record<string, number>> {
  const now = BigInt(adm.clock.now());
  return availableTokens(
    await queryCapacity(adm, o, timeoutMs, unavailable),
    now,
  );
}

/** `RateLimiter.timeUntilAvailable`: seconds until `needed` would be admitted. */
export async function capacityWait(
  adm: Admission,
  o: CapacityOptions & { needed: Readonly<Record<string, number>> },
  timeoutMs: number,
  unavailable: Unavailable,
): Promise<number> {
  validateOptions(o, "options", "{ entityId, resource, needed }");
  const needed = validateAmounts(o.needed, "needed");
  const now = BigInt(adm.clock.now());
  const sides = await queryCapacity(adm, o, timeoutMs, unavailable);
  validateConfiguredNames(
    needed.keys(),
    sides.flatMap((x) => x.side.limits.map((l) => l.name)),
    "needed",
    `entity "${o.entityId}" and resource "${o.resource}"`,
  );
  return secondsUntilAvailable(sides, o.needed, now);
}

/** Reads the items of the entity and, with cascade, its parent (`limits` overrides both). */
export async function loadCapacity(
  adm: Admission,
  entityId: string,
  resource: string,
  limits: readonly Limit[] | undefined,
): Promise<CapacitySide[]> {
  const resolved = await resolveLimits(adm, entityId, resource, limits ?? null);
  const entity = await adm.source.getEntity(entityId);
  const out: CapacitySide[] = [];
  const load = async (id: string, r: ResolvedLimits): Promise<void> => {
    const ns = adm.source.namespaceId;
    const ref = (shard: number): BucketRef => ({
      ns,
      entityId: id,
      resource,
      shard,
    });
    const first = (await adm.store.read([ref(0)])).items[0] ?? null;
    const shards = first?.shardCount ?? 1;
    const items: BucketItem[] = first ? [first] : [];
    if (shards > 1) {
      const rest = await adm.store.read(
        Array.from({ length: shards - 1 }, (_, i) => ref(i + 1)),
      );
      for (const it of rest.items) if (it) items.push(it);
    }
    out.push({ side: r, entityId: id, items, shards });
  };
  await load(entityId, resolved);
  if (entity?.cascade && entity.parentId) {
    const pr = await adm.source.resolveLimits(entity.parentId, resource)
      .catch(() => null);
    const pl = limits ? { limits, source: "override" as ConfigSource } : pr;
    if (pl) await load(entity.parentId, pl);
  }
  return out;
}

/** Millitokens of a limit on shard `s` at `now` (a shard without an item is full). */
function tokensOn(
  items: readonly BucketItem[],
  s: number,
  limit: Limit,
  eff: BucketParams,
  now: bigint,
): bigint {
  const it = items.find((i) => i.shard === s);
  const st = it?.limits.get(limit.name);
  if (st && limit.calendar) {
    return calendarBalance(st, limit.calendar, Number(now), eff.cp).tk;
  }
  return st && it
    ? refill(st.tk > eff.cp ? eff.cp : st.tk, it.rf, now, eff).tk
    : eff.cp;
}

/** Seconds until `need` millitokens fit on a limit holding `tk` (a calendar quota: its window end). */
function waitFor(
  items: readonly BucketItem[],
  s: number,
  limit: Limit,
  eff: BucketParams,
  now: bigint,
  need: bigint,
): number {
  const tk = tokensOn(items, s, limit, eff, now);
  if (tk >= need) return 0;
  const st = items.find((i) => i.shard === s)?.limits.get(limit.name);
  if (limit.calendar) {
    return st
      ? calendarBalance(st, limit.calendar, Number(now), eff.cp)
        .retryAfterSeconds
      : 0;
  }
  const rf = items.find((i) => i.shard === s)?.rf ?? now;
  return retryAfterAt(need - tk, eff, rf, now);
}

/** Whole tokens available at `now` per limit name: the minimum over the sides, summed over shards. */
export function availableTokens(
  sides: readonly CapacitySide[],
  now: bigint,
): Record<string, number> {
  const result: Record<string, number> = {};
  for (const { side, items, shards } of sides) {
    for (const l of side.limits) {
      const eff = paramsOf(l, shards);
      let total = 0n;
      for (let s = 0; s < shards; s++) {
        total += tokensOn(items, s, l, eff, now);
      }
      const tokens = wholeTokens(total);
      const prev = result[l.name];
      result[l.name] = prev === undefined ? tokens : Math.min(prev, tokens);
    }
  }
  return result;
}

/**
 * Seconds from `now` until `needed` whole tokens per limit would be
 * admitted: the longest wait over the limits, each on its best shard.
 *
 * @throws {ValidationError} a needed amount is not a whole token count
 */
export function secondsUntilAvailable(
  sides: readonly CapacitySide[],
  needed: Readonly<Record<string, number>>,
  now: bigint,
): number {
  let wait = 0;
  for (const { side, items, shards } of sides) {
    for (const l of side.limits) {
      const need = needed[l.name];
      if (need === undefined || need <= 0) continue;
      validateAmount(need, `needed.${l.name}`);
      const eff = paramsOf(l, shards);
      let best = Infinity;
      for (let s = 0; s < shards; s++) {
        best = Math.min(
          best,
          waitFor(items, s, l, eff, now, BigInt(need) * 1000n),
        );
      }
      wait = Math.max(wait, best);
    }
  }
  return wait;
}
