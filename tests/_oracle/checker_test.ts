import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type AcquireOp,
  type AcquireOutcome,
  check,
  type CheckOptions,
  format,
  type History,
  type Operation,
  type Report,
} from "./checker.ts";
import { drive, type Driven, scenarioArb, widen, widthsArb } from "./drive.ts";
import {
  addRatio,
  compareRatio,
  limitKey,
  type LimitParams,
  type Ratio,
  ratio,
} from "./ideal.ts";

function assertOk(h: History, options?: CheckOptions): void {
  const r = check(h, options);
  assert.ok(r.ok, format(r));
}

function assertFlagged(h: History, options?: CheckOptions): Report {
  const r = check(h, options);
  assert.ok(!r.ok, "expected a violation");
  return r;
}

// ---------------------------------------------------------------------------
// Soundness: histories the ideal bucket produced are never flagged

Deno.test("sequential histories driven by the ideal bucket are never flagged", () => {
  fc.assert(
    fc.property(scenarioArb(), (sc) => assertOk(drive(sc).history)),
    { numRuns: 300 },
  );
});

Deno.test("concurrent histories (overlapping intervals around the true placement) are never flagged", () => {
  fc.assert(
    fc.property(scenarioArb(), widthsArb(), (sc, widths) => {
      assertOk(widen(drive(sc), widths));
    }),
    { numRuns: 300 },
  );
});

