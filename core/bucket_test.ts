import assert from "node:assert/strict";
import {
  type BucketParams,
  bucketTtlSeconds,
  floorDiv,
  paramsOf,
  refill,
  retryAfterSeconds,
  timeUntil,
  tryConsume,
  wholeTokens,
} from "./bucket.ts";
import { Limit } from "./limit.ts";
import { seededRandom } from "../dev/_seeded_random.ts";

// The property-style loops use a seeded PRNG, so they are reproducible: a
// failure prints the seed and iteration.

/** Uniform integer in [lo, hi] (inclusive), as a bigint. */
function randInt(rand: () => number, lo: number, hi: number): bigint {
  return BigInt(lo + Math.floor(rand() * (hi - lo + 1)));
}

function params(cp: bigint, ra: bigint, rp: bigint): BucketParams {
  return { cp, ra, rp };
}

// ---------------------------------------------------------------------------
// floorDiv / wholeTokens

Deno.test("floorDiv() matches Python's // for every sign combination", () => {
  // [a, b, a // b as evaluated by Python]
  const cases: [bigint, bigint, bigint][] = [
    [-1500n, 1000n, -2n],
    [1500n, 1000n, 1n],
    [-1000n, 1000n, -1n],
    [-1n, 1000n, -1n],
    [-999n, 1000n, -1n],
    [-1001n, 1000n, -2n],
    [0n, 1000n, 0n],
    [999n, 1000n, 0n],
    [7n, 2n, 3n],
    [-7n, 2n, -4n],
    [7n, -2n, -4n],
    [-7n, -2n, 3n],
    [1500n, -1000n, -2n],
    [-1500n, -1000n, 1n],
    [6n, -3n, -2n],
    [-6n, 3n, -2n],
  ];
  for (const [a, b, expected] of cases) {
    assert.equal(floorDiv(a, b), expected, `${a} // ${b}`);
  }
});

Deno.test("floorDiv() leaves a remainder with the divisor's sign for random operands", () => {
  const rand = seededRandom(0xf1004);
  for (let i = 0; i < 5000; i++) {
    const a = randInt(rand, -1_000_000, 1_000_000);
    let b = randInt(rand, -5000, 5000);
    if (b === 0n) b = 1n;
    const q = floorDiv(a, b);
    const r = a - q * b;
    // Python's definition: a == q*b + r with 0 <= r < b (b > 0) or b < r <= 0 (b < 0).
    if (b > 0n) {
      assert.ok(
        r >= 0n && r < b,
        `iteration ${i}: ${a} // ${b} = ${q}, remainder ${r}`,
      );
    } else {assert.ok(
        r <= 0n && r > b,
        `iteration ${i}: ${a} // ${b} = ${q}, remainder ${r}`,
      );}
  }
});

Deno.test("floorDiv() stays exact above 2^53", () => {
  const a = -(2n ** 70n) - 1n;
  assert.equal(floorDiv(a, 2n), -(2n ** 69n) - 1n);
  assert.equal(floorDiv(2n ** 70n + 1n, 2n), 2n ** 69n);
});

Deno.test("wholeTokens() floors millitokens toward negative infinity", () => {
  assert.equal(wholeTokens(-1500n), -2);
  assert.equal(wholeTokens(-1000n), -1);
  assert.equal(wholeTokens(-1n), -1);
  assert.equal(wholeTokens(0n), 0);
  assert.equal(wholeTokens(999n), 0);
  assert.equal(wholeTokens(1000n), 1);
  assert.equal(wholeTokens(1999n), 1);
});

// ---------------------------------------------------------------------------
// paramsOf

