/**
 * Partial grants: `acquire({ consume: { tpm: 4000 }, min: { tpm: 500 } })`
 * admits the most that fits between `min` and the ask, for `max_tokens`
 * clamping, all or nothing across the limits and the cascade parent.
 *
 * A partial grant is an ordinary charge of the granted amount, so it can
 * never admit more than a plain acquire of that amount would: the ask is
 * tried first; on a refusal the statuses' `available` amounts pick the
 * largest amount ≥ `min` that fitted then ({@linkcode pickGrant}), and that
 * is tried, at most {@linkcode MAX_PARTIAL_ATTEMPTS} times in all. A limit
 * that refuses and is not flexible (not in `min`, or `min` equal to the
 * ask), or a flexible one with less than `min` available, ends the call
 * with a refusal of `min` (its Retry-After is the time until `min` fits). A
 * request over a capacity is clamped to the capacity when `min` fits under
 * it, and is never satisfiable otherwise.
 *
 * @module
 */
import {
  RateLimitExceeded,
  RequestExceedsCapacity,
  ValidationError,
} from "../errors.ts";
import type { LimitStatus } from "../models.ts";
import { validateAmount } from "../validation.ts";

/** Attempts of one partial grant (the ask, then smaller amounts). */
export const MAX_PARTIAL_ATTEMPTS = 4;

/**
 * Validates `min` against `consume` (millitokens per name): an object of
 * whole token counts ≥ 0, every name also in `consume`, none above its ask.
 * Returns the minimums in millitokens.
 *
 * @throws {ValidationError} `VALIDATION_FAILED`, naming the field (`min`, `min.<name>`)
 */
export function resolveMin(
  min: unknown,
  consume: ReadonlyMap<string, bigint>,
): Map<string, bigint> {
  if (!min || typeof min !== "object" || Array.isArray(min)) {
    throw new ValidationError(
      "min",
      min,
      "must map limit names of consume to the least whole tokens to grant, such as { tpm: 500 }",
    );
  }
  const out = new Map<string, bigint>();
  for (const [name, value] of Object.entries(min)) {
    const ask = consume.get(name);
    if (ask === undefined) {
      throw new ValidationError(
        `min.${name}`,
        value,
        `names no limit of consume (consume has: ${
          [...consume.keys()].join(", ") || "none"
        }); give min only for limits you consume`,
      );
    }
    const m = BigInt(validateAmount(value, `min.${name}`)) * 1000n;
    if (m > ask) {
      throw new ValidationError(
        `min.${name}`,
        value,
        `cannot exceed consume.${name} (${
          ask / 1000n
        }); lower min or raise the ask`,
      );
    }
    out.set(name, m);
  }
  return out;
}

/** Names whose grant may shrink: in `min` with `min` below the ask. */
function flexible(
  ask: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint>,
): Set<string> {
  const out = new Set<string>();
  for (const [n, m] of min) if (m < (ask.get(n) ?? 0n)) out.add(n);
  return out;
}

/**
 * The next amounts to try after `tried` was refused with `statuses`, or
 * `null` when no amount ≥ `min` fitted: a limit refused that cannot shrink,
 * or a flexible limit had less than its `min` available. A flexible limit
 * that refused gets the least `available` over its statuses (entity and
 * parent), clamped to [`min`, `tried`]; the others keep `tried`. Pure;
 * amounts in millitokens, statuses' `available` in whole tokens.
 */
export function pickGrant(
  tried: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint>,
  statuses: readonly LimitStatus[],
): Map<string, bigint> | null {
  const flex = flexible(tried, min);
  const least = new Map<string, bigint>();
  const refused = new Set<string>();
  for (const s of statuses) {
    if (!tried.has(s.limitName)) continue;
    const a = BigInt(s.available) * 1000n;
    const prev = least.get(s.limitName);
    if (prev === undefined || a < prev) least.set(s.limitName, a);
    if (s.exceeded) refused.add(s.limitName);
  }
  const next = new Map(tried);
  for (const n of refused) {
    const want = tried.get(n) ?? 0n;
    if (want === 0n) continue; // a zero charge always fits
    if (!flex.has(n)) return null;
    const m = min.get(n) ?? 0n;
    const a = least.get(n) ?? 0n;
    if (a < m) return null;
    next.set(n, a < want ? a : want);
  }
  return next;
}

