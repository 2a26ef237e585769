/**
 * An exact ideal token bucket: the specification the limiter is checked
 * against (no I/O, no rounding).
 *
 * Units are those of `core/bucket.ts`: amounts in millitokens, times in
 * milliseconds, all `bigint`. A *limit* has capacity `cp`, and refills `ra`
 * millitokens per `rp` milliseconds, continuously in time:
 *
 *     balance(t) = min(cp, balance(t0) + (t − t0) · ra / rp)
 *
 * The balance is kept exactly: each limit stores `balance × scale` as an
 * integer, where `scale` is the least common multiple of every `rp` the
 * limit has had, so refill never rounds and advancing in many small steps is
 * the same as advancing once (min(cp, min(cp, b + x) + y) = min(cp, b + x + y)
 * for x, y ≥ 0). Balances are read back as normalized {@linkcode Ratio}s.
 *
 * Operations (every one first advances time to `t`; time never goes back):
 *
 * - **admit** (`tryAdmit`): all or nothing over every charged limit of every
 *   bucket (a cascade charges child and parent buckets in one request). A
 *   charge of 0 always fits, even in debt (as `core/bucket.ts` does). A charge
 *   above its limit's capacity can never fit (`never_satisfiable`). Otherwise
 *   the request fits when every charged balance is ≥ its charge (summed when
 *   one request names the same limit twice).
 * - **forceDebit**: subtracts without a check; the balance may go negative
 *   (debt), which later refill pays back.
 * - **giveBack**: adds, capped: balance = min(cp, balance + g). A give-back
 *   never creates tokens above capacity, however late it comes.
 * - **setParams**: refills up to `t` with the old parameters, then switches;
 *   the balance is clamped to the new capacity at once (raising capacity does
 *   not add tokens; refill fills the new room).
 *
 * Every operation is a monotone, 1-Lipschitz map of the balance (a higher
 * balance before gives a higher or equal balance after, by at most the
 * difference); `checker.ts` builds its bounds on exactly these facts.
 *
 * @module
 */

/** Parameters of one limit in millitokens and milliseconds. */
export interface LimitParams {
  /** Capacity in millitokens (> 0). */
  readonly cp: bigint;
  /** Refill amount in millitokens per period (> 0). */
  readonly ra: bigint;
  /** Refill period in milliseconds (> 0). */
  readonly rp: bigint;
}

/** An exact rational number `num / den`, `den > 0`, in lowest terms. */
export interface Ratio {
  /** Numerator (carries the sign). */
  readonly num: bigint;
  /** Denominator, always > 0. */
  readonly den: bigint;
}

function abs(a: bigint): bigint {
  return a < 0n ? -a : a;
}

function gcd(a: bigint, b: bigint): bigint {
  let x = abs(a);
  let y = abs(b);
  while (y !== 0n) [x, y] = [y, x % y];
  return x;
}

function lcm(a: bigint, b: bigint): bigint {
  return (a / gcd(a, b)) * b;
}

/** `num / den` in lowest terms. */
export function ratio(num: bigint, den = 1n): Ratio {
  if (den === 0n) throw new RangeError("ratio: zero denominator");
  const sign = den < 0n ? -1n : 1n;
  const g = gcd(num, den) || 1n;
  return { num: (sign * num) / g, den: (sign * den) / g };
}

/** a + b. */
export function addRatio(a: Ratio, b: Ratio): Ratio {
  return ratio(a.num * b.den + b.num * a.den, a.den * b.den);
}

/** a − b. */
export function subRatio(a: Ratio, b: Ratio): Ratio {
  return ratio(a.num * b.den - b.num * a.den, a.den * b.den);
}

/** −1, 0 or 1 as a is below, equal to or above b. */
export function compareRatio(a: Ratio, b: Ratio): -1 | 0 | 1 {
  const l = a.num * b.den;
  const r = b.num * a.den;
  return l < r ? -1 : l > r ? 1 : 0;
}

/** The larger of a and b. */
export function maxRatio(a: Ratio, b: Ratio): Ratio {
  return compareRatio(a, b) >= 0 ? a : b;
}

/** The smaller of a and b. */
export function minRatio(a: Ratio, b: Ratio): Ratio {
  return compareRatio(a, b) <= 0 ? a : b;
}

