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
  return retryAfterAt(deficit, p, 0n, 0n);
}

/**
 * {@linkcode retryAfterSeconds} for a balance whose refill starts at `rf`:
 * a future `rf` (a full bucket's holdback, a new bucket) credits nothing
 * before it, so the wait counts from `max(now, rf)`.
 */
export function retryAfterAt(
  deficit: bigint,
  p: BucketParams,
  rf: bigint,
  now: bigint,
): number {
  if (deficit <= 0n) return 0;
  const ms = (deficit * p.rp) / p.ra + (rf > now ? rf - now : 0n);
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
    retryAfterSeconds: retryAfterAt(amountMilli - r.tk, p, r.rf, now),
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
  return r.tk >= neededMilli
    ? 0
    : retryAfterAt(neededMilli - r.tk, p, r.rf, now);
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

/**
 * The refill the stored pair credits for `elapsed` ms: whole millitokens,
 * floored, as {@linkcode refill} credits them (0 for a negative time). The
 * stored pair never stands for more than the ideal balance plus this
 * rounding, under one millitoken.
 */
export function refillOf(elapsed: bigint, p: BucketParams): bigint {
  return elapsed > 0n ? (elapsed * p.ra) / p.rp : 0n;
}

/**
 * The most tokens a write may leave in a limit whose stored `rf` is at
 * least `rfMin`, so that refill accrued up to `now` cannot be absorbed by
 * the capacity clamp: `cp − ⌊(now − rfMin) × ra / rp⌋`.
 *
 * Why: the stored pair `(tk, rf)` stands for the balance
 * `min(cp, tk + refill(now − rf))`. A write that only ADDs to `tk` is exact
 * while `tk + refill(now − rf) ≤ cp`; past that point (a bucket idle long
 * enough to be full again) a debit would vanish into the clamp and a later
 * refill would credit it back — the reference's over-admission after an
 * idle period. Writes that only ADD carry `tk ≤ ceiling` as a condition;
 * a bucket over its ceiling is refilled first, under the `rf` lock.
 */
export function saturationCeiling(
  rfMin: bigint,
  now: bigint,
  p: BucketParams,
): bigint {
  return p.cp - refillOf(now - rfMin, p);
}

/** What a refill under the `rf` lock claims for the limits of one item. */
export interface RefillPlan {
  /** The new `rf` (in the future when a balance was clamped: see {@linkcode planRefill}). */
  readonly rf: bigint;
  /** Per limit (same order as given): millitokens after the refill, before any consumption. */
  readonly tk: readonly bigint[];
  /**
   * Per limit: whether the capacity clamp cut the refill. Such a balance is
   * only right for the exact stored value it was computed from (a lower
   * balance would have taken more of the refill), so its write must be
   * conditioned on `tk` being that value.
   */
  readonly clamped: readonly boolean[];
  /**
   * Per limit: the most a write may leave in it after its charge, or
   * `null` (no bound but the refilled balance). Set for a full limit when
   * others on the item are not full: see {@linkcode planRefill}.
   */
  readonly hold: readonly (bigint | null)[];
}

/** A limit's balance after a write's charge, at most its `hold` ({@linkcode RefillPlan.hold}). */
export function heldBack(
  after: bigint,
  hold: bigint | null | undefined,
): bigint {
  return hold !== null && hold !== undefined && hold < after ? hold : after;
}

/** Stored (undivided) parameters as they apply to one of `shards` shards (as {@linkcode paramsOf} divides a limit). */
export function shardParams(p: BucketParams, shards: number): BucketParams {
  const n = BigInt(Math.max(1, shards));
  const cp = p.cp / n;
  const ra = p.ra / n;
  return { cp: cp > 0n ? cp : 1n, ra: ra > 0n ? ra : 1n, rp: p.rp };
}

/** Whether two parameter sets are equal. */
export function sameParams(a: BucketParams, b: BucketParams): boolean {
  return a.cp === b.cp && a.ra === b.ra && a.rp === b.rp;
}

/**
 * The parameters a refill may use across a configuration change whose time
 * is unknown (another writer changed the limit at some point since `rf`):
 * the smaller capacity and the slower rate, so neither a raised rate nor a
 * raised capacity is credited for time before the change.
 */
export function settleParams(a: BucketParams, b: BucketParams): BucketParams {
  const slower = a.ra * b.rp <= b.ra * a.rp ? a : b;
  return { cp: a.cp < b.cp ? a.cp : b.cp, ra: slower.ra, rp: slower.rp };
}

/** The share of a limit's capacity a clamped refill may hold back (see {@linkcode planRefill}). */
export const HOLDBACK_DIVISOR = 100n;
/** The longest window a clamped refill opens for plain writes, in ms. */
export const HOLDBACK_MAX_MS = 1000n;

/**
 * The window a clamped refill opens: the longest time, at most
 * {@linkcode HOLDBACK_MAX_MS}, in which no limit refills more than
 * 1/{@linkcode HOLDBACK_DIVISOR} of its capacity.
 */
export function holdbackMs(params: readonly BucketParams[]): bigint {
  let ms = HOLDBACK_MAX_MS;
  for (const p of params) {
    const w = (p.cp * p.rp) / (p.ra * HOLDBACK_DIVISOR);
    if (w < ms) ms = w;
  }
  return ms > 0n ? ms : 0n;
}

/**
 * Refills every limit of one item (they share `rf`) to `now`.
 *
 * - No balance reaches its capacity: the span claimed is
 *   {@linkcode sharedRefillSpan} (drift compensation), and each limit is
 *   capped at its capacity minus the refill of the time the span leaves
 *   unclaimed (`now − rf'`), which the stored pair credits again later.
 * - Every balance reaches its capacity (a full bucket): the ideal bucket is
 *   full now, so the refill up to `now` is claimed whole, balances are set to
 *   at most the capacity, and `rf'` is put {@linkcode holdbackMs} *ahead* of
 *   `now`. Until then the stored pair credits no refill, so plain writes
 *   (which must not run on a saturated bucket) stay exact for that window;
 *   the price is the refill of the window, at most 1% of each capacity,
 *   held back from the next burst.
 * - Some balances reach their capacity, others do not: `rf'` is not put
 *   ahead, since a limit that is not full would lose the refill of the
 *   window on every such write (a limit that never binds is full at each
 *   refill write of the one that does: half of the refill was lost). The
 *   span and caps are as with no full balance, and a full limit's `hold`
 *   is its saturation ceiling at `now` + {@linkcode holdbackMs}: a write
 *   leaving it at most that opens the same window for plain writes, and
 *   holds back at most 1% of that limit's capacity (applied after the
 *   charge). A full limit whose `need` (its charge) exceeds its balance at
 *   `rf'` makes the write a full-bucket one, so that a request of a whole
 *   capacity still fits.
 *
 * A balance above capacity (capacity lowered by another writer) is brought
 * down to it. A future `rf` (a clamped refill, or a writer whose clock is
 * ahead) credits nothing until it passes.
 *
 * A limit marked `ride` (stored on the item but not part of the write's
 * decision: `refill_settle.ts`) is refilled to the same `rf'` and capped
 * the same way, but neither sets the span nor makes the write a full-bucket
 * one (a rider that is not full keeps it from being one). Its `clamped`
 * flag says whether the cap cut its refill.
 */
export function planRefill(
  rf: bigint,
  now: bigint,
  limits: readonly {
    readonly tk: bigint;
    readonly p: BucketParams;
    readonly ride?: boolean;
    readonly need?: bigint | undefined;
  }[],
): RefillPlan {
  const span = sharedRefillSpan(
    rf,
    now,
    limits.flatMap((l) => l.ride ? [] : [l.p]),
  );
  const rfNext = rf + span;
  let clamped = false;
  let notFull = false;
  let wholeClaim = false;
  const cut: boolean[] = [];
  const full: boolean[] = [];
  const capped = limits.map(({ tk, p, ride, need }) => {
    const gained = span > 0n ? (span * p.ra) / p.rp : 0n;
    const cap = p.cp - refillOf(now - rfNext, p);
    const base = tk > p.cp ? p.cp : tk;
    const next = base + gained;
    if (next >= cap && !ride) clamped = true;
    if (next < cap) notFull = true;
    // A full limit charged more than its balance at rf' (the refill of
    // now − rf' is in its capacity): only the whole claim admits it.
    else if (need !== undefined && need > cap) wholeClaim = true;
    full.push(next >= cap);
    cut.push(next > cap);
    return next < cap ? next : cap;
  });
  if (!clamped || (notFull && !wholeClaim)) {
    const at = now + (clamped ? holdbackMs(limits.map((l) => l.p)) : 0n);
    return {
      rf: rfNext,
      tk: capped,
      clamped: cut,
      hold: limits.map(({ p }, i) =>
        clamped && full[i] ? saturationCeiling(rfNext, at, p) : null
      ),
    };
  }
  const elapsed = now > rf ? now - rf : 0n;
  const ahead = now + holdbackMs(limits.map((l) => l.p));
  const whole = limits.map(({ tk, p }) => {
    const base = tk > p.cp ? p.cp : tk;
    return base + (elapsed * p.ra) / p.rp;
  });
  return {
    rf: rf > ahead ? rf : ahead,
    tk: whole.map((next, i) => {
      const cp = (limits[i] as { p: BucketParams }).p.cp;
      return next < cp ? next : cp;
    }),
    clamped: whole.map((next, i) =>
      next > (limits[i] as { p: BucketParams }).p.cp
    ),
    hold: limits.map(() => null),
  };
}
