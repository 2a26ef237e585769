/**
 * A sound checker of concurrent limiter histories against the ideal bucket
 * of `ideal.ts` (pure: no I/O).
 *
 * ## Histories
 *
 * Each operation has a real-time interval `[start, end]` (ms, as the client
 * saw it) inside which it took effect, if it did. A *placement* puts every
 * operation at one time inside its interval (ties in any order) and decides
 * every ambiguous operation either way. A history is *valid* when some
 * placement, replayed on the ideal bucket, gives every observed outcome:
 *
 * - `acquire`, outcome `admitted`: all charges fit and are debited;
 *   `refused`: some charge did not fit (nothing changes); `never_satisfiable`:
 *   some charge exceeded its capacity; `error`: ambiguous, it may have been
 *   debited (it was checked then, but the checker does not rely on that) or
 *   not; `unchecked`: the limiter was unavailable and recorded nothing (no
 *   effect, not checked).
 * - `adjust` (signed charges: positive = forced debit, negative = give-back),
 *   `rollback` (charges are the amounts given back): `applied`, `failed` (no
 *   effect) or `ambiguous` (either).
 * - `config`: new parameters for one limit (balance clamped at once). Config
 *   intervals of the same limit must not overlap (checked: their order is
 *   then known).
 *
 * As in the ideal bucket, a charge of 0 always fits, so a refused acquire
 * without a positive charge is reported. Parameters are those of the stored
 * bucket item (per shard when the limiter divides limits across shards).
 *
 * ## What is reported (each is a proof that no placement is valid)
 *
 * Let U(t) be an upper bound on the ideal balance of one limit just before
 * an operation placed at t, over every placement, and L(t) a lower bound.
 * Both are replays of the ideal bucket under one extreme schedule:
 *
 * - U(t): certain debits that must come first (`end < t`) at their `start`;
 *   debits that may come after (`end ≥ t`) and ambiguous debits left out;
 *   every give-back that may come first (`start ≤ t`, ambiguous ones too) at
 *   `min(end, t)`; while a config may be in force, the larger capacity and
 *   the faster rate of old and new, clamping only once it must have happened
 *   (`end < t`).
 * - L(t): every debit that may come first (`start ≤ t`, ambiguous ones too)
 *   at `min(end, t)`; only certain give-backs that must come first
 *   (`end < t`), at their `start`; a config's smaller capacity and slower
 *   rate from its `settleFrom` (default: its `start`; clamping there) until
 *   its `settleUntil` (default: its `end`).
 *
 * Why these are bounds. All ideal operations are monotone 1-Lipschitz maps
 * of the balance b (refill min(cp, b + r·Δ), debit b − d, give-back
 * min(cp, b + g), clamp min(cp', b)), so: (1) leaving out a debit or adding a
 * give-back never lowers any later balance; (2) a debit moved earlier never
 * lowers a later balance, since min(cp, x − d) ≥ min(cp, x) − d shows it
 * commutes favourably past refill, give-backs and clamps; (3) a give-back
 * moved later never lowers a later balance (min(cp, x − d + g) ≥
 * min(cp, x + g) − d; it commutes exactly with refill and other
 * give-backs, and min(cp', min(cp', x) + g) ≥ min(cp', min(cp, x + g)));
 * (4) the balance is non-decreasing in capacity and rate, and clamping later
 * at most the same capacity never lowers it. Turning every placement into
 * the U schedule uses only moves that never lower the balance before the
 * checked operation; the L schedule only moves that never raise it. Other
 * admitted acquires are treated as plain debits, whether or not they could
 * fit: this only enlarges the set of placements considered, so the bounds
 * stay bounds for every valid placement.
 *
 * Finding the extremes over the interval. Between events U(t) is
 * non-decreasing in t (refill; open give-backs commute with it) and drops
 * only just after a debit's or a config's `end`: its maximum over
 * `[start, end]` is at `end` or at one of those ends inside the interval.
 * L(t) is non-decreasing between events (min(cp, x − d + Δ) ≥ min(cp, x + Δ)
 * − d) and drops only at a debit's or a config's `start`: its minimum is at
 * `start` or at one of those starts inside the interval. Both are evaluated
 * exactly at those candidate times.
 *
 * - **Over-admission** (`overAdmissions`): an admitted charge larger than
 *   max U(t) over its interval plus the slack.
 * - **Envelope** (`envelopes`, worst window per limit): acquires admitted
 *   with intervals inside a window [a, b] took more than U⁻(a) + r·(b − a) +
 *   the give-backs that may fall in the window + the slack, where U⁻(a) is U
 *   counting only give-backs that must precede a, and r is the fastest rate
 *   possibly in force. Proof: the last of those acquires left the balance
 *   ≥ −slack, and from a on the balance grows by at most refill and
 *   give-backs (a give-back that may precede a is counted once, in the
 *   window). This catches joint over-admission (N acquires that each could
 *   fit alone) that the per-acquire check cannot.
 * - **Unjustified refusal** (`unjustifiedRefusals`): a `refused` acquire
 *   whose every positive charge stayed covered, min L(t) − amount >
 *   slack + `refusalSlackMilli`, throughout its interval (so every placement
 *   admits it); a `never_satisfiable` acquire whose every charge is within
 *   the smallest capacity possibly in force during its interval.
 * - **Accounting** (`accounting`): the final stored consumed counter `tc`
 *   of a limit must lie in [committed − ambiguous give-backs, committed +
 *   ambiguous debits], where committed = initial tc + certain debits −
 *   certain give-backs (`tc` counts give-backs in full, uncapped).
 *
 * ## Slack
 *
 * The limiter computes refill from client clocks. If no clock is more than
 * `slackMs` ahead, the stored balance never exceeds the ideal balance of the
 * same placement by more than rate × `slackMs` (refill is time-based and the
 * stored refill time only moves forward, so the error does not accumulate).
 * The checker therefore credits every limit `slack = r_max · slackMs +
 * slackMilli` (r_max: its fastest rate over the history): an admission is
 * accepted when the ideal balance could be ≥ amount − slack, a refusal when
 * it could be < amount + slack + `refusalSlackMilli`. `refusalSlackMilli` is
 * for refusals the limiter may make on stale reads; pass the bound the
 * limiter documents.
 *
 * Cost: O(n² log n) per limit for n operations on it.
 *
 * @module
 */
