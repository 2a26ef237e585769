/**
 * Test support: random histories made by driving the ideal bucket, so that
 * they are valid by construction (the checker must never flag them).
 *
 * Two buckets, `child` and `parent`, each with limits `rpm` and `tpm`. A
 * cascade acquire charges both buckets. Every operation is placed at a
 * distinct time (strictly increasing); {@linkcode drive} records it with
 * the interval [p, p] (a sequential history), {@linkcode widen} widens each
 * interval around its placement (a concurrent history whose intervals
 * overlap), keeping config intervals of one limit disjoint.
 *
 * @module
 */
import fc from "fast-check";
import type {
  AcquireOp,
  AcquireOutcome,
  EffectOutcome,
  History,
  LimitSpec,
  Operation,
} from "./checker.ts";
import {
  type Charge,
  IdealBuckets,
  limitKey,
  type LimitParams,
  type Ratio,
} from "./ideal.ts";

/** The buckets. */
export const BUCKETS = ["child", "parent"] as const;
/** The limits of every bucket. */
export const LIMITS = ["rpm", "tpm"] as const;

/** One generated step; the driver turns it into at most one operation. */
export type Step =
  | {
    readonly kind: "acquire";
    readonly gap: number;
    readonly cascade: boolean;
    readonly amounts: readonly [number, number];
    readonly fate: "plain" | "error" | "unchecked";
    readonly applyIfAmbiguous: boolean;
    readonly nsAsRefused: boolean;
  }
  | {
    readonly kind: "adjust";
    readonly gap: number;
    readonly lease: number;
    readonly amounts: readonly [number, number];
    readonly fate: EffectOutcome;
    readonly applyIfAmbiguous: boolean;
  }
  | {
    readonly kind: "rollback";
    readonly gap: number;
    readonly lease: number;
    readonly fate: EffectOutcome;
    readonly applyIfAmbiguous: boolean;
  }
  | {
    readonly kind: "config";
    readonly gap: number;
    readonly bucket: number;
    readonly limit: number;
    readonly params: LimitParams;
  };

/** A generated scenario: the limits and the steps. */
export interface Scenario {
  /** The four limits. */
  readonly limits: readonly LimitSpec[];
  /** The steps. */
  readonly steps: readonly Step[];
}

/** What to generate. */
export interface ScenarioOptions {
  /** Config changes (default true). */
  readonly configs?: boolean;
  /** Errors and ambiguous adjusts/rollbacks (default true). */
  readonly ambiguity?: boolean;
  /** Most steps (default 60). */
  readonly maxSteps?: number;
}

const paramsArb: fc.Arbitrary<LimitParams> = fc.record({
  cp: fc.oneof(
    fc.integer({ min: 1, max: 20 }).map((n) => BigInt(n) * 1000n),
    fc.integer({ min: 1, max: 20_000 }).map(BigInt),
  ),
  ra: fc.oneof(
    fc.integer({ min: 1, max: 20 }).map((n) => BigInt(n) * 1000n),
    fc.integer({ min: 1, max: 20_000 }).map(BigInt),
  ),
  rp: fc.constantFrom(1000n, 3000n, 7000n, 60_000n),
});

const amountArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: 3 }).map((n) => n * 1000), weight: 6 },
  { arbitrary: fc.integer({ min: 0, max: 25_000 }), weight: 1 },
);

const signedArb: fc.Arbitrary<number> = fc.integer({ min: -12, max: 12 }).map(
  (n) => n * 1000,
);

const gapArb: fc.Arbitrary<number> = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  fc.integer({ min: 0, max: 6000 }),
);

const limitSpecArb = (bucket: string, limit: string): fc.Arbitrary<LimitSpec> =>
  fc.record({
    params: paramsArb,
    fill: fc.option(fc.integer({ min: -100, max: 100 }), { nil: undefined }),
  }).map(({ params, fill }) =>
    fill === undefined ? { bucket, limit, params } : {
      bucket,
      limit,
      params,
      balanceMilli: (params.cp * BigInt(fill)) / 100n,
    }
  );

