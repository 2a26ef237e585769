import assert from "node:assert/strict";
import { exponentialBackoff, fullJitter } from "./_backoff.ts";

Deno.test("exponentialBackoff() doubles from the base up to the cap", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7].map((n) => exponentialBackoff(n, 50, 5_000)),
    [50, 100, 200, 400, 800, 1_600, 3_200, 5_000],
  );
  assert.equal(exponentialBackoff(-3, 50, 5_000), 50);
  assert.equal(exponentialBackoff(5_000, 50, 5_000), 5_000);
  assert.equal(exponentialBackoff(4, 25, Infinity), 400);
});

Deno.test("fullJitter() draws below the capped exponential delay", () => {
  assert.equal(fullJitter(0, 200, 5_000, () => 0), 0);
  assert.equal(fullJitter(3, 200, 5_000, () => 0.999), 1_598);
  assert.equal(fullJitter(30, 200, 5_000, () => 0.5), 2_500);
  for (let attempt = 0; attempt < 40; attempt++) {
    const d = fullJitter(attempt, 50, 1_000, Math.random);
    assert.ok(Number.isInteger(d) && d >= 0 && d < 1_000, String(d));
  }
});