import {
  addRatio,
  aggregate,
  type Charge,
  compareRatio,
  formatMilli,
  IdealLimit,
  limitKey,
  type LimitParams,
  maxParams,
  maxRatio,
  minParams,
  rateOf,
  type Ratio,
  ratio,
  subRatio,
  validateParams,
} from "./ideal.ts";

// ---------------------------------------------------------------------------
// History

/** One limit of one bucket and its state at `t0`. */
export interface LimitSpec {
  /** Bucket. */
  readonly bucket: string;
  /** Limit name. */
  readonly limit: string;
  /** Parameters at `t0`. */
  readonly params: LimitParams;
  /** Balance at `t0` (default: full). */
  readonly balanceMilli?: bigint;
  /** Stored consumed counter `tc` at `t0` (default 0). */
  readonly consumedMilli?: bigint;
}

/** The fields every operation has. */
export interface Timed {
  /** Unique id, used in reports. */
  readonly id: string;
  /** Earliest time it may have taken effect (ms). */
  readonly start: bigint;
  /** Latest time it may have taken effect (ms, ≥ start). */
  readonly end: bigint;
}

/** How an acquire ended. */
export type AcquireOutcome =
  | "admitted"
  | "refused"
  | "never_satisfiable"
  | "error"
  | "unchecked";

/** How an adjust or rollback ended. */
export type EffectOutcome = "applied" | "failed" | "ambiguous";

/** A request (a cascade charges child and parent buckets). */
export interface AcquireOp extends Timed {
  /** Kind. */
  readonly kind: "acquire";
  /** Charges (≥ 0). */
  readonly charges: readonly Charge[];
  /** Outcome. */
  readonly outcome: AcquireOutcome;
}

/** A lease adjustment: positive charges are forced debits, negative ones give-backs. */
export interface AdjustOp extends Timed {
  /** Kind. */
  readonly kind: "adjust";
  /** Signed charges. */
  readonly charges: readonly Charge[];
  /** Outcome. */
  readonly outcome: EffectOutcome;
}

/** A rollback or compensation: the charges are amounts given back (≥ 0). */
export interface RollbackOp extends Timed {
  /** Kind. */
  readonly kind: "rollback";
  /** Amounts given back. */
  readonly charges: readonly Charge[];
  /** Outcome. */
  readonly outcome: EffectOutcome;
}