/** A millitoken amount for messages: exact when whole, else `≈` 3 decimals. */
export function formatMilli(r: Ratio): string {
  if (r.den === 1n) return `${r.num}`;
  const neg = r.num < 0n;
  const n = abs(r.num);
  const whole = n / r.den;
  const frac = ((n % r.den) * 1000n) / r.den;
  return `≈${neg ? "-" : ""}${whole}.${String(frac).padStart(3, "0")}`;
}

/** The refill rate of `p` in millitokens per millisecond. */
export function rateOf(p: LimitParams): Ratio {
  return ratio(p.ra, p.rp);
}

/** Throws unless every parameter is a positive integer. */
export function validateParams(p: LimitParams): void {
  if (p.cp <= 0n || p.ra <= 0n || p.rp <= 0n) {
    throw new RangeError(
      `limit parameters must be positive: cp=${p.cp} ra=${p.ra} rp=${p.rp}`,
    );
  }
}

/** The larger capacity and the faster rate of `a` and `b` (each is ≥ both). */
export function maxParams(a: LimitParams, b: LimitParams): LimitParams {
  const fast = compareRatio(rateOf(a), rateOf(b)) >= 0 ? a : b;
  return { cp: a.cp > b.cp ? a.cp : b.cp, ra: fast.ra, rp: fast.rp };
}

/** The smaller capacity and the slower rate of `a` and `b` (each is ≤ both). */
export function minParams(a: LimitParams, b: LimitParams): LimitParams {
  const slow = compareRatio(rateOf(a), rateOf(b)) <= 0 ? a : b;
  return { cp: a.cp < b.cp ? a.cp : b.cp, ra: slow.ra, rp: slow.rp };
}

/** One limit of one bucket, exact. */
export class IdealLimit {
  #params: LimitParams;
  /** Least common multiple of every `rp` this limit has had. */
  #scale: bigint;
  /** balance × scale. */
  #scaled: bigint;
  #time: bigint;

  /** A limit at time `t0` holding `initialMilli` (default: full). */
  constructor(params: LimitParams, t0: bigint, initialMilli?: bigint) {
    validateParams(params);
    const initial = initialMilli ?? params.cp;
    if (initial > params.cp) {
      throw new RangeError(
        `initial balance ${initial} exceeds capacity ${params.cp}`,
      );
    }
    this.#params = params;
    this.#scale = params.rp;
    this.#scaled = initial * params.rp;
    this.#time = t0;
  }

  /** The current parameters. */
  get params(): LimitParams {
    return this.#params;
  }

  /** The time of the last operation. */
  get time(): bigint {
    return this.#time;
  }

  #refilled(t: bigint): bigint {
    if (t < this.#time) {
      throw new RangeError(`time went back: ${t} < ${this.#time}`);
    }
    const p = this.#params;
    const added = (t - this.#time) * p.ra * (this.#scale / p.rp);
    const full = p.cp * this.#scale;
    const sum = this.#scaled + added;
    return sum < full ? sum : full;
  }

  /** Refills up to `t`. */
  advance(t: bigint): void {
    this.#scaled = this.#refilled(t);
    this.#time = t;
  }