function stepArb(o: ScenarioOptions): fc.Arbitrary<Step> {
  const ambiguity = o.ambiguity ?? true;
  const effect: fc.Arbitrary<EffectOutcome> = ambiguity
    ? fc.constantFrom("applied", "applied", "failed", "ambiguous")
    : fc.constantFrom("applied", "applied", "failed");
  const acquire = fc.record({
    kind: fc.constant("acquire" as const),
    gap: gapArb,
    cascade: fc.boolean(),
    amounts: fc.tuple(amountArb, amountArb),
    fate: ambiguity
      ? fc.constantFrom(
        ...Array<"plain">(6).fill("plain"),
        "error" as const,
        "unchecked" as const,
      )
      : fc.constant("plain" as const),
    applyIfAmbiguous: fc.boolean(),
    nsAsRefused: fc.boolean(),
  });
  const adjust = fc.record({
    kind: fc.constant("adjust" as const),
    gap: gapArb,
    lease: fc.nat(),
    amounts: fc.tuple(signedArb, signedArb),
    fate: effect,
    applyIfAmbiguous: fc.boolean(),
  });
  const rollback = fc.record({
    kind: fc.constant("rollback" as const),
    gap: gapArb,
    lease: fc.nat(),
    fate: effect,
    applyIfAmbiguous: fc.boolean(),
  });
  const config = fc.record({
    kind: fc.constant("config" as const),
    gap: gapArb,
    bucket: fc.integer({ min: 0, max: 1 }),
    limit: fc.integer({ min: 0, max: 1 }),
    params: paramsArb,
  });
  const arbs: fc.WeightedArbitrary<Step>[] = [
    { arbitrary: acquire, weight: 6 },
    { arbitrary: adjust, weight: 2 },
    { arbitrary: rollback, weight: 1 },
  ];
  if (o.configs ?? true) arbs.push({ arbitrary: config, weight: 1 });
  return fc.oneof(...arbs);
}

/** Random scenarios. */
export function scenarioArb(o: ScenarioOptions = {}): fc.Arbitrary<Scenario> {
  return fc.record({
    limits: fc.tuple(
      ...BUCKETS.flatMap((b) => LIMITS.map((l) => limitSpecArb(b, l))),
    ),
    steps: fc.array(stepArb(o), {
      minLength: 1,
      maxLength: o.maxSteps ?? 60,
      size: "max",
    }),
  });
}

/** A history driven by the ideal bucket, and the truth behind it. */
export interface Driven {
  /** The sequential history (every interval [p, p]). */
  readonly history: History;
  /** The placement of every operation. */
  readonly placement: ReadonlyMap<string, bigint>;
  /** The ideal balance of every charged limit just before each acquire (by op id, then limit key). */
  readonly before: ReadonlyMap<string, ReadonlyMap<string, Ratio>>;
}

interface Lease {
  readonly buckets: readonly string[];
  readonly consumed: Map<string, Charge>;
}

class Driver {
  readonly ideal = new IdealBuckets(0n);
  readonly ops: Operation[] = [];
  readonly placement = new Map<string, bigint>();
  readonly before = new Map<string, Map<string, Ratio>>();
  readonly tc = new Map<string, bigint>();
  readonly leases: Lease[] = [];

  constructor(limits: readonly LimitSpec[]) {
    for (const s of limits) {
      this.ideal.define(s.bucket, s.limit, s.params, s.balanceMilli);
      this.tc.set(limitKey(s.bucket, s.limit), 0n);
    }
  }

  emit(op: Operation, t: bigint): void {
    this.ops.push(op);
    this.placement.set(op.id, t);
  }

  /** Debits positive amounts, gives back negative ones, counts tc. */
  apply(t: bigint, signed: readonly Charge[], lease?: Lease): void {
    const abs = (c: Charge): Charge => ({ ...c, amountMilli: -c.amountMilli });
    this.ideal.forceDebit(t, signed.filter((c) => c.amountMilli > 0n));
    this.ideal.giveBack(t, signed.filter((c) => c.amountMilli < 0n).map(abs));
    for (const c of signed) {
      const k = limitKey(c.bucket, c.limit);
      this.tc.set(k, (this.tc.get(k) ?? 0n) + c.amountMilli);
      if (!lease) continue;
      const prev = lease.consumed.get(k)?.amountMilli ?? 0n;
      lease.consumed.set(k, { ...c, amountMilli: prev + c.amountMilli });
    }
  }

  acquire(id: string, t: bigint, s: Step & { kind: "acquire" }): void {
    const buckets = s.cascade ? [...BUCKETS] : [BUCKETS[0]];
    const charges = charge(buckets, s.amounts);
    if (s.fate === "unchecked") {
      this.emit(acquireOp(id, t, charges, "unchecked"), t);
      return;
    }
    this.before.set(
      id,
      new Map(charges.map((c) => [
        limitKey(c.bucket, c.limit),
        this.ideal.balance(c.bucket, c.limit, t),
      ])),
    );
    const verdict = this.ideal.verdict(t, charges);
    let outcome: AcquireOutcome = verdict;
    if (verdict === "never_satisfiable" && s.nsAsRefused) outcome = "refused";
    if (s.fate === "error") outcome = "error";
    const applies = verdict === "admitted" &&
      (s.fate === "plain" || s.applyIfAmbiguous);
    if (applies) {
      const lease = { buckets, consumed: new Map<string, Charge>() };
      this.apply(t, charges, lease);
      if (s.fate === "plain") this.leases.push(lease);
    }
    this.emit(acquireOp(id, t, charges, outcome), t);
  }