/** New parameters for one limit (always applied, inside its interval). */
export interface ConfigOp extends Timed {
  /** Kind. */
  readonly kind: "config";
  /** Bucket. */
  readonly bucket: string;
  /** Limit name. */
  readonly limit: string;
  /** New parameters. */
  readonly params: LimitParams;
  /**
   * For the refusal checks only: the smaller capacity and slower rate of old
   * and new apply from here (≤ `start`) instead of from `start`. A limiter
   * that settles the refill since the bucket's last refill write under
   * those parameters (it cannot know when the change happened) passes its
   * `rf` before the change here; the over-admission checks keep `start`.
   */
  readonly settleFrom?: bigint;
  /**
   * For the refusal checks only: the smaller capacity and slower rate last
   * until here (≥ `end`) instead of until `end`. A limiter that settles the
   * refill since the last refill write under those parameters keeps doing
   * so until its next refill write on the bucket, which may come later than
   * `end`; the driver passes the end of that write here.
   */
  readonly settleUntil?: bigint;
}

/** Any operation. */
export type Operation = AcquireOp | AdjustOp | RollbackOp | ConfigOp;

/** The stored consumed counter of one limit at the end of the history. */
export interface FinalConsumed {
  /** Bucket. */
  readonly bucket: string;
  /** Limit name. */
  readonly limit: string;
  /** Net millitokens consumed (`tc`). */
  readonly tcMilli: bigint;
}

/** A concurrent history. */
export interface History {
  /** Time of the initial state (default 0); every interval starts at or after it. */
  readonly t0?: bigint;
  /** Every limit operations may name. */
  readonly limits: readonly LimitSpec[];
  /** Operations, in any order. */
  readonly operations: readonly Operation[];
  /** Final `tc` of some limits, for the accounting check. */
  readonly finalConsumed?: readonly FinalConsumed[];
}

/** Tolerances (see the module doc). */
export interface CheckOptions {
  /** Bound on how far a client clock may run ahead (default 0). */
  readonly slackMs?: bigint;
  /** Extra millitokens credited to every limit, or per limit (default 0). */
  readonly slackMilli?: bigint | ((bucket: string, limit: string) => bigint);
  /** Extra margin a refusal is allowed (default 0). */
  readonly refusalSlackMilli?: bigint;
}

// ---------------------------------------------------------------------------
// Report

/** An admitted charge that no placement could have admitted. */
export interface OverAdmission {
  /** The acquire. */
  readonly opId: string;
  /** Bucket. */
  readonly bucket: string;
  /** Limit. */
  readonly limit: string;
  /** The charge. */
  readonly amountMilli: bigint;
  /** The largest upper bound U(t) over the interval. */
  readonly upperBound: Ratio;
  /** Where that bound is reached. */
  readonly at: bigint;
  /** The slack credited. */
  readonly slack: Ratio;
}

/** The worst window of one limit in which admissions exceeded the envelope. */
export interface EnvelopeViolation {
  /** Bucket. */
  readonly bucket: string;
  /** Limit. */
  readonly limit: string;
  /** Window start. */
  readonly from: bigint;
  /** Window end. */
  readonly to: bigint;
  /** Millitokens admitted by acquires inside the window. */
  readonly admittedMilli: bigint;
  /** Most that could have been admitted (slack included). */
  readonly bound: Ratio;
  /** The acquires inside the window. */
  readonly opIds: readonly string[];
}

/** One charge of a refusal under review. */
export interface RefusedCharge {
  /** Bucket. */
  readonly bucket: string;
  /** Limit. */
  readonly limit: string;
  /** The charge. */
  readonly amountMilli: bigint;
  /** The smallest lower bound L(t) over the interval. */
  readonly lowerBound: Ratio;
  /** Where that bound is reached. */
  readonly at: bigint;
  /** The smallest capacity possibly in force during the interval. */
  readonly minCapacityMilli: bigint;
  /** Slack (credit + refusal slack) the margin had to exceed. */
  readonly slack: Ratio;
}

/** A refusal no placement explains. */
export interface UnjustifiedRefusal {
  /** The acquire. */
  readonly opId: string;
  /** Its outcome. */
  readonly outcome: "refused" | "never_satisfiable";
  /** `covered`: every charge fit throughout; `within_capacity`: no charge exceeded capacity. */
  readonly reason: "covered" | "within_capacity";
  /** Its positive charges. */
  readonly charges: readonly RefusedCharge[];
}

