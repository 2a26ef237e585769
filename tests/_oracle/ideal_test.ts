import assert from "node:assert/strict";
import fc from "fast-check";
import {
  addRatio,
  type Charge,
  compareRatio,
  formatMilli,
  IdealBuckets,
  IdealLimit,
  type LimitParams,
  minRatio,
  type Ratio,
  ratio,
  subRatio,
} from "./ideal.ts";

const paramsArb: fc.Arbitrary<LimitParams> = fc.record({
  cp: fc.integer({ min: 1, max: 50_000 }).map(BigInt),
  ra: fc.integer({ min: 1, max: 50_000 }).map(BigInt),
  rp: fc.constantFrom(1n, 7n, 1000n, 3000n, 60_000n),
});

/** Params and an initial balance in [−cp, cp]. */
const limitArb = paramsArb.chain((p) =>
  fc.record({
    params: fc.constant(p),
    initial: fc.bigInt({ min: -p.cp, max: p.cp }),
  })
);

const timesArb = fc.array(fc.integer({ min: 0, max: 100_000 }), {
  maxLength: 12,
}).map((xs) => xs.map(BigInt).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));

/** min(cp, b + Δ·ra/rp), the closed form. */
function closedForm(p: LimitParams, b: Ratio, dt: bigint): Ratio {
  return minRatio(ratio(p.cp), addRatio(b, ratio(dt * p.ra, p.rp)));
}

const eq = (a: Ratio, b: Ratio): boolean => compareRatio(a, b) === 0;

type Op =
  | { readonly kind: "debit"; readonly dt: bigint; readonly amount: bigint }
  | { readonly kind: "give"; readonly dt: bigint; readonly amount: bigint }
  | { readonly kind: "params"; readonly dt: bigint; readonly p: LimitParams };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("debit" as const),
    dt: fc.bigInt({ min: 0n, max: 20_000n }),
    amount: fc.bigInt({ min: 0n, max: 30_000n }),
  }),
  fc.record({
    kind: fc.constant("give" as const),
    dt: fc.bigInt({ min: 0n, max: 20_000n }),
    amount: fc.bigInt({ min: 0n, max: 30_000n }),
  }),
  fc.record({
    kind: fc.constant("params" as const),
    dt: fc.bigInt({ min: 0n, max: 20_000n }),
    p: paramsArb,
  }),
);

/** Applies the ops; returns the balance after each, with the capacity then in force. */
function run(l: IdealLimit, ops: readonly Op[]): [Ratio, bigint][] {
  const out: [Ratio, bigint][] = [];
  let t = l.time;
  for (const o of ops) {
    t += o.dt;
    if (o.kind === "debit") l.forceDebit(t, o.amount);
    else if (o.kind === "give") l.giveBack(t, o.amount);
    else l.setParams(t, o.p);
    out.push([l.balance(), l.params.cp]);
  }
  return out;
}

Deno.test("refill is the exact closed form min(cp, b0 + Δ·ra/rp), whatever the steps", () => {
  fc.assert(fc.property(limitArb, timesArb, ({ params, initial }, times) => {
    const stepped = new IdealLimit(params, 0n, initial);
    for (const t of times) {
      stepped.advance(t);
      assert.ok(eq(stepped.balance(), closedForm(params, ratio(initial), t)));
    }
    const end = (times[times.length - 1] ?? 0n) + 1234n;
    const once = new IdealLimit(params, 0n, initial);
    assert.ok(eq(once.balance(end), stepped.balance(end)));
    assert.ok(compareRatio(once.balance(end), ratio(params.cp)) <= 0);
  }));
});

Deno.test("starts full by default and never exceeds capacity", () => {
  fc.assert(
    fc.property(paramsArb, fc.array(opArb, { maxLength: 20 }), (p, ops) => {
      const l = new IdealLimit(p, 0n);
      assert.ok(eq(l.balance(), ratio(p.cp)));
      for (const [b, cp] of run(l, ops)) {
        assert.ok(compareRatio(b, ratio(cp)) <= 0);
      }
    }),
  );
});

Deno.test("giveBack is capped, forceDebit may go into debt, setParams clamps", () => {
  fc.assert(
    fc.property(limitArb, opArb, ({ params, initial }, o) => {
      const l = new IdealLimit(params, 0n, initial);
      const t = o.dt;
      const before = l.balance(t);
      if (o.kind === "debit") {
        l.forceDebit(t, o.amount);
        assert.ok(eq(l.balance(), subRatio(before, ratio(o.amount))));
      } else if (o.kind === "give") {
        l.giveBack(t, o.amount);
        assert.ok(
          eq(
            l.balance(),
            minRatio(ratio(params.cp), addRatio(before, ratio(o.amount))),
          ),
        );
      } else {
        l.setParams(t, o.p);
        assert.ok(eq(l.balance(), minRatio(ratio(o.p.cp), before)));
        // The new rate applies from now on, exactly.
        assert.ok(eq(l.balance(t + 777n), closedForm(o.p, l.balance(), 777n)));
      }
    }),
  );
});

Deno.test("every operation is monotone and 1-Lipschitz in the balance (the checker's proofs rely on it)", () => {
  fc.assert(
    fc.property(
      paramsArb.chain((p) =>
        fc.tuple(
          fc.constant(p),
          fc.bigInt({ min: -p.cp, max: p.cp }),
          fc.bigInt({ min: -p.cp, max: p.cp }),
        )
      ),
      fc.array(opArb, { maxLength: 15 }),
      ([p, x, y], ops) => {
        const [lo, hi] = x <= y ? [x, y] : [y, x];
        const a = run(new IdealLimit(p, 0n, lo), ops);
        const b = run(new IdealLimit(p, 0n, hi), ops);
        a.forEach(([ai], i) => {
          const bi = (b[i] as [Ratio, bigint])[0];
          assert.ok(compareRatio(ai, bi) <= 0);
          assert.ok(compareRatio(subRatio(bi, ai), ratio(hi - lo)) <= 0);
        });
      },
    ),
  );
});