Deno.test("paramsOf() converts a limit to millitokens and milliseconds", () => {
  assert.deepEqual(paramsOf(Limit.perMinute("rpm", 100)), {
    cp: 100_000n,
    ra: 100_000n,
    rp: 60_000n,
  });
  assert.deepEqual(paramsOf(Limit.perSecond("rps", 5, { burst: 20 })), {
    cp: 20_000n,
    ra: 5000n,
    rp: 1000n,
  });
  assert.deepEqual(paramsOf(Limit.custom("x", 1000, 10, 60)), {
    cp: 1_000_000n,
    ra: 10_000n,
    rp: 60_000n,
  });
});

Deno.test("paramsOf() divides capacity and refill amount (not the period) across shards", () => {
  const limit = Limit.custom("x", 1000, 10, 60);
  assert.deepEqual(paramsOf(limit, 4), {
    cp: 250_000n,
    ra: 2500n,
    rp: 60_000n,
  });
  // cp // 3 and ra // 3 on the millitoken values: 1_000_000 // 3, 10_000 // 3.
  assert.deepEqual(paramsOf(limit, 3), {
    cp: 333_333n,
    ra: 3333n,
    rp: 60_000n,
  });
  assert.deepEqual(paramsOf(limit, 1), paramsOf(limit));
});

Deno.test("paramsOf() treats a shard count below 1 as one shard", () => {
  const limit = Limit.custom("x", 1000, 10, 60);
  assert.deepEqual(paramsOf(limit, 0), paramsOf(limit, 1));
  assert.deepEqual(paramsOf(limit, -4), paramsOf(limit, 1));
});

Deno.test("paramsOf() never yields a zero capacity or refill amount when over-sharded", () => {
  // 1 token = 1000 millitokens; 1000 // 2000 would be 0 and make refill divide by zero.
  const p = paramsOf(Limit.custom("x", 1, 1, 1), 2000);
  assert.equal(p.cp, 1n);
  assert.equal(p.ra, 1n);
  assert.equal(p.rp, 1000n);
});

// ---------------------------------------------------------------------------
// refill

const RPM_100 = params(100_000n, 100_000n, 60_000n); // per_minute("rpm", 100)

Deno.test("refill() returns the state unchanged when no time has elapsed", () => {
  assert.deepEqual(refill(40_000n, 5000n, 5000n, RPM_100), {
    tk: 40_000n,
    rf: 5000n,
  });
});

Deno.test("refill() returns the state unchanged when the clock is behind the last refill", () => {
  assert.deepEqual(refill(40_000n, 5000n, 4000n, RPM_100), {
    tk: 40_000n,
    rf: 5000n,
  });
});

Deno.test("refill() adds elapsed*ra//rp millitokens for a partial period", () => {
  // 30 s of a 100-per-minute limit is 50 tokens = 50_000 millitokens.
  assert.deepEqual(refill(0n, 0n, 30_000n, RPM_100), {
    tk: 50_000n,
    rf: 30_000n,
  });
  // 1 s → 100_000 * 1000 // 60_000 = 1666 millitokens, which took 1666 * 60_000 / 100_000 = 999.6 ms,
  // credited rounded up (1000 ms) so the fraction is never paid out twice.
  assert.deepEqual(refill(0n, 0n, 1000n, RPM_100), { tk: 1666n, rf: 1000n });
});

Deno.test("refill() keeps the last refill time when less than one millitoken accrued", () => {
  // 1 token per minute = 1 millitoken every 60 ms.
  const p = params(1000n, 1000n, 60_000n);
  assert.deepEqual(refill(0n, 100n, 159n, p), { tk: 0n, rf: 100n });
  assert.deepEqual(refill(0n, 100n, 160n, p), { tk: 1n, rf: 160n });
});

Deno.test("refill() advances the last refill time only by the time that produced whole millitokens", () => {
  // 1 millitoken per 60 ms; after 100 ms one millitoken exists and 40 ms are carried over.
  const p = params(1000n, 1000n, 60_000n);
  assert.deepEqual(refill(0n, 0n, 100n, p), { tk: 1n, rf: 60n });
  // The carried 40 ms count towards the next millitoken: 20 more ms are enough.
  assert.deepEqual(refill(1n, 60n, 120n, p), { tk: 2n, rf: 120n });
});