/** A final consumed counter outside its possible range. */
export interface AccountingViolation {
  /** Bucket. */
  readonly bucket: string;
  /** Limit. */
  readonly limit: string;
  /** Stored value. */
  readonly tcMilli: bigint;
  /** Smallest possible value. */
  readonly lowMilli: bigint;
  /** Largest possible value. */
  readonly highMilli: bigint;
  /** Initial tc + certain debits − certain give-backs. */
  readonly committedNetMilli: bigint;
  /** Debits that may or may not have applied. */
  readonly ambiguousDebitMilli: bigint;
  /** Give-backs that may or may not have applied. */
  readonly ambiguousGiveBackMilli: bigint;
}

/** Everything found; `ok` when nothing was. */
export interface Report {
  /** Per admitted charge. */
  readonly overAdmissions: readonly OverAdmission[];
  /** Worst window per limit. */
  readonly envelopes: readonly EnvelopeViolation[];
  /** Per refused acquire. */
  readonly unjustifiedRefusals: readonly UnjustifiedRefusal[];
  /** Per limit with a final counter. */
  readonly accounting: readonly AccountingViolation[];
  /** No violation at all. */
  readonly ok: boolean;
}

// ---------------------------------------------------------------------------
// Model: one limit's effects

/** A debit or give-back of one operation on one limit. */
interface Effect {
  readonly opId: string;
  readonly start: bigint;
  readonly end: bigint;
  readonly amount: bigint;
  readonly certain: boolean;
}

interface ConfigChange {
  readonly start: bigint;
  readonly end: bigint;
  /** Where the stingy parameters of the lower bound start (≤ start). */
  readonly settleFrom: bigint;
  /** Where they end (≥ end, before the next config's `settleFrom`). */
  settleUntil: bigint;
  readonly before: LimitParams;
  readonly after: LimitParams;
}

interface Model {
  readonly bucket: string;
  readonly limit: string;
  readonly t0: bigint;
  readonly initial: LimitParams;
  readonly balance0: bigint;
  readonly consumed0: bigint;
  /** Certain and ambiguous debits (admitted acquires included). */
  readonly debits: Effect[];
  /** Admitted acquires (certain, checked). */
  readonly admitted: Effect[];
  readonly giveBacks: Effect[];
  readonly configs: ConfigChange[];
  readonly upper: Map<bigint, Ratio>;
  readonly upperStrict: Map<bigint, Ratio>;
  readonly lower: Map<bigint, Ratio>;
}

function newModel(spec: LimitSpec, t0: bigint): Model {
  validateParams(spec.params);
  return {
    bucket: spec.bucket,
    limit: spec.limit,
    t0,
    initial: spec.params,
    balance0: spec.balanceMilli ?? spec.params.cp,
    consumed0: spec.consumedMilli ?? 0n,
    debits: [],
    admitted: [],
    giveBacks: [],
    configs: [],
    upper: new Map(),
    upperStrict: new Map(),
    lower: new Map(),
  };
}

function validateInterval(op: Timed, t0: bigint): void {
  if (op.start > op.end || op.start < t0) {
    throw new RangeError(
      `operation ${op.id}: interval [${op.start}, ${op.end}] is empty or before t0=${t0}`,
    );
  }
}

/** Builds one model per limit from the history; throws on malformed input. */
function buildModels(history: History): Map<string, Model> {
  const t0 = history.t0 ?? 0n;
  const models = new Map<string, Model>();
  for (const spec of history.limits) {
    const k = limitKey(spec.bucket, spec.limit);
    if (models.has(k)) throw new Error(`limit ${k} given twice`);
    models.set(k, newModel(spec, t0));
  }
  const model = (bucket: string, limit: string): Model => {
    const m = models.get(limitKey(bucket, limit));
    if (!m) throw new Error(`unknown limit ${bucket}/${limit}`);
    return m;
  };
  const ids = new Set<string>();
  const configs: ConfigOp[] = [];
  for (const op of history.operations) {
    if (ids.has(op.id)) throw new Error(`operation id ${op.id} given twice`);
    ids.add(op.id);
    validateInterval(op, t0);
    if (op.kind === "config") {
      model(op.bucket, op.limit); // must exist
      validateParams(op.params);
      configs.push(op);
      continue;
    }
    for (const c of aggregate(op.charges)) {
      addEffect(model(c.bucket, c.limit), op, c.amountMilli);
    }
  }
  addConfigs(models, configs);
  return models;
}