  adjust(id: string, t: bigint, s: Step & { kind: "adjust" }): void {
    const lease = this.leases[s.lease % this.leases.length];
    if (!lease) return;
    const charges = charge(lease.buckets, s.amounts);
    if (charges.length === 0) return;
    if (applies(s.fate, s.applyIfAmbiguous)) this.apply(t, charges, lease);
    this.emit({
      kind: "adjust",
      id,
      start: t,
      end: t,
      charges,
      outcome: s.fate,
    }, t);
  }

  rollback(id: string, t: bigint, s: Step & { kind: "rollback" }): void {
    const i = s.lease % Math.max(1, this.leases.length);
    const lease = this.leases[i];
    if (!lease) return;
    this.leases.splice(i, 1);
    const back = [...lease.consumed.values()].filter((c) => c.amountMilli > 0n);
    if (back.length === 0) return;
    if (applies(s.fate, s.applyIfAmbiguous)) {
      this.apply(t, back.map((c) => ({ ...c, amountMilli: -c.amountMilli })));
    }
    this.emit(
      {
        kind: "rollback",
        id,
        start: t,
        end: t,
        charges: back,
        outcome: s.fate,
      },
      t,
    );
  }

  config(id: string, t: bigint, s: Step & { kind: "config" }): void {
    const bucket = BUCKETS[s.bucket] as string;
    const limit = LIMITS[s.limit] as string;
    this.ideal.setParams(t, bucket, limit, s.params);
    this.emit(
      { kind: "config", id, start: t, end: t, bucket, limit, params: s.params },
      t,
    );
  }
}

function applies(fate: EffectOutcome, applyIfAmbiguous: boolean): boolean {
  return fate === "applied" || (fate === "ambiguous" && applyIfAmbiguous);
}

function charge(
  buckets: readonly string[],
  amounts: readonly [number, number],
): Charge[] {
  return buckets.flatMap((bucket) =>
    LIMITS.map((limit, i) => ({
      bucket,
      limit,
      amountMilli: BigInt(amounts[i] ?? 0),
    }))
  ).filter((c) => c.amountMilli !== 0n);
}

function acquireOp(
  id: string,
  t: bigint,
  charges: Charge[],
  outcome: AcquireOutcome,
): AcquireOp {
  return { kind: "acquire", id, start: t, end: t, charges, outcome };
}

/** Runs a scenario on the ideal bucket: a valid sequential history. */
export function drive(scenario: Scenario): Driven {
  const d = new Driver(scenario.limits);
  let t = 0n;
  scenario.steps.forEach((s, i) => {
    t += 1n + BigInt(s.gap);
    const id = `op${i}`;
    if (s.kind === "acquire") d.acquire(id, t, s);
    else if (s.kind === "adjust") d.adjust(id, t, s);
    else if (s.kind === "rollback") d.rollback(id, t, s);
    else d.config(id, t, s);
  });
  const finalConsumed = [...scenario.limits].map((s) => ({
    bucket: s.bucket,
    limit: s.limit,
    tcMilli: d.tc.get(limitKey(s.bucket, s.limit)) ?? 0n,
  }));
  return {
    history: {
      t0: 0n,
      limits: scenario.limits,
      operations: d.ops,
      finalConsumed,
    },
    placement: d.placement,
    before: d.before,
  };
}

/** How far each interval reaches before and after its placement. */
export type Widths = readonly (readonly [number, number])[];

/** Random widths (cycled over the operations). */
export function widthsArb(): fc.Arbitrary<Widths> {
  const w = fc.oneof(
    fc.constant(0),
    fc.integer({ min: 0, max: 30 }),
    fc.integer({ min: 0, max: 3000 }),
  );
  return fc.array(fc.tuple(w, w), { minLength: 1, maxLength: 16 });
}

/**
 * A concurrent history: each interval [p − before, p + after] (not before
 * t0), config intervals of one limit cut at the midpoints between their
 * placements so that they stay disjoint.
 */
export function widen(d: Driven, widths: Widths): History {
  const lastConfig = new Map<string, { i: number; p: bigint }>();
  const ops = d.history.operations.map((op, i) => {
    const p = d.placement.get(op.id) as bigint;
    const [lo, hi] = widths[i % widths.length] ?? [0, 0];
    const start = p - BigInt(lo);
    return { ...op, start: start < 0n ? 0n : start, end: p + BigInt(hi) };
  });
  ops.forEach((op, i) => {
    if (op.kind !== "config") return;
    const k = limitKey(op.bucket, op.limit);
    const p = d.placement.get(op.id) as bigint;
    const prev = lastConfig.get(k);
    if (prev) {
      const mid = (prev.p + p) / 2n;
      const before = ops[prev.i] as Operation;
      if (before.end > mid) ops[prev.i] = { ...before, end: mid };
      if (op.start <= mid) ops[i] = { ...op, start: mid + 1n };
    }
    lastConfig.set(k, { i, p });
  });
  return { ...d.history, operations: ops };
}