Deno.test("refill() caps the balance at capacity", () => {
  assert.deepEqual(refill(99_000n, 0n, 60_000n, RPM_100), {
    tk: 100_000n,
    rf: 60_000n,
  });
  assert.equal(refill(100_000n, 0n, 600_000n, RPM_100).tk, 100_000n);
});

Deno.test("refill() refills a negative (debt) balance at the normal rate", () => {
  // 1 token per second; 3.5 s after going 5 tokens into debt.
  const p = params(10_000n, 1000n, 1000n);
  assert.deepEqual(refill(-5000n, 0n, 3500n, p), { tk: -1500n, rf: 3500n });
  assert.deepEqual(refill(-5000n, 0n, 20_000n, p), {
    tk: 10_000n,
    rf: 20_000n,
  });
});

Deno.test("refill() clamps a balance above capacity down to capacity when any refill happens", () => {
  // Capacity was lowered from 200 to 100 tokens after the bucket filled.
  assert.deepEqual(refill(200_000n, 0n, 1000n, RPM_100), {
    tk: 100_000n,
    rf: 1000n,
  });
});

Deno.test("refill() leaves a balance above capacity alone when nothing refills", () => {
  assert.deepEqual(refill(200_000n, 0n, 0n, RPM_100), { tk: 200_000n, rf: 0n });
  const slow = params(1000n, 1000n, 60_000n);
  assert.deepEqual(refill(5000n, 0n, 59n, slow), { tk: 5000n, rf: 0n });
});

Deno.test("refill() never exceeds capacity and never moves past now for random inputs", () => {
  const rand = seededRandom(20240115);
  for (let i = 0; i < 20_000; i++) {
    const cp = randInt(rand, 1, 5_000_000);
    const ra = randInt(rand, 1, 5_000_000);
    const rp = randInt(rand, 1, 100_000_000);
    const p = params(cp, ra, rp);
    // Balances from deep debt to twice the capacity; elapsed from negative to ~3 days.
    const tk = randInt(rand, -10_000_000, 2 * Number(cp));
    const rf = randInt(rand, 0, 1_700_000_000_000);
    const now = rf + randInt(rand, -1000, 300_000_000);
    const r = refill(tk, rf, now, p);
    const where =
      `iteration ${i}: tk=${tk} rf=${rf} now=${now} cp=${cp} ra=${ra} rp=${rp}`;

    if (tk <= cp) assert.ok(r.tk <= cp, `${where}: ${r.tk} > capacity`);
    else {assert.ok(
        r.tk === tk || r.tk === cp,
        `${where}: above-capacity balance became ${r.tk}`,
      );}
    assert.ok(
      r.tk >= (tk < cp ? tk : cp),
      `${where}: refill lost tokens (${r.tk})`,
    );
    assert.ok(r.rf >= rf, `${where}: rf moved backwards to ${r.rf}`);
    if (now > rf) assert.ok(r.rf <= now, `${where}: rf ${r.rf} is after now`);
    else assert.deepEqual(r, { tk, rf }, where);
    // The credited time and the added tokens agree with the rate:
    // add = elapsed*ra//rp, and rf advanced by add*rp//ra.
    const add = now > rf ? ((now - rf) * ra) / rp : 0n;
    assert.equal(r.rf - rf, add === 0n ? 0n : (add * rp + ra - 1n) / ra, where);
    if (tk + add <= cp) assert.equal(r.tk, tk + add, where);
  }
});