function addEffect(
  m: Model,
  op: AcquireOp | AdjustOp | RollbackOp,
  amount: bigint,
): void {
  if (amount < 0n && op.kind !== "adjust") {
    throw new RangeError(`operation ${op.id}: negative ${op.kind} amount`);
  }
  if (amount === 0n) return;
  const certain = op.outcome === "admitted" || op.outcome === "applied";
  const ambiguous = op.outcome === "error" || op.outcome === "ambiguous";
  if (!certain && !ambiguous) return; // refused, failed, unchecked: no effect
  const e = {
    opId: op.id,
    start: op.start,
    end: op.end,
    amount: amount < 0n ? -amount : amount,
    certain,
  };
  const isGiveBack = op.kind === "rollback" || amount < 0n;
  if (isGiveBack) m.giveBacks.push(e);
  else {
    m.debits.push(e);
    if (op.kind === "acquire" && certain) m.admitted.push(e);
  }
}

function addConfigs(models: Map<string, Model>, configs: ConfigOp[]): void {
  const sorted = [...configs].sort((a, b) => cmpBig(a.start, b.start));
  for (const op of sorted) {
    const m = models.get(limitKey(op.bucket, op.limit)) as Model;
    const prev = m.configs[m.configs.length - 1];
    if (prev && prev.end >= op.start) {
      throw new Error(
        `config ${op.id} overlaps an earlier config of ${op.bucket}/${op.limit}`,
      );
    }
    let settleFrom = op.settleFrom ?? op.start;
    if (settleFrom > op.start) settleFrom = op.start;
    const floor = prev ? prev.end + 1n : m.t0;
    if (settleFrom < floor) settleFrom = floor;
    // The stingy parameters of the previous change end before these start.
    if (prev && prev.settleUntil >= settleFrom) {
      prev.settleUntil = maxBig(prev.end, settleFrom - 1n);
    }
    m.configs.push({
      start: op.start,
      end: op.end,
      settleFrom,
      settleUntil: maxBig(op.end, op.settleUntil ?? op.end),
      before: prev?.after ?? m.initial,
      after: op.params,
    });
  }
  for (const m of models.values()) {
    if (m.balance0 > m.initial.cp) {
      throw new RangeError(
        `initial balance of ${m.bucket}/${m.limit} exceeds capacity`,
      );
    }
  }
}

