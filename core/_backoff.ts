/**
 * The one backoff formula of the library: a capped exponential delay, and
 * the same with full jitter (a uniform draw below it, as in AWS's
 * "Exponential Backoff and Jitter" and std's `async/_util.ts`). Each caller
 * keeps its own base and cap. Not part of the public API.
 *
 * @module
 */

/**
 * The delay of attempt `attempt` (0-based; a negative one counts as 0):
 * `min(capMs, baseMs * 2^attempt)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exponentialBackoff } from "./_backoff.ts";
 *
 * assert.equal(exponentialBackoff(0, 50, 5_000), 50);
 * assert.equal(exponentialBackoff(3, 50, 5_000), 400);
 * assert.equal(exponentialBackoff(1_000, 50, 5_000), 5_000);
 * ```
 */
export function exponentialBackoff(
  attempt: number,
  baseMs: number,
  capMs: number,
): number {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
}

/**
 * Full-jitter exponential backoff: a whole number of milliseconds drawn
 * from `[0, exponentialBackoff(attempt, baseMs, capMs))` with `random`
 * (a `Math.random`-like source in `[0, 1)`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fullJitter } from "./_backoff.ts";
 *
 * assert.equal(fullJitter(2, 100, 1_000, () => 0.5), 200);
 * assert.equal(fullJitter(9, 100, 1_000, () => 0.5), 500);
 * ```
 */
export function fullJitter(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number,
): number {
  return Math.floor(random() * exponentialBackoff(attempt, baseMs, capMs));
}