Deno.test("refill() over many small steps equals one big step when the rate is a whole number of ms per millitoken or millitokens per ms", () => {
  const rand = seededRandom(7);
  for (let i = 0; i < 2000; i++) {
    // Either rp is a multiple of ra (e.g. 1 token/min) or ra of rp (e.g. 5 tokens/s).
    const base = randInt(rand, 1, 5000);
    const k = randInt(rand, 1, 60);
    const [ra, rp] = rand() < 0.5 ? [base, base * k] : [base * k, base];
    const p = params(10n ** 30n, ra, rp); // no capacity in the way
    const start = randInt(rand, -1_000_000, 0);
    let tk = start;
    let rf = 1_000n;
    let now = rf;
    const steps = 1 + Number(randInt(rand, 0, 200));
    for (let s = 0; s < steps; s++) {
      now += randInt(rand, 0, 500);
      ({ tk, rf } = refill(tk, rf, now, p));
    }
    assert.deepEqual(
      { tk, rf },
      refill(start, 1_000n, now, p),
      `iteration ${i}: ra=${ra} rp=${rp}`,
    );
  }
});

Deno.test("refill() over many small steps never over-credits and loses less than 1 ms of refill per step", () => {
  // With rates like 100 tokens/min (ra=100_000, rp=60_000) neither divides the
  // other; `used = ceil(add*rp/ra)` rounds the credited time up, so refill in
  // steps never exceeds refill in one step (no over-admission), and each step
  // forgoes less than 1 ms of refill.
  const rand = seededRandom(99);
  for (let i = 0; i < 5000; i++) {
    const ra = randInt(rand, 1, 200_000);
    const rp = randInt(rand, 1, 200_000);
    const p = params(10n ** 30n, ra, rp);
    let tk = 0n;
    let rf = 0n;
    let now = 0n;
    const steps = 1 + Number(randInt(rand, 0, 100));
    for (let s = 0; s < steps; s++) {
      now += randInt(rand, 0, 1000);
      ({ tk, rf } = refill(tk, rf, now, p));
    }
    const once = refill(0n, 0n, now, p);
    const where = `iteration ${i}: ra=${ra} rp=${rp} steps=${steps}`;
    assert.ok(tk <= once.tk, `${where}: ${tk} > ${once.tk}`);
    // once.tk - tk < steps*ra/rp + 1
    assert.ok(
      (once.tk - tk - 1n) * rp < BigInt(steps) * ra,
      `${where}: under-credit ${once.tk - tk}`,
    );
  }
});

Deno.test("refill() over 60 one-second steps gives exactly one minute of refill for 60 tokens per minute", () => {
  const p = paramsOf(Limit.perMinute("rpm", 60));
  let tk = 0n;
  let rf = 0n;
  for (let now = 1000n; now <= 60_000n; now += 1000n) {
    ({ tk, rf } = refill(tk, rf, now, p));
  }
  assert.deepEqual({ tk, rf }, { tk: 60_000n, rf: 60_000n });
});

Deno.test("refill() stays exact when elapsed*ra exceeds 2^53", () => {
  // elapsed * ra // rp = 3 * (2^60 + 1) // 3 = 2^60 + 1, which a float cannot hold.
  const ra = 2n ** 60n + 1n;
  const p = params(2n ** 62n, ra, 3n);
  assert.deepEqual(refill(0n, 0n, 3n, p), {
    tk: 1_152_921_504_606_846_977n,
    rf: 3n,
  });
  // A realistic case: a bucket idle since the epoch at 1e9 tokens per second.
  const big = params(10n ** 30n, 10n ** 12n, 1000n);
  const now = 1_700_000_000_123n;
  assert.deepEqual(refill(0n, 0n, now, big), {
    tk: 1_700_000_000_123_000_000_000n,
    rf: now,
  });
});

// ---------------------------------------------------------------------------
// retryAfterSeconds

Deno.test("retryAfterSeconds() returns 0 when there is no deficit", () => {
  assert.equal(retryAfterSeconds(0n, RPM_100), 0);
  assert.equal(retryAfterSeconds(-5000n, RPM_100), 0);
});