Deno.test("a debit moved earlier, or a give-back moved later, never lowers the final balance", () => {
  fc.assert(
    fc.property(
      limitArb,
      fc.array(opArb, { minLength: 1, maxLength: 12 }),
      fc.nat(),
      fc.nat(),
      ({ params, initial }, ops, i0, j0) => {
        const i = i0 % ops.length;
        const j = j0 % ops.length;
        const o = ops[i] as Op;
        if (o.kind === "params" || i === j) return;
        // Move op i to just after op j (same absolute time as j).
        const times: bigint[] = [];
        let t = 0n;
        for (const x of ops) times.push(t += x.dt);
        const timed = ops.map((x, k) => ({ x, t: times[k] as bigint }));
        const moved = timed.filter((_, k) => k !== i);
        const at = moved.findIndex((m) => m === timed[j]) + 1;
        moved.splice(at, 0, { x: o, t: times[j] as bigint });
        const final = (seq: typeof timed): Ratio => {
          const l = new IdealLimit(params, 0n, initial);
          for (const { x, t } of seq) {
            if (x.kind === "debit") l.forceDebit(t, x.amount);
            else if (x.kind === "give") l.giveBack(t, x.amount);
            else l.setParams(t, x.p);
          }
          return l.balance(times[times.length - 1] as bigint);
        };
        const earlier = j < i;
        const favourable = (o.kind === "debit") === earlier;
        const c = compareRatio(final(moved), final(timed));
        assert.ok(favourable ? c >= 0 : c <= 0);
      },
    ),
  );
});

Deno.test("tryAdmit is all or nothing across buckets and limits", () => {
  const keys = [["child", "rpm"], ["child", "tpm"], ["parent", "rpm"]] as const;
  fc.assert(
    fc.property(
      fc.tuple(limitArb, limitArb, limitArb),
      fc.array(fc.bigInt({ min: 0n, max: 60_000n }), {
        minLength: 3,
        maxLength: 3,
      }),
      fc.bigInt({ min: 0n, max: 10_000n }),
      (limits, amounts, t) => {
        const ideal = new IdealBuckets();
        keys.forEach(([b, l], i) => {
          const spec = limits[i] as { params: LimitParams; initial: bigint };
          ideal.define(b, l, spec.params, spec.initial);
        });
        const charges: Charge[] = keys.map(([bucket, limit], i) => ({
          bucket,
          limit,
          amountMilli: amounts[i] as bigint,
        }));
        const before = keys.map(([b, l]) => ideal.balance(b, l, t));
        const never = charges.some((c, i) =>
          c.amountMilli > 0n && c.amountMilli > (limits[i]?.params.cp ?? 0n)
        );
        const fits = charges.every((c, i) =>
          c.amountMilli === 0n ||
          compareRatio(before[i] as Ratio, ratio(c.amountMilli)) >= 0
        );
        const verdict = ideal.verdict(t, charges);
        assert.equal(
          verdict,
          never ? "never_satisfiable" : fits ? "admitted" : "refused",
        );
        const admitted = ideal.tryAdmit(t, charges);
        assert.equal(admitted, verdict === "admitted");
        keys.forEach(([b, l], i) => {
          const expected = admitted
            ? subRatio(before[i] as Ratio, ratio(amounts[i] as bigint))
            : before[i] as Ratio;
          assert.ok(eq(ideal.balance(b, l), expected));
        });
      },
    ),
  );
});

Deno.test("a zero charge fits even in debt; a charge above capacity never fits", () => {
  const ideal = new IdealBuckets();
  ideal.define("b", "rpm", { cp: 10_000n, ra: 1n, rp: 60_000n }, -5000n);
  assert.equal(
    ideal.tryAdmit(0n, [{ bucket: "b", limit: "rpm", amountMilli: 0n }]),
    true,
  );
  ideal.setParams(1n, "b", "rpm", { cp: 10_000n, ra: 10_000n, rp: 1n });
  assert.equal(
    ideal.verdict(100n, [{ bucket: "b", limit: "rpm", amountMilli: 10_001n }]),
    "never_satisfiable",
  );
  assert.equal(
    ideal.tryAdmit(100n, [{ bucket: "b", limit: "rpm", amountMilli: 10_000n }]),
    true,
  );
  assert.throws(() => ideal.advance(99n), /time went back/);
});

Deno.test("the lease pattern: a give-back on a refilled bucket does not exceed capacity", () => {
  const ideal = new IdealBuckets();
  ideal.define("b", "rpm", { cp: 10_000n, ra: 10_000n, rp: 10_000n });
  const c = (amountMilli: bigint): Charge[] => [
    { bucket: "b", limit: "rpm", amountMilli },
  ];
  assert.ok(ideal.tryAdmit(0n, c(10_000n)));
  ideal.advance(30_000n);
  ideal.giveBack(30_000n, c(9000n));
  assert.ok(eq(ideal.balance("b", "rpm"), ratio(10_000n)));
  assert.equal(ideal.verdict(31_000n, c(15_000n)), "never_satisfiable");
});

Deno.test("ratios are exact and print readably", () => {
  const third = ratio(1n, 3n);
  assert.ok(eq(addRatio(addRatio(third, third), third), ratio(1n)));
  assert.deepEqual(ratio(4n, -6n), { num: -2n, den: 3n });
  assert.equal(formatMilli(ratio(7n)), "7");
  assert.equal(formatMilli(ratio(-5n, 3n)), "≈-1.666");
});
