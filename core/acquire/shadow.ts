/**
 * Shadow mode (issue 14): a limit flagged `shadow` in its stored config
 * ({@linkcode Limit.withShadow}) or named in an acquire's `shadow` option is
 * decided and reported but never refuses and is never charged.
 *
 * How the decision is made: the enforced limits are charged first, as
 * without shadow limits (all or nothing, one write per item on the warm
 * path). The shadow limits are then judged against the stored state the
 * writer knows of each item: for an item the acquire wrote, the state its
 * own write left (the single write's answer or the writer's known state,
 * so the warm path stays one call); an item nobody wrote (a shadow-only
 * side) is judged from what this process last saw of it, and read once
 * only when it has seen nothing. A shadow limit's balance moves only when
 * something charges it: an enforcing caller (another process, a call
 * without the `shadow` option) or the refill; the report answers "would
 * this request have been refused, given what enforced traffic left".
 *
 * @module
 */
import { paramsOf, refill, retryAfterSeconds, wholeTokens } from "../bucket.ts";
import type { BucketItem, BucketRef } from "../bucket_item.ts";
import { calendarBalance } from "../calendar_bucket.ts";
import { ValidationError } from "../errors.ts";
import type { Lease } from "../lease.ts";
import type { Limit } from "../limit.ts";
import type { LimitStatus } from "../models.ts";
import { type Admission, resolveLimits } from "./admission.ts";
import type { ResolvedLimits } from "./limiter_source.ts";
import { chargeSide, limitStatus } from "./plan.ts";

/** Which limits of one acquire are shadowed: names, or `true` for all. */
export type ShadowSelection = readonly string[] | true;

/** What the shadow limits of an acquire decided. */
export interface ShadowReport {
  /** One status per shadow limit consumed (entity, then cascade parent). */
  readonly checked: readonly LimitStatus[];
  /** The statuses of `checked` that would have refused. */
  readonly refused: readonly LimitStatus[];
}

/** The report of an acquire without shadow limits. */
export const NO_SHADOW: ShadowReport = Object.freeze({
  checked: Object.freeze([]) as readonly LimitStatus[],
  refused: Object.freeze([]) as readonly LimitStatus[],
});

/**
 * The names an acquire's `shadow` option shadows.
 *
 * @throws {ValidationError} `shadow` is neither `true` nor a list of limit names
 */
export function shadowNames(
  selection: ShadowSelection | undefined,
  consume: ReadonlyMap<string, bigint>,
): ReadonlySet<string> {
  if (selection === undefined) return new Set();
  if (selection === true) return new Set(consume.keys());
  if (
    !Array.isArray(selection) ||
    selection.some((n) => typeof n !== "string")
  ) {
    throw new ValidationError(
      "shadow",
      selection,
      'must be true or a list of limit names such as ["tpm"]',
    );
  }
  return new Set(selection);
}

/** Whether `limit` is shadowed on this acquire. */
export function isShadow(limit: Limit, perCall: ReadonlySet<string>): boolean {
  return limit.shadow || perCall.has(limit.name);
}

/** The balance of one limit of an item at `nowMs` (millitokens; full when unknown). */
function balanceOf(
  limit: Limit,
  item: BucketItem | null,
  shards: number,
  nowMs: number,
): bigint {
  const eff = paramsOf(limit, shards);
  const st = item?.limits.get(limit.name);
  if (!item || !st) return eff.cp;
  if (limit.calendar) {
    return calendarBalance(st, limit.calendar, nowMs, eff.cp).tk;
  }
  return refill(st.tk, item.rf, BigInt(nowMs), eff).tk;
}

/** What {@linkcode judgeShadow} found. */
export interface Judged {
  /** The report for the lease. */
  readonly report: ShadowReport;
  /** The names the lease's `adjust` and `consume` ignore (shadow on every side it holds). */
  readonly ignored: ReadonlySet<string>;
}

/**
 * Whether an acquire has no shadow limit to judge, decided without I/O
 * from its resolved limits: no per-call shadow name, none of the entity's
 * limits stored as shadow, and no cascade parent (whose limits may be).
 * The warm path then skips {@linkcode judgeShadow}, which would answer
 * `null`.
 */
export function nothingToJudge(
  adm: Admission,
  entityId: string,
  resolved: ResolvedLimits,
  perCall: ReadonlySet<string>,
): boolean {
  if (perCall.size > 0 || resolved.limits.some((l) => l.shadow)) return false;
  const info = adm.source.entityInfo(entityId);
  return !(info?.cascade && info.parentId);
}

/**
 * Judges the shadow limits of an admitted acquire (see the module doc);
 * `null` when it has none. `consume` is the whole ask, shadow names
 * included.
 *
 * @throws {ValidationError} a per-call shadow name is not configured for the entity
 */