Deno.test("retryAfterSeconds() returns (deficit*rp//ra + 1)/1000 seconds", () => {
  // 1 token/s, 1 token short: 1000*1000//1000 + 1 = 1001 ms.
  assert.equal(retryAfterSeconds(1000n, params(1000n, 1000n, 1000n)), 1.001);
  // 100/min, half a token short: 500*60_000//100_000 + 1 = 301 ms.
  assert.equal(retryAfterSeconds(500n, RPM_100), 0.301);
  // 1.5 millitokens per ms, 1 millitoken short: 1*2000//3000 + 1 = 1 ms.
  assert.equal(retryAfterSeconds(1n, params(10_000n, 3000n, 2000n)), 0.001);
  // 1 token/min, 1 millitoken short: 60 + 1 ms.
  assert.equal(retryAfterSeconds(1n, params(1000n, 1000n, 60_000n)), 0.061);
});

Deno.test("retryAfterSeconds() is the floor of deficit*rp/ra plus one millisecond for random inputs", () => {
  const rand = seededRandom(31337);
  for (let i = 0; i < 10_000; i++) {
    const ra = randInt(rand, 1, 10_000_000);
    const rp = randInt(rand, 1, 86_400_000);
    const deficit = randInt(rand, 1, 10_000_000);
    const ms = BigInt(
      Math.round(retryAfterSeconds(deficit, params(1n, ra, rp)) * 1000),
    );
    // (ms-1) is floor(deficit*rp/ra)  ⇔  (ms-1)*ra <= deficit*rp < ms*ra
    assert.ok(
      (ms - 1n) * ra <= deficit * rp && deficit * rp < ms * ra,
      `iteration ${i}: ${deficit} ${ra} ${rp} → ${ms}`,
    );
  }
});

Deno.test("retryAfterSeconds() stays exact when deficit*rp exceeds 2^53", () => {
  // deficit 2^50 millitokens at 1 millitoken per 1024 ms: 2^60 ms, + 1.
  const s = retryAfterSeconds(2n ** 50n, params(1n, 1n, 1024n));
  assert.equal(s, Number(2n ** 60n + 1n) / 1000);
});

Deno.test("tryConsume() succeeds after waiting exactly retryAfterSeconds and fails 1 ms earlier", () => {
  const rand = seededRandom(424242);
  let inexact = 0;
  for (let i = 0; i < 5000; i++) {
    const cp = randInt(rand, 1000, 1_000_000);
    const ra = randInt(rand, 1, 1_000_000);
    const rp = randInt(rand, 1, 3_600_000);
    const p = params(cp, ra, rp);
    const now = randInt(rand, 1_600_000_000_000, 1_800_000_000_000);
    const need = randInt(rand, 1, Number(cp));
    const tk = randInt(rand, -1_000_000, Number(need) - 1); // always short
    // rf == now: no partial refill is carried, so the wait is measured from now.
    const first = tryConsume(tk, now, now, p, need);
    assert.equal(first.ok, false);
    const waitMs = BigInt(Math.round(first.retryAfterSeconds * 1000));
    const deficit = need - tk;
    const where =
      `iteration ${i}: tk=${tk} need=${need} ra=${ra} rp=${rp} wait=${waitMs}`;

    assert.equal(tryConsume(tk, now, now + waitMs, p, need).ok, true, where);
    // When deficit*rp is a multiple of ra the "+ 1" overshoots by exactly one
    // millisecond (the spec formula is deliberately conservative); otherwise
    // the wait is the exact earliest moment.
    const exact = (deficit * rp) % ra === 0n;
    assert.equal(
      tryConsume(tk, now, now + waitMs - 1n, p, need).ok,
      exact,
      where,
    );
    if (!exact) inexact++;
    if (exact) {
      assert.equal(
        tryConsume(tk, now, now + waitMs - 2n, p, need).ok,
        false,
        where,
      );
    }
  }
  assert.ok(inexact > 1000, "the loop must mostly exercise the non-exact case");
});