/**
 * The statuses of a refusal of `tried`, restated for `min`: a flexible
 * limit asks its `min`, is exceeded when less is available, and its
 * Retry-After is the tried one less the time to refill the difference
 * (`requested − min` at the limit's rate): exact whatever delay comes first
 * (a bucket's holdback), and never shorter than the true wait (a sharded
 * limit refills each shard slower). A calendar quota keeps its wait (the
 * window's end).
 */
export function statusesForMin(
  statuses: readonly LimitStatus[],
  tried: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint>,
): LimitStatus[] {
  return statuses.map((s) => {
    const m = min.get(s.limitName);
    const t = tried.get(s.limitName);
    if (m === undefined || t === undefined || m === t) return s;
    const want = Number(m / 1000n);
    const exceeded = s.exceeded && s.available < want;
    const rate = s.limit.refillAmount / s.limit.refillPeriodSeconds;
    const retry = !exceeded
      ? 0
      : s.limit.calendar || !(rate > 0)
      ? s.retryAfterSeconds
      : s.retryAfterSeconds - (s.requested - want) / rate;
    return {
      ...s,
      requested: want,
      exceeded,
      retryAfterSeconds: exceeded ? Math.max(0.001, retry) : 0,
    };
  });
}

/** A refusal of `tried` restated for `min` (the original when nothing would be exceeded). */
function refusalOfMin(
  e: RateLimitExceeded,
  tried: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint>,
): RateLimitExceeded {
  const statuses = statusesForMin(e.statuses, tried, min);
  return statuses.some((s) => s.exceeded) ? new RateLimitExceeded(statuses) : e;
}

/**
 * The ask clamped to the capacities a {@linkcode RequestExceedsCapacity}
 * reports, or `null` when some limit's capacity is below what must be
 * granted (`min`, or the ask of a limit that cannot shrink).
 */
export function clampToCapacity(
  tried: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint>,
  over: readonly LimitStatus[],
): Map<string, bigint> | null {
  const flex = flexible(tried, min);
  const next = new Map(tried);
  for (const s of over) {
    const n = s.limitName;
    if (!flex.has(n)) return null;
    const cap = BigInt(s.available) * 1000n;
    if (cap < (min.get(n) ?? 0n)) return null;
    const cur = next.get(n) ?? 0n;
    if (cap < cur) next.set(n, cap);
  }
  return next;
}

/** What a partial grant admitted. */
export interface PartialGrant<T> {
  /** What the admitting attempt returned (the lease). */
  readonly value: T;
  /** Millitokens granted per name of the ask. */
  readonly granted: ReadonlyMap<string, bigint>;
}

/**
 * Admits the most between `min` and `ask` through `attempt` (one ordinary
 * acquire of the amounts it is given).
 *
 * @throws {RateLimitExceeded} even `min` did not fit (statuses restated for `min`)
 * @throws {RequestExceedsCapacity} `min` (or a fixed ask) is over a capacity
 * @throws whatever `attempt` throws otherwise
 */
export async function acquirePartial<T>(
  ask: ReadonlyMap<string, bigint>,
  min: ReadonlyMap<string, bigint>,
  attempt: (consume: ReadonlyMap<string, bigint>) => Promise<T>,
): Promise<PartialGrant<T>> {
  let tried: ReadonlyMap<string, bigint> = ask;
  let clamps = 0;
  for (let i = 0;; i++) {
    try {
      return { value: await attempt(tried), granted: tried };
    } catch (e) {
      if (e instanceof RequestExceedsCapacity) {
        // At most once per side (the entity's, then its parent's capacities).
        const next = clamps < 2
          ? clampToCapacity(tried, min, e.statuses)
          : null;
        if (next === null) {
          throw new RequestExceedsCapacity(
            statusesForMin(e.statuses, tried, min),
          );
        }
        clamps++;
        tried = next;
        i--; // the capacity check wrote nothing: not an attempt
        continue;
      }
      if (!(e instanceof RateLimitExceeded)) throw e;
      const next = pickGrant(tried, min, e.statuses);
      if (next === null || i + 1 >= MAX_PARTIAL_ATTEMPTS) {
        throw refusalOfMin(e, tried, min);
      }
      tried = next;
    }
  }
}