  /** The balance at `t` (≥ the current time), without changing anything. */
  balance(t: bigint = this.#time): Ratio {
    return ratio(this.#refilled(t), this.#scale);
  }

  /** Whether the balance at `t` is at least `amountMilli` (no change). */
  covers(t: bigint, amountMilli: bigint): boolean {
    return this.#refilled(t) >= amountMilli * this.#scale;
  }

  /** Subtracts `amountMilli` (≥ 0) at `t` without a check. */
  forceDebit(t: bigint, amountMilli: bigint): void {
    nonNegative(amountMilli);
    this.advance(t);
    this.#scaled -= amountMilli * this.#scale;
  }

  /** Adds `amountMilli` (≥ 0) at `t`, capped at capacity. */
  giveBack(t: bigint, amountMilli: bigint): void {
    nonNegative(amountMilli);
    this.advance(t);
    const full = this.#params.cp * this.#scale;
    const sum = this.#scaled + amountMilli * this.#scale;
    this.#scaled = sum < full ? sum : full;
  }

  /** Refills to `t` with the old parameters, switches, clamps to the new capacity. */
  setParams(t: bigint, params: LimitParams): void {
    validateParams(params);
    this.advance(t);
    const scale = lcm(this.#scale, params.rp);
    this.#scaled *= scale / this.#scale;
    this.#scale = scale;
    this.#params = params;
    const full = params.cp * scale;
    if (this.#scaled > full) this.#scaled = full;
  }
}

function nonNegative(amountMilli: bigint): void {
  if (amountMilli < 0n) {
    throw new RangeError(`amount must be ≥ 0, got ${amountMilli}`);
  }
}

/** A charge of one request on one limit of one bucket. */
export interface Charge {
  /** Bucket (entity and resource, e.g. `"child/api"`). */
  readonly bucket: string;
  /** Limit name. */
  readonly limit: string;
  /**
   * Millitokens, ≥ 0 here (the operation says whether it is taken or given
   * back); signed only in `adjust` operations of `checker.ts`.
   */
  readonly amountMilli: bigint;
}

/** What the ideal bucket does with a request. */
export type Verdict = "admitted" | "refused" | "never_satisfiable";

/** The key of a bucket limit in maps. */
export function limitKey(bucket: string, limit: string): string {
  return `${bucket}\u0000${limit}`;
}

/** Sums the charges per bucket limit (the order of first appearance is kept). */
export function aggregate(charges: readonly Charge[]): Charge[] {
  const sums = new Map<string, Charge>();
  for (const c of charges) {
    const k = limitKey(c.bucket, c.limit);
    const prev = sums.get(k);
    sums.set(k, {
      bucket: c.bucket,
      limit: c.limit,
      amountMilli: (prev?.amountMilli ?? 0n) + c.amountMilli,
    });
  }
  return [...sums.values()];
}

/** Several buckets, each with several named limits, on one clock. */
export class IdealBuckets {
  readonly #limits = new Map<string, IdealLimit>();
  #time: bigint;

  /** Empty, at time `t0`. */
  constructor(t0 = 0n) {
    this.#time = t0;
  }

  /** The time of the last operation. */
  get time(): bigint {
    return this.#time;
  }

  /** Adds a limit at the current time holding `initialMilli` (default: full). */
  define(
    bucket: string,
    limit: string,
    params: LimitParams,
    initialMilli?: bigint,
  ): void {
    const k = limitKey(bucket, limit);
    if (this.#limits.has(k)) throw new Error(`${bucket}/${limit} exists`);
    this.#limits.set(k, new IdealLimit(params, this.#time, initialMilli));
  }

  #limit(bucket: string, limit: string): IdealLimit {
    const l = this.#limits.get(limitKey(bucket, limit));
    if (!l) throw new Error(`unknown limit ${bucket}/${limit}`);
    return l;
  }

  /** Moves the clock to `t` (refill is lazy and exact, so nothing else changes). */
  advance(t: bigint): void {
    if (t < this.#time) {
      throw new RangeError(`time went back: ${t} < ${this.#time}`);
    }
    this.#time = t;
  }

  /** The balance of one limit at `t` (default: now; never before now). */
  balance(bucket: string, limit: string, t: bigint = this.#time): Ratio {
    if (t < this.#time) {
      throw new RangeError(`time went back: ${t} < ${this.#time}`);
    }
    return this.#limit(bucket, limit).balance(t);
  }

  /** The current parameters of one limit. */
  params(bucket: string, limit: string): LimitParams {
    return this.#limit(bucket, limit).params;
  }

  /** What {@linkcode tryAdmit} would decide at `t`, without consuming. */
  verdict(t: bigint, charges: readonly Charge[]): Verdict {
    this.advance(t);
    const sums = aggregate(charges);
    for (const c of sums) nonNegative(c.amountMilli);
    const positive = sums.filter((c) => c.amountMilli > 0n);
    if (
      positive.some((c) => c.amountMilli > this.params(c.bucket, c.limit).cp)
    ) {
      return "never_satisfiable";
    }
    const fits = positive.every((c) =>
      this.#limit(c.bucket, c.limit).covers(t, c.amountMilli)
    );
    return fits ? "admitted" : "refused";
  }

  /** Admits all charges at `t` or none; returns whether it admitted. */
  tryAdmit(t: bigint, charges: readonly Charge[]): boolean {
    if (this.verdict(t, charges) !== "admitted") return false;
    this.forceDebit(t, charges);
    return true;
  }

  /** Subtracts every charge at `t` without a check (debt allowed). */
  forceDebit(t: bigint, charges: readonly Charge[]): void {
    this.advance(t);
    for (const c of charges) {
      this.#limit(c.bucket, c.limit).forceDebit(t, c.amountMilli);
    }
  }

  /** Gives every amount back at `t`, each capped at its capacity. */
  giveBack(t: bigint, charges: readonly Charge[]): void {
    this.advance(t);
    for (const c of charges) {
      this.#limit(c.bucket, c.limit).giveBack(t, c.amountMilli);
    }
  }

  /** Changes one limit's parameters at `t` (the balance is clamped at once). */
  setParams(
    t: bigint,
    bucket: string,
    limit: string,
    params: LimitParams,
  ): void {
    this.advance(t);
    this.#limit(bucket, limit).setParams(t, params);
  }
}

/**
 * An ideal calendar-aligned quota (issue 14), next to the rolling bucket
 * above: `cp` millitokens per calendar window (`windowOf(t)` gives the
 * window holding `t`, e.g. `calendarWindow` of `core/calendar.ts`), all of
 * it available at the window start, nothing refilled inside the window.
 *
 * - **admit**: the balance of the current window (the full `cp` once the
 *   window turned) covers the charge; all or nothing across quotas is the
 *   caller's (see {@linkcode idealAdmitAll}).
 * - **delta** (a lease's adjustment or give-back): belongs to the window
 *   of the lease's acquire: applied while that window is current (a
 *   give-back capped at `cp`, a debit without a check), dropped once it is
 *   over.
 */
export class IdealCalendarLimit {
  readonly #cp: bigint;
  readonly #windowOf: (t: number) => { start: number; end: number };
  #start = Number.NEGATIVE_INFINITY;
  #balance: bigint;

  /** A quota of `cp` millitokens per window. */
  constructor(
    cp: bigint,
    windowOf: (t: number) => { start: number; end: number },
  ) {
    if (cp <= 0n) throw new RangeError(`capacity must be positive: ${cp}`);
    this.#cp = cp;
    this.#windowOf = windowOf;
    this.#balance = cp;
  }

  #roll(t: number): void {
    const w = this.#windowOf(t);
    if (w.start < this.#start) {
      throw new RangeError(
        `time went back: window ${w.start} < ${this.#start}`,
      );
    }
    if (w.start !== this.#start) {
      this.#start = w.start;
      this.#balance = this.#cp;
    }
  }

  /** The capacity. */
  get capacity(): bigint {
    return this.#cp;
  }

  /** The balance at `t` (rolls the window). */
  balance(t: number): bigint {
    this.#roll(t);
    return this.#balance;
  }

  /** The start of the window holding `t`. */
  windowStart(t: number): number {
    return this.#windowOf(t).start;
  }

  /** Whether `amount` fits at `t` (no change but the window roll). */
  covers(t: number, amount: bigint): boolean {
    return amount <= 0n || this.balance(t) >= amount;
  }

  /** Takes `amount` at `t` without a check. */
  debit(t: number, amount: bigint): void {
    this.#roll(t);
    this.#balance -= amount;
  }

  /** A lease delta at `t` for a lease acquired in the window starting at `acquiredIn`. */
  delta(t: number, acquiredIn: number, d: bigint): void {
    this.#roll(t);
    if (this.#start !== acquiredIn) return; // the acquire's window is over
    const next = this.#balance - d;
    this.#balance = d < 0n && next > this.#cp ? this.#cp : next;
  }
}

/** All or nothing over several calendar quotas: admits (debits each) only when every one covers its charge. */
export function idealAdmitAll(
  t: number,
  charges: readonly {
    readonly limit: IdealCalendarLimit;
    readonly amount: bigint;
  }[],
): boolean {
  if (charges.some((c) => !c.limit.covers(t, c.amount))) return false;
  for (const c of charges) c.limit.debit(t, c.amount);
  return true;
}