Deno.test("tryConsume() succeeds after retryAfterSeconds for a 7-per-minute limit drained to zero", () => {
  const p = paramsOf(Limit.perMinute("rpm", 7));
  const drained = tryConsume(0n, 0n, 0n, p, 1000n);
  assert.equal(drained.ok, false);
  // 1000 * 60_000 // 7000 + 1 = 8571 + 1 ms (8571.43 ms exactly are needed).
  assert.equal(drained.retryAfterSeconds, 8.572);
  assert.equal(tryConsume(drained.tk, drained.rf, 8571n, p, 1000n).ok, false);
  assert.equal(tryConsume(drained.tk, drained.rf, 8572n, p, 1000n).ok, true);
});

Deno.test("tryConsume() succeeds 1 ms before retryAfterSeconds when the deficit divides evenly", () => {
  // 100/min, 1 token short: 1000 * 60_000 // 100_000 = 600 exactly, so the
  // formula's "+ 1" waits one millisecond longer than strictly needed.
  const p = paramsOf(Limit.perMinute("rpm", 100));
  const drained = tryConsume(0n, 0n, 0n, p, 1000n);
  assert.equal(drained.retryAfterSeconds, 0.601);
  assert.equal(tryConsume(drained.tk, drained.rf, 599n, p, 1000n).ok, false);
  assert.equal(tryConsume(drained.tk, drained.rf, 600n, p, 1000n).ok, true);
  assert.equal(tryConsume(drained.tk, drained.rf, 601n, p, 1000n).ok, true);
});

// ---------------------------------------------------------------------------
// tryConsume

Deno.test("tryConsume() succeeds when the request equals the full capacity", () => {
  const r = tryConsume(100_000n, 0n, 0n, RPM_100, 100_000n);
  assert.deepEqual(r, {
    ok: true,
    tk: 0n,
    rf: 0n,
    refilled: 0n,
    retryAfterSeconds: 0,
    available: 100,
  });
});

Deno.test("tryConsume() reports available tokens and a positive wait when tokens are insufficient", () => {
  const r = tryConsume(2500n, 0n, 0n, RPM_100, 5000n);
  assert.equal(r.ok, false);
  assert.equal(r.tk, 2500n, "a failed check consumes nothing");
  assert.equal(r.available, 2);
  // deficit 2500 → 2500*60_000//100_000 + 1 = 1501 ms
  assert.equal(r.retryAfterSeconds, 1.501);
});

Deno.test("tryConsume() refills before checking and reports the refill", () => {
  // 30 s adds 50 tokens to an empty 100/min bucket; consume 40 of them.
  const r = tryConsume(0n, 0n, 30_000n, RPM_100, 40_000n);
  assert.deepEqual(r, {
    ok: true,
    tk: 10_000n,
    rf: 30_000n,
    refilled: 50_000n,
    retryAfterSeconds: 0,
    available: 50,
  });
});

Deno.test("tryConsume() returns the refilled state even when it fails", () => {
  const r = tryConsume(-10_000n, 0n, 1000n, RPM_100, 1000n);
  assert.equal(r.ok, false);
  assert.equal(r.refilled, 1666n);
  assert.equal(r.tk, -10_000n + 1666n);
  assert.equal(r.rf, 1000n);
  // floor(-8334 / 1000) = -9
  assert.equal(r.available, -9);
  // deficit 1000 - (-8334) = 9334 → 9334*60_000//100_000 + 1 = 5601 ms.
  assert.equal(r.retryAfterSeconds, 5.601);
});

Deno.test("tryConsume() with a zero amount succeeds even when the bucket is in debt", () => {
  // Deliberate departure from the reference (weakness 32): a limit that is
  // not being consumed is not checked.
  const r = tryConsume(-5000n, 0n, 0n, RPM_100, 0n);
  assert.equal(r.ok, true);
  assert.equal(r.tk, -5000n);
  assert.equal(r.available, -5);
  assert.equal(r.retryAfterSeconds, 0);
});