Deno.test("bursty concurrent histories without configs are never flagged", () => {
  fc.assert(
    fc.property(
      scenarioArb({ configs: false, maxSteps: 60 }),
      widthsArb(),
      (sc, widths) => assertOk(widen(drive(sc), widths)),
    ),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------
// Completeness: an extra admission the ideal bucket refused is flagged

/** |amount| of an operation on one limit if it changed (or may have changed) the balance. */
function effectOn(op: Operation, key: string): bigint {
  if (op.kind === "config") return 0n;
  const live = op.outcome === "admitted" || op.outcome === "error" ||
    op.outcome === "applied" || op.outcome === "ambiguous";
  if (!live) return 0n;
  let sum = 0n;
  for (const c of op.charges) {
    if (limitKey(c.bucket, c.limit) === key) sum += c.amountMilli;
  }
  return sum < 0n ? -sum : sum;
}

/**
 * A bound, independent of the checker, on how far any placement can raise
 * the balance before `x` above the true one (no configs on the limit): every
 * operation that is ambiguous, has a wide interval or sits inside x's
 * interval can add at most its amount (the ideal operations are monotone and
 * 1-Lipschitz), and x placed later than its true time gains at most the
 * refill of that time.
 */
function placementGap(
  h: History,
  d: Driven,
  x: AcquireOp,
  key: string,
  p: LimitParams,
): Ratio {
  let gap = 0n;
  for (const op of h.operations) {
    if (op.id === x.id) continue;
    const amount = effectOn(op, key);
    if (amount === 0n) continue;
    const ambiguous = op.kind !== "config" &&
      (op.outcome === "error" || op.outcome === "ambiguous");
    const at = d.placement.get(op.id) as bigint;
    const uncertain = ambiguous || op.start !== op.end ||
      (at >= x.start && at <= x.end);
    if (uncertain) gap += amount;
  }
  const late = (x.end - (d.placement.get(x.id) as bigint)) * p.ra;
  return addRatio(ratio(gap), ratio(late, p.rp));
}

/** Flips every refused acquire in turn; returns how many flips were clear enough to require a flag. */
function flipsAreFlagged(h: History, d: Driven): number {
  let asserted = 0;
  const configured = new Set(
    h.operations.flatMap((o) =>
      o.kind === "config" ? [limitKey(o.bucket, o.limit)] : []
    ),
  );
  for (const x of h.operations) {
    if (x.kind !== "acquire") continue;
    if (x.outcome !== "refused" && x.outcome !== "never_satisfiable") continue;
    const clear = x.charges.filter((c) => {
      const key = limitKey(c.bucket, c.limit);
      if (configured.has(key) || c.amountMilli === 0n) return false;
      const spec = h.limits.find((l) => limitKey(l.bucket, l.limit) === key);
      const before = d.before.get(x.id)?.get(key) as Ratio;
      const gap = placementGap(h, d, x, key, spec?.params as LimitParams);
      return compareRatio(addRatio(before, gap), ratio(c.amountMilli)) < 0;
    });
    if (clear.length === 0) continue;
    const flipped: History = {
      ...h,
      operations: h.operations.map((o) =>
        o.id === x.id ? { ...x, outcome: "admitted" as AcquireOutcome } : o
      ),
    };
    const r = check(flipped);
    for (const c of clear) {
      asserted++;
      assert.ok(
        r.overAdmissions.some((v) =>
          v.opId === x.id && v.bucket === c.bucket && v.limit === c.limit
        ),
        `${x.id} on ${c.bucket}/${c.limit} was not flagged:\n${format(r)}`,
      );
    }
  }
  return asserted;
}

Deno.test("an extra admission the ideal bucket refused is flagged (sequential)", () => {
  let asserted = 0;
  fc.assert(
    fc.property(scenarioArb(), (sc) => {
      const d = drive(sc);
      asserted += flipsAreFlagged(d.history, d);
    }),
    { numRuns: 200 },
  );
  assert.ok(asserted > 100, `only ${asserted} flips were checked`);
});

Deno.test("an extra admission the ideal bucket refused is flagged when clear of the placement freedom (concurrent)", () => {
  let asserted = 0;
  fc.assert(
    fc.property(
      scenarioArb({ configs: false }),
      widthsArb(),
      (sc, widths) => {
        const d = drive(sc);
        asserted += flipsAreFlagged(widen(d, widths), d);
      },
    ),
    { numRuns: 200 },
  );
  assert.ok(asserted > 100, `only ${asserted} flips were checked`);
});

// ---------------------------------------------------------------------------
// Concrete bug patterns

const B = "b";

function limit(
  params: LimitParams,
  balanceMilli?: bigint,
): History["limits"][number] {
  return balanceMilli === undefined
    ? { bucket: B, limit: "rpm", params }
    : { bucket: B, limit: "rpm", params, balanceMilli };
}

function acquire(
  id: string,
  start: bigint,
  end: bigint,
  amountMilli: bigint,
  outcome: AcquireOutcome,
): AcquireOp {
  return {
    kind: "acquire",
    id,
    start,
    end,
    charges: [{ bucket: B, limit: "rpm", amountMilli }],
    outcome,
  };
}

const PER_MINUTE_60: LimitParams = { cp: 60_000n, ra: 60_000n, rp: 60_000n };

Deno.test("(a) 109 of 120 one-token acquires within ~1 s after idling 61 s on 60/min are flagged", () => {
  const ops = Array.from({ length: 120 }, (_, i) => {
    const start = 61_000n + BigInt(i) * 8n;
    return acquire(
      `a${i}`,
      start,
      start + 20n,
      1000n,
      i < 109 ? "admitted" : "refused",
    );
  });
  const r = assertFlagged({ limits: [limit(PER_MINUTE_60)], operations: ops });
  const w = r.envelopes[0];
  assert.ok(w, format(r));
  assert.equal(w.admittedMilli > 100_000n, true, format(r));
  assert.match(format(r), /envelope: b\/rpm/);
});

Deno.test("(a') 61 of 120 simultaneous acquires (60 stored + 1 refilled) are fine", () => {
  const ops = Array.from({ length: 120 }, (_, i) =>
    acquire(
      `a${i}`,
      61_000n,
      62_000n,
      1000n,
      i < 61 ? "admitted" : "refused",
    ));
  assertOk({ limits: [limit(PER_MINUTE_60)], operations: ops });
  const more = ops.map((o, i) =>
    i === 61 ? { ...o, outcome: "admitted" as const } : o
  );
  assertFlagged({ limits: [limit(PER_MINUTE_60)], operations: more });
});

const TEN_PER_10S: LimitParams = { cp: 10_000n, ra: 10_000n, rp: 10_000n };

function giveBackAfterRefill(x: AcquireOp): History {
  return {
    limits: [limit(TEN_PER_10S)],
    operations: [
      acquire("lease", 0n, 5n, 10_000n, "admitted"),
      {
        kind: "adjust",
        id: "give-9",
        start: 30_000n,
        end: 30_010n,
        charges: [{ bucket: B, limit: "rpm", amountMilli: -9000n }],
        outcome: "applied",
      },
      x,
    ],
  };
}

Deno.test("(b) a give-back on a refilled bucket is capped: 15 tokens on capacity 10 is over-admission", () => {
  const r = assertFlagged(
    giveBackAfterRefill(acquire("x", 31_000n, 31_010n, 15_000n, "admitted")),
  );
  const v = r.overAdmissions.find((o) => o.opId === "x");
  assert.ok(v, format(r));
  assert.equal(compareRatio(v.upperBound, ratio(10_000n)), 0);
  assertOk(
    giveBackAfterRefill(
      acquire("x", 31_000n, 31_010n, 15_000n, "never_satisfiable"),
    ),
  );
  assertOk(
    giveBackAfterRefill(acquire("x", 31_000n, 31_010n, 15_000n, "refused")),
  );
  assertOk(
    giveBackAfterRefill(acquire("x", 31_000n, 31_010n, 10_000n, "admitted")),
  );
});

const TEN_PER_MINUTE: LimitParams = { cp: 10_000n, ra: 10_000n, rp: 60_000n };

function threeLeft(admitted: number): History {
  return {
    limits: [limit(TEN_PER_MINUTE, 3000n)],
    operations: Array.from({ length: 10 }, (_, i) =>
      acquire(
        `c${i}`,
        0n,
        100n,
        1000n,
        i < admitted ? "admitted" : "refused",
      )),
  };
}

Deno.test("(c) 4 of 10 concurrent one-token acquires on a bucket with 3 tokens are flagged", () => {
  const r = assertFlagged(threeLeft(4));
  assert.equal(r.envelopes[0]?.admittedMilli, 4000n, format(r));
  assertOk(threeLeft(3));
});

Deno.test("(d) a final tc that counts one acquire twice is flagged", () => {
  const ops = [
    acquire("d1", 0n, 10n, 1000n, "admitted"),
    acquire("d2", 5n, 20n, 2000n, "admitted"),
    acquire("d3", 15n, 30n, 3000n, "admitted"),
    acquire("d4", 15n, 30n, 500n, "error"),
  ];
  const h = (tcMilli: bigint): History => ({
    limits: [limit(PER_MINUTE_60)],
    operations: ops,
    finalConsumed: [{ bucket: B, limit: "rpm", tcMilli }],
  });
  assertOk(h(6000n));
  assertOk(h(6500n));
  const r = assertFlagged(h(9000n));
  assert.deepEqual(
    r.accounting.map((a) => [a.lowMilli, a.highMilli, a.tcMilli]),
    [[6000n, 6500n, 9000n]],
  );
  assertFlagged(h(5999n));
});

// ---------------------------------------------------------------------------
// Refusals

const HUNDRED: LimitParams = { cp: 100_000n, ra: 100_000n, rp: 60_000n };

Deno.test("a refusal while the lower bound is far above the request is flagged", () => {
  const h: History = {
    limits: [limit(HUNDRED)],
    operations: [acquire("r", 1000n, 1010n, 1000n, "refused")],
  };
  const r = assertFlagged(h);
  assert.equal(r.unjustifiedRefusals[0]?.reason, "covered", format(r));
  assert.match(format(r), /unjustified refused: r/);
  assertOk(h, { refusalSlackMilli: 100_000n });
});

Deno.test("a refusal during a burst that drained the bucket is not flagged", () => {
  const ops = Array.from({ length: 12 }, (_, i) =>
    acquire(
      `r${i}`,
      BigInt(i) * 3n,
      50n + BigInt(i) * 3n,
      1000n,
      i % 6 === 5 ? "refused" : "admitted",
    ));
  assertOk({ limits: [limit(TEN_PER_MINUTE)], operations: ops });
});

Deno.test("never_satisfiable is justified only by an amount above the capacity possibly in force", () => {
  const one = (amountMilli: bigint): History => ({
    limits: [limit(TEN_PER_MINUTE)],
    operations: [acquire("n", 10n, 20n, amountMilli, "never_satisfiable")],
  });
  assertOk(one(10_001n));
  const r = assertFlagged(one(10_000n));
  assert.equal(r.unjustifiedRefusals[0]?.reason, "within_capacity");
  const lowered: History = {
    limits: [limit({ ...TEN_PER_MINUTE, cp: 20_000n })],
    operations: [
      {
        kind: "config",
        id: "cfg",
        start: 0n,
        end: 15n,
        bucket: B,
        limit: "rpm",
        params: TEN_PER_MINUTE,
      },
      acquire("n", 10n, 20n, 15_000n, "never_satisfiable"),
    ],
  };
  assertOk(lowered);
  // The lowering may be placed at 20, just before the request placed at 20.
  const touching: History = {
    ...lowered,
    operations: [
      { ...(lowered.operations[0] as Operation), start: 20n, end: 30n },
      acquire("n", 10n, 20n, 15_000n, "never_satisfiable"),
    ],
  };
  assertOk(touching);
});

Deno.test("a give-back that may have been lost to the cap is not credited to the lower bound", () => {
  // Full bucket: the give-back may come at 0 and be capped away; the debit
  // at 500 then leaves ~5 tokens, so refusing 6 at 2000 is fine.
  const h: History = {
    limits: [limit(TEN_PER_MINUTE)],
    operations: [
      {
        kind: "rollback",
        id: "g",
        start: 0n,
        end: 1000n,
        charges: [{ bucket: B, limit: "rpm", amountMilli: 5000n }],
        outcome: "applied",
      },
      acquire("d", 500n, 500n, 5000n, "admitted"),
      acquire("x", 2000n, 2000n, 6000n, "refused"),
    ],
  };
  assertOk(h);
});

Deno.test("an admission is checked at a config's end inside its interval, before the clamp must have happened", () => {
  // Capacity 20 lowered to 5 somewhere in [10, 50]; the request may come
  // at 0..50, before the lowering, when 20 tokens were there.
  const h: History = {
    limits: [limit({ ...TEN_PER_MINUTE, cp: 20_000n })],
    operations: [
      {
        kind: "config",
        id: "lower",
        start: 10n,
        end: 50n,
        bucket: B,
        limit: "rpm",
        params: { ...TEN_PER_MINUTE, cp: 5000n },
      },
      acquire("x", 40n, 100n, 10_000n, "admitted"),
    ],
  };
  assertOk(h);
  const late = {
    ...h,
    operations: [
      h.operations[0] as Operation,
      acquire("x", 51n, 100n, 10_000n, "admitted"),
    ],
  };
  assertFlagged(late);
});

Deno.test("an admission is not credited a give-back that can only come after it", () => {
  const h = (giveStart: bigint): History => ({
    limits: [limit(TEN_PER_MINUTE)],
    operations: [
      acquire("drain", 0n, 0n, 10_000n, "admitted"),
      {
        kind: "rollback",
        id: "g",
        start: giveStart,
        end: 600n,
        charges: [{ bucket: B, limit: "rpm", amountMilli: 10_000n }],
        outcome: "applied",
      },
      acquire("x", 50n, 100n, 5000n, "admitted"),
    ],
  });
  const r = assertFlagged(h(101n));
  assert.deepEqual(r.overAdmissions.map((v) => v.opId), ["x"], format(r));
  assertOk(h(100n));
});

Deno.test("the envelope counts a give-back that straddles the window start once", () => {
  // 5 tokens, 5 more given back somewhere in [0, 200]: at most 10 (+ refill)
  // can be admitted in [100, 150], not 15.
  const burst = (n: number): History => ({
    limits: [limit(TEN_PER_MINUTE, 5000n)],
    operations: [
      {
        kind: "rollback",
        id: "g",
        start: 0n,
        end: 200n,
        charges: [{ bucket: B, limit: "rpm", amountMilli: 5000n }],
        outcome: "applied",
      },
      ...Array.from(
        { length: n },
        (_, i) => acquire(`x${i}`, 100n, 150n, 1000n, "admitted"),
      ),
    ],
  });
  assertOk(burst(10));
  const r = assertFlagged(burst(11));
  assert.equal(r.overAdmissions.length, 0);
  assert.equal(r.envelopes[0]?.admittedMilli, 11_000n, format(r));
});

Deno.test("a refusal while a lowered capacity may be in force is not flagged", () => {
  // Capacity 20 lowered to 5 somewhere in [10, 50]: 10 tokens at 20..30 may
  // meet the new capacity.
  const h: History = {
    limits: [limit({ ...TEN_PER_MINUTE, cp: 20_000n })],
    operations: [
      {
        kind: "config",
        id: "lower",
        start: 10n,
        end: 50n,
        bucket: B,
        limit: "rpm",
        params: { ...TEN_PER_MINUTE, cp: 5000n },
      },
      acquire("x", 20n, 30n, 10_000n, "refused"),
    ],
  };
  assertOk(h);
  assertFlagged({
    ...h,
    operations: [
      { ...(h.operations[0] as Operation), start: 31n },
      acquire("x", 20n, 30n, 10_000n, "refused"),
    ],
  });
});

Deno.test("a give-back is credited as late as its interval allows", () => {
  // The give-back may land at 500, after the drain at 100, not at 0 where
  // the full bucket would cap it away.
  const h: History = {
    limits: [limit(TEN_PER_MINUTE)],
    operations: [
      {
        kind: "rollback",
        id: "g",
        start: 0n,
        end: 500n,
        charges: [{ bucket: B, limit: "rpm", amountMilli: 5000n }],
        outcome: "applied",
      },
      acquire("drain", 100n, 100n, 10_000n, "admitted"),
      acquire("x", 600n, 600n, 5000n, "admitted"),
    ],
  };
  assertOk(h);
});

// ---------------------------------------------------------------------------
// Slack and input validation

Deno.test("slackMs credits rate × slackMs to every limit", () => {
  const perSecond: LimitParams = { cp: 10_000n, ra: 1000n, rp: 1000n };
  const h: History = {
    limits: [limit(perSecond, 0n)],
    operations: [acquire("s", 900n, 900n, 1000n, "admitted")],
  };
  const r = assertFlagged(h);
  assert.equal(
    compareRatio(r.overAdmissions[0]?.upperBound as Ratio, ratio(900n)),
    0,
  );
  assertFlagged(h, { slackMs: 99n });
  assertOk(h, { slackMs: 100n });
  assertOk(h, { slackMilli: () => 100n });
});

Deno.test("overlapping configs of one limit and unknown limits are rejected", () => {
  const cfg = (id: string, start: bigint, end: bigint): Operation => ({
    kind: "config",
    id,
    start,
    end,
    bucket: B,
    limit: "rpm",
    params: HUNDRED,
  });
  assert.throws(
    () =>
      check({
        limits: [limit(HUNDRED)],
        operations: [cfg("c1", 0n, 10n), cfg("c2", 10n, 20n)],
      }),
    /overlaps/,
  );
  assert.throws(
    () =>
      check({
        limits: [limit(HUNDRED)],
        operations: [{
          ...acquire("u", 0n, 1n, 1n, "admitted"),
          charges: [{ bucket: "nope", limit: "rpm", amountMilli: 1n }],
        }],
      }),
    /unknown limit/,
  );
});

Deno.test("an admission whose interval allows a refill or a config raise is not flagged", () => {
  const h: History = {
    limits: [limit(TEN_PER_MINUTE, 0n)],
    operations: [
      {
        kind: "config",
        id: "raise",
        start: 100n,
        end: 200n,
        bucket: B,
        limit: "rpm",
        params: { cp: 10_000n, ra: 10_000n, rp: 100n },
      },
      // At 5 ms the balance is tiny; by 300 ms the new rate filled the bucket.
      acquire("x", 5n, 300n, 9000n, "admitted"),
    ],
  };
  assertOk(h);
  assertFlagged({
    ...h,
    operations: [acquire("x", 5n, 300n, 9000n, "admitted")],
  });
});

Deno.test("settleFrom: a refusal is judged with the slower rate back to the settled refill, an admission is not", () => {
  // Empty at 0, 10 tokens a minute; at 30 s the rate drops to 1 a minute.
  // The ideal bucket holds 5 tokens at 31 s. A limiter that settles the
  // refill since its last refill write (0) under the slower rate holds 0.5.
  const slow: LimitParams = { cp: 10_000n, ra: 1000n, rp: 60_000n };
  const config = (settleFrom?: bigint): Operation => ({
    kind: "config",
    id: "slower",
    start: 30_000n,
    end: 30_100n,
    bucket: B,
    limit: "rpm",
    params: slow,
    ...(settleFrom === undefined ? {} : { settleFrom }),
  });
  const refused = acquire("x", 31_000n, 31_010n, 4000n, "refused");
  // Without settleFrom the refusal of 4 tokens is unjustified (5 were there).
  const r = assertFlagged({
    limits: [limit(TEN_PER_MINUTE, 0n)],
    operations: [config(), refused],
  });
  assert.equal(r.unjustifiedRefusals.length, 1);
  assertOk({
    limits: [limit(TEN_PER_MINUTE, 0n)],
    operations: [config(0n), refused],
  });
  // The over-admission bound keeps `start`: 6 tokens at 31 s are still too many.
  assertFlagged({
    limits: [limit(TEN_PER_MINUTE, 0n)],
    operations: [
      config(0n),
      acquire("y", 31_000n, 31_010n, 6000n, "admitted"),
    ],
  });
});

Deno.test("settleUntil: the slower rate of the lower bound lasts until the limiter's next refill write, the upper bound switches at end", () => {
  // Empty at 0, 1 token a minute; raised at 1 s (end 1.1 s) to 10 a
  // second. The ideal bucket holds about 9 tokens at 2 s. A limiter that
  // settles under the slower rate until its next refill write (at 5 s)
  // still holds a few hundredths of a token.
  const fast: LimitParams = { cp: 10_000n, ra: 10_000n, rp: 1000n };
  const config = (settleUntil?: bigint): Operation => ({
    kind: "config",
    id: "faster",
    start: 1000n,
    end: 1100n,
    bucket: B,
    limit: "rpm",
    params: fast,
    settleFrom: 0n,
    ...(settleUntil === undefined ? {} : { settleUntil }),
  });
  const slow = limit({ cp: 10_000n, ra: 1000n, rp: 60_000n }, 0n);
  const refused = acquire("x", 2000n, 2010n, 3000n, "refused");
  const r = assertFlagged({ limits: [slow], operations: [config(), refused] });
  assert.equal(r.unjustifiedRefusals.length, 1);
  assertOk({ limits: [slow], operations: [config(5000n), refused] });
  // After settleUntil the new rate counts again: a refusal at 7 s is flagged.
  assertFlagged({
    limits: [slow],
    operations: [
      config(5000n),
      acquire("z", 7000n, 7010n, 3000n, "refused"),
    ],
  });
  // The over-admission bound keeps end: 8 tokens at 2 s fit.
  assertOk({
    limits: [slow],
    operations: [
      config(5000n),
      acquire("y", 2000n, 2010n, 8000n, "admitted"),
    ],
  });
});
