import assert from "node:assert/strict";
import {
  changeCell,
  median,
  medianInterval,
  pairedChanges,
  quantile,
} from "./_bench_stats.ts";
import type { CompareRun } from "./_bench_stats.ts";
import { pool } from "./bench_pool.ts";

Deno.test("quantile interpolates between the nearest ranks", () => {
  assert.equal(quantile([4, 1, 3, 2], 0.5), 2.5);
  assert.equal(quantile([1, 2, 3, 4, 5], 0.25), 2);
  assert.equal(quantile([10], 0.9), 10);
  assert.ok(Number.isNaN(median([])));
});

Deno.test("pairedChanges compares round by round and refuses unequal runs", () => {
  assert.deepEqual(
    pairedChanges([1.1, 0.9], [1, 1]).map((x) => Math.round(x * 100)),
    [10, -10],
  );
  assert.throws(() => pairedChanges([1, 2], [1]), /2 against 1/);
});

Deno.test("the median's interval holds the median, narrows with more rounds and is repeatable", () => {
  // Changes spread around -4%: a fixed pseudo-random sample.
  let s = 7;
  const draw = (): number => {
    s = (s * 48271) % 2147483647;
    return -0.04 + (s / 2147483647 - 0.5) * 0.3;
  };
  const few = Array.from({ length: 31 }, draw);
  const many = Array.from({ length: 500 }, draw);
  const [lo1, hi1] = medianInterval(few);
  const [lo2, hi2] = medianInterval(many);
  assert.ok(lo1 <= median(few) && median(few) <= hi1);
  assert.ok(lo2 <= median(many) && median(many) <= hi2);
  assert.ok(hi2 - lo2 < hi1 - lo1, `${hi2 - lo2} < ${hi1 - lo1}`);
  // About ±1.1% at 90% for 500 rounds spread over ±15%.
  assert.ok(hi2 - lo2 < 0.03, `[${lo2}, ${hi2}] is narrow`);
  assert.deepEqual(medianInterval(few), medianInterval(few));
  // Identical rounds: no spread at all.
  assert.deepEqual(medianInterval([0.02, 0.02, 0.02]), [0.02, 0.02]);
});

Deno.test("changeCell shows the median, its interval and the quartiles", () => {
  assert.equal(
    changeCell([-0.05, -0.05, -0.05, -0.05]),
    "-5.0% [-5.0%..-5.0%] (-5%..-5%)",
  );
});

function run(
  builds: string[],
  ratios: number[][],
  latRatios: number[][] = ratios.map(() => []),
): CompareRun {
  return {
    builds,
    ms: 1000,
    rounds: ratios[0]?.length ?? 0,
    cells: [{ scenario: "one limit", conc: 1, ratios, latRatios }],
  };
}

Deno.test("pool joins the rounds of several runs, last build against each other", () => {
  const rows = pool([
    run(["old", "HEAD", "tree"], [[1, 1], [1, 1], [0.9, 1.1]], [[1, 1], [
      1,
      1,
    ], [1, 1]]),
    run(["old", "HEAD", "tree"], [[2], [1], [1.9]], [[1], [1], [0.95]]),
  ]);
  assert.equal(rows.length, 2);
  const [vsOld, vsHead] = rows;
  assert.equal(vsOld?.against, "old");
  assert.deepEqual(vsOld?.ops.map((x) => Math.round(x * 100)), [-10, 10, -5]);
  assert.deepEqual(vsOld?.time.map((x) => Math.round(x * 100)), [0, 0, -5]);
  assert.equal(vsHead?.against, "HEAD");
  assert.deepEqual(vsHead?.ops.map((x) => Math.round(x * 100)), [-10, 10, 90]);
});

Deno.test("pool refuses runs of different builds", () => {
  assert.throws(
    () =>
      pool([run(["a", "tree"], [[1], [1]]), run(["b", "tree"], [[1], [1]])]),
    /run 2 measured b, tree, run 1 a, tree/,
  );
  assert.deepEqual(pool([]), []);
});