Deno.test("tryConsume() with a zero amount on a non-negative bucket leaves the balance alone", () => {
  assert.deepEqual(tryConsume(0n, 0n, 0n, RPM_100, 0n), {
    ok: true,
    tk: 0n,
    rf: 0n,
    refilled: 0n,
    retryAfterSeconds: 0,
    available: 0,
  });
});

Deno.test("tryConsume() stays exact with balances above 2^53", () => {
  const cp = 2n ** 62n;
  const p = params(cp, 1000n, 1000n);
  const r = tryConsume(cp, 0n, 0n, p, cp - 1n);
  assert.equal(r.ok, true);
  assert.equal(r.tk, 1n);
  const short = tryConsume(2n ** 60n, 0n, 0n, p, 2n ** 60n + 1n);
  assert.equal(short.ok, false);
  assert.equal(short.tk, 2n ** 60n);
});

// ---------------------------------------------------------------------------
// timeUntil

Deno.test("timeUntil() returns 0 when the refilled balance already covers the need", () => {
  assert.equal(timeUntil(5000n, 0n, 0n, RPM_100, 5000n), 0);
  assert.equal(timeUntil(0n, 0n, 30_000n, RPM_100, 50_000n), 0);
});

Deno.test("timeUntil() returns the retry wait for the deficit after refill", () => {
  // After 1 s the bucket holds 1666; 5000 - 1666 = 3334 short → 3334*60_000//100_000 + 1 = 2001 ms.
  assert.equal(timeUntil(0n, 0n, 1000n, RPM_100, 5000n), 2.001);
});

// ---------------------------------------------------------------------------
// bucketTtlSeconds

Deno.test("bucketTtlSeconds() multiplies the time to fill by the multiplier", () => {
  // per_minute("rpm", 100): fill 100/100*60 = 60 s, × 7 = 420 s.
  assert.equal(bucketTtlSeconds([Limit.perMinute("rpm", 100)], 7), 420);
  // capacity 1000, refill 10 per 60 s: fill 6000 s, × 7 = 42_000 s.
  assert.equal(
    bucketTtlSeconds([Limit.custom("tpm", 1000, 10, 60)], 7),
    42_000,
  );
});

Deno.test("bucketTtlSeconds() uses the slowest-filling limit", () => {
  const limits = [
    Limit.perMinute("rpm", 100),
    Limit.custom("tpm", 1000, 10, 60),
    Limit.perSecond("rps", 10),
  ];
  assert.equal(bucketTtlSeconds(limits, 7), 42_000);
  assert.equal(bucketTtlSeconds(limits, 1), 6000);
});

Deno.test("bucketTtlSeconds() truncates a fractional result to whole seconds", () => {
  // capacity 1, refill 3 per second: fill 1/3 s, × 7 = 2.33 s → 2.
  assert.equal(bucketTtlSeconds([Limit.custom("x", 1, 3, 1)], 7), 2);
  // capacity 2, refill 3 per second: fill 2/3 s, × 7 = 4.67 s → 4 (not rounded to 5).
  assert.equal(bucketTtlSeconds([Limit.custom("x", 2, 3, 1)], 7), 4);
  // burst 150 at 100/min: fill 90 s, × 7 = 630.
  assert.equal(
    bucketTtlSeconds([Limit.perMinute("rpm", 100, { burst: 150 })], 7),
    630,
  );
});

Deno.test("bucketTtlSeconds() returns null when the multiplier is not positive", () => {
  assert.equal(bucketTtlSeconds([Limit.perMinute("rpm", 100)], 0), null);
  assert.equal(bucketTtlSeconds([Limit.perMinute("rpm", 100)], -1), null);
});

Deno.test("bucketTtlSeconds() returns null when there are no limits", () => {
  assert.equal(bucketTtlSeconds([], 7), null);
});
