/**
 * Token-bucket math in exact integers (spec 02 §2). Token amounts are
 * millitokens and times are milliseconds, all as `bigint`, because
 * `elapsed × refillAmount` overflows 2^53 easily. Division floors toward −∞
 * as in Python, so negative (debt) balances round the same way.
 *
 * @module
 */
import type { Limit } from "./limit.ts";

/** Ceiling division of non-negative bigints. */
function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

/** Floor division for bigint (toward −∞). */
export function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

/** The parameters of one limit in bucket units (millitokens, milliseconds). */
export interface BucketParams {
  /** Capacity in millitokens. */
  readonly cp: bigint;
  /** Refill amount in millitokens. */
  readonly ra: bigint;
  /** Refill period in milliseconds. */
  readonly rp: bigint;
}

/** Converts a {@linkcode Limit} to bucket units, divided across `shards` (stored values stay undivided). */
export function paramsOf(limit: Limit, shards = 1): BucketParams {
  const n = BigInt(Math.max(1, shards));
  const cp = BigInt(limit.capacity) * 1000n / n;
  const ra = BigInt(limit.refillAmount) * 1000n / n;
  return {
    cp: cp > 0n ? cp : 1n,
    ra: ra > 0n ? ra : 1n,
    rp: BigInt(limit.refillPeriodSeconds) * 1000n,
  };
}

/** Tokens and last refill after a lazy refill. */
export interface Refilled {
  /** Millitokens after the refill. */
  readonly tk: bigint;
  /** The new last-refill time: advanced only by the time that produced whole millitokens. */
  readonly rf: bigint;
}

/**
 * Lazy refill with drift compensation: the clock advances only by the time
 * that produced whole millitokens, so a fraction is carried to the next
 * refill instead of being dropped. The time credited is rounded *up* (the
 * reference rounds it down, which over-credits up to 1 ms of refill per
 * call), so refill can never admit more than the configured rate. The result
 * never exceeds capacity (it is clamped down when capacity was lowered).
 */
export function refill(
  tk: bigint,
  rf: bigint,
  now: bigint,
  p: BucketParams,
): Refilled {
  const elapsed = now - rf;
  if (elapsed <= 0n) return { tk, rf };
  const add = (elapsed * p.ra) / p.rp;
  if (add === 0n) return { tk, rf };
  const used = ceilDiv(add * p.rp, p.ra);
  const sum = tk + add;
  return { tk: sum < p.cp ? sum : p.cp, rf: rf + used };
}

/** Seconds until `deficit` millitokens have refilled (0 when there is no deficit). */
export function retryAfterSeconds(deficit: bigint, p: BucketParams): number {
  if (deficit <= 0n) return 0;
  const ms = (deficit * p.rp) / p.ra;
  return Number(ms + 1n) / 1000;
}

/** Whole tokens in a millitoken balance, floored (−1500 → −2). */
export function wholeTokens(milli: bigint): number {
  return Number(floorDiv(milli, 1000n));
}

/** Outcome of {@linkcode tryConsume}. */
export interface ConsumeCheck {
  /** Whether the request fits. */
  readonly ok: boolean;
  /** Millitokens after refill and (when ok) consumption. */
  readonly tk: bigint;
  /** Last refill after the refill. */
  readonly rf: bigint;
  /** Millitokens the refill added. */
  readonly refilled: bigint;
  /** Seconds to wait when not ok. */
  readonly retryAfterSeconds: number;
  /** Whole tokens available before consumption. */
  readonly available: number;
}

/**
 * Refills, then consumes `amountMilli` if the balance covers it. A zero
 * amount always fits (a limit that is not consumed is not checked, even in
 * debt: reference weakness 32).
 */
export function tryConsume(
  tk: bigint,
  rf: bigint,
  now: bigint,
  p: BucketParams,
  amountMilli: bigint,
): ConsumeCheck {
  const r = refill(tk, rf, now, p);
  const refilled = r.tk - tk;
  const available = wholeTokens(r.tk);
  if (amountMilli <= 0n || r.tk >= amountMilli) {
    return {
      ok: true,
      tk: r.tk - amountMilli,
      rf: r.rf,
      refilled,
      retryAfterSeconds: 0,
      available,
    };
  }
  // A request larger than the capacity can never fit: report the time to a full bucket
  // plus the rest, which is what a caller retrying with the same amount would wait forever for.
  return {
    ok: false,
    tk: r.tk,
    rf: r.rf,
    refilled,
    retryAfterSeconds: retryAfterSeconds(amountMilli - r.tk, p),
    available,
  };
}

/** Seconds until `neededMilli` would fit, after refill. */
export function timeUntil(
  tk: bigint,
  rf: bigint,
  now: bigint,
  p: BucketParams,
  neededMilli: bigint,
): number {
  const r = refill(tk, rf, now, p);
  return r.tk >= neededMilli ? 0 : retryAfterSeconds(neededMilli - r.tk, p);
}

/**
 * Bucket time to live: the longest time-to-fill among `limits` times
 * `multiplier`, in whole seconds; `null` when the multiplier is ≤ 0 or there
 * are no limits.
 */
export function bucketTtlSeconds(
  limits: readonly Limit[],
  multiplier: number,
): number | null {
  if (multiplier <= 0 || limits.length === 0) return null;
  let max = 0;
  for (const l of limits) {
    max = Math.max(max, (l.capacity / l.refillAmount) * l.refillPeriodSeconds);
  }
  return Math.floor(max * multiplier);
}

/**
 * The time a slow-path write may claim for all limits of one item, which
 * share one `rf`: the shortest time that produced whole millitokens for a
 * limit that refills at all. Claiming the same span for every limit keeps
 * each limit's refill exact instead of dropping every fraction on every
 * write (the reference writes `rf = now`, which starves a slow limit on an
 * item that is written often).
 */
export function sharedRefillSpan(
  rf: bigint,
  now: bigint,
  params: readonly BucketParams[],
): bigint {
  const elapsed = now - rf;
  if (elapsed <= 0n) return 0n;
  let span: bigint | null = null;
  for (const p of params) {
    const add = (elapsed * p.ra) / p.rp;
    if (add === 0n) continue;
    const used = ceilDiv(add * p.rp, p.ra);
    if (span === null || used < span) span = used;
  }
  return span ?? 0n;
}