function cmpBig(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function maxBig(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

function minBig(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

// ---------------------------------------------------------------------------
// Parameters possibly in force

/** Parameters that may be in force at some time of [s, e]. */
function paramsDuring(m: Model, s: bigint, e: bigint): LimitParams[] {
  const out: LimitParams[] = [];
  const n = m.configs.length;
  for (let i = 0; i <= n; i++) {
    const from = i === 0 ? null : (m.configs[i - 1] as ConfigChange).start;
    const until = i === n ? null : (m.configs[i] as ConfigChange).end;
    const p = i === 0 ? m.initial : (m.configs[i - 1] as ConfigChange).after;
    if ((from === null || from <= e) && (until === null || until >= s)) {
      out.push(p);
    }
  }
  return out;
}

function maxRateDuring(m: Model, s: bigint, e: bigint): Ratio {
  return paramsDuring(m, s, e).map(rateOf).reduce(maxRatio);
}

function minCapacityDuring(m: Model, s: bigint, e: bigint): bigint {
  return paramsDuring(m, s, e).map((p) => p.cp).reduce(minBig);
}

/** r_max · slackMs + slackMilli. */
function creditOf(m: Model, options: CheckOptions): Ratio {
  const slackMs = options.slackMs ?? 0n;
  const s = options.slackMilli ?? 0n;
  const extra = typeof s === "bigint" ? s : s(m.bucket, m.limit);
  const rate = [m.initial, ...m.configs.map((c) => c.after)].map(rateOf)
    .reduce(maxRatio);
  return addRatio(ratio(rate.num * slackMs, rate.den), ratio(extra));
}

// ---------------------------------------------------------------------------
// Bounds: replays of the ideal limit under one extreme schedule

interface Step {
  readonly time: bigint;
  /** Order at equal times. */
  readonly rank: number;
  readonly run: (l: IdealLimit, time: bigint) => void;
}

function replay(m: Model, t: bigint, steps: Step[]): Ratio {
  steps.sort((a, b) => cmpBig(a.time, b.time) || a.rank - b.rank);
  const l = new IdealLimit(m.initial, m.t0, m.balance0);
  for (const s of steps) s.run(l, s.time);
  return l.balance(t);
}

function debitStep(time: bigint, rank: number, amount: bigint): Step {
  return { time, rank, run: (l, at) => l.forceDebit(at, amount) };
}

function giveBackStep(time: bigint, rank: number, amount: bigint): Step {
  return { time, rank, run: (l, at) => l.giveBack(at, amount) };
}

/**
 * Config steps before `t`: `during` parameters from each start (clamping
 * there), the new ones from each end that must have passed (`end < t`).
 * Ranks 1 + 2i and 2 + 2i keep configs in order between rank 0 and the last
 * rank.
 */
function configSteps(
  m: Model,
  t: bigint,
  during: (a: LimitParams, b: LimitParams) => LimitParams,
  settle = false,
): Step[] {
  const steps: Step[] = [];
  m.configs.forEach((c, i) => {
    const from = settle ? c.settleFrom : c.start;
    if (from > t) return;
    const p = during(c.before, c.after);
    steps.push({
      time: from,
      rank: 1 + 2 * i,
      run: (l, at) => l.setParams(at, p),
    });
    const until = settle ? c.settleUntil : c.end;
    if (until < t) {
      steps.push({
        time: until,
        rank: 2 + 2 * i,
        run: (l, at) => l.setParams(at, c.after),
      });
    }
  });
  return steps;
}

function lastRank(m: Model): number {
  return 3 + 2 * m.configs.length;
}

/**
 * U(t): debits first and early, give-backs last and late, generous
 * parameters. With `strict`, only give-backs that must precede t (for the
 * envelope, which counts the others in its window).
 */
function upperAt(m: Model, t: bigint, strict = false): Ratio {
  const cache = strict ? m.upperStrict : m.upper;
  const hit = cache.get(t);
  if (hit) return hit;
  const steps = configSteps(m, t, maxParams);
  for (const d of m.debits) {
    if (d.certain && d.end < t) steps.push(debitStep(d.start, 0, d.amount));
  }
  for (const g of m.giveBacks) {
    if (strict ? g.end < t : g.start <= t) {
      steps.push(giveBackStep(minBig(g.end, t), lastRank(m), g.amount));
    }
  }
  const u = replay(m, t, steps);
  cache.set(t, u);
  return u;
}

/** L(t): give-backs first and early, debits last and late, stingy parameters. */
function lowerAt(m: Model, t: bigint): Ratio {
  const hit = m.lower.get(t);
  if (hit) return hit;
  const steps = configSteps(m, t, minParams, true);
  for (const g of m.giveBacks) {
    if (g.certain && g.end < t) steps.push(giveBackStep(g.start, 0, g.amount));
  }
  for (const d of m.debits) {
    if (d.start <= t) {
      steps.push(debitStep(minBig(d.end, t), lastRank(m), d.amount));
    }
  }
  const l = replay(m, t, steps);
  m.lower.set(t, l);
  return l;
}

/** max U(t) over [s, e]: at e or at a certain debit's or config's end inside. */
function maxUpper(m: Model, s: bigint, e: bigint): { at: bigint; u: Ratio } {
  const times = new Set<bigint>([e]);
  for (const d of m.debits) {
    if (d.certain && d.end >= s && d.end < e) times.add(d.end);
  }
  for (const c of m.configs) if (c.end >= s && c.end < e) times.add(c.end);
  return extreme(times, (t) => upperAt(m, t), 1);
}

/** min L(t) over [s, e]: at s or at a debit's or config's start inside. */
function minLower(m: Model, s: bigint, e: bigint): { at: bigint; u: Ratio } {
  const times = new Set<bigint>([s]);
  for (const d of m.debits) if (d.start > s && d.start <= e) times.add(d.start);
  for (const c of m.configs) {
    if (c.settleFrom > s && c.settleFrom <= e) times.add(c.settleFrom);
  }
  return extreme(times, (t) => lowerAt(m, t), -1);
}

function extreme(
  times: Set<bigint>,
  f: (t: bigint) => Ratio,
  sign: 1 | -1,
): { at: bigint; u: Ratio } {
  let best: { at: bigint; u: Ratio } | null = null;
  for (const t of [...times].sort(cmpBig)) {
    const u = f(t);
    if (!best || compareRatio(u, best.u) === sign) best = { at: t, u };
  }
  return best as { at: bigint; u: Ratio };
}

// ---------------------------------------------------------------------------
// Checks

function overAdmissions(m: Model, credit: Ratio): OverAdmission[] {
  const out: OverAdmission[] = [];
  for (const x of m.admitted) {
    const { at, u } = maxUpper(m, x.start, x.end);
    if (compareRatio(addRatio(u, credit), ratio(x.amount)) < 0) {
      out.push({
        opId: x.opId,
        bucket: m.bucket,
        limit: m.limit,
        amountMilli: x.amount,
        upperBound: u,
        at,
        slack: credit,
      });
    }
  }
  return out;
}

interface Window {
  readonly from: bigint;
  readonly to: bigint;
  readonly admitted: bigint;
  readonly bound: Ratio;
  readonly excess: Ratio;
}

/** The window starting at `a` with the largest excess of admissions over the envelope. */
function worstWindowFrom(m: Model, a: bigint, credit: Ratio): Window | null {
  const base = addRatio(upperAt(m, a, true), credit);
  const inside = m.admitted.filter((x) => x.start >= a)
    .sort((x, y) => cmpBig(x.end, y.end));
  const gives = m.giveBacks.filter((g) => g.end >= a)
    .sort((x, y) => cmpBig(x.start, y.start));
  let worst: Window | null = null;
  let admitted = 0n;
  let given = 0n;
  let gi = 0;
  for (let i = 0; i < inside.length; i++) {
    const x = inside[i] as Effect;
    admitted += x.amount;
    if (inside[i + 1]?.end === x.end) continue; // take every acquire ending at b
    const b = x.end;
    for (; gi < gives.length && (gives[gi] as Effect).start <= b; gi++) {
      given += (gives[gi] as Effect).amount;
    }
    const rate = maxRateDuring(m, a, b);
    const refill = ratio(rate.num * (b - a), rate.den);
    const bound = addRatio(addRatio(base, refill), ratio(given));
    const excess = subRatio(ratio(admitted), bound);
    if (!worst || compareRatio(excess, worst.excess) > 0) {
      worst = { from: a, to: b, admitted, bound, excess };
    }
  }
  return worst;
}

function envelope(m: Model, credit: Ratio): EnvelopeViolation | null {
  let worst: Window | null = null;
  for (const a of new Set(m.admitted.map((x) => x.start))) {
    const w = worstWindowFrom(m, a, credit);
    if (w && (!worst || compareRatio(w.excess, worst.excess) > 0)) worst = w;
  }
  if (!worst || compareRatio(worst.excess, ratio(0n)) <= 0) return null;
  const { from, to } = worst;
  return {
    bucket: m.bucket,
    limit: m.limit,
    from,
    to,
    admittedMilli: worst.admitted,
    bound: worst.bound,
    opIds: m.admitted.filter((x) => x.start >= from && x.end <= to)
      .map((x) => x.opId),
  };
}

function refusalCharges(
  op: AcquireOp,
  models: Map<string, Model>,
  options: CheckOptions,
): RefusedCharge[] {
  const extra = options.refusalSlackMilli ?? 0n;
  return aggregate(op.charges).filter((c) => c.amountMilli > 0n).map((c) => {
    const m = models.get(limitKey(c.bucket, c.limit)) as Model;
    const { at, u } = minLower(m, op.start, op.end);
    return {
      bucket: c.bucket,
      limit: c.limit,
      amountMilli: c.amountMilli,
      lowerBound: u,
      at,
      minCapacityMilli: minCapacityDuring(m, op.start, op.end),
      slack: addRatio(creditOf(m, options), ratio(extra)),
    };
  });
}

function unjustifiedRefusal(
  op: AcquireOp,
  models: Map<string, Model>,
  options: CheckOptions,
): UnjustifiedRefusal | null {
  if (op.outcome !== "refused" && op.outcome !== "never_satisfiable") {
    return null;
  }
  const charges = refusalCharges(op, models, options);
  if (op.outcome === "never_satisfiable") {
    const within = charges.every((c) => c.amountMilli <= c.minCapacityMilli);
    return within
      ? { opId: op.id, outcome: op.outcome, reason: "within_capacity", charges }
      : null;
  }
  const covered = charges.every((c) => {
    const margin = subRatio(c.lowerBound, ratio(c.amountMilli));
    return compareRatio(margin, c.slack) > 0;
  });
  return covered
    ? { opId: op.id, outcome: op.outcome, reason: "covered", charges }
    : null;
}

function sum(effects: readonly Effect[], certain: boolean): bigint {
  return effects.filter((e) => e.certain === certain)
    .reduce((s, e) => s + e.amount, 0n);
}

function accounting(m: Model, tcMilli: bigint): AccountingViolation | null {
  const committed = m.consumed0 + sum(m.debits, true) -
    sum(m.giveBacks, true);
  const ambiguousDebit = sum(m.debits, false);
  const ambiguousGiveBack = sum(m.giveBacks, false);
  const low = committed - ambiguousGiveBack;
  const high = committed + ambiguousDebit;
  if (tcMilli >= low && tcMilli <= high) return null;
  return {
    bucket: m.bucket,
    limit: m.limit,
    tcMilli,
    lowMilli: low,
    highMilli: high,
    committedNetMilli: committed,
    ambiguousDebitMilli: ambiguousDebit,
    ambiguousGiveBackMilli: ambiguousGiveBack,
  };
}

/** Checks a history (see the module doc); throws on malformed input. */
export function check(history: History, options: CheckOptions = {}): Report {
  const models = buildModels(history);
  const over: OverAdmission[] = [];
  const envelopes: EnvelopeViolation[] = [];
  for (const m of models.values()) {
    const credit = creditOf(m, options);
    over.push(...overAdmissions(m, credit));
    const w = envelope(m, credit);
    if (w) envelopes.push(w);
  }
  const refusals: UnjustifiedRefusal[] = [];
  for (const op of history.operations) {
    if (op.kind !== "acquire") continue;
    const r = unjustifiedRefusal(op, models, options);
    if (r) refusals.push(r);
  }
  const acc: AccountingViolation[] = [];
  for (const f of history.finalConsumed ?? []) {
    const m = models.get(limitKey(f.bucket, f.limit));
    if (!m) throw new Error(`unknown limit ${f.bucket}/${f.limit}`);
    const v = accounting(m, f.tcMilli);
    if (v) acc.push(v);
  }
  return {
    overAdmissions: over,
    envelopes,
    unjustifiedRefusals: refusals,
    accounting: acc,
    ok: over.length + envelopes.length + refusals.length + acc.length === 0,
  };
}

// ---------------------------------------------------------------------------
// Formatting

function ids(list: readonly string[]): string {
  return list.length <= 12
    ? list.join(", ")
    : `${list.slice(0, 12).join(", ")}, … (${list.length})`;
}

/** A readable account of a report, for test failure messages. */
export function format(report: Report): string {
  if (report.ok) return "ok: no violation";
  const lines: string[] = [];
  for (const v of report.overAdmissions) {
    lines.push(
      `over-admission: ${v.opId} on ${v.bucket}/${v.limit} admitted ${v.amountMilli} mtk, ` +
        `but the ideal balance is at most ${formatMilli(v.upperBound)} ` +
        `(best at t=${v.at} ms; slack ${formatMilli(v.slack)})`,
    );
  }
  for (const v of report.envelopes) {
    lines.push(
      `envelope: ${v.bucket}/${v.limit} in [${v.from}, ${v.to}] ms admitted ` +
        `${v.admittedMilli} mtk in ${v.opIds.length} acquires, at most ` +
        `${formatMilli(v.bound)} possible: ${ids(v.opIds)}`,
    );
  }
  for (const v of report.unjustifiedRefusals) {
    const what = v.reason === "covered"
      ? "every charge was covered throughout its interval"
      : "no charge exceeds the capacity";
    const charges = v.charges.map((c) =>
      `${c.bucket}/${c.limit} needs ${c.amountMilli}, lower bound ` +
      `${
        formatMilli(c.lowerBound)
      } (at t=${c.at}), capacity ≥ ${c.minCapacityMilli}, ` +
      `slack ${formatMilli(c.slack)}`
    );
    lines.push(
      `unjustified ${v.outcome}: ${v.opId}: ${what}: ${charges.join("; ")}`,
    );
  }
  for (const v of report.accounting) {
    lines.push(
      `accounting: ${v.bucket}/${v.limit} tc=${v.tcMilli} outside ` +
        `[${v.lowMilli}, ${v.highMilli}] (committed ${v.committedNetMilli}, ` +
        `ambiguous debits ${v.ambiguousDebitMilli}, ambiguous give-backs ${v.ambiguousGiveBackMilli})`,
    );
  }
  return lines.join("\n");
}