export async function judgeShadow(
  adm: Admission,
  lease: Lease,
  consume: ReadonlyMap<string, bigint>,
  perCall: ReadonlySet<string>,
  override: readonly Limit[] | null,
): Promise<Judged | null> {
  const { entityId, resource } = lease;
  const sides: {
    entityId: string;
    limits: readonly Limit[];
    shards: number;
  }[] = [];
  const child = await resolveLimits(adm, entityId, resource, override);
  const info = adm.source.entityInfo(entityId);
  if (perCall.size > 0) {
    const configured = new Set(child.limits.map((l) => l.name));
    for (const name of perCall) {
      if (!configured.has(name)) {
        throw new ValidationError(
          "shadow",
          name,
          `no limit "${name}" is configured for entity "${entityId}" (configured: ${
            [...configured].join(", ")
          })`,
        );
      }
    }
  }
  if (
    perCall.size === 0 && !child.limits.some((l) => l.shadow) &&
    !(info?.cascade && info.parentId)
  ) return null;
  sides.push({
    entityId,
    limits: child.limits,
    shards: info?.shards.get(resource) ?? 1,
  });
  if (info?.cascade && info.parentId) {
    try {
      const parent = await resolveLimits(
        adm,
        info.parentId,
        resource,
        override,
      );
      sides.push({
        entityId: info.parentId,
        limits: parent.limits,
        shards: adm.source.entityInfo(info.parentId)?.shards.get(resource) ?? 1,
      });
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e; // a parent without limits
    }
  }
  // Nothing shadowed on any side: the lease's defaults (no report, nothing ignored).
  if (
    perCall.size === 0 && !sides.some((s) => s.limits.some((l) => l.shadow))
  ) {
    return null;
  }
  const asked = sides.map((s) =>
    s.limits.filter((l) =>
      (consume.get(l.name) ?? 0n) > 0n && isShadow(l, perCall)
    )
  );
  const held = new Set(lease.entries.map((e) => e.limit.name));
  const ignored = new Set(perCall);
  for (const s of sides) {
    for (const l of s.limits) {
      if (l.shadow && !held.has(l.name)) ignored.add(l.name);
    }
  }
  if (asked.every((a) => a.length === 0)) {
    return { report: NO_SHADOW, ignored };
  }
  const ns = adm.source.namespaceId;
  const refs: BucketRef[] = sides.map((s) => {
    const e = lease.entries.find((x) => x.ref.entityId === s.entityId);
    return e?.ref ?? { ns, entityId: s.entityId, resource, shard: 0 };
  });
  const items = refs.map((r) => adm.writer.known(r) ?? null);
  const unknown = refs.filter((_r, i) =>
    items[i] === null && (asked[i]?.length ?? 0) > 0
  );
  if (unknown.length > 0) {
    const read = await adm.store.read(unknown);
    unknown.forEach((r, j) => {
      const item = read.items[j] ?? null;
      adm.writer.remember(r, item);
      items[refs.indexOf(r)] = item;
    });
  }
  const nowMs = adm.clock.now();
  const checked: LimitStatus[] = [];
  sides.forEach((s, i) => {
    for (const l of asked[i] ?? []) {
      const amount = consume.get(l.name) ?? 0n;
      const tk = balanceOf(l, items[i] ?? null, s.shards, nowMs);
      const ok = tk >= amount;
      const eff = paramsOf(l, s.shards);
      const wait = ok
        ? 0
        : l.calendar
        ? shadowCalendarWait(l, items[i] ?? null, nowMs, amount, eff.cp, tk)
        : retryAfterSeconds(amount - tk, eff);
      checked.push(
        limitStatus(s.entityId, resource, l, wholeTokens(tk), amount, ok, wait),
      );
    }
  });
  const report = Object.freeze({
    checked: Object.freeze(checked),
    refused: Object.freeze(checked.filter((s) => s.exceeded)),
  });
  return { report, ignored };
}

function shadowCalendarWait(
  l: Limit,
  item: BucketItem | null,
  nowMs: number,
  amount: bigint,
  cp: bigint,
  tk: bigint,
): number {
  const st = item?.limits.get(l.name);
  if (!st || !l.calendar || amount > cp || tk >= amount) return 0;
  return calendarBalance(st, l.calendar, nowMs, cp).retryAfterSeconds;
}

/**
 * Whether an acquire charges nothing at all: every name it consumes is
 * shadowed (per call, or by the entity's stored flag when the entity is
 * known to have no cascade parent, which might enforce it). Such an
 * acquire writes nothing; its names are still checked against the
 * entity's limits.
 *
 * @throws {ValidationError} a consumed name is not configured for the entity
 */
export function chargesNothing(
  adm: Admission,
  entityId: string,
  r: ResolvedLimits,
  consume: ReadonlyMap<string, bigint>,
  perCall: ReadonlySet<string>,
): boolean {
  if (consume.size === 0) return false;
  // Nothing shadowed: the common case, decided without a look at the names.
  if (perCall.size === 0 && !r.limits.some((l) => l.shadow)) return false;
  const left = [...consume.keys()].filter((n) => !perCall.has(n));
  if (left.length === 0) {
    chargeSide(entityId, r, consume, 1, true, adm.random); // checks the names
    return true;
  }
  const info = adm.source.entityInfo(entityId);
  if (info === undefined || (info.cascade && info.parentId)) return false;
  const stored = new Set(r.limits.filter((l) => l.shadow).map((l) => l.name));
  if (!left.every((n) => stored.has(n))) return false;
  chargeSide(entityId, r, consume, 1, true, adm.random); // checks the names
  return true;
}
